"""`writes`: `marked`, plus what the unit writes, so that "says X" features can be named.

Some units are better described by what they make the model say next than by what they read: a unit that fires
on "the capital of" and promotes " Paris", " London". Beside `marked`'s view of the records this format shows
(1) the tokens that follow the peaks (the token after each excerpt's strongest activation, most frequent first)
and (2) the tokens the unit's output direction promotes most through the final norm and the unembedding (the
`unit_logits` asset; omitted where it was not computed). The few-shot answers say what a unit reads and, where
the two views agree, what it predicts.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from autointerp.explain.formats import REGISTRY
from autointerp.explain.formats.marked import EXAMPLES, SYSTEM, Marked, neuron_block
from autointerp.fewshot import _neuron
from autointerp.prompting import escape_token, explanation_line, explanation_prefix, normalize
from autointerp.record.records import ActivationRecord, FewShotNeuron

LISTED = 8  # tokens shown of each list

WRITES_SYSTEM = SYSTEM.replace(
    "Work out what",
    "You also see the tokens that come right after its peaks and the tokens its output makes more likely next "
    "(\"Promotes\"): when those agree, the neuron predicts what comes next, and the answer should say so. "
    "Work out what")

# A made-up "says X" neuron: it fires on the word before a city and promotes city names.
CITY_NEXT = _neuron(
    "the word before a city name",
    [("The", 0.0), (" capital", 0.4), (" of", 3.2), (" France", 0.0), (" is", 1.1), (" Paris", 0.0), (".", 0.0)],
    [("She", 0.0), (" moved", 0.2), (" to", 3.6), (" London", 0.0), (" in", 0.0), (" May", 0.0), (".", 0.0)],
    [("Flights", 0.0), (" from", 2.9), (" Rome", 0.0), (" were", 0.0), (" delayed", 0.0), (".", 0.0)],
)
CITY_PROMOTES = (" Paris", " London", " Rome", " Berlin", " Madrid", " Tokyo")
# The few-shot neurons: `marked`'s with what they write, and the "says X" one.
WRITES_EXAMPLES: tuple[tuple[FewShotNeuron, tuple[str, ...]], ...] = (
    (EXAMPLES[0], (" and", ",", ".", " when", "s")),
    (FewShotNeuron('the word before a city name, most strongly "to", "of" and "from"; it predicts city names '
                   'like "Paris", "London" and "Rome"', CITY_NEXT.records), CITY_PROMOTES),
    (EXAMPLES[1], (" and", " from", " into", ".", " was")),
)


def following_peaks(records: Sequence[ActivationRecord]) -> list[str]:
    """The token after each record's peak (where there is one), most frequent first."""
    after = []
    for record, values in zip(records, normalize(records)):
        if max(values, default=0) <= 0:
            continue
        peak = max(range(len(values)), key=lambda i: (values[i], -i))
        if peak + 1 < len(record.tokens):
            after.append(record.tokens[peak + 1])
    return [token for token, _ in Counter(after).most_common(LISTED)]


def writes_block(label: int, records: Sequence[ActivationRecord], writes: Sequence[str]) -> str:
    quote = lambda tokens: ", ".join(f'"{escape_token(t)}"' for t in tokens[:LISTED]) or "none"  # noqa: E731
    lines = [neuron_block(label, records), f"Tokens right after the peaks: {quote(following_peaks(records))}"]
    if writes:
        lines.append(f"Promotes: {quote(list(writes))}")
    return "\n".join(lines)


@REGISTRY.register("writes")
class Writes(Marked):
    label = len(WRITES_EXAMPLES) + 1
    system = WRITES_SYSTEM

    def messages(self, records: Sequence[ActivationRecord], writes: Sequence[str] = ()) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system}]
        for i, (example, promoted) in enumerate(WRITES_EXAMPLES, start=1):
            messages.append({"role": "user", "content": writes_block(i, example.records, promoted)})
            messages.append({"role": "assistant", "content": explanation_line(i, example.explanation, period=True)})
        messages.append({"role": "user", "content": writes_block(self.label, records, writes)})
        messages.append({"role": "assistant", "content": explanation_prefix(self.label)})
        return messages
