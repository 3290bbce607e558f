"""SAE and transcoder latents (autointerp/units/sae.py): recorded latents equal a hand computation for every
encoder kind and both file layouts; a planted latent is recovered; bad files get one clear error.

SAELens and sparsify are not installable on this offline machine: the files are written to their documented
on-disk layouts by `tests/sae_files.py`, which also holds the reference encoder (float64 numpy from the files).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from autointerp.config import UnitsChoice
from autointerp.errors import ConfigError, ModelLoadError
from autointerp.record.recorder import record_activations
from autointerp.subject import describe_model, load_model, model_revision, resolve_source
from autointerp.units import build_units
from autointerp.units.sae import SAEOptions
from tests.sae_files import reference_encode, write_saelens, write_sparsify
from tests.test_recording import SPEC, load_excerpts

D_SAE = 24
# (module path under the model, input or output) of each site, written out by hand for the two families
MODULES = {
    "gpt2": {"resid_pre": ("transformer.h.{L}", "input"), "resid_post": ("transformer.h.{L}", "output"),
             "mlp_in": ("transformer.h.{L}.mlp", "input"), "mlp_out": ("transformer.h.{L}.mlp", "output"),
             "attn_out": ("transformer.h.{L}.attn", "output")},
    "llama": {"resid_pre": ("model.layers.{L}", "input"), "resid_post": ("model.layers.{L}", "output"),
              "mlp_in": ("model.layers.{L}.mlp", "input"), "mlp_out": ("model.layers.{L}.mlp", "output"),
              "attn_out": ("model.layers.{L}.self_attn", "output")},
}
SAELENS_HOOKS = {"resid_pre": "hook_resid_pre", "resid_post": "hook_resid_post", "mlp_out": "hook_mlp_out",
                 "attn_out": "hook_attn_out", "mlp_in": "hook_mlp_in"}
SPARSIFY_NAMES = {"gpt2": {"resid_post": "h.{L}", "mlp_out": "h.{L}.mlp", "mlp_in": "h.{L}.mlp",
                           "attn_out": "h.{L}.attn"},
                  "llama": {"resid_post": "layers.{L}", "mlp_out": "layers.{L}.mlp", "mlp_in": "layers.{L}.mlp",
                            "attn_out": "layers.{L}.self_attn"}}
# one dictionary per layer of the 3-layer tiny models; mlp_in is a transcoder
SITE_SETS = {"saelens": [("resid_pre", "mlp_out", "resid_post"), ("attn_out", "mlp_in", "resid_pre")],
             "sparsify": [("attn_out", "mlp_in", "resid_post"), ("resid_post", "mlp_out", "attn_out")]}


def write_dictionaries(root: Path, kind: str, layout: str, architecture: str, sites: tuple[str, ...],
                       d_in: int = 32) -> dict[int, Path]:
    dirs = {}
    for layer, site in enumerate(sites):
        if layout == "saelens":
            arch = "transcoder" if site == "mlp_in" and architecture == "standard" else architecture
            dirs[layer] = write_saelens(root / f"blocks.{layer}.{SAELENS_HOOKS[site]}", f"blocks.{layer}.{SAELENS_HOOKS[site]}",
                                        d_in, D_SAE, arch, seed=layer)
        else:
            name = SPARSIFY_NAMES[kind][site].format(L=layer)
            dirs[layer] = write_sparsify(root / name, d_in, num_latents=D_SAE, transcode=site == "mlp_in", seed=layer)
    return dirs


def hand_latents(model, kind: str, sites: tuple[str, ...], dirs: dict[int, Path], tokens: np.ndarray) -> list[np.ndarray]:
    """Per layer (E, T, D_SAE): the site's tensor caught by hooks written here, encoded by the reference."""
    caught: dict[int, list[torch.Tensor]] = {layer: [] for layer in dirs}
    handles = []
    for layer, site in enumerate(sites):
        path, side = MODULES[kind][site]
        module = model.get_submodule(path.format(L=layer))
        if side == "input":
            handles.append(module.register_forward_pre_hook(
                lambda _m, a, kw, layer=layer: caught[layer].append((a[0] if a else kw["hidden_states"]).detach()),
                with_kwargs=True))
        else:
            handles.append(module.register_forward_hook(
                lambda _m, _a, out, layer=layer: caught[layer].append((out[0] if isinstance(out, tuple) else out).detach())))
    with torch.inference_mode():
        model(input_ids=torch.from_numpy(tokens), use_cache=False)
    for handle in handles:
        handle.remove()
    return [reference_encode(dirs[layer], caught[layer][0].double().numpy()) for layer in sorted(dirs)]


