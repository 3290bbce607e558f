"""What the prompts of every role share (explainer, simulator, judge): the record listing (`<start>`, one
`token<TAB>value` line per token, `<end>`, activations normalised to integers 0..10; docs/method.md s.4-5),
token escaping, the explanation line and the tokens a neuron is most active on. A module of its own, so that
no role imports another's package.

Token escaping: the format is line-based with a tab between token and value, so a token's own tab and
line-break characters are written as two-character escapes: TAB -> `\\t`, LF -> `\\n`, CR -> `\\r`, and every
other character `str.splitlines` breaks on (VT, FF, FS, GS, RS, NEL, LS, PS) -> `\\xHH` / `\\uHHHH`.
Backslashes are left alone: the escaping is for display only and never has to be undone, and code tokens read
more naturally unchanged. It is applied by `format_record`, so explainer and simulator prompts agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from autointerp.record.records import ActivationRecord

MAX_VALUE = 10
UNKNOWN = "unknown"
PRIMING_PHRASE = "the main thing this neuron does is find"

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


def records_text(records: Sequence[ActivationRecord], values: Sequence[Sequence[int | str]]) -> str:
    return "\n".join(format_record(r.tokens, v) for r, v in zip(records, values))


def _clean_explanation(explanation: str) -> str:
    # A stray newline would end the explanation line early; the period is added back where the format wants it.
    text = " ".join(explanation.split())
    return text[:-1].rstrip() if text.endswith(".") else text


def explanation_line(label: str | int, explanation: str, period: bool) -> str:
    text = _clean_explanation(explanation)
    line = f"{explanation_prefix(label)} {text}" if text else explanation_prefix(label)
    return line + "." if period and text else line


def explanation_prefix(neuron_label: str | int) -> str:
    """The priming text the explainer's answer starts with (and the simulator's explanation line)."""
    return f"Explanation of neuron {neuron_label} behavior: {PRIMING_PHRASE}"


def default_label(examples: Sequence[object], label: str | int | None) -> str | int:
    """Few-shot neurons are numbered 1..k; the target is k + 1 unless given."""
    return len(examples) + 1 if label is None else label


@dataclass(frozen=True)
class ActiveToken:
    token: str  # stripped of surrounding whitespace
    count: int  # how often it is active in the records
    strongest: int  # its highest normalised activation (0-10)
    total: float  # sum of its normalised activations: the order of importance


def active_tokens(records: Sequence[ActivationRecord], threshold: int = 3) -> list[ActiveToken]:
    """The records' tokens whose normalised activation reaches `threshold`, most important first (by the sum
    of their normalised activations; ties: first seen). Tokens that are only whitespace are left out."""
    values = normalize(records)
    found: dict[str, list[int]] = {}
    for record, vs in zip(records, values):
        for token, v in zip(record.tokens, vs):
            if v >= threshold and token.strip():
                found.setdefault(token.strip(), []).append(v)
    ranked = sorted(found.items(), key=lambda item: -sum(item[1]))
    return [ActiveToken(token, len(vs), max(vs), float(sum(vs))) for token, vs in ranked]


def quote_list(tokens: Sequence[str]) -> str:
    """`"a", "b" and "c"`: tokens as an explanation quotes them (a double quote inside becomes a single one)."""
    quoted = [f'"{t.replace(chr(34), chr(39))}"' for t in tokens]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]
