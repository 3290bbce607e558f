"""`detection` and `fuzzing`: a judge LLM reads the explanation and whole excerpts and answers yes or no
(docs/method.md s.10; after Paulo et al. 2024 and EleutherAI/delphi's `scorers/classifier/`).

- detection: activating excerpts (top and quantile records) and silent ones (random and quantile records where
  the unit stays below `silent_below` of its max): "does the unit, as explained, fire in this excerpt?"
- fuzzing: each activating excerpt twice, once with the tokens where the unit fires marked <<like this>>, once
  with as many marks on other tokens (on the token before each real mark for every other excerpt, a hard
  negative for "the token after X" patterns; at seeded random places for the rest): "are the marks right?"

The judge's answer is read as log p(yes) - log p(no) from one forward pass (`LLM.judge`); the score is the AUROC of
those log-odds against the truth (0.5 is chance), with the balanced accuracy of the plain yes/no beside it.
Both read context, so "'<' in HTML, not in code" can beat "the character '<'" when the excerpts tell them apart.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

from autointerp.config import ScoringSpec
from autointerp.llm import AsksLLM
from autointerp.prompting import escape_token
from autointerp.record.records import ActivationRecord
from autointerp.score import REGISTRY, Scored, Scorer, ScoringItem

ANSWERS = ("yes", "no")

_COMMON = ("You check explanations of neurons in a language model. An explanation says what text a neuron fires on; "
           "it may say that a token counts only in some contexts, so read the whole text. ")
DETECTION_SYSTEM = _COMMON + (
    "You see an explanation and one text excerpt. Answer yes if the neuron, as explained, fires somewhere in the "
    "excerpt, and no if nothing in it fits the explanation. Answer with one word: yes or no.")
FUZZING_SYSTEM = _COMMON + (
    "You see an explanation and a text excerpt in which some tokens are marked <<like this>>. Answer yes if the "
    "marked tokens are the ones the neuron, as explained, fires on, and no if the marks are on other tokens (for "
    "example next to the right ones). Answer with one word: yes or no.")

# Made-up examples, the same for every unit (so their computation is shared): each pair differs only in whether
# the explanation's context holds, which is what a judge must read.
DETECTION_EXAMPLES = (
    ('the word "bank" when it means the side of a river', "They fished from the muddy bank of the river all day.",
     "yes"),
    ('the word "bank" when it means the side of a river', "She paid the cheque into her bank account on Monday.",
     "no"),
    ("numbers that count people", "More than 300 workers joined the strike that spring.", "yes"),
    ("numbers that count people", "The bridge was finished in 1952 and is 40 metres long.", "no"),
)
FUZZING_EXAMPLES = (
    ('the word right after "of"', "the history of <<the>> city and the end of <<the>> war", "yes"),
    ('the word right after "of"', "the history <<of>> the city and the end <<of>> the war", "no"),
    ("years in dates", "She was born on 12 July <<1990>> in a small town.", "yes"),
    ("years in dates", "She was born <<on>> 12 July 1990 in a small <<town>>.", "no"),
)


@dataclass(frozen=True)
class Judgement:
    excerpt_id: int
    label: bool  # the truth: activating (detection) or correctly marked (fuzzing)
    text: str  # what the judge reads


def _mark(token: str) -> str:
    """`<<token>>` with the token's leading space left outside the marks, as a reader expects."""
    text = escape_token(token)
    body = text.lstrip()
    return f"{text[:len(text) - len(body)]}<<{body}>>" if body else text


def marked_text(tokens: Sequence[str], marked: set[int] = frozenset()) -> str:  # type: ignore[assignment]
    return "".join(_mark(t) if i in marked else escape_token(t) for i, t in enumerate(tokens)).strip()


