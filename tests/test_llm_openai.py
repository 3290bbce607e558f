"""The openai backend against a real OpenAI-compatible server (llama.cpp's, on 127.0.0.1).

The server runs SmolLM2-135M from the same GGUF the local backend loads, so the two backends can be
compared: their value distributions at the same slots must agree.
"""

from __future__ import annotations

import time

import pytest

from autointerp.config import LLMChoice
from autointerp.llm import LoadedLLMs
from autointerp.llm.base import VALUE_STRINGS, CachedLLM, LLMEndpointError
from autointerp.llm.cache import LLMCache
from autointerp.llm.local import LocalLLM, LocalOptions
from autointerp.llm.openai_backend import OpenAILLM, OpenAIOptions
from autointerp.simulate import SimulationJob
from autointerp.simulate.rewrite import RewriteOptions, chat, parse
from autointerp.store import Store
from tests.conftest import SMOLLM2
from tests.llama_server import free_port, smollm2_gguf, start_llama_server

pytestmark = pytest.mark.slow  # real servers and models: left out of the quick loop

KEY = "sk-test-secret-4711"
# A short prompt in the simulator's format (echo logprobs cost ~50 ms per token on this server).
PREFIX = "Neuron 1\nActivations:\n<start>\n the\t0\n cat\t10\n sat\t0\n<end>\n\nNeuron 2\nActivations:\n<start>\n"
BODY = " a\tunknown\n cat\tunknown\n ran\tunknown\n<end>\n"
SLOTS = [i + 1 for i, c in enumerate(BODY) if c == "\t"]
REQUEST = {"prefix": PREFIX, "body": BODY, "slots": SLOTS}
CHAT = {"messages": [{"role": "system", "content": "Answer in one short line."},
                     {"role": "user", "content": "Name a fruit."}],
        "n": 2, "max_tokens": 8, "temperature": 1.0, "top_p": 1.0, "seed": 3}


@pytest.fixture(scope="module")
def server(monkeypatch_module):
    monkeypatch_module.setenv("OPENAI_API_KEY", KEY)
    with start_llama_server(smollm2_gguf(), extra_args=["--api_key", KEY]) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def options(base_url: str, **overrides) -> OpenAIOptions:
    return OpenAIOptions(model="smollm2", base_url=base_url, timeout_s=60, max_retries=0, **overrides)


def backend(base_url: str, **overrides) -> OpenAILLM:
    return OpenAILLM(options(base_url, **overrides))


def test_chat_returns_one_completion_per_sample(server):
    result = backend(server).chat([CHAT])[0]
    assert len(result.response) == 2 and all(isinstance(t, str) and t for t in result.response)
    assert result.prompt_tokens > 0 and result.completion_tokens > 0


def test_echo_slots_read_the_same_distributions_as_the_local_model(server):
    llm = backend(server, top_logprobs=30)
    remote = llm.slots([REQUEST])[0].response
    assert llm._echo_shift == 1  # llama.cpp without a BOS token shifts echoed logprobs; detected by probing
    local = LocalLLM(LocalOptions(model=SMOLLM2, dtype="float32")).slots([REQUEST])[0].response
    assert len(remote) == len(local) == 3
    for r, l in zip(remote, local):
        # Prompt logprobs see only a value's first token: with this digit-splitting tokenizer "1" stands
        # for 1 and 10 alike, which the local backend tells apart. Both run the same Q4_1 weights
        # (llama.cpp quantized, transformers dequantized to fp32).
        merged = {**l, "1": l["1"] + l["10"]}
        for value in VALUE_STRINGS[:10]:
            assert r.get(value, 0.0) == pytest.approx(merged[value], abs=0.05), (value, r, merged)
        assert max(r, key=r.get) == max(merged, key=merged.get)


def test_the_chat_and_parse_simulators_give_one_value_per_token(server, tmp_path):
    """Endpoints without prompt logprobs: the model rewrites the excerpt with values (chat: their logprobs)."""
    job = SimulationJob("the word cat", (" a", " cat", " ran"))
    choice = LLMChoice("openai", options(server))
    for build in (chat, parse):
        simulator = build(RewriteOptions(llm=choice), None, Store(tmp_path / "s.duckdb"), LoadedLLMs())
        values = simulator.simulate([job])[0]
        assert len(values) == 3 and all(0 <= v <= 10 for v in values), (simulator.name, values)
    assert simulator.name == "parse:openai:smollm2"
    assert all(float(v).is_integer() for v in values)  # parsed integers, no probabilities


def test_chat_logprobs_come_back_per_generated_token(server):
    request = {**CHAT, "n": 1, "top_logprobs": 5}
    reply = backend(server).chat([request])[0].response[0]
    assert set(reply) == {"text", "tokens", "top_logprobs"} and len(reply["tokens"]) == len(reply["top_logprobs"]) > 0
    assert all(0 < len(alternatives) <= 20 for alternatives in reply["top_logprobs"]), reply["top_logprobs"][:2]


def test_the_cache_makes_a_second_run_free_and_never_stores_the_key(server, tmp_path):
    store = Store(tmp_path / "c.duckdb")
    sent = []
    llm = backend(server)
    original = llm.chat
    llm.chat = lambda requests: sent.append(len(requests)) or original(requests)
    first = CachedLLM.of(llm, LLMCache(store)).chat([CHAT])
    started = time.monotonic()
    second = CachedLLM.of(llm, LLMCache(store)).chat([CHAT])
    assert sent == [1] and second == first and time.monotonic() - started < 2
    dump = store.query("SELECT * FROM llm_calls").to_string()
    assert KEY not in dump and len(store.query("SELECT * FROM llm_calls")) == 1


def test_a_wrong_key_is_one_clear_error(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with pytest.raises(LLMEndpointError, match="refused the API key") as error:
        backend(server).chat([CHAT])
    assert "sk-wrong" not in str(error.value)


def test_an_unreachable_endpoint_is_one_clear_error():
    url = f"http://127.0.0.1:{free_port()}/v1"
    started = time.monotonic()
    with pytest.raises(LLMEndpointError, match=f"cannot reach the LLM endpoint at {url}"):
        backend(url).chat([CHAT])
    with pytest.raises(LLMEndpointError, match="cannot reach"):
        backend(url).slots([REQUEST])
    assert time.monotonic() - started < 30


def test_the_openai_api_without_a_key_is_refused_up_front(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(LLMEndpointError, match="set OPENAI_API_KEY"):
        OpenAILLM(OpenAIOptions(model="gpt-4o-mini"))


def test_judging_reads_the_first_tokens_logprobs_like_the_local_backend(server):
    """The endpoint's chat logprobs of the first answer token give the same yes/no log-odds as the local
    backend running the same GGUF in-process."""
    system = {"role": "system", "content": "Answer with one word: yes or no."}
    requests = [{"messages": [system, {"role": "user", "content": f"Explanation: words about water\nText: {t}"}],
                 "answers": ["yes", "no"]} for t in ("The river flows into the sea.", "He paid the bill.")]
    remote = [r.response for r in backend(server).judge(requests)]
    local = [r.response for r in LocalLLM(LocalOptions(model=SMOLLM2, engine="llama.cpp")).judge(requests)]
    for r, l in zip(remote, local):
        assert set(r) == {"yes", "no"} and all(-30.0 <= v <= 0.0 for v in r.values())
        assert r["yes"] - r["no"] == pytest.approx(l["yes"] - l["no"], abs=0.5)