CASES = ([("saelens", arch, sites) for arch in ("standard", "topk", "jumprelu") for sites in SITE_SETS["saelens"]]
         + [("sparsify", "topk", sites) for sites in SITE_SETS["sparsify"]])


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("layout, architecture, sites", CASES, ids=lambda v: "-".join(v) if isinstance(v, tuple) else v)
def test_recorded_latents_equal_the_hand_computation(kind, layout, architecture, sites, tiny_gpt2, tiny_llama,
                                                      tmp_path):
    model_dir = tiny_gpt2 if kind == "gpt2" else tiny_llama
    dirs = write_dictionaries(tmp_path / "sae", kind, layout, architecture, sites)
    units = build_units(UnitsChoice("sae", SAEOptions(path=str(tmp_path / "sae"), format=layout)))
    source, ids, tokens = load_excerpts(model_dir, tmp_path)
    info = describe_model(source, units)
    assert (info.n_neurons, info.layers) == (D_SAE, (0, 1, 2))
    model = load_model(source)
    batches = [(ids[i:i + 8], tokens[i:i + 8]) for i in range(0, len(ids), 8)]
    results = record_activations(model, units, [0, 1, 2], batches, SPEC, 0, D_SAE, len(ids), log=lambda _: None)
    truth = hand_latents(model, kind, sites, dirs, tokens)
    for layer in (0, 1, 2):
        rec, expected = results[layer], truth[layer]  # expected: (E, T, N)
        assert (expected > 0).any(), "the test SAE never fires: nothing is compared"
        for kind_ids, kind_acts in ((rec.top_ids, rec.top_acts), (rec.random_ids, rec.random_acts)):
            want = expected[kind_ids, :, np.arange(D_SAE)[:, None]]  # (N, k, T)
            np.testing.assert_allclose(kind_acts, want, atol=1e-5, rtol=0)
        np.testing.assert_allclose(rec.stats["max"], expected.reshape(-1, D_SAE).max(0), atol=1e-5)
        if architecture == "topk":  # at most k latents per token
            assert ((expected > 0).sum(-1) <= 5).all()


PLANTED, DEAD = 0, 1


def planted_sae(root: Path, model, token: int) -> Path:
    """A ReLU SAE at the residual stream before layer 0 (the token embedding in the Llama family): latent 0 reads
    the embedding of `token`, with a bias that silences every other token; latent 1 is dead."""
    emb = model.model.embed_tokens.weight.detach().double()
    direction = emb[token] / emb[token].norm()
    others = torch.cat([emb[:token], emb[token + 1:]]) @ direction
    g = torch.Generator().manual_seed(1)
    w_enc = torch.randn(emb.shape[1], 4, generator=g) * 0.2
    w_enc[:, PLANTED] = direction.float()
    b_enc = torch.zeros(4)
    assert emb[token].norm() > others.max() + 0.1, "the planted direction must separate the token"
    b_enc[PLANTED] = -float(others.max() + (emb[token].norm() - others.max()) / 2)
    b_enc[DEAD] = -1e4
    return write_saelens(root, "blocks.0.hook_resid_pre", emb.shape[1], 4, "standard", apply_b_dec_to_input=False,
                         tensors={"W_enc": w_enc, "b_enc": b_enc})


