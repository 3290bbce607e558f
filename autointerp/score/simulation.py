"""`simulation`: the paper's score. The configured simulator predicts every token's activation from the
explanation alone; the score is the Pearson correlation with the real activations over all tokens pooled
(docs/method.md s.6-7). `simulate_items` is the one loop that asks a simulator, for the simulate stage too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from autointerp.record.records import ActivationRecord
from autointerp.score import REGISTRY, Scored, Scorer, ScoringItem
from autointerp.score.scoring import score_neuron
from autointerp.simulate import SimulationJob, Simulator


@dataclass(frozen=True)
class Simulated:
    kind: str
    record: ActivationRecord
    simulated: tuple[float, ...]  # one value in [0, 10] per token


def simulate_items(simulator: Simulator, items: Sequence[ScoringItem]) -> list[list[Simulated]]:
    """Every excerpt of every item simulated from its explanation, in one simulator call."""
    jobs = [(i, kind, r) for i, item in enumerate(items) for kind, r in item.excerpts]
    values = simulator.simulate([SimulationJob(items[i].explanation, r.tokens) for i, _, r in jobs]) if jobs else []
    out: list[list[Simulated]] = [[] for _ in items]
    for (i, kind, r), simulated in zip(jobs, values):
        if len(simulated) != len(r.tokens):
            raise ValueError(f"simulator {simulator.name} returned {len(simulated)} values for {len(r.tokens)} "
                             f"tokens (excerpt {r.excerpt_id})")
        out[i].append(Simulated(kind, r, tuple(float(v) for v in simulated)))
    return out


def score_simulated(simulated: Sequence[Simulated]) -> Scored:
    """Top-and-random correlation (every excerpt that is not random counts as top) with all the paper's
    scores in `details` (a `NeuronScores`)."""
    top = [s for s in simulated if s.kind != "random"]
    rnd = [s for s in simulated if s.kind == "random"]
    scores = score_neuron([s.record.activations for s in top], [s.simulated for s in top],
                          [s.record.activations for s in rnd], [s.simulated for s in rnd])
    reason = None if scores.score_top_and_random is not None else scores.reason
    return Scored(scores.score_top_and_random, reason, {"scores": scores})


class SimulationScorer(Scorer):
    reads = "scored"  # the test (or valid) split's top and random records, as the paper scores

    def __init__(self, simulator: Simulator):
        self.simulator = simulator

    @property
    def name(self) -> str:
        return self.simulator.name

    def score(self, items: Sequence[ScoringItem]) -> list[Scored]:
        return [score_simulated(s) for s in simulate_items(self.simulator, items)]


@REGISTRY.register("simulation")
def simulation(config: Any, store: Any, llms: Any) -> SimulationScorer:
    from autointerp.simulate import build_simulator

    return SimulationScorer(build_simulator(config.simulator, config.base_dir, store, llms))
