"""Explain neurons: the explainer LLM reads a neuron's top train-split excerpts (METHOD.md s.4)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from autointerp.config import LLMSpec, NeuronSelection
from autointerp.fewshot import EXPLAINER_EXAMPLES
from autointerp.llm.base import CachedLLM
from autointerp.prompts import build_explainer_messages, explanation_prefix, parse_explanation
from autointerp.records import NeuronRecord


@dataclass(frozen=True)
class Explanation:
    layer: int
    neuron: int
    sample: int  # which of the explainer's samples (0 when one is drawn)
    explanation: str  # "" when the completion held no usable line (the quality check rejects it)
    completion: str


def select_neurons(selection: NeuronSelection, n_neurons: int, seed: int, layer: int) -> list[int]:
    """The neurons of a layer to explain; `random` is a pure function of (seed, layer)."""
    if selection.select == "all":
        return list(range(n_neurons))
    if selection.select == "first":
        return list(range(min(selection.count, n_neurons)))
    if selection.select == "list":
        return sorted({i for i in selection.ids if i < n_neurons})
    return sorted(random.Random(f"{seed}/{layer}").sample(range(n_neurons), min(selection.count, n_neurons)))


def explain_neurons(llm: CachedLLM, neurons: Sequence[NeuronRecord], spec: LLMSpec, seed: int) -> list[Explanation]:
    requests = []
    for record in neurons:
        messages = build_explainer_messages(EXPLAINER_EXAMPLES, record.train_top()[: spec.examples])
        requests.append({"messages": messages, "n": spec.samples, "max_tokens": spec.max_tokens,
                         "temperature": spec.temperature, "top_p": spec.top_p,
                         "seed": seed * 1_000_003 + record.layer * 10_007 + record.neuron})
    explanations = []
    label = len(EXPLAINER_EXAMPLES) + 1
    for record, completions in zip(neurons, llm.chat(requests)):
        for sample, completion in enumerate(completions):
            text = parse_explanation(completion, explanation_prefix(label))
            explanations.append(Explanation(record.layer, record.neuron, sample, text, completion))
    return explanations