def test_a_planted_latent_is_recovered_through_the_pipeline_and_dead_latents_are_not_explained(tiny_llama, home,
                                                                                               monkeypatch):
    from autointerp.config import load_config
    from autointerp.stages import Stages
    from autointerp.store import Store, queries
    from autointerp.subject import load_tokenizer
    from tests.conftest import SCRIPTED_EXPLAINER, SCRIPTED_SIMULATOR, write_config, write_corpus

    tokenizer = load_tokenizer(resolve_source(str(tiny_llama)))
    river = tokenizer.convert_tokens_to_ids("river")
    sae_dir = planted_sae(home / "sae", load_model(resolve_source(str(tiny_llama))), river)
    path = write_config(home, {"tiny-llama": tiny_llama}, write_corpus(home / "corpus.jsonl"),
                        explainer=SCRIPTED_EXPLAINER, simulator=SCRIPTED_SIMULATOR, neurons={"select": "all"})
    import yaml

    raw = yaml.safe_load(path.read_text())
    raw["models"][0]["units"] = {"kind": "sae", "path": "sae", "format": "saelens"}  # relative to the config
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(path))
    logs: list[str] = []
    stages = Stages(load_config(), Store.from_home(), logs.append)
    excerpts = stages.excerpts("tiny-llama")
    assert excerpts.info.units.startswith("sae:saelens:sha256:") and excerpts.info.layers == (0,)
    with pytest.raises(ModelLoadError, match="no sae:saelens:.* units in layer 1"):
        stages.record("tiny-llama", [0, 1])
    stages.record("tiny-llama", [0])
    revision = excerpts.revision
    records = stages.neuron_records("tiny-llama", revision, 0)
    assert sorted(records) == [0, 2, 3]  # the dead latent is not selected
    assert any("1 units of layer 0" in line for line in logs)
    assert queries.dead_units(stages.store, "tiny-llama", revision, 0) == [DEAD]
    planted = records[PLANTED]
    with_river = stages.store.query("SELECT count(*) AS n FROM excerpts WHERE model = ? AND list_contains(token_ids, ?)",
                                    ["tiny-llama", river]).n[0]
    assert len(planted.top) == min(SPEC.top, with_river) > 0
    for record in planted.top:
        fired = {tok for tok, act in zip(record.tokens, record.activations) if act > 0}
        assert fired == {"river"}
        assert record.tokens[int(np.argmax(record.activations))] == "river"
    # the SAE's bytes are part of the revision: another SAE, another revision
    before = model_revision(resolve_source(str(tiny_llama)), build_units(load_config().model("tiny-llama").units,
                                                                        home).files())
    write_saelens(sae_dir, "blocks.0.hook_resid_pre", 32, 4, seed=9)
    units = build_units(load_config().model("tiny-llama").units, home)
    assert model_revision(resolve_source(str(tiny_llama)), units.files()) != before


def test_bad_dictionaries_get_one_clear_error(tiny_gpt2, tmp_path):
    from autointerp.config.parse import build_choice

    source = resolve_source(str(tiny_gpt2))

    def describe(path: Path, layout: str = "saelens", hook: str = ""):
        return describe_model(source, build_units(UnitsChoice("sae", SAEOptions(str(path), layout, hook))))

    with pytest.raises(ConfigError, match="unknown SAE file format 'sae-lens'; known: saelens, sparsify"):
        build_choice("units", {"kind": "sae", "path": "x", "format": "sae-lens"}, "models[0].units")
    with pytest.raises(ConfigError, match="units.path: the directory of the SAE files is required"):
        build_choice("units", {"kind": "sae"}, "models[0].units")
    with pytest.raises(ModelLoadError, match="is not a directory"):
        describe(tmp_path / "missing")
    write_saelens(tmp_path / "wide", "blocks.0.hook_resid_pre", 64, D_SAE)
    with pytest.raises(ModelLoadError, match="d_in 64 does not match the model's hidden size 32"):
        describe(tmp_path / "wide")
    write_saelens(tmp_path / "deep", "blocks.7.hook_resid_post", 32, D_SAE)
    with pytest.raises(ModelLoadError, match="reads layer 7, but the model has layers 0-2"):
        describe(tmp_path / "deep")
    write_saelens(tmp_path / "head", "blocks.0.attn.hook_z", 32, D_SAE)
    with pytest.raises(ModelLoadError, match="hook_name 'blocks.0.attn.hook_z' is not a hook point we can read"):
        describe(tmp_path / "head")
    write_saelens(tmp_path / "gated", "blocks.0.hook_resid_pre", 32, D_SAE, architecture="gated")
    with pytest.raises(ModelLoadError, match="architecture 'gated' is not supported"):
        describe(tmp_path / "gated")
    write_sparsify(tmp_path / "sp" / "layers.0", 32)
    with pytest.raises(ModelLoadError, match="no sae_weights.safetensors.*format: sparsify"):
        describe(tmp_path / "sp")
    write_sparsify(tmp_path / "sp2" / "lm_head", 32)
    with pytest.raises(ModelLoadError, match="'lm_head' is not a hookpoint we can read"):
        describe(tmp_path / "sp2", "sparsify")
    write_sparsify(tmp_path / "two" / "h.0", 32)
    write_sparsify(tmp_path / "two" / "h.0.mlp", 32)
    with pytest.raises(ModelLoadError, match="two dictionaries for layer 0"):
        describe(tmp_path / "two", "sparsify")
    assert describe(tmp_path / "two", "sparsify", "mlp_out").n_neurons == D_SAE  # `hook:` picks one
    for bad, text in (("1e400", "inf"), ("Infinity", "inf"), ("0.5", "0.5"), ('"24"', "'24'")):
        write_saelens(tmp_path / "huge", "blocks.0.hook_resid_pre", 32, D_SAE)
        cfg_path = tmp_path / "huge" / "cfg.json"
        cfg_path.write_text(cfg_path.read_text().replace(f'"d_sae": {D_SAE}', f'"d_sae": {bad}'))
        with pytest.raises(ModelLoadError, match=f"{re.escape(str(cfg_path))}: d_sae must be a positive integer.*got {text}"):
            describe(tmp_path / "huge")
    write_saelens(tmp_path / "k", "blocks.0.hook_resid_pre", 32, D_SAE, architecture="topk", k=D_SAE + 1)
    with pytest.raises(ModelLoadError, match=f"k {D_SAE + 1} is more than the {D_SAE} latents"):
        describe(tmp_path / "k")  # at once, not after a forward pass
    for name, content in (("cut", None), ("foreign", b"PK\x03\x04 not safetensors at all")):
        write_saelens(tmp_path / name, "blocks.0.hook_resid_pre", 32, D_SAE)
        weights = tmp_path / name / "sae_weights.safetensors"
        weights.write_bytes(weights.read_bytes()[:100] if content is None else content)
        units = build_units(UnitsChoice("sae", SAEOptions(str(tmp_path / name))))
        with pytest.raises(ModelLoadError, match=f"SAE file {re.escape(str(weights))}: not a readable safetensors file"):
            units.activations(0, torch.zeros(1, 2, 32))
    # weights that disagree with cfg.json are caught when loaded
    write_saelens(tmp_path / "shape", "blocks.0.hook_resid_pre", 32, D_SAE, tensors={"b_enc": torch.zeros(5)})
    units = build_units(UnitsChoice("sae", SAEOptions(str(tmp_path / "shape"))))
    with pytest.raises(ModelLoadError, match=r"encoder bias has shape \(5,\), but cfg.json says \(24,\)"):
        units.activations(0, torch.zeros(1, 2, 32))


