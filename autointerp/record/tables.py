"""A recording as rows of `activation_records` and `neuron_stats` (the store's schemas)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from autointerp.corpus import EXCERPT_TOKENS
from autointerp.record.recorder import STAT_COLUMNS, LayerRecords
from autointerp.store.schema import table


def _lists(flat: np.ndarray, n_rows: int, width: int) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(np.arange(n_rows + 1, dtype=np.int32) * width), pa.array(flat))


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
            parts.append(table("activation_records", {
                "model": [model] * count,
                "revision": [revision] * count,
                "layer": np.full(count, rec.layer, np.int32),
                "neuron": np.repeat(np.arange(n, dtype=np.int32), per_neuron),
                "kind": [kind] * count,
                "band": band.astype(np.int16) if band is not None else pa.nulls(count, pa.int16()),
                "rank": rank.astype(np.int16),
                "excerpt_id": ids.reshape(-1).astype(np.int32),
                "max_activation": acts.max(axis=-1).reshape(-1).astype(np.float32),
                "activations": _lists(flat_acts, count, EXCERPT_TOKENS),
            }))
    return pa.concat_tables(parts)


def stats_table(model: str, revision: str, records: Sequence[LayerRecords]) -> pa.Table:
    parts = []
    for rec in records:
        n = rec.n_neurons
        bounds = np.ascontiguousarray(rec.quantile_boundaries, dtype=np.float32)
        columns: dict[str, Any] = {
            "model": [model] * n,
            "revision": [revision] * n,
            "layer": np.full(n, rec.layer, np.int32),
            "neuron": np.arange(n, dtype=np.int32),
            **{name: rec.stats[name] for name in STAT_COLUMNS},
            "quantile_boundaries": _lists(bounds.reshape(-1), n, bounds.shape[1]),
        }
        parts.append(table("neuron_stats", columns))
    return pa.concat_tables(parts)
