"""Configuration: defaults load, and every kind of bad input names the file and the key."""

from pathlib import Path

import pytest

from autointerp.config import DEFAULT_CONFIG_PATH, load_config
from autointerp.errors import ConfigError

GOOD = """
seed: 3
models:
  - {name: tiny, source: ./model}
corpus: {paths: [builtin:lee_background], max_tokens: 6400}
records: {top: 10}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "autointerp.yaml"
    path.write_text(text)
    return path


def test_the_repository_default_config_loads():
    config = load_config(DEFAULT_CONFIG_PATH)
    assert [m.name for m in config.models] == ["smollm2-135m"]
    assert config.records.top == 20 and config.records.random == 20


def test_a_good_config_loads_with_defaults_filled_in(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert config.seed == 3 and config.records.top == 10 and config.records.random == 20
    assert config.corpus.paths == ("builtin:lee_background",) and config.path == (tmp_path / "autointerp.yaml").resolve()
    assert config.model("tiny").source == "./model"


def test_the_config_path_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(write(tmp_path, GOOD)))
    assert load_config().seed == 3


@pytest.mark.parametrize("text, message", [
    (GOOD + "modles: []\n", "unknown key(s) 'modles'"),
    (GOOD.replace("records: {top: 10}", "records: {top: 10, topp: 3}"), "records: unknown key(s) 'topp'"),
    (GOOD.replace("top: 10", "top: ten"), "records.top: must be an integer"),
    (GOOD.replace("top: 10", "top: true"), "records.top: must be an integer"),
    (GOOD.replace("top: 10", "top: 0"), "records.top must be a positive integer"),
    (GOOD.replace("max_tokens: 6400", "max_tokens: 10"), "corpus.max_tokens must be at least 64"),
    (GOOD.replace("name: tiny", "name: 'bad|name'"), "'bad|name' is not a valid model name"),
    (GOOD.replace("name: tiny", "name: '..'"), "'..' is not a valid model name"),
    (GOOD.replace("name: tiny", "name: '../victim'"), "'../victim' is not a valid model name"),
    (GOOD.replace("source: ./model", "source: ''"), "model 'tiny': source is empty"),
    (GOOD.replace("seed: 3", "seed: 10000000000000000000000000"), "seed must be an integer from 0 to 2147483647"),
    (GOOD.replace("  - {name: tiny, source: ./model}", "  - {name: tiny}"), "missing required key(s) source"),
    (GOOD.replace("  - {name: tiny, source: ./model}", "  - {name: a, source: x}\n  - {name: a, source: y}"),
     "repeated: a"),
    ("models: [\n", "not valid YAML"),
    ("- just\n- a list\n", "top level must be a mapping"),
    ("seed: 1\n", "'models' must be a non-empty list"),
    (GOOD.replace("records: {top: 10}", "records: {random: 50, random_pool: 40}"), "cannot exceed records.random_pool"),
    (GOOD + "simulator: {placeholder: '?'}\n", "simulator.placeholder must be unknown or 0, got '?'"),
    (GOOD + "simulator: {kind: chat, placeholder: '0'}\n", "simulator: unknown key(s) 'placeholder'"),
    (GOOD + "simulator: {kind: psychic}\n", "simulator.kind: unknown simulator 'psychic'; known: all_at_once"),
    (GOOD + "explainer: {llm: {backend: carrier-pigeon}}\n", "explainer.llm.backend: unknown LLM backend "
     "'carrier-pigeon'; known: local, openai"),
    (GOOD + "explainer: {llm: {backend: openai, concurrency: 0}}\n", "explainer.llm: top_logprobs and concurrency"),
    (GOOD + "explainer: {llm: {dtype: float8}}\n", "explainer.llm.dtype must be auto, float32"),
    (GOOD + "explainer: {formats: [listing, sonnet]}\n", "explainer.formats: unknown explainer prompt format 'sonnet'"),
    (GOOD + "explainer: {samples: 0}\n", "explainer.samples must be a positive integer"),
    (GOOD + "explainer: {llm: {backend: openai, timeout_s: .nan}}\n", "explainer.llm.timeout_s: must be a finite number"),
    (GOOD + "sae_training: {lr: .nan}\n", "sae_training.lr: must be a finite number, got nan"),
    (GOOD + "explainer: {temperature: .inf}\n", "explainer.temperature: must be a finite number, got inf"),
    (GOOD.replace("source: ./model}", "source: ./model, units: {kind: tea-leaves}}"),
     "models[0].units.kind: unknown unit type 'tea-leaves'; known: mlp"),
    (GOOD + "executor: {kind: dask}\n", "executor.kind: 'dask' is not one of in_process, celery"),
    (GOOD + "executor: {kind: celery}\n", "executor.broker: the celery executor needs a broker URL"),
    (GOOD + "executor: {kind: celery, broker: 'redis://:hunter2@127.0.0.1:6379/0'}\n",
     "executor.broker: leave the password out of the URL; set AUTOINTERP_BROKER_PASSWORD"),
    (GOOD + "executor: {kind: celery, broker: 'redis://127.0.0.1:6379/0', visibility_timeout_s: 0}\n",
     "executor: visibility_timeout_s, layers_per_run and max_runs must be positive"),
])
def test_bad_configs_get_one_clear_error(tmp_path, text, message):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    assert message in str(error.value)
    assert "autointerp.yaml" in str(error.value)


def test_the_executor_defaults_to_in_process_and_takes_celery(tmp_path):
    assert load_config(write(tmp_path, GOOD)).executor.kind == "in_process"
    spec = load_config(write(tmp_path, GOOD + "executor: {kind: celery, broker: 'redis://127.0.0.1:6379/0'}\n")).executor
    assert (spec.kind, spec.broker, spec.layers_per_run) == ("celery", "redis://127.0.0.1:6379/0", 1)


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_an_unknown_model_lists_the_configured_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown model 'gpt9'.*tiny"):
        load_config(write(tmp_path, GOOD)).model("gpt9")
