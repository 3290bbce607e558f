"""The "all at once" simulator prompt and reading a value distribution (docs/method.md s.6)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from autointerp.prompting import UNKNOWN, default_label, escape_token, explanation_line, normalize, records_text
from autointerp.llm.base import VALUE_STRINGS
from autointerp.record.records import FewShotNeuron

SIMULATOR_INSTRUCTION = (
    "You are predicting how neurons of a language model respond to text. Each neuron comes with an "
    "explanation of what it looks for; from that explanation, predict the neuron's activation on every "
    "token of an excerpt.\n\n"
    "Each excerpt runs from <start> to <end>, one token per line, written as token<TAB>activation. "
    "Activations are integers from 0 (inactive) to 10 (strongest). Most activations are 0. Tab and "
    "line-break characters inside a token are written as \\t and \\n."
)


@dataclass
class SimulatorPrompt:
    prefix: str  # instruction + few-shot neurons with revealed activations, identical for every excerpt and explanation
    body: str  # the target neuron's explanation and its <start>/token<TAB>placeholder/<end> block
    slots: list[int]  # offsets in body where each token's activation is written: where each placeholder starts

    @property
    def text(self) -> str:
        return self.prefix + self.body

    @property
    def text_slots(self) -> list[int]:
        """`slots` as offsets into `text`."""
        return [len(self.prefix) + s for s in self.slots]

    @property
    def request(self) -> dict[str, Any]:
        """This prompt as an LLM `slots` request (autointerp/llm/base.py)."""
        return {"prefix": self.prefix, "body": self.body, "slots": self.slots}


def _simulator_example_block(label: int, example: FewShotNeuron, placeholder: str, hidden: float) -> str:
    values: list[list[int | str]] = [list(v) for v in normalize(example.records)]
    for vs in values:  # the reference hides the first values of each few-shot record behind the placeholder
        vs[: int(len(vs) * hidden)] = [placeholder] * int(len(vs) * hidden)
    return (f"Neuron {label}\n{explanation_line(label, example.explanation, period=False)}\n"
            f"Activations:\n{records_text(example.records, values)}")


def simulator_prefix(examples: Sequence[FewShotNeuron], placeholder: str = UNKNOWN, hidden: float = 0.0) -> str:
    blocks = [_simulator_example_block(i, example, placeholder, hidden) for i, example in enumerate(examples, start=1)]
    return "\n\n".join([SIMULATOR_INSTRUCTION, *blocks]) + "\n\n"


def build_simulator_prompt(examples: Sequence[FewShotNeuron], explanation: str, tokens: Sequence[str],
                           label: str | int | None = None, placeholder: str = UNKNOWN,
                           hidden: float = 0.0) -> SimulatorPrompt:
    """The "all at once" simulator prompt for one excerpt; the target defaults to neuron k + 1.

    `placeholder` is written in every value slot (the all_at_once simulator's `placeholder` option); `hidden`:
    the share of each few-shot record whose values are shown as the placeholder too, as the reference's
    `first_revealed_activation_indices` do (0: every value revealed)."""
    label = default_label(examples, label)
    body = (f"Neuron {label}\n{explanation_line(label, explanation, period=False)}\n"
            "Activations:\n<start>\n")
    slots = []
    for token in tokens:
        body += f"{escape_token(token)}\t"
        slots.append(len(body))
        body += f"{placeholder}\n"
    body += "<end>"
    return SimulatorPrompt(simulator_prefix(examples, placeholder, hidden), body, slots)


def expected_value(distribution: Mapping[str, float]) -> float:
    """EV of the simulator's distribution at one slot, restricted to "0".."10" and renormalised.

    Values are probabilities. Keys other than exactly "0".."10" are ignored. With no mass on any value we
    return 0.0: a simulator that predicts no number at all gives no evidence of activation, and 0 is what
    almost every token of almost every neuron has.
    """
    mass = {int(key): float(p) for key, p in distribution.items() if key in VALUE_STRINGS}
    bad = {k: p for k, p in mass.items() if not (p >= 0 and math.isfinite(p))}
    if bad:
        raise ValueError(f"probabilities must be finite and >= 0, got {bad}")
    total = sum(mass.values())
    return sum(v * p for v, p in mass.items()) / total if total > 0 else 0.0
