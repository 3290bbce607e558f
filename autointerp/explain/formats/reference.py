"""`listing`: the reference explainer prompt (docs/method.md s.5): every token of each excerpt on its own line
with its 0-10 activation, three few-shot neurons, and the answer primed with "the main thing this neuron
does is find"; the explanation is the first line of the completion."""

from __future__ import annotations

import re
from typing import Sequence

from autointerp.explain.formats import REGISTRY, PromptFormat
from autointerp.prompting import (PRIMING_PHRASE, default_label, explanation_line, explanation_prefix,
                                        format_record, nonzero_fraction, normalize, records_text)
from autointerp.fewshot import EXPLAINER_EXAMPLES
from autointerp.record.records import ActivationRecord, FewShotNeuron

ZEROS_FILTERED_HEADER = "Same activations, but with all zeros filtered out:"
# Below this share of non-zero (normalised) activations, the explainer gets the non-zero ones listed again,
# so that sparse neurons' few active tokens are not lost in a sea of zeros.
REPEAT_NONZERO_BELOW = 0.2

EXPLAINER_SYSTEM = (
    "You are helping to interpret the neurons of a language model. A neuron responds to some specific "
    "feature of the text it reads. Each neuron below is shown with excerpts of documents and its activation "
    "on every token. Look at the tokens where the neuron is active, work out what they have in common, and "
    "sum up in a single sentence what the neuron is looking for; describe the pattern rather than listing "
    "the words.\n\n"
    "Each excerpt runs from <start> to <end>, one token per line, written as token<TAB>activation. "
    "Activations are integers from 0 (inactive) to 10 (the strongest activation shown for that neuron). "
    "Most activations are 0; the non-zero activations are the ones that matter. Tab and line-break "
    "characters inside a token are written as \\t and \\n.\n\n"
    f'Answer with a single line that completes "{"Explanation of neuron N behavior: " + PRIMING_PHRASE}", '
    "where N is the number of the neuron."
)


def _zeros_filtered_text(records: Sequence[ActivationRecord], values: Sequence[Sequence[int]]) -> str:
    # One block per record, as in the main listing, so the model can match them up.
    blocks = []
    for record, vs in zip(records, values):
        kept = [(t, v) for t, v in zip(record.tokens, vs) if v != 0]
        blocks.append(format_record([t for t, _ in kept], [v for _, v in kept]))
    return "\n".join(blocks)


def explainer_neuron_block(label: str | int, records: Sequence[ActivationRecord]) -> str:
    """`Neuron N` / `Activations:` / the records, plus the zero-filtered repeat for sparse neurons."""
    values = normalize(records)
    text = f"Neuron {label}\nActivations:\n{records_text(records, values)}"
    if nonzero_fraction(values) < REPEAT_NONZERO_BELOW:
        text += f"\n{ZEROS_FILTERED_HEADER}\n{_zeros_filtered_text(records, values)}"
    return text


def build_explainer_messages(examples: Sequence[FewShotNeuron], records: Sequence[ActivationRecord],
                             label: str | int | None = None) -> list[dict[str, str]]:
    """Chat messages: system; per few-shot neuron a user turn (its records) and an assistant turn (its
    explanation); a user turn with the target's records; and a final, unfinished assistant turn holding
    the priming text.

    Few-shot neurons are numbered 1..k and the target defaults to k + 1. Send the final assistant turn as a
    prefill where the endpoint allows it (e.g. `continue_final_message`); otherwise drop it: the system
    message asks for the same line, and `parse_explanation` removes an echoed priming text.
    """
    label = default_label(examples, label)
    messages = [{"role": "system", "content": EXPLAINER_SYSTEM}]
    for i, example in enumerate(examples, start=1):
        messages.append({"role": "user", "content": explainer_neuron_block(i, example.records)})
        messages.append({"role": "assistant", "content": explanation_line(i, example.explanation, period=True)})
    messages.append({"role": "user", "content": explainer_neuron_block(label, records)})
    messages.append({"role": "assistant", "content": explanation_prefix(label)})
    return messages


def build_explainer_prompt(examples: Sequence[FewShotNeuron], records: Sequence[ActivationRecord],
                           label: str | int | None = None) -> str:
    """The same content as one completion-style text, ending exactly with the priming text."""
    label = default_label(examples, label)
    parts = [EXPLAINER_SYSTEM]
    for i, example in enumerate(examples, start=1):
        parts.append(f"{explainer_neuron_block(i, example.records)}\n"
                     f"{explanation_line(i, example.explanation, period=True)}")
    parts.append(f"{explainer_neuron_block(label, records)}\n{explanation_prefix(label)}")
    return "\n\n".join(parts)


_ECHOED_HEADER = re.compile(r"^explanation of neuron .*? behavior\s*:\s*", re.IGNORECASE)
_PHRASE_WORDS = PRIMING_PHRASE.split()


def _strip_echoed_phrase(text: str) -> str:
    # Longest tail of "the main thing this neuron does is find" the answer starts with, down to "is find":
    # a bare "find" could be the explanation's own first word.
    lowered = text.lower()
    for k in range(len(_PHRASE_WORDS), 1, -1):
        tail = " ".join(_PHRASE_WORDS[-k:])
        if lowered.startswith(tail) and (len(text) == len(tail) or not text[len(tail)].isalnum()):
            return text[len(tail):].lstrip(" :")
    return text


def parse_explanation(completion: str, prefix: str | None = None) -> str:
    """The explanation in an explainer completion: its first line, without an echoed priming text, trailing
    period and surrounding whitespace. Returns "" when nothing is left; the caller decides what that means."""
    text = re.split(r"[\r\n]", completion, maxsplit=1)[0].strip()
    if prefix and text.startswith(prefix.strip()):
        text = text[len(prefix.strip()):]
    else:
        text = _ECHOED_HEADER.sub("", text, count=1)
    text = _strip_echoed_phrase(text.strip()).strip()
    if text.endswith("."):
        text = text[:-1]
    return text.strip()


@REGISTRY.register("listing")
class Listing(PromptFormat):
    label = len(EXPLAINER_EXAMPLES) + 1

    def messages(self, records: Sequence[ActivationRecord], writes: Sequence[str] = ()) -> list[dict[str, str]]:
        return build_explainer_messages(EXPLAINER_EXAMPLES, records, self.label)

    def parse(self, completion: str) -> str:
        return parse_explanation(completion, explanation_prefix(self.label))
