"""Record unit activations in one streaming pass over a corpus (docs/method.md s.1-2).

For every requested layer and every unit we keep, in memory that does not grow with the corpus:
- `top`: the excerpts with the highest maximum activation (rank 0 = highest),
- `random`: a uniform random sample of excerpts,
- `quantile`: a sample stratified by max activation, drawn from a larger uniform random pool,
- moments (mean, variance, skewness, excess kurtosis), max and the fraction of tokens > 0.

One forward pass per batch feeds every requested layer through hooks at the unit source's hook points,
and the pass is cut short after the deepest requested layer: layers above it and the LM head are never
computed.

Device: the recorder runs where the model is (the model's `device` key, autointerp/devices.py). Every
reduction (top-k by max, the random pool and its quantile sample, moments, max) is a torch op on that device,
statistics in float32/float64 whatever the model's dtype; only the final records cross to the host, in
`finish`. On CUDA the batch size follows free memory (`recording_batch_size`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from autointerp.config import RecordSpec
from autointerp.corpus import EXCERPT_TOKENS
from autointerp.devices import batch_size_for, free_memory
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

    def __init__(self, layer: int, n_neurons: int, spec: RecordSpec, seed: int, device: torch.device | str = "cpu"):
        self.layer, self.spec, self.seed = layer, spec, seed
        self.device = torch.device(device)
        self.top = StreamingTopK(n_neurons, spec.top, EXCERPT_TOKENS, device=self.device)
        self.pool = StreamingTopK(n_neurons, spec.random_pool, EXCERPT_TOKENS, key_dtype=torch.float64,
                                  device=self.device)
        self.moments = Moments(n_neurons, device=self.device)
        self.max = torch.full((n_neurons,), -torch.inf, device=self.device)

    def update(self, acts: torch.Tensor, excerpt_ids: np.ndarray | torch.Tensor) -> None:
        """acts: (B, T, N) activations of a batch of excerpts, on this recorder's device; a half-precision model's
        are widened to float32 here, so every statistic accumulates in float32 (moments merged in float64)."""
        acts = acts.to(device=self.device, dtype=torch.float32)
        batch, seq, n = acts.shape
        if isinstance(excerpt_ids, torch.Tensor):
            ids = excerpt_ids.to(self.device, torch.int64)
        else:  # the store holds INTEGER (int32) ids
            ids = torch.from_numpy(np.asarray(excerpt_ids).astype(np.int64)).to(self.device)
        excerpt_max = acts.amax(dim=1)  # (B, N)
        self.max = torch.maximum(self.max, excerpt_max.amax(dim=0))
        self.top.offer(excerpt_max, ids, acts)
        self.pool.offer(random_priorities(self.seed, self.layer, ids, n), ids, acts)
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
        stats["max"] = self.max.double().cpu().numpy()
        # The only device-to-host copies of a recording: each kind's final records, once.
        return LayerRecords(
            layer=self.layer,
            top_ids=top_ids[:, :n_top].cpu().numpy(),
            top_acts=top_acts[:, :n_top].cpu().numpy(),
            random_ids=pool_ids[:, :n_random].cpu().numpy(),
            random_acts=pool_acts[:, :n_random].cpu().numpy(),
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
        device = pool_ids.device
        pool_max = pool_acts[:, :n_pool].amax(dim=-1)  # (N, P)
        sorted_max, order = pool_max.sort(dim=1)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.layer)
        picks = []
        for band in range(bands):
            end = (band + 1) * band_size if band < bands - 1 else n_pool  # the remainder joins the top band
            members = order[:, band * band_size:end]
            # Drawn by the CPU generator and moved: the same sample whatever device records.
            draw = torch.rand(members.shape, generator=generator).to(device)
            chosen = members.gather(1, draw.argsort(dim=1)[:, :per_band])
            # Within a band, rank 0 is the highest activation, as for `top`.
            chosen_max = pool_max.gather(1, chosen)
            picks.append(chosen.gather(1, chosen_max.argsort(dim=1, descending=True)))
        slots = torch.stack(picks, dim=1)  # (N, bands, per_band) indices into the pool
        flat = slots.reshape(n_neurons, -1)
        ids = pool_ids.gather(1, flat).reshape(slots.shape)
        acts = pool_acts.gather(1, flat.unsqueeze(-1).expand(-1, -1, EXCERPT_TOKENS))
        edges = [band * band_size for band in range(bands)] + [n_pool - 1]
        return (ids.cpu().numpy(), acts.reshape(*slots.shape, EXCERPT_TOKENS).cpu().numpy(),
                sorted_max[:, edges].cpu().numpy())


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

    `batches` yields (excerpt_ids (B,), token_ids (B, T)). Recording runs on the device that holds `model`.
    """
    layers = sorted(set(layers))
    device = model_device(model)
    recorders = {layer: LayerRecorder(layer, n_neurons, spec, seed, device) for layer in layers}
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
                current_ids[:] = [torch.from_numpy(np.asarray(excerpt_ids).astype(np.int64)).to(device)]
                try:
                    model(input_ids=torch.from_numpy(token_ids.astype(np.int64)).to(device), use_cache=False)
                except _StopForward:
                    pass
                progress.advance(token_ids.size)
    finally:
        for handle in handles:
            handle.remove()
    return {layer: recorder.finish() for layer, recorder in recorders.items()}


