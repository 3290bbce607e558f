"""Best-of-n: several candidate explanations per neuron, the one that simulates best on the VALID split kept.

The valid split (valid top + valid random records) is neither shown to the explainer (train) nor used for
the reported score (test), so choosing on it cannot inflate the test score (docs/method.md s.9). Every
candidate is stored with its valid score, so the choice can be audited.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from autointerp.explain import Explanation
from autointerp.explain.llm import usable
from autointerp.record.records import NeuronRecord
from autointerp.score.scoring import score_simulations
from autointerp.simulate import Simulation, SimulationJob, Simulator


def choose(candidates: Sequence[Explanation], records: dict[tuple[int, int], NeuronRecord], simulator: Simulator,
           advance: Callable[[int], None] = lambda n: None) -> list[Explanation]:
    """`candidates` with `valid_score` and `chosen` set: per neuron, the usable candidate with the highest
    top-and-random correlation on the valid split (ties and undefined scores: the earlier sample)."""
    by_neuron: dict[tuple[int, int], list[Explanation]] = {}
    for c in candidates:
        by_neuron.setdefault((c.layer, c.neuron), []).append(c)
    chosen: list[Explanation] = []
    for key, group in by_neuron.items():
        if len(group) == 1:
            chosen.append(dataclasses.replace(group[0], chosen=True))
            advance(1)
            continue
        scored = _valid_scores([c for c in group if usable(c.explanation)], records[key], simulator)
        best = max(scored, key=lambda c: (scored[c] is not None, scored[c] or 0.0, -c.sample), default=group[0])
        chosen += [dataclasses.replace(c, valid_score=scored.get(c), chosen=c is best) for c in group]
        advance(1)
    return chosen


def _valid_scores(candidates: Sequence[Explanation], record: NeuronRecord,
                  simulator: Simulator) -> dict[Explanation, float | None]:
    excerpts = record.scored("valid")
    jobs = [SimulationJob(c.explanation, r.tokens) for c in candidates for _, r in excerpts]
    values = iter(simulator.simulate(jobs)) if jobs else iter(())
    scores = {}
    for c in candidates:
        sims = [Simulation(c.layer, c.neuron, c.sample, r.excerpt_id or 0, kind, tuple(next(values)), r.activations)
                for kind, r in excerpts]
        scores[c] = score_simulations(sims).score_top_and_random
    return scores