def window_around(record: ActivationRecord, window: int, centre: int | None) -> range:
    """`window` tokens with `centre` three quarters of the way in (what leads up to a token decides whether it
    fires); the whole excerpt for window 0; a fixed place per excerpt, not chosen by activation, without a centre."""
    n = len(record.tokens)
    if window <= 0 or window >= n:
        return range(n)
    if centre is None:
        start = zlib.crc32("".join(record.tokens).encode()) % (n - window + 1)
    else:
        start = min(max(0, centre - (3 * window) // 4), n - window)
    return range(start, start + window)


def peak(record: ActivationRecord) -> int:
    return max(range(len(record.activations)), key=lambda i: (record.activations[i], -i))


def lookalike(record: ActivationRecord, peak_tokens: set[str]) -> int | None:
    """Where a silent excerpt holds a token the unit fires on elsewhere: its window goes there, so that a token
    list is tested on the token in a context where the unit stays silent (a hard negative)."""
    return next((i for i, t in enumerate(record.tokens) if t.strip() and t.strip() in peak_tokens), None)


def classify(records: Sequence[ActivationRecord], options: ScoringSpec) -> tuple[list[int], list[int]]:
    """Indices of the activating and of the silent records, relative to the largest activation among them."""
    top = max((r.max_activation for r in records), default=0.0)
    if top <= 0:
        return [], list(range(len(records)))
    active = [i for i, r in enumerate(records) if r.max_activation >= options.active_from * top]
    silent = [i for i, r in enumerate(records) if r.max_activation < options.silent_below * top]
    return active[:options.per_class], silent[:options.per_class]


def detection_set(records: Sequence[ActivationRecord], options: ScoringSpec) -> list[Judgement]:
    active, silent = classify(records, options)
    peak_tokens = {records[i].tokens[peak(records[i])].strip() for i in active}
    out = []
    for label, indices in ((True, active), (False, silent)):
        for i in indices:
            r = records[i]
            span = window_around(r, options.window, peak(r) if label else lookalike(r, peak_tokens))
            out.append(Judgement(r.excerpt_id if r.excerpt_id is not None else i, label,
                                 marked_text([r.tokens[k] for k in span])))
    return out


def fuzzing_set(records: Sequence[ActivationRecord], options: ScoringSpec, seed: int = 0) -> list[Judgement]:
    active, _ = classify(records, options)
    top = max((r.max_activation for r in records), default=0.0)
    out = []
    for n, i in enumerate(active):
        r = records[i]
        span = list(window_around(r, options.window, peak(r)))
        acts = [r.activations[k] for k in span]
        threshold = min(options.mark_from * top, max(acts))
        right = {j for j, a in enumerate(acts) if a >= threshold}
        others = [j for j in range(len(span)) if j not in right]
        if not others:
            continue  # every token fires: no wrong place to mark
        rng = random.Random(seed * 1_000_003 + (r.excerpt_id or 0) * 31 + n)
        wrong: list[int] = []
        if n % 2 == 0:  # just before each real mark: "the token after X" against "X"
            wrong = sorted({j - 1 for j in right if j - 1 >= 0 and j - 1 not in right})[:len(right)]
        rest = [j for j in others if j not in wrong]
        wrong += rng.sample(rest, min(len(right) - len(wrong), len(rest)))
        tokens = [r.tokens[k] for k in span]
        ident = r.excerpt_id if r.excerpt_id is not None else i
        out += [Judgement(ident, True, marked_text(tokens, right)), Judgement(ident, False, marked_text(tokens, set(wrong)))]
    return out


def auroc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half); None without both."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def balanced_accuracy(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Mean of the true-positive and true-negative rates of the plain answer (yes where log-odds > 0)."""
    pos = [s > 0 for s, y in zip(scores, labels) if y]
    neg = [s <= 0 for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    return (sum(pos) / len(pos) + sum(neg) / len(neg)) / 2


class JudgeScorer(AsksLLM, Scorer):
    kind: str
    system: str
    examples: tuple[tuple[str, str, str], ...]

    def __init__(self, options: ScoringSpec, llm: Any, base_dir: Any, store: Any, llms: Any, seed: int = 0):
        super().__init__(self.kind, llm, base_dir, store, llms)
        self.options, self.seed = options, seed

    def judgements(self, records: Sequence[ActivationRecord]) -> list[Judgement]:
        raise NotImplementedError

    @classmethod
    def messages(cls, explanation: str, text: str) -> list[dict[str, str]]:
        """The judge's prompt for one excerpt (a class method: bench/gpu.py builds the requests without a store)."""
        messages = [{"role": "system", "content": cls.system}]
        for example, excerpt, answer in cls.examples:
            messages += [{"role": "user", "content": _question(example, excerpt)},
                         {"role": "assistant", "content": answer}]
        return messages + [{"role": "user", "content": _question(explanation, text)}]

    def score(self, items: Sequence[ScoringItem]) -> list[Scored]:
        results = []
        for item in items:  # one call per explanation: its excerpts share the prefix that holds it
            judged = self.judgements([r for _, r in item.excerpts])
            answers = self.llm.judge([{"messages": self.messages(item.explanation, j.text), "answers": list(ANSWERS)}
                                      for j in judged]) if judged else []
            log_odds = [float(a["yes"] - a["no"]) for a in answers]
            labels = [j.label for j in judged]
            value = auroc(labels, log_odds)
            n_pos = sum(labels)
            reason = None if value is not None else (
                f"no {'silent' if self.kind == 'detection' else 'wrongly marked'} excerpts" if n_pos
                else "no activating excerpts")
            results.append(Scored(value, reason, {
                "auroc": value, "balanced_accuracy": balanced_accuracy(labels, log_odds), "n_positive": n_pos,
                "n_negative": len(labels) - n_pos, "excerpt_ids": [j.excerpt_id for j in judged], "labels": labels,
                "log_odds": log_odds}))
        return results


def _question(explanation: str, text: str) -> str:
    return f"Explanation: {' '.join(explanation.split())}\nText: {text}"


class Detection(JudgeScorer):
    kind, system, examples = "detection", DETECTION_SYSTEM, DETECTION_EXAMPLES

    def judgements(self, records: Sequence[ActivationRecord]) -> list[Judgement]:
        return detection_set(records, self.options)


class Fuzzing(JudgeScorer):
    kind, system, examples = "fuzzing", FUZZING_SYSTEM, FUZZING_EXAMPLES

    def judgements(self, records: Sequence[ActivationRecord]) -> list[Judgement]:
        return fuzzing_set(records, self.options, self.seed)


def _build(cls: type[JudgeScorer], config: Any, store: Any, llms: Any) -> JudgeScorer:
    from autointerp.config import build_choice

    llm = config.scoring.llm or build_choice("llm", {}, "scoring.llm")
    return cls(config.scoring, llm, config.base_dir, store, llms, config.seed)


@REGISTRY.register("detection")
def detection(config: Any, store: Any, llms: Any) -> JudgeScorer:
    return _build(Detection, config, store, llms)


@REGISTRY.register("fuzzing")
def fuzzing(config: Any, store: Any, llms: Any) -> JudgeScorer:
    return _build(Fuzzing, config, store, llms)
