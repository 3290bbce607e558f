"""Record MLP neuron activations in one streaming pass over a corpus (METHOD.md s.1).

For every requested layer and every neuron we keep, in memory that does not grow with the corpus:
- `top`: the excerpts with the highest maximum activation (rank 0 = highest),
- `random`: a uniform random sample of excerpts,
- `quantile`: a sample stratified by max activation, drawn from a larger uniform random pool,
- moments (mean, variance, skewness, excess kurtosis), max and the fraction of tokens > 0.

One forward pass per batch feeds every requested layer through forward pre-hooks, and the pass is
cut short after the deepest requested layer: layers above it and the LM head are never computed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import torch

from autointerp.config import Config, RecordSpec
from autointerp.errors import ModelLoadError, StoreError
from autointerp.progress import Progress
from autointerp.store import Replacement, Store
from autointerp.subject import describe_model, load_model, model_revision, neuron_modules, resolve_source

EXCERPT_TOKENS = 64
KINDS = ("top", "random", "quantile")
STAT_COLUMNS = ("count", "mean", "variance", "skewness", "kurtosis", "max", "frac_positive")


def expected_counts(spec: RecordSpec, n_excerpts: int) -> dict[str, int]:
    """How many records of each kind every neuron gets from a corpus of `n_excerpts` excerpts."""
    pool = min(spec.random_pool, n_excerpts)
    per_band = min(spec.per_band, pool // spec.quantile_bands)
    return {"top": min(spec.top, n_excerpts), "random": min(spec.random, pool), "quantile": spec.quantile_bands * per_band}


class _StopForward(Exception):
    """Raised from the deepest layer's hook: nothing above it is needed."""


@dataclass
class LayerRecords:
    """What one layer's recording produced; arrays are indexed by neuron first."""

    layer: int
    top_ids: np.ndarray  # (N, k) excerpt ids, sorted by max activation, highest first
    top_acts: np.ndarray  # (N, k, T)
    random_ids: np.ndarray  # (N, r)
    random_acts: np.ndarray  # (N, r, T)
    quantile_ids: np.ndarray  # (N, bands, per_band), bands from lowest to highest activation
    quantile_acts: np.ndarray  # (N, bands, per_band, T)
    quantile_boundaries: np.ndarray  # (N, bands + 1) pool max activations at the band edges
    stats: dict[str, np.ndarray]  # STAT_COLUMNS -> (N,)

    @property
    def n_neurons(self) -> int:
        return self.top_ids.shape[0]


