"""Stage 2, explain: an explainer reads a neuron's top train-split records and writes what it responds to.

An `Explainer` is one module here, registered by name with its options (`@REGISTRY.register("llm", ...)`);
the config's `explainer: {kind: NAME, ...}` picks it. It sees only `ExplainerInput`: the train split's
top records, never the valid or test split the selection and the scores use (docs/method.md s.3).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from autointerp.plugins import Registry
from autointerp.record.records import ActivationRecord, NeuronRecord

if TYPE_CHECKING:  # annotations only: the store (DuckDB) is not needed to explain or simulate
    from autointerp.llm import LoadedLLMs
    from autointerp.store import Store


@dataclass(frozen=True)
class ExplainerInput:
    """All an explainer may see of a neuron: its top records of the train split, highest first."""

    layer: int
    neuron: int
    records: tuple[ActivationRecord, ...]
    writes: tuple[str, ...] = ()  # the tokens its output promotes most (`unit_logits`; empty where not computed)

    @classmethod
    def of(cls, record: NeuronRecord, writes: Sequence[str] = ()) -> "ExplainerInput":
        return cls(record.layer, record.neuron, tuple(record.train_top()), tuple(writes))


@dataclass(frozen=True)
class Explanation:
    layer: int
    neuron: int
    sample: int  # which candidate (0 when one is drawn)
    explanation: str  # "" when the completion held no usable line (the quality check rejects it if chosen)
    completion: str
    variant: str = ""  # what produced this candidate, e.g. the prompt format
    valid_score: float | None = None  # best-of-n: the candidate's score on the valid split
    chosen: bool = True  # the neuron's explanation (best-of-n keeps one)


class Explainer(ABC):
    @property
    @abstractmethod
    def name(self) -> str:
        """Stored in `explanations.explainer`: the method and the LLM behind it (cheap: no model is loaded)."""

    @property
    def candidates(self) -> int:
        """Explanations drawn per neuron; more than one are chosen between on the valid split (best-of-n)."""
        return 1

    @property
    def batch(self) -> int:
        """Neurons per `explain` call the stage makes (progress and the LLM cache advance per call)."""
        return 1

    @abstractmethod
    def explain(self, neurons: Sequence[ExplainerInput], seed: int) -> list[Explanation]:
        """`candidates` explanations per neuron, in neuron order then sample order."""


REGISTRY: Registry[Explainer] = Registry("explainer", __name__)


def build_explainer(choice: Any, base_dir: Path | None, store: Store, llms: LoadedLLMs) -> Explainer:
    """The explainer a config chose (`config.explainer`); its LLM, if any, loads into `llms` on first use."""
    return REGISTRY.get(choice.kind).factory(choice.options, base_dir, store, llms)
