"""Explain neurons: the explainer LLM reads a neuron's top train-split excerpts (METHOD.md s.4)."""

from __future__ import annotations

import random
import re
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


def layer_selected(selection: NeuronSelection, layer: int) -> bool:
    """Is the layer among `neurons.layers` (every layer when that list is empty)?"""
    return not selection.layers or layer in selection.layers


def select_neurons(selection: NeuronSelection, n_neurons: int, seed: int, layer: int) -> list[int]:
    """The neurons of a layer to explain; `random` is a pure function of (seed, layer)."""
    if not layer_selected(selection, layer):
        return []
    if selection.select == "all":
        return list(range(n_neurons))
    if selection.select == "first":
        return list(range(min(selection.count, n_neurons)))
    if selection.select == "list":
        return sorted({i for i in selection.ids if i < n_neurons})
    return sorted(random.Random(f"{seed}/{layer}").sample(range(n_neurons), min(selection.count, n_neurons)))


# An answer with prompt syntax in it is the model echoing its prompt; such samples are drawn again.
PROMPT_ECHO = r"(<start>|<end>|\t|Explanation of neuron|the main thing this neuron does is find|\bunknown\b)"
_ECHO = re.compile(PROMPT_ECHO)


def usable(explanation: str) -> bool:
    return len(explanation) >= 2 and not _ECHO.search(explanation)


def explain_neurons(llm: CachedLLM, neurons: Sequence[NeuronRecord], spec: LLMSpec, seed: int,
                    attempts: int = 3) -> list[Explanation]:
    """`spec.samples` explanations per neuron; an unusable sample is redrawn (new seed) up to `attempts` times.

    What is still unusable after that is returned as is, and the quality check rejects it.
    """
    label = len(EXPLAINER_EXAMPLES) + 1
    prefix = explanation_prefix(label)
    best: dict[tuple[int, int], Explanation] = {}
    for attempt in range(attempts):
        todo = [r for r in neurons if any(not usable(best[(r.neuron, s)].explanation) if (r.neuron, s) in best
                                          else True for s in range(spec.samples))]
        if not todo:
            break
        requests = [{"messages": build_explainer_messages(EXPLAINER_EXAMPLES, r.train_top()[: spec.examples]),
                     "n": spec.samples, "max_tokens": spec.max_tokens, "temperature": spec.temperature,
                     "top_p": spec.top_p, "seed": seed * 1_000_003 + r.layer * 10_007 + r.neuron + 7_919 * attempt}
                    for r in todo]
        for record, completions in zip(todo, llm.chat(requests)):
            for sample, completion in enumerate(completions):
                key = (record.neuron, sample)
                if key not in best or not usable(best[key].explanation):
                    text = parse_explanation(completion, prefix)
                    best[key] = Explanation(record.layer, record.neuron, sample, text, completion)
    return [best[(r.neuron, s)] for r in neurons for s in range(spec.samples)]
