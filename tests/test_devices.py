"""Device logic, on the CPU: which device a `device` key names, the dtype picked there, batch sizes from free memory,
one clear error for a bad value, and the recorder's and the generator's device-aware paths against independent
computations. The CUDA runs themselves are `bench/gpu.py` (a device check), not pytest."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from autointerp.config import RecordSpec, load_config
from autointerp.devices import batch_size_for, describe_device, pick_dtype, resolve_device
from autointerp.errors import ConfigError
from autointerp.llm.batched import BatchedGenerator, Row
from autointerp.llm.local import LocalOptions, row_bytes
from autointerp.record import recorder
from autointerp.record.streaming import random_priorities
from autointerp.subject import load_model, resolve_source
from tests.test_config import GOOD, write


# --- the `device` key ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, cuda_devices, expected", [
    ("auto", 0, "cpu"), ("auto", 2, "cuda:0"), ("cpu", 2, "cpu"), ("cuda", 1, "cuda:0"), ("cuda:1", 2, "cuda:1"),
    (" cuda:0 ", 1, "cuda:0"),
])
def test_a_device_key_names_a_torch_device(spec, cuda_devices, expected):
    assert resolve_device(spec, "x.device", cuda_devices=cuda_devices) == torch.device(expected)


def test_auto_follows_what_torch_sees_here():
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == torch.device(expected)
    assert describe_device(torch.device("cpu")) == "cpu"


@pytest.mark.parametrize("spec, cuda_devices, message", [
    ("cuda", 0, "models.device is 'cuda', but torch sees no CUDA device here"),
    ("cuda:0", 0, "models.device is 'cuda:0', but torch sees no CUDA device here"),
    ("cuda:7", 2, "models.device is 'cuda:7', but this machine has 2 CUDA device(s): cuda:0 to cuda:1"),
    ("tpu", 2, "models.device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    ("cuda:-1", 2, "models.device must be auto, cpu, cuda or cuda:N"),
    ("gpu", 0, "must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    (3, 0, "must be auto, cpu, cuda or cuda:N, got 3"),
])
def test_a_device_that_is_not_there_is_one_config_error_naming_the_key(spec, cuda_devices, message):
    with pytest.raises(ConfigError) as error:
        resolve_device(spec, "models.device", cuda_devices=cuda_devices)
    assert message in str(error.value)


def test_no_cuda_error_says_how_to_get_a_cuda_build():
    with pytest.raises(ConfigError, match="install a CUDA build of torch"):
        resolve_device("cuda", "k", cuda_devices=0)


@pytest.mark.parametrize("section, message", [
    ("models:\n  - {name: tiny, source: ./model, device: tpu}\n", "model 'tiny': device must be auto, cpu, cuda or "
     "cuda:N, got 'tpu'"),
    ("models:\n  - {name: tiny, source: ./model, device: 0}\n", "models[0].device: must be a string, got 0"),
    ("explainer: {llm: {device: 'cuda:x'}}\n", "explainer.llm.device must be auto, cpu, cuda or cuda:N, got 'cuda:x'"),
    ("simulator: {kind: embedding, device: metal}\n", "simulator.device must be auto, cpu, cuda or cuda:N"),
    ("sae_training: {device: tpu}\n", "sae_training.device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    ("explainer: {llm: {device_batch: 0}}\n", "device_batch must be positive"),
])
def test_a_malformed_device_key_fails_when_the_config_is_read(tmp_path, section, message):
    text = GOOD.replace("models:\n  - {name: tiny, source: ./model}\n", "") if section.startswith("models") else GOOD
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, section + text if section.startswith("models") else text + section))
    assert message in str(error.value) and "autointerp.yaml" in str(error.value)


def test_device_keys_default_to_auto_and_a_cuda_key_loads_on_any_machine(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert config.model("tiny").device == "auto" and config.sae_training.device == "auto"
    assert config.explainer.options.llm.options.device == "auto"
    # The config may be written for the GPU machine: `cuda:1` is well formed; only its first use here fails.
    config = load_config(write(tmp_path, GOOD.replace("source: ./model}", "source: ./model, device: 'cuda:1'}")))
    assert config.model("tiny").device == "cuda:1"


def test_a_subject_on_a_missing_device_fails_at_first_use_naming_its_key(tiny_llama, monkeypatch):
    from autointerp.config import ModelSpec
    from autointerp.config.parse import build_choice
    from autointerp.subject import Subject

    monkeypatch.setattr("autointerp.devices.cuda_device_count", lambda: 0)
    spec = ModelSpec("tiny", str(tiny_llama), device="cuda", units=build_choice("units", {}, "units"))
    with pytest.raises(ConfigError, match="model 'tiny': device is 'cuda', but torch sees no CUDA device"):
        Subject.of(spec).load()


def test_the_local_llm_hands_device_batch_requests_per_call_on_cuda_and_chat_batch_on_the_cpu(monkeypatch):
    options = LocalOptions(chat_batch=8, device_batch=192)
    assert options.rows_per_call() == (192 if torch.cuda.is_available() else 8)
    monkeypatch.setattr("autointerp.devices.cuda_device_count", lambda: 1)
    assert options.rows_per_call() == 192
    assert LocalOptions(chat_batch=8, device="cpu").rows_per_call() == 8
    monkeypatch.setattr("autointerp.devices.cuda_device_count", lambda: 0)
    with pytest.raises(ConfigError, match=r"llm.device \(local backend\) is 'cuda:2'"):
        LocalOptions(device="cuda:2").rows_per_call()


# --- dtype --------------------------------------------------------------------------------------------------


def test_dtype_auto_is_float32_on_a_cpu_without_native_bf16_and_bf16_with_it():
    assert pick_dtype("auto", "cpu", cpu_has_bf16=False) == torch.float32
    assert pick_dtype("auto", "cpu", cpu_has_bf16=True) == torch.bfloat16
    assert pick_dtype("float16", "cpu", cpu_has_bf16=True) == torch.float16  # asked for: kept
    with pytest.raises(ConfigError, match="dtype must be auto, float32, bfloat16 or float16, got 'float8'"):
        pick_dtype("float8", "cpu")


def test_dtype_auto_on_cuda_is_bf16_where_the_card_has_it_else_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_dtype("auto", torch.device("cuda", 0)) == torch.float16  # a V100 or T4


# --- batch sizes from free memory ------------------------------------------------------------------------------


GiB = 2**30


@pytest.mark.parametrize("free, per, fixed, kwargs, expected", [
    (10 * GiB, 100 * 2**20, 0, {}, 81),  # 8 GiB usable / 100 MiB = 81.92
    (10 * GiB, 100 * 2**20, 0, {"multiple": 8}, 80),
    (10 * GiB, 100 * 2**20, 2 * GiB, {}, 61),  # the recorders' state comes off first
    (10 * GiB, 100 * 2**20, 0, {"headroom": 0.5}, 51),
    (80 * GiB, 1 * 2**20, 0, {"high": 256}, 256),  # capped
    (1 * GiB, 2 * GiB, 0, {}, 1),  # nothing fits: one at a time, never zero
    (1 * GiB, 100 * 2**20, 4 * GiB, {"low": 4}, 4),  # the fixed part alone overflows: the floor
    (10 * GiB, 100 * 2**20, 0, {"multiple": 100}, 81),  # a multiple larger than what fits is not forced
])
def test_batch_size_for_free_memory(free, per, fixed, kwargs, expected):
    assert batch_size_for(free, per, fixed_bytes=fixed, **kwargs) == expected


def test_batch_size_for_rejects_nonsense():
    with pytest.raises(ValueError):
        batch_size_for(GiB, 0)
    with pytest.raises(ValueError):
        batch_size_for(GiB, 1, low=8, high=4)


def test_llm_row_bytes_counts_the_kv_cache_of_a_qwen_shape():
    qwen = SimpleNamespace(hidden_size=1536, num_attention_heads=12, num_key_value_heads=2, num_hidden_layers=28,
                           intermediate_size=8960, vocab_size=151936)
    tokens = 1240  # a 1,200-token prompt and 40 new tokens
    kv = 2 * 28 * 2 * 128 * tokens * 2  # keys and values, 28 layers, 2 KV heads of 128, bf16: 35.6 MB
    extra = tokens * (8 * 1536 + 3 * 8960) * 2 + 12 * tokens * tokens * 2 + 151936 * 16
    assert row_bytes(qwen, tokens, 2) == kv + extra
    # 60 GiB free on an 80 GB card: the device batch (256 at most) is reached for such rows
    assert batch_size_for(60 * GiB, row_bytes(qwen, tokens, 2), high=256, multiple=8) == 256
    assert batch_size_for(8 * GiB, row_bytes(qwen, tokens, 2), high=256, multiple=8) == 32


def test_recording_batch_size_is_the_config_s_on_the_cpu_and_follows_free_memory_on_cuda(tiny_llama, monkeypatch):
    model = load_model(resolve_source(str(tiny_llama)))
    spec = RecordSpec(batch_size=16)
    n = model.config.intermediate_size
    assert recorder.recording_batch_size(model, n, 2, spec) == 16  # the CPU: records.batch_size
    per = recorder.excerpt_bytes(model.config.hidden_size, n, n, 4, max_k=spec.random_pool)
    state = 2 * recorder.recorder_state_bytes(n, spec)
    free = int((state + 100.5 * per) / 0.8)  # room for 100 excerpts and a half after the state
    monkeypatch.setattr(recorder, "free_memory", lambda _device: free)
    assert recorder.recording_batch_size(model, n, 2, spec) == 96  # 100, rounded down to a multiple of 8
    monkeypatch.setattr(recorder, "free_memory", lambda _device: 64 * GiB)
    assert recorder.recording_batch_size(model, n, 2, spec) == recorder.RECORD_BATCH_CAP


def test_excerpt_bytes_of_a_smollm2_shape():
    # SmolLM2-135M: hidden 576, 1536 MLP neurons, bf16; 64 tokens
    forward = 64 * (8 * 576 + 3 * 1536) * 2
    reductions = 64 * 1536 * 4 * 6 + 1536 * 32 + 1536 * 8 * 4 * (1 + 100 // 64)
    assert recorder.excerpt_bytes(576, 1536, 1536, 2, max_k=100) == forward + reductions


# --- device-aware paths on the CPU against independent computations ---------------------------------------------


def splitmix64_numpy(seed: int, layer: int, excerpt_ids: np.ndarray, n_neurons: int) -> np.ndarray:
    """The uint64 formula the recorder's keys were first computed with (numpy), kept here as the reference."""
    with np.errstate(over="ignore"):
        x = excerpt_ids.astype(np.uint64)[:, None] * np.uint64(n_neurons) + np.arange(n_neurons, dtype=np.uint64)
        x = x + np.uint64((seed * 0x9E3779B97F4A7C15 + (layer + 1) * 0xD1B54A32D192ED03) % 2**64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


@pytest.mark.parametrize("seed, layer", [(0, 0), (7, 29), (2**31 - 1, 3)])
def test_torch_random_keys_are_bit_identical_to_the_uint64_formula(seed, layer):
    ids = np.arange(0, 300_000, 97, dtype=np.int32)  # int32, as the store returns them; large ids overflow uint64
    np.testing.assert_array_equal(random_priorities(seed, layer, ids, 1536).numpy(),
                                  splitmix64_numpy(seed, layer, ids, 1536))
    as_tensor = random_priorities(seed, layer, torch.from_numpy(ids.astype(np.int64)), 1536, device="cpu")
    np.testing.assert_array_equal(as_tensor.numpy(), splitmix64_numpy(seed, layer, ids, 1536))


def test_a_half_precision_subject_is_recorded_with_float32_statistics(tiny_llama, tmp_path):
    """bf16 model: the records are its bf16 activations exactly (captured by a hook of our own, batch by batch), and
    the moments are those of those values computed in float64 by numpy, not bf16 sums."""
    from autointerp.units.mlp import MLPNeurons
    from tests.test_recording import SPEC, load_excerpts

    source, ids, tokens = load_excerpts(tiny_llama, tmp_path, n_excerpts=24)
    model = load_model(source, "bfloat16", torch.device("cpu"))
    n = model.config.intermediate_size
    seen: list[torch.Tensor] = []
    module, side = MLPNeurons().hook_point(model, 1)
    assert side == "input"
    handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    batches = [(ids[i:i + 8], tokens[i:i + 8]) for i in range(0, len(ids), 8)]
    try:
        results = recorder.record_activations(model, _RawUnits(), [1], batches, SPEC, 0, n, len(ids),
                                              log=lambda _: None)
    finally:
        handle.remove()
    assert {t.dtype for t in seen} == {torch.bfloat16}  # the recorder got the model's bf16 tensor and widened it
    truth = torch.cat(seen).float().numpy()  # (E, T, N), exactly representable in float32
    rec = results[1]
    np.testing.assert_array_equal(rec.top_acts, truth[rec.top_ids, :, np.arange(n)[:, None]])
    excerpt_max = truth.max(axis=1)
    brute = np.argsort(-excerpt_max, axis=0, kind="stable")[: SPEC.top].T
    np.testing.assert_array_equal(rec.top_ids, brute)
    flat = truth.reshape(-1, n).astype(np.float64)
    np.testing.assert_allclose(rec.stats["mean"], flat.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(rec.stats["variance"], flat.var(0), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(rec.stats["max"], flat.max(0))
    assert rec.stats["mean"].dtype == np.float64 and rec.top_acts.dtype == np.float32


class _RawUnits:
    """MLP neurons handed over in the model's own dtype (MLPNeurons widens them already), to test the recorder's
    own widening."""

    def hook_point(self, model, layer):
        from autointerp.units.mlp import MLPNeurons

        return MLPNeurons().hook_point(model, layer)

    def activations(self, layer, hooked):
        return hooked


def reference_sample(logits: torch.Tensor, row: Row, generator: torch.Generator) -> int:
    """One row sampled on its own (the generator's per-row code before batching), the reference."""
    if row.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / row.temperature, dim=-1)
    if row.top_p < 1:
        ordered, order = probs.sort(descending=True)
        keep = ordered.cumsum(0) - ordered < row.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


def test_batched_sampling_draws_what_each_row_alone_draws():
    torch.manual_seed(0)
    rows = [Row([1], seed, temperature, top_p, 10) for seed, temperature, top_p in
            [(1, 1.0, 1.0), (2, 0.7, 0.9), (3, 0.0, 1.0), (4, 1.3, 0.5), (5, 1.0, 0.95), (6, 0.5, 1.0)]]
    done = [False, False, False, False, True, False]
    batched_gens = [torch.Generator().manual_seed(r.seed) for r in rows]
    alone_gens = [torch.Generator().manual_seed(r.seed) for r in rows]
    for _step in range(20):
        logits = torch.randn(len(rows), 500) * 3
        chosen = BatchedGenerator._sample_rows(logits, rows, batched_gens, done, pad=-1)
        expected = [-1 if done[b] else reference_sample(logits[b], rows[b], alone_gens[b]) for b in range(len(rows))]
        assert chosen == expected
    # a finished row's generator was not advanced: its next draw is its first
    assert torch.rand(1, generator=batched_gens[4]).item() == torch.rand(1, generator=torch.Generator().manual_seed(5)).item()


def test_cpu_only_modules_import_without_dagster_duckdb_or_great_expectations():
    """What bench/gpu.py imports must load on the GPU machine, which has torch and transformers but no Dagster,
    DuckDB or Great Expectations: a child interpreter where importing those fails."""
    import subprocess
    import sys

    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('dagster', 'duckdb', 'great_expectations', 'dagster_duckdb'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import bench.gpu, autointerp.record.recorder, autointerp.llm.local, autointerp.explain.llm\n"
        "import autointerp.units.sae, autointerp.units.train, autointerp.simulate.embedding, autointerp.devices\n"
        "print('imported')\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "HOME": str(root)})
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr[-3000:]


def test_moments_of_a_corpus_beyond_int64_cubed_counts():
    """Over ~2.6M tokens n**3 exceeds the largest Python int torch takes (uint64; a GPU records that many tokens in
    seconds): the merge must not overflow, and equals numpy's float64 statistics of all the values."""
    from autointerp.record.streaming import Moments

    rng = np.random.default_rng(0)
    parts = [rng.gamma(2.0, 1.5, size=(1_400_000, 2)).astype(np.float32) - 1 for _ in range(2)]
    moments = Moments(2)
    for part in parts:
        moments.update(torch.from_numpy(part))
    stats = moments.finish()
    flat = np.concatenate(parts).astype(np.float64)
    d = flat - flat.mean(0)
    assert moments.n == 2_800_000 and (stats["count"] == 2_800_000).all()
    np.testing.assert_allclose(stats["mean"], flat.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["variance"], flat.var(0), rtol=1e-5)
    np.testing.assert_allclose(stats["skewness"], (d**3).mean(0) / flat.var(0)**1.5, rtol=1e-4)
    np.testing.assert_allclose(stats["kurtosis"], (d**4).mean(0) / flat.var(0)**2 - 3, rtol=1e-4)


@pytest.mark.parametrize("k, batch", [(7, 13), (20, 5), (3, 3), (40, 64)])
def test_the_sync_free_top_k_used_on_cuda_equals_brute_force_and_the_cpu_path(k, batch):
    """`offer_without_sync` (CUDA's) against a brute-force top-k over everything offered, and against `offer` (the
    CPU's) entry for entry; ties in the keys (rounded) go to the earlier excerpt in both."""
    from autointerp.record.streaming import StreamingTopK

    generator = torch.Generator().manual_seed(k * 100 + batch)
    n, t = 37, 5
    dense, sparse = StreamingTopK(n, k, t, sync_free=True), StreamingTopK(n, k, t, sync_free=False)
    chunks = []
    for start in range(0, 150, batch):
        acts = (torch.randn(batch, t, n, generator=generator) * 4).round() / 4  # many ties
        for buffer in (dense, sparse):
            buffer.offer(acts.amax(dim=1), torch.arange(start, start + batch), acts)
        chunks.append(acts)
    everything = torch.cat(chunks)  # (E, T, N)
    excerpt_max = everything.amax(dim=1).T  # (N, E)
    # brute force: order by (key desc, excerpt asc) via a stable sort of the keys
    order = excerpt_max.argsort(dim=1, descending=True, stable=True)[:, :k]
    keys, ids, acts = dense.sorted()
    assert torch.equal(ids, order)
    assert torch.equal(keys, excerpt_max.gather(1, order))
    assert torch.equal(acts, everything.permute(2, 0, 1).gather(1, order[..., None].expand(-1, -1, t)))
    for a, b in zip(dense.sorted(), sparse.sorted()):
        assert torch.equal(a, b)


def test_a_recording_through_the_cuda_code_paths_on_the_cpu_equals_the_cpu_paths(tiny_gpt2, tmp_path, monkeypatch):
    """The recorder as it runs on CUDA (sync-free top-k, keys hashed from device ids), here on the CPU, gives the
    records and statistics of the CPU paths, which tests/test_recording.py checks against brute force."""
    from autointerp.record.streaming import StreamingTopK
    from tests.test_recording import load_excerpts, run_recording

    source, ids, tokens = load_excerpts(tiny_gpt2, tmp_path)
    model = load_model(source)
    cpu = run_recording(model, ids, tokens, [0, 2], batch_size=8, seed=5)
    monkeypatch.setattr(StreamingTopK, "offer", StreamingTopK.offer_without_sync)
    as_cuda = run_recording(model, ids, tokens, [0, 2], batch_size=8, seed=5)
    for layer in (0, 2):
        a, b = as_cuda[layer], cpu[layer]
        for name in ("top_ids", "top_acts", "random_ids", "random_acts", "quantile_ids", "quantile_acts",
                     "quantile_boundaries"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        for stat in a.stats:
            np.testing.assert_array_equal(a.stats[stat], b.stats[stat], err_msg=stat)


def test_train_sae_and_the_sentence_encoder_on_a_missing_gpu_fail_naming_their_key(tmp_path, monkeypatch):
    from autointerp.simulate.embedding import Embedding, EmbeddingOptions
    from autointerp.units.train import train_dictionaries

    monkeypatch.setattr("autointerp.devices.cuda_device_count", lambda: 0)
    config = load_config(write(tmp_path, GOOD + "sae_training: {device: cuda}\n"))
    with pytest.raises(ConfigError, match="sae_training.device is 'cuda', but torch sees no CUDA device"):
        train_dictionaries(config, log=lambda _: None)
    with pytest.raises(ConfigError, match=r"simulator.device is 'cuda:1', but torch sees no CUDA device"):
        Embedding(EmbeddingOptions(device="cuda:1"), tmp_path).encoder


def test_the_device_check_runs_end_to_end_at_tiny_sizes_on_the_cpu(tmp_path):
    """bench/gpu.py is run on a GPU only when a session is lent one: a broken check would waste that time, so its
    tiny CPU form runs here (the 8B stand-in left out: it repeats the 1.5B one's code)."""
    import json

    from bench.gpu import main

    out = tmp_path / "gpu.json"
    report = main(["--device", "cpu", "--sizes", "tiny", "--skip", "8b", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["device"] == "cpu" and report["recording_equivalence"]["passed"] is True
    assert report["recording_equivalence"]["top_ids_agreement"] == 1.0
    assert report["recording_throughput"]["recorder_tokens_per_s"] > 0 and report["recording_throughput"]["passed"] is None
    [explained] = report["explain"]
    assert explained["neurons"] == 8 and 0 < explained["generated_tokens"] <= 8 * 40
    assert explained["parsed_usable"] == 8 and explained["passed"] is None
    [judged] = report["judging"]
    # detection: 20 + 20 excerpts; fuzzing: each activating excerpt marked right and wrong
    assert judged["log_odds_finite"] and judged["judgements_per_neuron"] == 80 and "LocalLLM.judge" in judged["what"]
