"""Activation records of one neuron, read from the store, and their train/calibration/valid/test splits.

docs/method.md s.3: top records are dealt round-robin into train / calibration / valid / test (record i goes to
split i mod 4); random records into calibration / valid / test (i mod 3). Dealing round-robin over records
sorted by max activation keeps every split's activation range similar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence, TypeVar

from autointerp.errors import StoreError

TOP_SPLITS = ("train", "calibration", "valid", "test")
RANDOM_SPLITS = ("calibration", "valid", "test")

T = TypeVar("T")


@dataclass(frozen=True)
class ActivationRecord:
    """One excerpt's tokens and a neuron's real (unnormalised) activation on each of them."""

    tokens: tuple[str, ...]
    activations: tuple[float, ...]
    excerpt_id: int | None = None

    def __post_init__(self) -> None:
        # Accept lists (e.g. straight from DuckDB) but store tuples, so records stay hashable and immutable.
        object.__setattr__(self, "tokens", tuple(str(t) for t in self.tokens))
        object.__setattr__(self, "activations", tuple(float(a) for a in self.activations))
        if len(self.tokens) != len(self.activations):
            raise ValueError(f"activation record{self._id_note()} has {len(self.tokens)} tokens "
                             f"but {len(self.activations)} activations")

    def _id_note(self) -> str:
        return f" for excerpt {self.excerpt_id}" if self.excerpt_id is not None else ""

    @property
    def max_activation(self) -> float:
        return max(self.activations, default=0.0)


def _deal(records: Sequence[T], names: Sequence[str]) -> dict[str, list[T]]:
    splits: dict[str, list[T]] = {name: [] for name in names}
    for i, record in enumerate(records):
        splits[names[i % len(names)]].append(record)
    return splits


def split_top(records: Sequence[T]) -> dict[str, list[T]]:
    """Record i goes to train / calibration / valid / test for i mod 4 = 0 / 1 / 2 / 3."""
    return _deal(records, TOP_SPLITS)


def split_random(records: Sequence[T]) -> dict[str, list[T]]:
    """Record i goes to calibration / valid / test for i mod 3 = 0 / 1 / 2."""
    return _deal(records, RANDOM_SPLITS)


@dataclass
class NeuronRecord:
    """All records the method uses for one neuron: `top` by max activation (highest first), `random` and
    `quantile` (by band, then rank) in stored order. Quantile records are dealt like random ones."""

    model: str
    revision: str
    layer: int
    neuron: int
    top: list[ActivationRecord]
    random: list[ActivationRecord]
    quantile: list[ActivationRecord] = field(default_factory=list)

    def train_top(self) -> list[ActivationRecord]:
        return split_top(self.top)["train"]

    def calibration_top(self) -> list[ActivationRecord]:
        return split_top(self.top)["calibration"]

    def valid_top(self) -> list[ActivationRecord]:
        return split_top(self.top)["valid"]

    def test_top(self) -> list[ActivationRecord]:
        return split_top(self.top)["test"]

    def calibration_random(self) -> list[ActivationRecord]:
        return split_random(self.random)["calibration"]

    def valid_random(self) -> list[ActivationRecord]:
        return split_random(self.random)["valid"]

    def test_random(self) -> list[ActivationRecord]:
        return split_random(self.random)["test"]

    def scored(self, split: str = "test") -> list[tuple[str, ActivationRecord]]:
        """(kind, record) of a split's top then random records: what a simulation of the split is scored on
        ("test" for the reported score, "valid" for choosing between candidate explanations)."""
        return ([("top", r) for r in split_top(self.top)[split]]
                + [("random", r) for r in split_random(self.random)[split]])

    def judged(self, split: str = "test") -> list[tuple[str, ActivationRecord]]:
        """(kind, record) a judging scorer reads: the split's top, quantile and random records (the quantile
        bands add activating excerpts of every strength, and silent ones, to the top and random records)."""
        return (self.scored(split)[:len(split_top(self.top)[split])]
                + [("quantile", r) for r in split_random(self.quantile)[split]]
                + [("random", r) for r in split_random(self.random)[split]])


def load_neuron_records(con: Any, model: str, revision: str, layer: int,
                        neurons: Sequence[int] | None = None) -> list[NeuronRecord]:
    """Top and random records of `layer`'s neurons (all, or `neurons`), sorted by neuron, then rank.

    `con` is an open DuckDB connection. Neurons without any stored record are simply absent from the result.
    """
    if neurons is not None and len(neurons) == 0:
        return []
    from autointerp.store.queries import record_rows  # here, not at the top: records load without DuckDB

    return _group_rows(record_rows(con, model, revision, layer, neurons, kinds=("top", "random", "quantile")),
                       model, revision, layer)


def _group_rows(rows: Sequence[tuple], model: str, revision: str, layer: int) -> list[NeuronRecord]:
    by_neuron: dict[int, NeuronRecord] = {}
    seen: set[tuple[int, str, int, int]] = set()
    for neuron, kind, band, rank, excerpt_id, tokens, activations in rows:
        where = f"{model}@{revision} layer {layer} neuron {neuron} {kind} rank {rank}"
        if tokens is None:
            raise StoreError(f"{where}: excerpt {excerpt_id} is not in the excerpts table")
        # A duplicated excerpt row would silently double a record through the join.
        if (neuron, kind, band, rank) in seen:
            raise StoreError(f"{where}: stored more than once (duplicate record or excerpt {excerpt_id})")
        seen.add((neuron, kind, band, rank))
        record = by_neuron.setdefault(neuron, NeuronRecord(model, revision, layer, int(neuron), [], []))
        getattr(record, kind).append(ActivationRecord(tokens, activations, int(excerpt_id)))
    return list(by_neuron.values())


@dataclass(frozen=True)
class FewShotNeuron:
    """A made-up neuron with a known explanation, shown to an explainer or simulator before the target."""

    explanation: str
    records: tuple[ActivationRecord, ...]
