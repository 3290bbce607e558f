"""Best-of-n: several candidate explanations per neuron, the one that scores best on the VALID split kept.

The valid split (valid top, quantile and random records) is neither shown to the explainer (train) nor used for
the reported score (test), so choosing on it cannot inflate the test score (docs/method.md s.9). Candidates are
ranked by the config's `scoring.rank_by` (the mean of those scorers' values); every candidate is stored with its
valid score, so the choice can be audited.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

from autointerp.explain import Explanation
from autointerp.explain.llm import usable
from autointerp.record.records import NeuronRecord
from autointerp.score import Scorer, item_of, ranking_value, score_items


def choose(candidates: Sequence[Explanation], records: dict[tuple[int, int], NeuronRecord],
           scorers: Mapping[str, Scorer], advance: Callable[[int], None] = lambda n: None) -> list[Explanation]:
    """`candidates` with `valid_score` and `chosen` set: per neuron, the usable candidate with the highest
    ranking value (the mean of `scorers`' values) on the valid split (ties and undefined scores: the earlier
    sample)."""
    by_neuron: dict[tuple[int, int], list[Explanation]] = {}
    for c in candidates:
        by_neuron.setdefault((c.layer, c.neuron), []).append(c)
    chosen: list[Explanation] = []
    for key, group in by_neuron.items():
        if len(group) == 1:
            chosen.append(dataclasses.replace(group[0], chosen=True))
            advance(1)
            continue
        scored = valid_scores([c for c in group if usable(c.explanation)], records[key], scorers)
        best = max(scored, key=lambda c: (scored[c] is not None, scored[c] or 0.0, -c.sample), default=group[0])
        chosen += [dataclasses.replace(c, valid_score=scored.get(c), chosen=c is best) for c in group]
        advance(1)
    return chosen


def valid_scores(candidates: Sequence[Explanation], record: NeuronRecord,
                 scorers: Mapping[str, Scorer]) -> dict[Explanation, float | None]:
    values: dict[Explanation, dict[str, float | None]] = {c: {} for c in candidates}
    for kind, scorer in scorers.items():
        results = score_items(scorer, [item_of(scorer, c.explanation, record, "valid") for c in candidates])
        for c, result in zip(candidates, results):
            values[c][kind] = result.value
    return {c: ranking_value(v, list(scorers)) for c, v in values.items()}
