"""What a unit writes (autointerp/units/output.py), checked against the logit lens written out here by hand from
the raw weight files of tiny GPT-2 and Llama models (norm gains made non-trivial) and of an SAE's decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.numpy import load_file

from autointerp.config import load_config
from autointerp.stages import Stages
from autointerp.store import Store, queries
from autointerp.units.output import TOP_K
from tests.conftest import make_tokenizer, tiny_config, write_config, write_corpus
from tests.sae_files import write_saelens


def save_with_norm_gains(kind: str, directory: Path) -> Path:
    """A tiny model whose final norm has random gains (and bias): a lens that skipped them would disagree."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(tiny_config(kind))
    norm = model.transformer.ln_f if kind == "gpt2" else model.model.norm
    with torch.no_grad():
        norm.weight.copy_(torch.rand_like(norm.weight) * 2 + 0.2)
        if getattr(norm, "bias", None) is not None:
            norm.bias.copy_(torch.randn_like(norm.bias))
    model.save_pretrained(directory)
    make_tokenizer().save_pretrained(directory)
    return directory


def by_hand(model_dir: Path, kind: str, layer: int, sae_file: Path | None = None) -> np.ndarray:
    """(units, vocab) logits: each unit's direction from the raw tensors, the final norm's linear part (LayerNorm:
    centre, gain; RMSNorm: gain), then the unembedding, in float64."""
    t = {k: v.astype(np.float64) for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    if sae_file is not None:
        directions = load_file(str(sae_file))["W_dec"].astype(np.float64)  # (d_sae, d_model)
    elif kind == "gpt2":
        directions = t[f"transformer.h.{layer}.mlp.c_proj.weight"]  # Conv1D (d_mlp, d_model): a neuron is a row
    else:
        directions = t[f"model.layers.{layer}.mlp.down_proj.weight"].T  # Linear (d_model, d_mlp): a column
    if kind == "gpt2":
        directions = directions - directions.mean(axis=1, keepdims=True)
        gain, unembed = t["transformer.ln_f.weight"], t.get("lm_head.weight", t["transformer.wte.weight"])
    else:
        gain, unembed = t["model.norm.weight"], t.get("lm_head.weight", t.get("model.embed_tokens.weight"))
    return (directions * gain) @ unembed.T


@pytest.fixture
def models(home, monkeypatch) -> dict[str, tuple[Path, str, Path | None]]:
    gpt2 = save_with_norm_gains("gpt2", home / "gpt2")
    llama = save_with_norm_gains("llama", home / "llama")
    sae = write_saelens(home / "sae" / "blocks.1", "blocks.1.hook_resid_post", d_in=32, d_sae=24)
    path = write_config(home, {"gpt2": gpt2, "llama": llama, "llama-sae": llama}, write_corpus(home / "corpus.jsonl"))
    raw = yaml.safe_load(path.read_text())
    raw["models"][2]["units"] = {"kind": "sae", "path": "sae", "format": "saelens"}
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(path))
    return {"gpt2": (gpt2, "gpt2", None), "llama": (llama, "llama", None),
            "llama-sae": (llama, "llama", sae / "sae_weights.safetensors")}


def test_unit_logits_match_the_lens_by_hand_and_are_computed_once(models):
    stages = Stages(load_config(), Store.from_home(), lambda _: None)
    tokenizer = make_tokenizer()
    for name, (directory, kind, sae_file) in models.items():
        revision = stages.excerpts(name).revision
        layers = [1] if sae_file else [0, 2]
        assert stages.unit_logits(name, layers) == layers
        for layer in layers:
            expected = by_hand(directory, kind, layer, sae_file)
            rows = queries.unit_logits(stages.store, name, revision, layer)
            assert len(rows) == expected.shape[0]
            for row in rows.itertuples():
                want = expected[int(row.neuron)]
                order = np.argsort(-want, kind="stable")
                assert list(row.promoted_ids) == order[:TOP_K].tolist(), (name, layer, row.neuron)
                assert list(row.suppressed_ids) == order[::-1][:TOP_K].tolist(), (name, layer, row.neuron)
                np.testing.assert_allclose(row.promoted_logits, want[order[:TOP_K]], rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(row.suppressed_logits, want[order[::-1][:TOP_K]], rtol=1e-4, atol=1e-5)
                assert list(row.promoted_tokens) == [tokenizer.decode([int(i)]) for i in row.promoted_ids]
        assert stages.unit_logits(name, layers) == []  # once per revision: nothing to do the second time


def test_the_writes_format_shows_the_promoted_tokens_and_those_after_the_peaks(project):
    import json

    from autointerp.explain.formats.writes import Writes, following_peaks
    from autointerp.record.records import ActivationRecord

    records = [ActivationRecord(("a", " trip", " to", " Rome"), (0.0, 0.1, 2.0, 0.0)),
               ActivationRecord(("flew", " to", " Oslo"), (0.0, 3.0, 0.0))]
    assert following_peaks(records) == [" Rome", " Oslo"]
    target = Writes().messages(records, (" Paris", " Oslo"))[-2]["content"]
    assert 'Tokens right after the peaks: "' in target and 'Promotes: " Paris", " Oslo"' in target
    assert "Promotes:" not in Writes().messages(records)[-2]["content"]  # not computed: not shown

    raw = yaml.safe_load(project.read_text())
    raw["explainer"]["formats"] = ["writes"]
    project.write_text(yaml.safe_dump(raw))
    stages = Stages(load_config(), Store.from_home(), lambda _: None)
    revision = stages.excerpts("tiny-gpt2").revision
    stages.record("tiny-gpt2", [1])
    stages.unit_logits("tiny-gpt2", [1])
    result = stages.explain("tiny-gpt2", 1)
    assert result.role.startswith("writes:") and len(result.rows) == 2
    promoted = queries.unit_logits(stages.store, "tiny-gpt2", revision, 1, [0]).promoted_tokens[0]
    requests = [json.loads(r) for r in stages.store.query("SELECT request FROM llm_calls").request]
    shown = [m["content"] for r in requests for m in r["messages"] if "Neuron 4" in m["content"]]
    assert any("Promotes: " + ", ".join(f'"{t}"' for t in promoted[:8]) in text for text in shown)
