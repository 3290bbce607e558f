"""Explainer and simulator prompts, and reading the models' answers (METHOD.md s.3-5).

Formats follow the reference exactly where METHOD.md fixes them: records as `<start>` / `token<TAB>value`
lines / `<end>`, activations normalised to integers 0..10, the explainer primed with
`Explanation of neuron N behavior: the main thing this neuron does is find`, and the simulator reading a
distribution over "0".."10" where a token's activation is written ("unknown" in the prompt).

Token escaping: the format is line-based with a tab between token and value, so a token's own tab and
line-break characters are written as two-character escapes: TAB -> `\\t`, LF -> `\\n`, CR -> `\\r`, and every
other character `str.splitlines` breaks on (VT, FF, FS, GS, RS, NEL, LS, PS) -> `\\xHH` / `\\uHHHH`.
Backslashes are left alone: the escaping is for display only and never has to be undone, and code tokens read
more naturally unchanged. It is applied by `format_record`, so explainer and simulator prompts agree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from autointerp.fewshot import FewShotNeuron
from autointerp.records import ActivationRecord

MAX_VALUE = 10
VALUE_STRINGS = tuple(str(v) for v in range(MAX_VALUE + 1))
UNKNOWN = "unknown"
PRIMING_PHRASE = "the main thing this neuron does is find"
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

SIMULATOR_INSTRUCTION = (
    "You are predicting how neurons of a language model respond to text. Each neuron comes with an "
    "explanation of what it looks for; from that explanation, predict the neuron's activation on every "
    "token of an excerpt.\n\n"
    "Each excerpt runs from <start> to <end>, one token per line, written as token<TAB>activation. "
    "Activations are integers from 0 (inactive) to 10 (strongest). Most activations are 0. Tab and "
    "line-break characters inside a token are written as \\t and \\n."
)

_NAMED_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_OTHER_LINE_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_ESCAPES = str.maketrans({
    **_NAMED_ESCAPES,
    **{c: (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}") for c in _OTHER_LINE_BREAKS},
})


def escape_token(token: str) -> str:
    """The token as written in a prompt: no tab or line break of its own (see the module docstring)."""
    return token.translate(_ESCAPES)


# --- normalisation and records ---------------------------------------------------------------------------

def max_positive_activation(records: Sequence[ActivationRecord]) -> float:
    """The largest activation in `records`, or 0.0 when none is positive."""
    return max((a for r in records for a in r.activations if a > 0), default=0.0)


def normalize(records: Sequence[ActivationRecord], max_activation: float | None = None) -> list[list[int]]:
    """`min(10, floor(10 * max(a, 0) / m))` per token; m = the records' largest activation unless given.

    Everything is 0 when m <= 0: a neuron that never fires positively has nothing to show.
    """
    m = max_positive_activation(records) if max_activation is None else max_activation
    if m <= 0:
        return [[0] * len(r.activations) for r in records]
    return [[min(MAX_VALUE, math.floor(MAX_VALUE * max(a, 0.0) / m)) for a in r.activations] for r in records]


def format_record(tokens: Sequence[str], values: Sequence[int | str]) -> str:
    """`<start>`, one `token<TAB>value` line per token (token escaped), `<end>`; no trailing newline."""
    if len(tokens) != len(values):
        raise ValueError(f"{len(tokens)} tokens but {len(values)} values")
    lines = [f"{escape_token(t)}\t{v}" for t, v in zip(tokens, values)]
    return "\n".join(["<start>", *lines, "<end>"])


def nonzero_fraction(values: Sequence[Sequence[int]]) -> float:
    total = sum(len(v) for v in values)
    return sum(1 for vs in values for v in vs if v != 0) / total if total else 0.0


def _records_text(records: Sequence[ActivationRecord], values: Sequence[Sequence[int | str]]) -> str:
    return "\n".join(format_record(r.tokens, v) for r, v in zip(records, values))


def _zeros_filtered_text(records: Sequence[ActivationRecord], values: Sequence[Sequence[int]]) -> str:
    # One block per record, as in the main listing, so the model can match them up.
    blocks = []
    for record, vs in zip(records, values):
        kept = [(t, v) for t, v in zip(record.tokens, vs) if v != 0]
        blocks.append(format_record([t for t, _ in kept], [v for _, v in kept]))
    return "\n".join(blocks)


def _clean_explanation(explanation: str) -> str:
    # A stray newline would end the explanation line early; the period is added back where the format wants it.
    text = " ".join(explanation.split())
    return text[:-1].rstrip() if text.endswith(".") else text


def _explanation_line(label: str | int, explanation: str, period: bool) -> str:
    text = _clean_explanation(explanation)
    line = f"{explanation_prefix(label)} {text}" if text else explanation_prefix(label)
    return line + "." if period and text else line


# --- explainer ---------------------------------------------------------------------------------------------

def explanation_prefix(neuron_label: str | int) -> str:
    """The priming text the explainer's answer starts with (and the simulator's explanation line)."""
    return f"Explanation of neuron {neuron_label} behavior: {PRIMING_PHRASE}"


def explainer_neuron_block(label: str | int, records: Sequence[ActivationRecord]) -> str:
    """`Neuron N` / `Activations:` / the records, plus the zero-filtered repeat for sparse neurons."""
    values = normalize(records)
    text = f"Neuron {label}\nActivations:\n{_records_text(records, values)}"
    if nonzero_fraction(values) < REPEAT_NONZERO_BELOW:
        text += f"\n{ZEROS_FILTERED_HEADER}\n{_zeros_filtered_text(records, values)}"
    return text


def _default_label(examples: Sequence[FewShotNeuron], label: str | int | None) -> str | int:
    return len(examples) + 1 if label is None else label


def build_explainer_messages(examples: Sequence[FewShotNeuron], records: Sequence[ActivationRecord],
                             label: str | int | None = None) -> list[dict[str, str]]:
    """Chat messages: system; per few-shot neuron a user turn (its records) and an assistant turn (its
    explanation); a user turn with the target's records; and a final, unfinished assistant turn holding
    the priming text.

    Few-shot neurons are numbered 1..k and the target defaults to k + 1. Send the final assistant turn as a
    prefill where the endpoint allows it (e.g. `continue_final_message`); otherwise drop it: the system
    message asks for the same line, and `parse_explanation` removes an echoed priming text.
    """
    label = _default_label(examples, label)
    messages = [{"role": "system", "content": EXPLAINER_SYSTEM}]
    for i, example in enumerate(examples, start=1):
        messages.append({"role": "user", "content": explainer_neuron_block(i, example.records)})
        messages.append({"role": "assistant", "content": _explanation_line(i, example.explanation, period=True)})
    messages.append({"role": "user", "content": explainer_neuron_block(label, records)})
    messages.append({"role": "assistant", "content": explanation_prefix(label)})
    return messages


def build_explainer_prompt(examples: Sequence[FewShotNeuron], records: Sequence[ActivationRecord],
                           label: str | int | None = None) -> str:
    """The same content as one completion-style text, ending exactly with the priming text."""
    label = _default_label(examples, label)
    parts = [EXPLAINER_SYSTEM]
    for i, example in enumerate(examples, start=1):
        parts.append(f"{explainer_neuron_block(i, example.records)}\n"
                     f"{_explanation_line(i, example.explanation, period=True)}")
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


# --- simulator ---------------------------------------------------------------------------------------------

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


def _simulator_example_block(label: int, example: FewShotNeuron) -> str:
    values = normalize(example.records)
    return (f"Neuron {label}\n{_explanation_line(label, example.explanation, period=False)}\n"
            f"Activations:\n{_records_text(example.records, values)}")


def simulator_prefix(examples: Sequence[FewShotNeuron]) -> str:
    blocks = [_simulator_example_block(i, example) for i, example in enumerate(examples, start=1)]
    return "\n\n".join([SIMULATOR_INSTRUCTION, *blocks]) + "\n\n"


def build_simulator_prompt(examples: Sequence[FewShotNeuron], explanation: str, tokens: Sequence[str],
                           label: str | int | None = None, placeholder: str = UNKNOWN) -> SimulatorPrompt:
    """The "all at once" simulator prompt for one excerpt; the target defaults to neuron k + 1.

    `placeholder` is written in every value slot (see LLMSpec.placeholder)."""
    label = _default_label(examples, label)
    body = (f"Neuron {label}\n{_explanation_line(label, explanation, period=False)}\n"
            "Activations:\n<start>\n")
    slots = []
    for token in tokens:
        body += f"{escape_token(token)}\t"
        slots.append(len(body))
        body += f"{placeholder}\n"
    body += "<end>"
    return SimulatorPrompt(simulator_prefix(examples), body, slots)


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


def expected_value_from_logprobs(top_logprobs: Mapping[str, float] | Iterable[tuple[str, float]]) -> float:
    """`expected_value` from top logprobs (a mapping or (token, logprob) pairs); " 3" counts as "3"."""
    pairs = top_logprobs.items() if isinstance(top_logprobs, Mapping) else top_logprobs
    probs: dict[str, float] = {}
    for token, logprob in pairs:
        key = token.strip()
        if key in VALUE_STRINGS:
            probs[key] = probs.get(key, 0.0) + math.exp(logprob)
    return expected_value(probs)
