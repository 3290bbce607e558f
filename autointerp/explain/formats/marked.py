"""`marked`: a compact explainer prompt that a small model can read (after EleutherAI/delphi).

Instead of one line per token, the neuron is shown as (1) its most active tokens, with how often each fired
and how strongly (0-10), strongest first, and (2) a window of text around each excerpt's peak with the
active tokens marked `<<like this>>`. The few-shot answers name the pattern in a sentence and quote the
tokens it fires on most, strongest first: the convention the token-matching simulators read
(docs/method.md s.9). A quarter of the prompt tokens of `listing`, so also faster.
"""

from __future__ import annotations

from typing import Sequence

from autointerp.explain.formats import REGISTRY, PromptFormat
from autointerp.explain.formats.reference import parse_explanation
from autointerp.prompting import (PRIMING_PHRASE, active_tokens, escape_token, explanation_line,
                                        explanation_prefix, normalize)
from autointerp.fewshot import CLOSING_BRACKETS, WATER_AND_LIQUIDS, YEARS_AND_DATES
from autointerp.record.records import ActivationRecord, FewShotNeuron

MARK_FROM = 4  # normalised activation (0-10) from which a token is marked
LISTED_TOKENS = 8  # most active tokens listed
BEFORE, AFTER = 16, 6  # tokens of context shown around an excerpt's peak

SYSTEM = (
    "You are helping to interpret the neurons of a language model. A neuron responds to some specific feature "
    "of the text it reads. For each neuron you see its most active tokens (how often each was active, and its "
    "strongest activation from 1 to 10) and short excerpts where it fires, with the tokens it is active on "
    "marked <<like this>>. Work out what the marked tokens have in common and answer with one sentence that "
    "names the pattern and quotes the tokens the neuron fires on most, strongest first.\n\n"
    f'Answer with a single line that completes "Explanation of neuron N behavior: {PRIMING_PHRASE}", where N is '
    "the number of the neuron."
)

# The few-shot neurons of `listing`, with answers in this format's convention.
EXAMPLES = (
    FewShotNeuron('years in dates, most strongly four-digit years like "1990" and "1952", also the pieces of a '
                  'split year like "83" and "18"', YEARS_AND_DATES.records),
    FewShotNeuron('words for water and other liquids, most strongly "water", "milk" and "rain", also "river"',
                  WATER_AND_LIQUIDS.records),
    FewShotNeuron('closing brackets in code, most strongly "))", "]" and "}"', CLOSING_BRACKETS.records),
)


def _window(record: ActivationRecord, values: Sequence[int]) -> str:
    peak = max(range(len(values)), key=lambda i: (values[i], -i))
    lo, hi = max(0, peak - BEFORE), min(len(values), peak + AFTER + 1)
    text = "".join(f"<<{escape_token(t)}>>" if v >= MARK_FROM else escape_token(t)
                   for t, v in zip(record.tokens[lo:hi], values[lo:hi]))
    return ("..." if lo > 0 else "") + text + ("..." if hi < len(values) else "")


def neuron_block(label: int, records: Sequence[ActivationRecord]) -> str:
    values = normalize(records)
    listed = active_tokens(records, MARK_FROM)[:LISTED_TOKENS]
    tokens = ", ".join(f'"{a.token}" (x{a.count}, {a.strongest})' for a in listed) or "none"
    excerpts = "\n".join(f"{i}. {_window(r, v)}" for i, (r, v) in enumerate(zip(records, values), start=1)
                         if max(v, default=0) > 0)
    return f"Neuron {label}\nMost active tokens: {tokens}\nExcerpts:\n{excerpts or '(the neuron never fires)'}"


@REGISTRY.register("marked")
class Marked(PromptFormat):
    label = len(EXAMPLES) + 1
    system, examples = SYSTEM, EXAMPLES

    def messages(self, records: Sequence[ActivationRecord], writes: Sequence[str] = ()) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system}]
        for i, example in enumerate(self.examples, start=1):
            messages.append({"role": "user", "content": neuron_block(i, example.records)})
            messages.append({"role": "assistant", "content": explanation_line(i, example.explanation, period=True)})
        messages.append({"role": "user", "content": neuron_block(self.label, records)})
        messages.append({"role": "assistant", "content": explanation_prefix(self.label)})
        return messages

    def parse(self, completion: str) -> str:
        return parse_explanation(completion, explanation_prefix(self.label))


# `pattern`: the same view of the records, but the answer names the pattern in words and lists no tokens; a
# judging scorer reads it as well as a token list (README, Evaluation, compares the two).
PATTERN_SYSTEM = SYSTEM.replace("names the pattern and quotes the tokens the neuron fires on most, strongest first",
                                "names the pattern in words, including the context it needs, without listing tokens")
PATTERN_EXAMPLES = (
    FewShotNeuron("years in dates, including the pieces of a year split into two tokens", YEARS_AND_DATES.records),
    FewShotNeuron("words for water and other liquids", WATER_AND_LIQUIDS.records),
    FewShotNeuron("closing brackets at the end of code expressions", CLOSING_BRACKETS.records),
)


@REGISTRY.register("pattern")
class Pattern(Marked):
    system, examples = PATTERN_SYSTEM, PATTERN_EXAMPLES