def model_device(model: Any) -> torch.device:
    """Where a torch model's weights are (the CPU for a model without parameters)."""
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


# Excerpts per forward pass on CUDA at most: the anchor measured 596k tokens/s at 512 on one H100 (README, "On a
# GPU"); larger batches add memory for the top-k merges without using the card better.
RECORD_BATCH_CAP = 512


def recorder_state_bytes(n_neurons: int, spec: RecordSpec, seq_len: int = EXCERPT_TOKENS) -> int:
    """Device memory one layer's recorder holds for the whole run: the top and pool slots (activations float32,
    keys, ids) and the moments."""
    slots = spec.top + spec.random_pool
    return n_neurons * (slots * (seq_len * 4 + 8 + 8) + 6 * 8)


def excerpt_bytes(hidden: int, intermediate: int, n_neurons: int, model_dtype_bytes: int,
                  seq_len: int = EXCERPT_TOKENS, max_k: int = 100) -> int:
    """Peak device memory one excerpt adds to a recording batch (an estimate that errs high).

    The forward keeps about 8 hidden-state-sized tensors alive (residual, norms, q/k/v/o, attention output) and
    3 MLP-sized ones (gate, up, their product) in the model's dtype; the hooked layer's units then take about
    6 float32 copies (the widened activations, the moments' deviations and their powers), plus the batch's keys,
    priorities and the top-k merge buffers (float64, per neuron and excerpt, rows of up to k + B).
    """
    forward = seq_len * (8 * hidden + 3 * intermediate) * model_dtype_bytes
    reductions = seq_len * n_neurons * 4 * 6 + n_neurons * (8 * 4) + n_neurons * 8 * 4 * (1 + max_k // 64)
    return forward + reductions


def recording_batch_size(model: Any, n_neurons: int, n_layers: int, spec: RecordSpec) -> int:
    """Excerpts per forward pass: `records.batch_size` on the CPU; on CUDA as many as free memory holds (after
    the model and the recorders' state), up to RECORD_BATCH_CAP, a multiple of 8."""
    device = model_device(model)
    free = free_memory(device)
    if free is None:
        return spec.batch_size
    config = model.config
    hidden = int(getattr(config, "hidden_size", None) or getattr(config, "n_embd"))
    intermediate = int(getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden)
    dtype_bytes = next(iter(model.parameters())).element_size()
    per = excerpt_bytes(hidden, intermediate, n_neurons, dtype_bytes, max_k=max(spec.top, spec.random_pool))
    state = n_layers * recorder_state_bytes(n_neurons, spec)
    return batch_size_for(free, per, fixed_bytes=state, low=1, high=RECORD_BATCH_CAP, multiple=8)


def _layer_label(layers: Sequence[int]) -> str:
    return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])
