"""Record unit activations in one streaming pass over a corpus (docs/method.md s.1-2).

For every requested layer and every unit we keep, in memory that does not grow with the corpus:
- `top`: the excerpts with the highest maximum activation (rank 0 = highest),
- `random`: a uniform random sample of excerpts,
- `quantile`: a sample stratified by max activation, drawn from a larger uniform random pool,
- moments (mean, variance, skewness, excess kurtosis), max and the fraction of tokens > 0.

One forward pass per batch feeds every requested layer through hooks at the unit source's hook points,
and the pass is cut short after the deepest requested layer: layers above it and the LM head are never
computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from autointerp.config import RecordSpec
from autointerp.corpus import EXCERPT_TOKENS
from autointerp.progress import Progress
from autointerp.record.columns import KINDS, STAT_COLUMNS  # noqa: F401 (tables.py imports them from here)
from autointerp.record.streaming import Moments, StreamingTopK, random_priorities
from autointerp.units import UnitSource


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
    units: UnitSource,
    layers: Sequence[int],
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    spec: RecordSpec,
    seed: int,
    n_neurons: int,
    total_excerpts: int,
    log: Callable[[str], None] = print,
) -> dict[int, LayerRecords]:
    """Run the corpus through `model` once and record `layers`' units.

    `batches` yields (excerpt_ids (B,), token_ids (B, T)).
    """
    layers = sorted(set(layers))
    recorders = {layer: LayerRecorder(layer, n_neurons, spec, seed) for layer in layers}
    deepest = layers[-1]
    current_ids: list[np.ndarray] = []

    def consume(layer: int, hooked: torch.Tensor) -> None:
        # Consume each layer as soon as it is computed, so only one layer's activations are alive.
        recorders[layer].update(units.activations(layer, hooked), current_ids[0])
        if layer == deepest:
            raise _StopForward

    handles = []
    for layer in layers:
        module, side = units.hook_point(model, layer)
        if side == "input":
            # A decoder layer may get its hidden states as a keyword (the residual stream before a layer).
            handles.append(module.register_forward_pre_hook(lambda _m, args, kwargs, layer=layer: consume(
                layer, args[0] if args else kwargs["hidden_states"]), with_kwargs=True))
        else:
            handles.append(module.register_forward_hook(lambda _m, _args, out, layer=layer: consume(
                layer, out[0] if isinstance(out, tuple) else out)))
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