def test_latents_go_through_the_dagster_pipeline_export_import_and_viewer_like_neurons(tiny_llama, home, monkeypatch):
    """Record -> explain -> simulate -> score as Dagster assets (scripted LLM), then export, import and the viewer."""
    import dagster as dg
    import yaml

    from autointerp.io.export import export_neuron_records
    from autointerp.io.imports import import_neuron_records
    from autointerp.store import Store
    from autointerp.subject import load_tokenizer
    from autointerp.viewer.site import build_site
    from orchestration.partitions import register_model
    from tests.conftest import SCRIPTED_EXPLAINER, SCRIPTED_SIMULATOR, write_config, write_corpus
    from tests.test_explain_pipeline import metadata
    from tests.test_pipeline import check_results, run

    river = load_tokenizer(resolve_source(str(tiny_llama))).convert_tokens_to_ids("river")
    planted_sae(home / "sae", load_model(resolve_source(str(tiny_llama))), river)
    path = write_config(home, {"tiny-llama": tiny_llama}, write_corpus(home / "corpus.jsonl"),
                        explainer=SCRIPTED_EXPLAINER, simulator=SCRIPTED_SIMULATOR, neurons={"select": "first", "count": 2})
    raw = yaml.safe_load(path.read_text())
    raw["models"][0]["units"] = {"kind": "sae", "path": str(home / "sae")}
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(path))
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        register_model(instance, "tiny-llama", 3)
        assert run(instance, ["excerpts"], "tiny-llama").success
        result = run(instance, ["activation_records", "neuron_stats", "explanations", "simulations", "scores"],
                     "tiny-llama", layers=[0, 0])
        assert result.success and all(check_results(result).values())
        assert metadata(result, "neuron_stats")["dead_units"] == 1
        assert metadata(result, "neuron_stats")["dead_units_by_layer"] == {"0": 1}
    store = Store.from_home()
    scores = store.query("SELECT neuron, explanation, score_top_and_random FROM scores ORDER BY neuron")
    assert scores.neuron.tolist() == [0, 2]  # first 2 live latents: the dead one is skipped
    planted = scores.iloc[0]
    assert '"river"' in planted.explanation and planted.score_top_and_random > 0.9  # the scripted rule finds it
    assert len(export_neuron_records(store, "tiny-llama", home / "export")) == 4  # every latent of layer 0
    assert import_neuron_records(store, "imported-sae", home / "export").neurons == 4
    index = build_site(store, "tiny-llama", home / "site")
    assert "river" in index.read_text()


