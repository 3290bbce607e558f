"""The openai backend against a real OpenAI-compatible server (llama.cpp's, on 127.0.0.1).

The server runs SmolLM2-135M from the same GGUF the local backend loads, so the two backends can be
compared: their value distributions at the same slots must agree.
"""

from __future__ import annotations

import time

import pytest

from autointerp.config import LLMSpec
from autointerp.llm.base import CachedLLM
from autointerp.llm.cache import LLMCache
from autointerp.llm.local import LocalLLM
from autointerp.llm.openai_backend import LLMEndpointError, OpenAILLM
from autointerp.prompts import VALUE_STRINGS
from autointerp.store import Store
from tests.conftest import SMOLLM2
from tests.llama_server import free_port, smollm2_gguf, start_llama_server

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


def backend(base_url: str, **overrides) -> OpenAILLM:
    return OpenAILLM(LLMSpec(backend="openai", model="smollm2", base_url=base_url, timeout_s=60, max_retries=0,
                             **overrides))


def test_chat_returns_one_completion_per_sample(server):
    result = backend(server).chat([CHAT])[0]
    assert len(result.response) == 2 and all(isinstance(t, str) and t for t in result.response)
    assert result.prompt_tokens > 0 and result.completion_tokens > 0


def test_echo_mode_reads_the_same_distributions_as_the_local_model(server):
    llm = backend(server, mode="echo", top_logprobs=30)
    remote = llm.slots([REQUEST])[0].response
    assert llm._echo_shift == 1  # llama.cpp without a BOS token shifts echoed logprobs; detected by probing
    local = LocalLLM(SMOLLM2, dtype="float32").slots([REQUEST])[0].response
    assert len(remote) == len(local) == 3
    for r, l in zip(remote, local):
        # Prompt logprobs see only a value's first token: with this digit-splitting tokenizer "1" stands
        # for 1 and 10 alike, which the local backend tells apart. Both run the same Q4_1 weights
        # (llama.cpp quantized, transformers dequantized to fp32).
        merged = {**l, "1": l["1"] + l["10"]}
        for value in VALUE_STRINGS[:10]:
            assert r.get(value, 0.0) == pytest.approx(merged[value], abs=0.05), (value, r, merged)
        assert max(r, key=r.get) == max(merged, key=merged.get)


def test_chat_logprobs_and_parse_modes_give_one_distribution_per_slot(server):
    for mode in ("chat", "parse"):
        distributions = backend(server, mode=mode).slots([REQUEST])[0].response
        assert len(distributions) == len(SLOTS), mode
        assert all(set(d) <= set(VALUE_STRINGS) and sum(d.values()) >= 0 for d in distributions), mode
    parsed = backend(server, mode="parse").slots([REQUEST])[0].response
    assert all(sorted(d.values()) == [1.0] for d in parsed)  # parsed integers, no probabilities


def test_auto_mode_picks_echo_where_the_endpoint_supports_it(server):
    llm = backend(server)
    assert llm.mode == "echo"


def test_the_cache_makes_a_second_run_free_and_never_stores_the_key(server, tmp_path):
    store = Store(tmp_path / "c.duckdb")
    sent = []
    llm = backend(server, mode="parse")
    original = llm.slots
    llm.slots = lambda requests: sent.append(len(requests)) or original(requests)
    first = CachedLLM(llm, LLMCache(store)).slots([REQUEST])
    started = time.monotonic()
    second = CachedLLM(llm, LLMCache(store)).slots([REQUEST])
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
        OpenAILLM(LLMSpec(backend="openai", model="gpt-4o-mini"))
