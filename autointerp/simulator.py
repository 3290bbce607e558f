"""Simulate: predict each token's activation from an explanation alone ("all at once", METHOD.md s.5).

Every excerpt of the test split (5 top + 5 random) gets one prompt; the simulator's distribution over
"0".."10" at each token's slot gives the simulated activation as its expected value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from autointerp.explainer import Explanation
from autointerp.fewshot import SIMULATOR_EXAMPLES
from autointerp.llm.base import CachedLLM
from autointerp.prompts import build_simulator_prompt, expected_value
from autointerp.records import ActivationRecord, NeuronRecord


@dataclass(frozen=True)
class Simulation:
    layer: int
    neuron: int
    sample: int
    excerpt_id: int
    kind: str  # top or random (both from the test split)
    simulated: tuple[float, ...]  # one expected value in [0, 10] per token
    real: tuple[float, ...]  # the recorded activations, for scoring


def scored_records(record: NeuronRecord) -> list[tuple[str, ActivationRecord]]:
    return [("top", r) for r in record.test_top()] + [("random", r) for r in record.test_random()]


def simulate_neurons(llm: CachedLLM, explanations: Sequence[Explanation],
                     neurons: dict[tuple[int, int], NeuronRecord], placeholder: str) -> list[Simulation]:
    """`placeholder`: the simulator spec's (LLMSpec.placeholder), required so that no caller drops it."""
    jobs, requests = [], []
    for explanation in explanations:
        for kind, record in scored_records(neurons[(explanation.layer, explanation.neuron)]):
            prompt = build_simulator_prompt(SIMULATOR_EXAMPLES, explanation.explanation, record.tokens,
                                            placeholder=placeholder)
            jobs.append((explanation, kind, record))
            requests.append(prompt.request)
    simulations = []
    for (explanation, kind, record), distributions in zip(jobs, llm.slots(requests)):
        simulated = tuple(expected_value(d) for d in distributions)
        if len(simulated) != len(record.tokens):
            raise ValueError(f"simulator returned {len(simulated)} values for {len(record.tokens)} tokens "
                             f"(layer {explanation.layer}, neuron {explanation.neuron}, excerpt {record.excerpt_id})")
        simulations.append(Simulation(explanation.layer, explanation.neuron, explanation.sample,
                                      int(record.excerpt_id), kind, simulated, record.activations))
    return simulations