def test_the_demo_trainer_is_an_asset_with_its_metrics_and_its_sae_is_read_back_exactly(tiny_llama, home, monkeypatch):
    import dagster as dg
    import yaml

    from autointerp.config import load_config
    from autointerp.units.train import collect, encode
    from orchestration.definitions import ASSETS, RESOURCES
    from tests.conftest import write_config, write_corpus

    path = write_config(home, {"tiny-llama": tiny_llama}, write_corpus(home / "corpus.jsonl"))
    raw = yaml.safe_load(path.read_text())
    raw["models"].append({"name": "tiny-llama-sae", "source": str(tiny_llama), "units": {"kind": "sae", "path": "sae"}})
    raw["sae_training"] = {"model": "tiny-llama", "layers": [1], "site": "resid_post", "latents": 64, "k": 4,
                           "tokens": 64 * 40, "epochs": 30, "batch_size": 256, "lr": 0.01, "out": "sae"}
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(path))
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        result = dg.materialize(ASSETS, selection=["sae_dictionary"], instance=instance, resources=RESOURCES)
        [event] = result.get_asset_materialization_events()
        meta = {k: v.value for k, v in event.materialization.metadata.items()}
    assert meta["fraction_variance_explained"] > 0.5  # 64 latents, 4 active, on a 32-dim residual stream
    assert meta["l0"] <= 4 and meta["layers"]["1"]["tokens"] == 64 * 40
    assert (home / "sae" / "blocks.1.hook_resid_post" / "sae_weights.safetensors").is_file()
    # the saved SAE, read back as units, gives what the trainer's own encoder gives
    units = build_units(load_config().model("tiny-llama-sae").units, home)
    source, ids, tokens = load_excerpts(tiny_llama, home, n_excerpts=4)
    model = load_model(source)
    x = collect(model, [1], "resid_post", [torch.from_numpy(tokens)])[1]
    from safetensors.torch import load_file

    w = load_file(str(home / "sae" / "blocks.1.hook_resid_post" / "sae_weights.safetensors"))
    np.testing.assert_allclose(units.activations(1, x).numpy(), encode(x, w, 4)[0].numpy(), atol=1e-5)
    # dead over all training tokens implies silent on these 4 excerpts too: a count above that is wrong
    silent_here = int((~(encode(x, w, 4)[0] > 0).any(0)).sum())
    assert meta["dead_latents"] == meta["layers"]["1"]["dead_latents"] <= silent_here < 64


def test_the_demo_config_loads_and_sae_training_is_checked(tmp_path):
    from autointerp.config import REPO_ROOT, load_config

    config = load_config(REPO_ROOT / "autointerp-sae.yaml")
    assert config.models[0].units.kind == "sae" and config.sae_training.layers == (4,)
    base = "models: [{name: m, source: x}]\n"
    for text, message in (("sae_training: {model: other}", "sae_training.model 'other' is not a configured model"),
                          ("sae_training: {k: 99, latents: 8}", "k at most latents"),
                          ("sae_training: {site: hook_z}", "sae_training.site must be one of resid_pre"),
                          ("sae_training: {lattents: 8}", r"sae_training: unknown key\(s\) 'lattents'")):
        (tmp_path / "c.yaml").write_text(base + text + "\n")
        with pytest.raises(ConfigError, match=message):
            load_config(tmp_path / "c.yaml")


def test_run_plans_only_the_layers_that_have_latents(tiny_gpt2, home):
    import yaml

    from autointerp.config import load_config
    from autointerp.errors import AutointerpError
    from autointerp.store import Store
    from orchestration.cli.run import plan
    from tests.conftest import write_config, write_corpus

    write_saelens(home / "sae" / "a", "blocks.2.hook_resid_post", 32, D_SAE)
    path = write_config(home, {"g": tiny_gpt2}, write_corpus(home / "corpus.jsonl"))
    raw = yaml.safe_load(path.read_text())
    raw["models"][0]["units"] = {"kind": "sae", "path": "sae"}
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    stages = ["record", "explain", "simulate", "score"]
    assert plan(config, Store.from_home(), "g", None, stages).record == [2]
    assert plan(config, Store.from_home(), "g", "2", stages).record == [2]
    assert plan(config, Store.from_home(), "g", "all", stages).record == [2]
    with pytest.raises(AutointerpError, match="has units .* in layers 2 only; not in 0-1"):
        plan(config, Store.from_home(), "g", "0-2", stages)
