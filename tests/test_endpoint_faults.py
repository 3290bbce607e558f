"""A misbehaving OpenAI-compatible endpoint (tests/openai_stub.py, a real HTTP server on 127.0.0.1): its bad
answers are never replayed from the cache once it is fixed, what it sends is bounded by max_tokens, and every
protocol fault is one error naming the endpoint."""

from __future__ import annotations

import pytest
import yaml

from autointerp.llm.base import CachedLLM, LLMEndpointError
from autointerp.llm.cache import LLMCache
from autointerp.llm.openai_backend import MAX_CHARS_PER_TOKEN, OpenAILLM, OpenAIOptions
from autointerp.store import Store
from orchestration.cli import MAX_ERROR_CHARS, main
from tests.openai_stub import OpenAIStub, stub_llm

CHAT = {"messages": [{"role": "user", "content": "the\t0\ncat\t10\n"}], "n": 1, "max_tokens": 60,
        "temperature": 1.0, "top_p": 1.0, "seed": 0}


@pytest.fixture
def stub():
    with OpenAIStub() as server:
        yield server


def backend(url: str) -> OpenAILLM:
    return OpenAILLM(OpenAIOptions(model="stub", base_url=url, max_retries=0, timeout_s=30))


@pytest.mark.parametrize("mode, says", [
    ("garbage", "not an OpenAI API response"),
    ("html", "not an OpenAI chat completion"),
    ("no_choices", "not an OpenAI chat completion: IndexError"),
    ("huge_usage", "usage.prompt_tokens = 1000000000000000000000000000000, which is not a token count"),
])
def test_a_protocol_fault_is_one_error_naming_the_endpoint(stub, mode, says):
    stub.mode = mode
    with pytest.raises(LLMEndpointError) as error:
        backend(stub.url).chat([CHAT])
    message = str(error.value)
    assert message.startswith(stub.url) and says in message and len(message) < 600, message


def test_a_completion_longer_than_max_tokens_is_cut_before_it_is_kept(stub, tmp_path):
    stub.mode = "long"  # 10,000 tokens where 60 were asked for
    store = Store(tmp_path / "s.duckdb")
    [completions] = CachedLLM.of(backend(stub.url), LLMCache(store)).chat([CHAT])
    assert stub.requests[0]["max_tokens"] == 60
    # the server reports 10,000 tokens for 49,999 characters: 60 of them are ~300 characters
    assert 0 < len(completions[0]) <= 60 * 49_999 // 10_000 <= 60 * MAX_CHARS_PER_TOKEN
    assert store.query("SELECT max(length(response)) AS n FROM llm_calls").n[0] < 400


def test_an_answer_that_fails_validation_is_not_cached(stub, tmp_path):
    store = Store(tmp_path / "s.duckdb")
    llm = CachedLLM.of(backend(stub.url), LLMCache(store))
    stub.mode = "null"
    assert llm.chat([CHAT], keep=lambda i, completions: all(completions)) == [[""]]
    assert store.query("SELECT count(*) AS n FROM llm_calls").n[0] == 0
    stub.mode = "ok"
    assert llm.chat([CHAT], keep=lambda i, completions: all(completions)) == [['words like "cat"']]
    assert len(stub.requests) == 2  # asked again, not replayed
    assert llm.chat([CHAT]) == [['words like "cat"']] and len(stub.requests) == 2  # a usable answer is kept


def test_an_unusable_answer_cached_by_an_older_version_is_asked_again(stub, tmp_path):
    store = Store(tmp_path / "s.duckdb")
    stub.mode = "null"
    CachedLLM.of(backend(stub.url), LLMCache(store)).chat([CHAT])  # no check: cached as it came
    stub.mode = "ok"
    assert CachedLLM.of(backend(stub.url), LLMCache(store)).chat([CHAT], keep=lambda i, c: all(c)) == \
        [['words like "cat"']]
    assert store.query("SELECT response FROM llm_calls").response.tolist() == ['["words like \\"cat\\""]']


