"""Recording: hooks read the right tensor, streaming equals brute force, results are deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autointerp.config import CorpusSpec, RecordSpec
from autointerp.corpus import EXCERPT_TOKENS, iter_documents, resolve_corpus_paths
from autointerp.corpus.excerpts import excerpts_table
from autointerp.record.recorder import expected_counts, record_activations
from autointerp.record.streaming import Moments, StreamingTopK, random_priorities
from autointerp.subject import load_model, load_tokenizer, resolve_source
from autointerp.units.mlp import MLPNeurons
from tests.conftest import write_corpus
from tests.reference import manual_neurons

SPEC = RecordSpec(top=5, random=4, random_pool=12, quantile_bands=3, per_band=2, batch_size=8)


def load_excerpts(model_dir, tmp_path, n_excerpts=40):
    source = resolve_source(str(model_dir))
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    spec = CorpusSpec(paths=(str(corpus),), max_tokens=64 * n_excerpts)
    table = excerpts_table(load_tokenizer(source), iter_documents(resolve_corpus_paths(spec.paths, tmp_path)),
                           spec.max_tokens, "m", "r", log=lambda _: None)
    ids = table.column("excerpt_id").to_numpy()  # int32, as the store returns them
    tokens = np.asarray(table.column("token_ids").to_pylist(), dtype=np.int64)
    return source, ids, tokens


def run_recording(model, ids, tokens, layers, batch_size=8, seed=0, spec=SPEC):
    batches = [(ids[i:i + batch_size], tokens[i:i + batch_size]) for i in range(0, len(ids), batch_size)]
    n_neurons = describe_model_from(model)
    return record_activations(model, MLPNeurons(), layers, batches, spec, seed, n_neurons, len(ids),
                              log=lambda _: None)


def describe_model_from(model) -> int:
    cfg = model.config
    return cfg.n_inner or 4 * cfg.n_embd if cfg.model_type == "gpt2" else cfg.intermediate_size


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_recorded_activations_equal_a_manual_forward_pass(kind, tiny_gpt2, tiny_llama, tmp_path):
    model_dir = tiny_gpt2 if kind == "gpt2" else tiny_llama
    source, ids, tokens = load_excerpts(model_dir, tmp_path)
    model = load_model(source)
    layers = list(range(model.config.num_hidden_layers))
    results = run_recording(model, ids, tokens, layers)
    manual = [manual_neurons(model, row.tolist()) for row in tokens]  # [excerpt][layer] -> (T, N)
    for layer in layers:
        truth = torch.stack([m[layer] for m in manual]).numpy()  # (E, T, N)
        rec = results[layer]
        # every stored activation vector is the manual one for that (excerpt, neuron)
        for kind_ids, kind_acts in ((rec.top_ids, rec.top_acts), (rec.random_ids, rec.random_acts),
                                    (rec.quantile_ids.reshape(rec.n_neurons, -1),
                                     rec.quantile_acts.reshape(rec.n_neurons, -1, EXCERPT_TOKENS))):
            expected = truth[kind_ids, :, np.arange(rec.n_neurons)[:, None]]  # (N, k, T)
            np.testing.assert_allclose(kind_acts, expected, atol=1e-5, rtol=0)
        # top-k by brute force over every excerpt
        excerpt_max = truth.max(axis=1)  # (E, N)
        brute = np.argsort(-excerpt_max, axis=0, kind="stable")[: SPEC.top].T  # (N, k)
        np.testing.assert_allclose(excerpt_max[rec.top_ids, np.arange(rec.n_neurons)[:, None]],
                                   excerpt_max[brute, np.arange(rec.n_neurons)[:, None]], atol=1e-5)
        np.testing.assert_array_equal(rec.top_ids, brute)  # ties go to the earlier excerpt, as in a stable sort
        # stats against numpy in float64
        flat = truth.reshape(-1, truth.shape[-1]).astype(np.float64)
        mean, var = flat.mean(0), flat.var(0)
        d = flat - mean
        np.testing.assert_allclose(rec.stats["mean"], mean, atol=1e-6)
        np.testing.assert_allclose(rec.stats["variance"], var, rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose(rec.stats["skewness"], (d**3).mean(0) / var**1.5, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(rec.stats["kurtosis"], (d**4).mean(0) / var**2 - 3, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(rec.stats["max"], flat.max(0), atol=1e-5)
        np.testing.assert_allclose(rec.stats["frac_positive"], (flat > 0).mean(0))
        assert (rec.stats["count"] == flat.shape[0]).all()


def test_record_counts_follow_the_spec_and_bands_are_ordered(tiny_llama, tmp_path):
    source, ids, tokens = load_excerpts(tiny_llama, tmp_path)
    rec = run_recording(load_model(source), ids, tokens, [1])[1]
    counts = expected_counts(SPEC, len(ids))
    assert rec.top_ids.shape[1] == counts["top"] == 5
    assert rec.random_ids.shape[1] == counts["random"] == 4
    assert rec.quantile_ids.shape[1] * rec.quantile_ids.shape[2] == counts["quantile"] == 6
    bounds = rec.quantile_boundaries
    assert (np.diff(bounds, axis=1) >= 0).all()
    band_max = rec.quantile_acts.max(axis=-1)  # (N, bands, per_band)
    for band in range(bands := rec.quantile_ids.shape[1]):
        assert (band_max[:, band] >= bounds[:, band:band + 1] - 1e-6).all()
        upper = bounds[:, band + 1:band + 2] if band < bands - 1 else bounds[:, -1:]
        assert (band_max[:, band] <= upper + 1e-6).all()
    # random records are distinct excerpts, drawn without replacement
    assert all(len(set(row)) == len(row) for row in rec.random_ids.tolist())


def test_recording_is_deterministic_for_a_seed_whatever_the_batch_size(tiny_gpt2, tmp_path):
    source, ids, tokens = load_excerpts(tiny_gpt2, tmp_path)
    model = load_model(source)
    a = run_recording(model, ids, tokens, [0, 2], batch_size=8, seed=3)
    b = run_recording(model, ids, tokens, [0, 2], batch_size=5, seed=3)
    c = run_recording(model, ids, tokens, [0, 2], batch_size=8, seed=4)
    for layer in (0, 2):
        np.testing.assert_array_equal(a[layer].top_ids, b[layer].top_ids)
        np.testing.assert_array_equal(a[layer].random_ids, b[layer].random_ids)
        np.testing.assert_array_equal(a[layer].quantile_ids, b[layer].quantile_ids)
        assert not np.array_equal(a[layer].random_ids, c[layer].random_ids)


def test_the_forward_pass_stops_after_the_deepest_requested_layer(tiny_gpt2, tmp_path):
    source, ids, tokens = load_excerpts(tiny_gpt2, tmp_path, n_excerpts=8)
    model = load_model(source)
    calls = {"layer2_mlp": 0, "lm_head": 0}
    model.transformer.h[2].mlp.register_forward_hook(lambda *_: calls.__setitem__("layer2_mlp", calls["layer2_mlp"] + 1))
    model.lm_head.register_forward_hook(lambda *_: calls.__setitem__("lm_head", calls["lm_head"] + 1))
    run_recording(model, ids, tokens, [0, 1])
    assert calls == {"layer2_mlp": 0, "lm_head": 0}
    assert not model.transformer.h[0].mlp.c_proj._forward_pre_hooks  # hooks are removed afterwards


def test_streaming_top_k_equals_brute_force_on_random_batches():
    generator = torch.Generator().manual_seed(0)
    n, k, t = 50, 7, 6
    buffer = StreamingTopK(n, k, t)
    chunks = []
    for start in range(0, 200, 13):
        acts = torch.randn(13, t, n, generator=generator)
        buffer.offer(acts.amax(dim=1), torch.arange(start, start + 13), acts)
        chunks.append(acts)
    everything = torch.cat(chunks)  # (E, T, N)
    values, order = everything.amax(dim=1).T.topk(k, dim=1)
    keys, ids, acts = buffer.sorted()
    assert torch.equal(ids, order)
    assert torch.equal(keys, values)
    assert torch.equal(acts, everything.permute(2, 0, 1).gather(1, order[..., None].expand(-1, -1, t)))


def test_moments_merge_equals_numpy_in_float64():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3000, 9, generator=generator).exp() * 3 + 5  # skewed, with a large mean
    moments = Moments(9)
    for chunk in x.split(700):
        moments.update(chunk)
    stats = moments.finish()
    ref = x.double().numpy()
    d = ref - ref.mean(0)
    var = (d**2).mean(0)
    np.testing.assert_allclose(stats["mean"], ref.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["variance"], var, rtol=1e-5)
    np.testing.assert_allclose(stats["skewness"], (d**3).mean(0) / var**1.5, rtol=1e-4)
    np.testing.assert_allclose(stats["kurtosis"], (d**4).mean(0) / var**2 - 3, rtol=1e-4)


def test_random_priorities_are_uniform_and_depend_only_on_their_inputs():
    keys = random_priorities(7, 2, np.arange(4000), 50).numpy()
    assert keys.shape == (4000, 50) and 0 <= keys.min() and keys.max() < 1
    assert abs(keys.mean() - 0.5) < 0.01 and abs(keys.var() - 1 / 12) < 0.002
    np.testing.assert_array_equal(random_priorities(7, 2, np.arange(100, 200), 50).numpy(), keys[100:200])
    assert not np.array_equal(random_priorities(8, 2, np.arange(10), 50), random_priorities(7, 2, np.arange(10), 50))
    assert not np.array_equal(random_priorities(7, 3, np.arange(10), 50), random_priorities(7, 2, np.arange(10), 50))