class StreamingTopK:
    """Per neuron, the k entries with the largest key seen so far, with their excerpt ids and activations.

    Slots are kept unsorted and only the slots whose entry is replaced are written, so a batch costs
    time in proportion to what changes, not to k x 64 per neuron; `sorted()` orders them once at the
    end. Order (and admission at the boundary) is by key, highest first, then by the earlier excerpt,
    which makes the result independent of how the corpus is batched.
    """

    def __init__(self, n_neurons: int, k: int, seq_len: int, key_dtype: torch.dtype = torch.float32):
        self.k = k
        self.keys = torch.full((n_neurons, k), -torch.inf, dtype=key_dtype)
        self.ids = torch.full((n_neurons, k), -1, dtype=torch.int64)
        self.acts = torch.zeros((n_neurons, k, seq_len), dtype=torch.float32)

    def offer(self, keys: torch.Tensor, ids: torch.Tensor, acts: torch.Tensor) -> None:
        """keys: (B, N); ids: (B,) increasing and above every id offered before; acts: (B, T, N)."""
        keys_t = keys.T
        rows = (keys_t > self.keys.amin(dim=1, keepdim=True)).any(dim=1).nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        k = self.k
        merged_keys = torch.cat([self.keys[rows], keys_t[rows]], dim=1)  # (R, k + B)
        merged_ids = torch.cat([self.ids[rows], ids.expand(len(rows), -1)], dim=1)
        # rank by (key desc, id asc): a stable sort by id, then a stable sort by key
        by_id = merged_ids.argsort(dim=1, stable=True)
        by_key = merged_keys.gather(1, by_id).argsort(dim=1, descending=True, stable=True)
        survivors = by_id.gather(1, by_key)[:, :k]
        kept = torch.zeros_like(merged_keys, dtype=torch.bool).scatter_(1, survivors, True)
        # every evicted old slot takes one surviving newcomer; both lists are in row-major order
        evicted = (~kept[:, :k]).nonzero()
        arrivals = kept[:, k:].nonzero()
        row = rows[evicted[:, 0]]
        slot, newcomer = evicted[:, 1], arrivals[:, 1]
        self.keys[row, slot] = keys_t[row, newcomer]
        self.ids[row, slot] = ids[newcomer]
        self.acts[row, slot] = acts[newcomer, :, row]

    def filled(self) -> int:
        return int((self.ids[0] >= 0).sum()) if self.ids.shape[0] else 0

    def sorted(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(keys, ids, acts) with each neuron's entries ordered by key, highest first (ties: earlier excerpt)."""
        by_id = self.ids.argsort(dim=1, stable=True)
        order = by_id.gather(1, self.keys.gather(1, by_id).argsort(dim=1, descending=True, stable=True))
        keys, ids = self.keys.gather(1, order), self.ids.gather(1, order)
        acts = self.acts.gather(1, order.unsqueeze(-1).expand(-1, -1, self.acts.shape[-1]))
        return keys, ids, acts


class Moments:
    """Streaming count, mean and central moments M2..M4 per neuron (Chan et al.'s parallel merge).

    Batch moments are computed in float32 around the batch mean (no cancellation), merged in float64.
    """

    def __init__(self, n_neurons: int):
        self.n = 0
        self.mean = torch.zeros(n_neurons, dtype=torch.float64)
        self.m2 = torch.zeros_like(self.mean)
        self.m3 = torch.zeros_like(self.mean)
        self.m4 = torch.zeros_like(self.mean)
        self.positive = torch.zeros(n_neurons, dtype=torch.int64)

    def update(self, x: torch.Tensor) -> None:
        """x: (M, N) activations of M tokens."""
        nb = x.shape[0]
        mean_b = x.mean(dim=0)
        d = x - mean_b
        d2 = d * d
        m2b, m3b, m4b = d2.sum(0).double(), (d2 * d).sum(0).double(), (d2 * d2).sum(0).double()
        self.positive += (x > 0).sum(0)
        na, n = self.n, self.n + nb
        delta = mean_b.double() - self.mean
        m2a, m3a = self.m2, self.m3
        self.m4 = (self.m4 + m4b + delta**4 * na * nb * (na * na - na * nb + nb * nb) / n**3
                   + 6 * delta**2 * (na * na * m2b + nb * nb * m2a) / n**2 + 4 * delta * (na * m3b - nb * m3a) / n)
        self.m3 = m3a + m3b + delta**3 * na * nb * (na - nb) / n**2 + 3 * delta * (na * m2b - nb * m2a) / n
        self.m2 = m2a + m2b + delta**2 * na * nb / n
        self.mean = self.mean + delta * nb / n
        self.n = n

    def finish(self) -> dict[str, np.ndarray]:
        n = max(self.n, 1)
        variance = self.m2 / n
        # Population skewness and excess kurtosis (scipy.stats defaults); 0 for a constant neuron.
        safe = torch.where(self.m2 > 0, self.m2, torch.ones_like(self.m2))
        skew = torch.where(self.m2 > 0, np.sqrt(n) * self.m3 / safe**1.5, torch.zeros_like(safe))
        kurt = torch.where(self.m2 > 0, n * self.m4 / safe**2 - 3.0, torch.zeros_like(safe))
        return {
            "count": np.full(self.mean.shape, self.n, dtype=np.int64),
            "mean": self.mean.numpy(),
            "variance": variance.numpy(),
            "skewness": skew.numpy(),
            "kurtosis": kurt.numpy(),
            "frac_positive": (self.positive.double() / n).numpy(),
        }


def random_priorities(seed: int, layer: int, excerpt_ids: np.ndarray, n_neurons: int) -> torch.Tensor:
    """A uniform [0, 1) key per (excerpt, neuron), a pure function of (seed, layer, excerpt, neuron).

    Keeping the k largest keys gives a uniform sample without replacement; a counter-based hash
    (splitmix64) makes it independent of batch size and batch order.
    """
    with np.errstate(over="ignore"):
        x = excerpt_ids.astype(np.uint64)[:, None] * np.uint64(n_neurons) + np.arange(n_neurons, dtype=np.uint64)
        x = x + np.uint64((seed * 0x9E3779B97F4A7C15 + (layer + 1) * 0xD1B54A32D192ED03) % 2**64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return torch.from_numpy((x >> np.uint64(11)).astype(np.float64) / float(2**53))


class LayerRecorder:
    """All streaming state of one layer."""

    def __init__(self, layer: int, n_neurons: int, spec: RecordSpec, seed: int):
        self.layer, self.spec, self.seed = layer, spec, seed
        self.top = StreamingTopK(n_neurons, spec.top, EXCERPT_TOKENS)
        self.pool = StreamingTopK(n_neurons, spec.random_pool, EXCERPT_TOKENS, key_dtype=torch.float64)
        self.moments = Moments(n_neurons)
        self.max = torch.full((n_neurons,), -torch.inf)

    def update(self, acts: torch.Tensor, excerpt_ids: np.ndarray) -> None:
        """acts: (B, T, N) float32 activations of a batch of excerpts."""
        batch, seq, n = acts.shape
        ids = torch.from_numpy(excerpt_ids.astype(np.int64))  # the store holds INTEGER (int32) ids
        excerpt_max = acts.amax(dim=1)  # (B, N)
        self.max = torch.maximum(self.max, excerpt_max.amax(dim=0))
        self.top.offer(excerpt_max, ids, acts)
        self.pool.offer(random_priorities(self.seed, self.layer, excerpt_ids, n), ids, acts)
        self.moments.update(acts.reshape(batch * seq, n))

    def finish(self) -> LayerRecords:
        spec = self.spec
        n_top = self.top.filled()
        n_pool = self.pool.filled()
        _, top_ids, top_acts = self.top.sorted()
        _, pool_ids, pool_acts = self.pool.sorted()  # by random priority: any prefix is a uniform sample
        quantile_ids, quantile_acts, boundaries = self._quantile_sample(pool_ids, pool_acts, n_pool)
        n_random = min(spec.random, n_pool)
        stats = self.moments.finish()
        stats["max"] = self.max.double().numpy()
        return LayerRecords(
            layer=self.layer,
            top_ids=top_ids[:, :n_top].numpy(),
            top_acts=top_acts[:, :n_top].numpy(),
            random_ids=pool_ids[:, :n_random].numpy(),
            random_acts=pool_acts[:, :n_random].numpy(),
            quantile_ids=quantile_ids,
            quantile_acts=quantile_acts,
            quantile_boundaries=boundaries,
            stats=stats,
        )

    def _quantile_sample(self, pool_ids: torch.Tensor, pool_acts: torch.Tensor,
                         n_pool: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Split the pool into equal-count bands by max activation; draw `per_band` at random from each."""
        bands = self.spec.quantile_bands
        band_size = n_pool // bands
        per_band = min(self.spec.per_band, band_size)
        n_neurons = pool_ids.shape[0]
        if per_band == 0:
            return (np.zeros((n_neurons, bands, 0), np.int64), np.zeros((n_neurons, bands, 0, EXCERPT_TOKENS), np.float32),
                    np.zeros((n_neurons, 0), np.float32))
        pool_max = pool_acts[:, :n_pool].amax(dim=-1)  # (N, P)
        sorted_max, order = pool_max.sort(dim=1)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.layer)
        picks = []
        for band in range(bands):
            end = (band + 1) * band_size if band < bands - 1 else n_pool  # the remainder joins the top band
            members = order[:, band * band_size:end]
            chosen = members.gather(1, torch.rand(members.shape, generator=generator).argsort(dim=1)[:, :per_band])
            # Within a band, rank 0 is the highest activation, as for `top`.
            chosen_max = pool_max.gather(1, chosen)
            picks.append(chosen.gather(1, chosen_max.argsort(dim=1, descending=True)))
        slots = torch.stack(picks, dim=1)  # (N, bands, per_band) indices into the pool
        flat = slots.reshape(n_neurons, -1)
        ids = pool_ids.gather(1, flat).reshape(slots.shape)
        acts = pool_acts.gather(1, flat.unsqueeze(-1).expand(-1, -1, EXCERPT_TOKENS))
        edges = [band * band_size for band in range(bands)] + [n_pool - 1]
        return ids.numpy(), acts.reshape(*slots.shape, EXCERPT_TOKENS).numpy(), sorted_max[:, edges].numpy()


def record_activations(
    model: Any,
    modules: Sequence[Any],
    layers: Sequence[int],
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    spec: RecordSpec,
    seed: int,
    n_neurons: int,
    total_excerpts: int,
    log: Callable[[str], None] = print,
) -> dict[int, LayerRecords]:
    """Run the corpus through `model` once and record `layers`.

    `modules[l]` is the module whose input holds layer l's neurons (see `subject.neuron_modules`);
    `batches` yields (excerpt_ids (B,), token_ids (B, T)).
    """
    layers = sorted(set(layers))
    recorders = {layer: LayerRecorder(layer, n_neurons, spec, seed) for layer in layers}
    deepest = layers[-1]
    current_ids: list[np.ndarray] = []

    def hook_for(layer: int) -> Callable[..., None]:
        def hook(_module: Any, args: tuple[torch.Tensor, ...]) -> None:
            # Consume each layer as soon as it is computed, so only one layer's activations are alive.
            recorders[layer].update(args[0].float(), current_ids[0])
            if layer == deepest:
                raise _StopForward

        return hook

    handles = [modules[layer].register_forward_pre_hook(hook_for(layer)) for layer in layers]
    progress = Progress(f"recording layers {_layer_label(layers)}", total_excerpts * EXCERPT_TOKENS, "tokens", log)
    try:
        with torch.inference_mode():
            for excerpt_ids, token_ids in batches:
                current_ids[:] = [excerpt_ids]
                try:
                    model(input_ids=torch.from_numpy(token_ids.astype(np.int64)), use_cache=False)
                except _StopForward:
                    pass
                progress.advance(token_ids.size)
    finally:
        for handle in handles:
            handle.remove()
    return {layer: recorder.finish() for layer, recorder in recorders.items()}


def _layer_label(layers: Sequence[int]) -> str:
    return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])


def records_table(model: str, revision: str, records: Sequence[LayerRecords]) -> pa.Table:
    """Rows of `activation_records` for the given layers: one per (neuron, kind, band, rank)."""
    parts = []
    for rec in records:
        n = rec.n_neurons
        quantile_shape = rec.quantile_ids.shape  # (N, bands, per_band)
        for kind, ids, acts, band in (
            ("top", rec.top_ids, rec.top_acts, None),
            ("random", rec.random_ids, rec.random_acts, None),
            ("quantile", rec.quantile_ids.reshape(n, -1), rec.quantile_acts.reshape(n, -1, EXCERPT_TOKENS),
             np.tile(np.repeat(np.arange(quantile_shape[1]), quantile_shape[2]), n)),
        ):
            per_neuron = ids.shape[1]
            if per_neuron == 0:
                continue
            rank = np.tile(np.arange(per_neuron) % (quantile_shape[2] if kind == "quantile" else per_neuron), n)
            flat_acts = np.ascontiguousarray(acts, dtype=np.float32).reshape(-1)
            count = n * per_neuron
            parts.append(pa.table({
                "model": pa.array([model] * count),
                "revision": pa.array([revision] * count),
                "layer": pa.array(np.full(count, rec.layer, np.int32)),
                "neuron": pa.array(np.repeat(np.arange(n, dtype=np.int32), per_neuron)),
                "kind": pa.array([kind] * count),
                "band": pa.array(band.astype(np.int16) if band is not None else np.full(count, None), pa.int16()),
                "rank": pa.array(rank.astype(np.int16)),
                "excerpt_id": pa.array(ids.reshape(-1).astype(np.int32)),
                "max_activation": pa.array(acts.max(axis=-1).reshape(-1).astype(np.float32)),
                "activations": pa.ListArray.from_arrays(
                    pa.array(np.arange(count + 1, dtype=np.int32) * EXCERPT_TOKENS), pa.array(flat_acts)),
            }))
    return pa.concat_tables(parts)


def stats_table(model: str, revision: str, records: Sequence[LayerRecords]) -> pa.Table:
    parts = []
    for rec in records:
        n = rec.n_neurons
        bounds = np.ascontiguousarray(rec.quantile_boundaries, dtype=np.float32)
        columns: dict[str, Any] = {
            "model": pa.array([model] * n),
            "revision": pa.array([revision] * n),
            "layer": pa.array(np.full(n, rec.layer, np.int32)),
            "neuron": pa.array(np.arange(n, dtype=np.int32)),
        }
        columns.update({name: pa.array(rec.stats[name]) for name in STAT_COLUMNS})
        columns["quantile_boundaries"] = pa.ListArray.from_arrays(
            pa.array(np.arange(n + 1, dtype=np.int32) * bounds.shape[1]), pa.array(bounds.reshape(-1)))
        parts.append(pa.table(columns))
    return pa.concat_tables(parts)


@dataclass
class Recording:
    """A finished recording of some layers of one model, ready to be written to the store."""

    model: str
    revision: str
    layers: list[int]
    records: pa.Table
    stats: pa.Table
    n_tokens: int
    seconds: float


def record_model(config: Config, model_name: str, layers: Sequence[int], store: Store,
                 log: Callable[[str], None] = print) -> Recording:
    """Record `layers` of a configured model over the excerpts already in the store."""
    spec = config.model(model_name)
    source = resolve_source(spec.source, config.path.parent)
    revision = model_revision(source)
    info = describe_model(source)
    bad = sorted(set(layers) - set(range(info.n_layers)))
    if bad:
        raise ModelLoadError(f"model '{model_name}' has {info.n_layers} layers (0-{info.n_layers - 1}); "
                             f"no layer {', '.join(map(str, bad))}")
    n_excerpts = store.excerpt_count(model_name, revision)
    if n_excerpts == 0:
        raise StoreError(f"no excerpts for model '{model_name}' at revision {revision}: materialize `excerpts` first")
    log(f"loading {model_name} ({source.kind}, revision {revision}, {info.n_layers} layers x {info.n_neurons} neurons)")
    model = load_model(source, spec.dtype)
    started = time.monotonic()
    results = record_activations(
        model, neuron_modules(model), layers,
        store.iter_excerpt_batches(model_name, revision, config.records.batch_size),
        config.records, config.seed, info.n_neurons, n_excerpts, log)
    seconds = time.monotonic() - started
    ordered = [results[layer] for layer in sorted(results)]
    return Recording(model_name, revision, sorted(results), records_table(model_name, revision, ordered),
                     stats_table(model_name, revision, ordered), n_excerpts * EXCERPT_TOKENS, seconds)


def write_recording(store: Store, recording: Recording,
                    validate: Callable[[Any], None] | None = None) -> None:
    """Replace the recorded layers' rows in one transaction (a re-run never duplicates rows)."""
    where = {"model": recording.model, "revision": recording.revision, "layer": recording.layers}
    store.replace([Replacement("activation_records", where, recording.records),
                   Replacement("neuron_stats", where, recording.stats)], validate)
