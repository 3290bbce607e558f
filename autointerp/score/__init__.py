"""Stage 4, score: how well an explanation predicts where its unit fires (docs/method.md s.7 and s.10).

A `Scorer` is one module here, registered by name; it reads an explanation and a unit's excerpts with their real
activations and returns one number per explanation, higher is better:

    simulation   the configured simulator predicts every token; Pearson correlation with the real activations
    detection    a judge LLM reads the explanation and a whole excerpt: does the unit fire here? AUROC
    fuzzing      the judge reads an activating excerpt with tokens marked: are the marks where it fires? AUROC

`score_items` is the one function every caller uses (the score and judge stages, best-of-n, eval/);
`score_explanation` is the stable entry point for scoring one explanation against any excerpts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from autointerp.plugins import Registry
from autointerp.record.records import ActivationRecord

if TYPE_CHECKING:
    from autointerp.llm import LoadedLLMs


@dataclass(frozen=True)
class ScoringItem:
    """One explanation and the excerpts it is scored on: (kind, record) pairs, kind being top, random or
    quantile (the simulation scorer reports random-only apart; the judges only read the activations)."""

    explanation: str
    excerpts: tuple[tuple[str, ActivationRecord], ...]


@dataclass
class Scored:
    value: float | None  # the scorer's number (correlation, AUROC), higher is better; None when undefined
    reason: str | None = None  # why value is None
    details: dict[str, Any] = field(default_factory=dict)  # what the scorer's table stores beside the value


class Scorer(ABC):
    reads = "judged"  # which of a neuron's records it scores: NeuronRecord.judged (or .scored, for simulation)

    @property
    @abstractmethod
    def name(self) -> str:
        """Stored in the scorer's table (cheap: no model is loaded)."""

    @abstractmethod
    def score(self, items: Sequence[ScoringItem]) -> list[Scored]:
        """One result per item, in order."""


REGISTRY: Registry[Scorer] = Registry("scorer", __name__)


def build_scorer(kind: str, config: Any, store: Any, llms: LoadedLLMs) -> Scorer:
    """The scorer `kind` as the config sets it up (`config.scoring`, and `config.simulator` for simulation); its
    LLM, if any, loads into `llms` on first use."""
    return REGISTRY.get(kind, "scoring").factory(config, store, llms)


def score_items(scorer: Scorer, items: Sequence[ScoringItem]) -> list[Scored]:
    """Score every item; what each caller does with the results (store them, choose, evaluate) is its own."""
    return scorer.score(items) if items else []


def item_of(scorer: Scorer, explanation: str, record: Any, split: str) -> ScoringItem:
    """What `scorer` reads of a neuron's records (`record`: a NeuronRecord) in one split."""
    return ScoringItem(explanation, tuple(getattr(record, scorer.reads)(split)))


def build_rankers(config: Any, store: Any, llms: LoadedLLMs) -> dict[str, Scorer]:
    """The scorers of `scoring.rank_by`, by name: what best-of-n chooses by."""
    return {kind: build_scorer(kind, config, store, llms) for kind in config.scoring.rank_by}


def ranking_value(values: dict[str, float | None], rank_by: Sequence[str]) -> float | None:
    """The mean of the `rank_by` scorers' values that are defined (None if none is): what best-of-n chooses by
    and the summary and viewer rank by."""
    kept = [v for k in rank_by if (v := values.get(k)) is not None]
    return sum(kept) / len(kept) if kept else None


def score_explanation(config: Any, explanation: str, excerpts: Sequence[tuple[Sequence[str], Sequence[float]]],
                      store: Any = None, llms: LoadedLLMs | None = None) -> float | None:
    """The config's default score (`scoring.rank_by`) of `explanation` on `excerpts`, a list of
    (tokens, real activations) pairs; higher is better. Excerpts may be silent (all activations 0) or all
    active: a scorer that cannot use the set says so by leaving its value out of the mean. LLM calls are cached
    in `store` (default: the store at $AUTOINTERP_HOME). Pass `llms` to keep a local model loaded from one call
    to the next; without it, the scorers' LLM is loaded for this call and released after it."""
    from autointerp.llm import LoadedLLMs
    from autointerp.store import Store

    store = store if store is not None else Store.from_home()
    item = ScoringItem(explanation, tuple(("top", ActivationRecord(tuple(t), tuple(a))) for t, a in excerpts))
    own = llms is None
    llms = LoadedLLMs() if llms is None else llms
    try:
        values = {kind: score_items(build_scorer(kind, config, store, llms), [item])[0].value
                  for kind in config.scoring.rank_by}
    finally:
        if own:
            llms.close()
    return ranking_value(values, config.scoring.rank_by)