def _explain_with(project, url: str) -> None:
    raw = yaml.safe_load(project.read_text())
    raw["explainer"] = {"kind": "llm", "formats": ["listing"], "attempts": 2, "llm": stub_llm(url)}
    raw["simulator"] = {"kind": "token_match"}
    raw["scoring"] = {"llm": {"backend": "scripted"}}  # the judges ask elsewhere: the stub counts explainer requests
    project.write_text(yaml.safe_dump(raw))


def test_after_the_endpoint_is_fixed_the_same_command_asks_again_and_succeeds(project, stub, capsys):
    _explain_with(project, stub.url)
    assert main(["run", "--model", "tiny-gpt2", "--layers", "1", "--until", "record"]) == 0
    stub.mode = "null"
    command = ["run", "--model", "tiny-gpt2", "--layers", "1", "--from", "explain"]
    assert main(command) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and "explanations" in error and len(error) <= MAX_ERROR_CHARS + 40, error
    failed = len(stub.requests)
    assert failed == 4  # 2 neurons x 2 attempts
    stub.mode = "ok"
    assert main(command) == 0, capsys.readouterr().err
    assert len(stub.requests) == failed + 2  # each neuron asked again, once
    chosen = Store.from_home().query("SELECT explanation FROM explanations WHERE chosen").explanation
    assert len(chosen) == 2 and all(text.startswith("words like") for text in chosen)
    assert main(command) == 0 and len(stub.requests) == failed + 2  # and now the cache answers


def test_a_run_against_an_endpoint_ignoring_max_tokens_keeps_only_what_was_asked(project, stub, capsys):
    _explain_with(project, stub.url)
    stub.mode = "long"
    assert main(["run", "--model", "tiny-gpt2", "--layers", "1"]) == 0, capsys.readouterr().err
    store = Store.from_home()
    assert store.query("SELECT max(length(response)) AS n FROM llm_calls").n[0] < 60 * 6
    assert store.query("SELECT max(length(completion)) AS n FROM explanations").n[0] < 60 * 6


def test_an_error_line_stays_one_bounded_line():
    from orchestration.cli import one_line

    line = one_line("explanations failed:\n" + "word " * 90_000)
    assert "\n" not in line and len(line) <= MAX_ERROR_CHARS + 40 and line.endswith("(450,020 characters)")


@pytest.mark.slow
def test_two_runs_at_once_on_one_home_pay_for_each_answer_once(project, home):
    """Two `--from explain` processes against one endpoint: the second waits for the first's answers, then
    reuses them (without the store's LLM lock, each of them asked for all of them)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    stub = OpenAIStub(delay_s=5.0)  # long enough that both runs ask while the first is still waiting
    with stub:
        _explain_with(project, stub.url)
        assert main(["run", "--model", "tiny-gpt2", "--layers", "1", "--until", "record"]) == 0
        autointerp = str(Path(sys.executable).parent / "autointerp")
        runs = [subprocess.Popen([autointerp, "run", "--model", "tiny-gpt2", "--layers", "1", "--from", "explain"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
                for _ in range(2)]
        outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [o[-2000:] for o in outputs]
    assert len(stub.requests) == 2  # 2 neurons, each asked once
    # The LLM lock's message only: the DuckDB store's own lock may also make either run wait a moment.
    assert sum("which is asking the LLM for this store" in output for output in outputs) == 1, outputs


def test_the_parse_simulator_never_caches_an_empty_reply(stub, tmp_path):
    from autointerp.config import LLMChoice
    from autointerp.llm import LoadedLLMs
    from autointerp.simulate import SimulationJob
    from autointerp.simulate.rewrite import RewriteOptions, parse

    store = Store(tmp_path / "s.duckdb")
    simulator = parse(RewriteOptions(llm=LLMChoice("openai", OpenAIOptions(model="stub", base_url=stub.url,
                                                                          max_retries=0))), None, store, LoadedLLMs())
    job = SimulationJob('words like "cat"', (" a", " cat"))
    stub.mode = "null"
    assert simulator.simulate([job]) == [[0.0, 0.0]]  # no reply: zeros, as for any reply without values
    assert store.query("SELECT count(*) AS n FROM llm_calls").n[0] == 0
    stub.mode = "ok"
    simulator.simulate([job])
    simulator.simulate([job])
    assert len(stub.requests) == 2 and store.query("SELECT count(*) AS n FROM llm_calls").n[0] == 1
