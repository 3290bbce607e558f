"""What a neuron page shows, as plain data: explanations with their scores, stats, token heat maps."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from autointerp.record.records import ActivationRecord, NeuronRecord, split_random, split_top

# Characters a token may carry that would otherwise vanish or break the layout.
_VISIBLE = str.maketrans({"\n": "↵", "\r": "␍", "\t": "⇥", "\x00": "␀"})


def visible(token: str) -> str:
    """Whitespace shown as glyphs; stays a plain str so Jinja's autoescape still escapes < and &."""
    return token.translate(_VISIBLE) if token else "∅"


def short_llm(name: str | None) -> str:
    """'local:package:pkg/Model.gguf@sha256:ab12' -> 'Model.gguf': the long form goes in a tooltip."""
    if not name:
        return ""
    return name.split("@", 1)[0].rsplit("/", 1)[-1].rsplit(":", 1)[-1]


def page_name(layer: int, neuron: int) -> str:
    return f"neurons/{layer}-{neuron}.html"


@dataclass
class TokenCell:
    token: str
    value: float  # real activation, or simulated value 0-10
    intensity: float  # 0..1, the heat map's background strength
    peak: bool = False


@dataclass
class HeatRow:
    label: str
    cells: list[TokenCell]
    simulated: bool = False


@dataclass
class ExcerptView:
    kind: str  # top / random
    index: int  # rank among the neuron's records of this kind
    split: str
    excerpt_id: int | None
    max_activation: float
    rows: list[HeatRow]


@dataclass
class Writes:
    """What a unit writes (the `unit_logits` row): (token, logit) pairs it promotes and suppresses most."""

    promoted: list[tuple[str, float]]
    suppressed: list[tuple[str, float]]

    @classmethod
    def of(cls, row: Any) -> "Writes":
        return cls([(str(t), float(v)) for t, v in zip(row.promoted_tokens, row.promoted_logits)],
                   [(str(t), float(v)) for t, v in zip(row.suppressed_tokens, row.suppressed_logits)])


@dataclass
class NeuronPage:
    layer: int
    neuron: int
    stats: dict[str, Any] | None
    explanations: list[dict[str, Any]]  # one row per (explainer, sample, simulator), best first
    top: list[ExcerptView] = field(default_factory=list)
    random: list[ExcerptView] = field(default_factory=list)
    writes: Writes | None = None  # None: the unit_logits asset has not run for this revision
    intruder: dict[str, Any] | None = None  # the intruder_scores row (accuracy, p_intruder, n_trials); None: not run

    @property
    def best(self) -> dict[str, Any] | None:
        return self.explanations[0] if self.explanations else None


def finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _intensity(value: float, scale: float) -> float:
    return round(min(1.0, max(0.0, value / scale)), 3) if scale > 0 else 0.0


def _excerpts(kind: str, records: Sequence[ActivationRecord], splits: dict[str, list[ActivationRecord]],
              scale: float, simulated: dict[tuple[str, int], list[tuple[str, list[float]]]],
              peak_index: int | None) -> list[ExcerptView]:
    split_of = {id(r): name for name, members in splits.items() for r in members}
    views = []
    for i, record in enumerate(records):
        real = [TokenCell(t, a, _intensity(a, scale)) for t, a in zip(record.tokens, record.activations)]
        if i == 0 and peak_index is not None:
            real[peak_index].peak = True
        rows = [HeatRow("real", real)]
        for label, values in simulated.get((kind, record.excerpt_id), []):
            rows.append(HeatRow(label, [TokenCell(t, v, _intensity(v, 10.0)) for t, v in zip(record.tokens, values)],
                                simulated=True))
        views.append(ExcerptView(kind, i, split_of[id(record)], record.excerpt_id, record.max_activation, rows))
    return views


def neuron_page(record: NeuronRecord, stats: dict[str, Any] | None, explanations: list[dict[str, Any]],
                simulations: pd.DataFrame, writes: Writes | None = None,
                intruder: dict[str, Any] | None = None) -> NeuronPage:
    """Everything one neuron page shows. Heat maps scale by the neuron's largest activation."""
    scale = (finite(stats["max"]) if stats else None) or max((r.max_activation for r in record.top), default=0.0)
    simulated: dict[tuple[str, int], list[tuple[str, list[float]]]] = {}
    for row in simulations.itertuples():
        label = f"simulated by {short_llm(row.simulator)} from explanation #{row.sample} by {short_llm(row.explainer)}"
        simulated.setdefault((row.kind, int(row.excerpt_id)), []).append((label, [float(v) for v in row.simulated]))
    # The peak: the argmax token of the rank-0 top record, the neuron's single strongest activation.
    peak = int(np.argmax(record.top[0].activations)) if record.top else None
    page = NeuronPage(record.layer, record.neuron, stats, explanations, writes=writes, intruder=intruder)
    page.top = _excerpts("top", record.top, split_top(record.top), scale, simulated, peak)
    page.random = _excerpts("random", record.random, split_random(record.random), scale, simulated, None)
    return page


def explanation_rows(frame: pd.DataFrame) -> dict[int, list[dict[str, Any]]]:
    """`queries.explanation_scores` rows per neuron, NaN as None."""
    rows: dict[int, list[dict[str, Any]]] = {}
    for row in frame.to_dict("records"):
        for key in ("score_top_and_random", "score_random_only", "rsquared", "absolute_dev_explained", "valid_score",
                    "detection", "fuzzing", "detection_accuracy", "fuzzing_accuracy", "rank"):
            row[key] = finite(row[key])
        row["n_tokens"] = None if pd.isna(row["n_tokens"]) else int(row["n_tokens"])
        row["simulator"] = None if pd.isna(row["simulator"]) else row["simulator"]
        row["reason"] = None if pd.isna(row["reason"]) else row["reason"]
        rows.setdefault(int(row["neuron"]), []).append(row)
    return rows
