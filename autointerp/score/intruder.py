"""`intruder`: how interpretable a unit is before any explanation is trusted (docs/method.md s.12; after Paulo &
Belrose 2025, "Evaluating SAE interpretability without explanations", and EleutherAI/delphi's intruder scorer).

A trial shows the judge LLM `shown` excerpts where the unit fires at a similar strength (neighbours in the unit's
activating records sorted by their max) and one excerpt where it stays silent, in a seeded random order, each
with the tokens where the unit fires marked <<like this>> (the intruder gets as many marks, on a token the unit
fires on elsewhere if it holds one, else at seeded places, so the marks alone do not give it away). The judge
names the excerpt that does not belong; its answer is read as the log-probability of each number from ONE
forward pass (`LLM.judge`); or, with no LLM, the sentence encoder names the excerpt least similar to the others
(measured the better judge with the embedded models: docs/method.md s.12). A unit's score is the share of trials
where the intruder is named (chance is 1 / (shown + 1)), with the mean probability an LLM judge gives the intruder
beside it (a smoother estimate of the same thing). No explanation is read, so the score also tells which units an
explainer has a chance on.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from autointerp.config import ScoringSpec
from autointerp.llm import AsksLLM
from autointerp.record.records import ActivationRecord, NeuronRecord
from autointerp.score.judging import lookalike, marked_text, peak, window_around

SYSTEM = ("You look at text excerpts on which one neuron of a language model fires. In each excerpt the tokens "
          "where it fires are marked <<like this>>. All excerpts but one share what the neuron responds to; one "
          "excerpt is an intruder that does not belong. Answer with the number of the intruder only.")

# One made-up trial (the same for every unit, so its computation is shared): four excerpts about a pattern and
# an intruder that holds a word of the pattern in the wrong sense.
EXAMPLE = (("They fished from the muddy <<bank>> of the river.", "Reeds grew along the <<bank>> of the stream.",
            "She paid the cheque into her <<bank>> account.", "The boat drifted towards the far <<bank>>.",
            "Willows line both <<banks>> of the canal."), 3)


@dataclass(frozen=True)
class Trial:
    texts: tuple[str, ...]  # what the judge reads, in the order shown
    intruder: int  # index of the intruder in `texts`
    excerpt_ids: tuple[int, ...]  # the excerpts shown, in the same order
    plain: tuple[str, ...]  # the same windows without marks, in the same order (the embedding judge reads these)


@dataclass
class IntruderResult:
    accuracy: float | None  # share of trials where the judge named the intruder; None without a trial
    p_intruder: float | None  # mean probability the judge gave the intruder (softmax over the numbers shown)
    reason: str | None = None  # why there is no trial
    picks: list[int] = field(default_factory=list)  # per trial: the index the judge named
    intruders: list[int] = field(default_factory=list)  # per trial: where the intruder was
    excerpt_ids: list[list[int]] = field(default_factory=list)  # per trial: the excerpts shown, in order


def activating(records: Sequence[ActivationRecord], options: ScoringSpec) -> list[ActivationRecord]:
    """A unit's activating records (once each), strongest first."""
    top = max((r.max_activation for r in records), default=0.0)
    seen: set[int | None] = set()
    kept = []
    for r in sorted(records, key=lambda r: -r.max_activation):
        key = r.excerpt_id if r.excerpt_id is not None else id(r)
        if top > 0 and r.max_activation >= options.active_from * top and key not in seen:
            seen.add(key)
            kept.append(r)
    return kept


def silent(records: Sequence[ActivationRecord], options: ScoringSpec) -> list[ActivationRecord]:
    top = max((r.max_activation for r in records), default=0.0)
    return [r for r in records if r.max_activation < options.silent_below * top] if top > 0 else list(records)


def trials(unit: NeuronRecord, options: ScoringSpec, seed: int = 0) -> list[Trial]:
    """Up to `options.intruder_trials` trials, their activating groups spread evenly from the strongest excerpts
    to the weakest that still count as activating; every record of the unit may be shown (no explanation is
    being tested, so no split is held out)."""
    every = [*unit.top, *unit.quantile, *unit.random]
    active, quiet = activating(every, options), silent(every, options)
    shown = options.intruder_shown
    groups = len(active) // shown
    if groups == 0 or not quiet:
        return []
    n = min(options.intruder_trials, groups)
    starts = sorted({round(i * (len(active) - shown) / max(n - 1, 1)) for i in range(n)})
    top = active[0].max_activation
    peak_tokens = {r.tokens[peak(r)].strip() for r in active}
    rng = random.Random(f"{seed}/{unit.model}/{unit.layer}/{unit.neuron}")
    out = []
    for t, start in enumerate(starts):
        texts, plain, ids = [], [], []
        marks = 0
        for r in active[start:start + shown]:
            span = list(window_around(r, options.window, peak(r)))
            acts = [r.activations[k] for k in span]
            threshold = min(options.mark_from * top, max(acts))
            right = {j for j, a in enumerate(acts) if a >= threshold}
            marks += len(right)
            texts.append(marked_text([r.tokens[k] for k in span], right))
            plain.append(marked_text([r.tokens[k] for k in span]))
            ids.append(_ident(r))
        intruder = quiet[t % len(quiet)]
        look = lookalike(intruder, peak_tokens)
        span = list(window_around(intruder, options.window, look))
        wanted = max(1, round(marks / shown))
        places = [span.index(look)] if look is not None and look in span else []
        rest = [j for j in range(len(span)) if j not in places]
        places += rng.sample(rest, min(wanted - len(places), len(rest)))
        at = rng.randrange(shown + 1)
        texts.insert(at, marked_text([intruder.tokens[k] for k in span], set(places)))
        plain.insert(at, marked_text([intruder.tokens[k] for k in span]))
        ids.insert(at, _ident(intruder))
        out.append(Trial(tuple(texts), at, tuple(ids), tuple(plain)))
    return out


def _ident(record: ActivationRecord) -> int:
    return record.excerpt_id if record.excerpt_id is not None else -1


def question(texts: Sequence[str]) -> str:
    return "\n".join(f"{i + 1}. {t}" for i, t in enumerate(texts)) + "\nWhich excerpt is the intruder?"


class IntruderJudge:
    """Scores units, not explanations (so it is not a `Scorer`): the intruder stage and eval/intruder.py. A judge
    gives each excerpt of a trial a value, higher = more likely the intruder; the unit's numbers follow."""

    name: str
    options: ScoringSpec
    seed: int

    def values(self, planned: Sequence[Trial]) -> list[list[float]]:
        raise NotImplementedError

    def probabilities(self, values: Sequence[float]) -> list[float] | None:
        """The judge's probability of each excerpt being the intruder, where its values are log-probabilities."""
        return None

    def score(self, units: Sequence[NeuronRecord]) -> list[IntruderResult]:
        """One result per unit; all the units' trials go to the judge together."""
        planned = [trials(u, self.options, self.seed) for u in units]
        judged = iter(self.values([t for ts in planned for t in ts]))
        results = []
        for ts in planned:
            if not ts:
                results.append(IntruderResult(None, None, "fewer activating excerpts than one trial shows, or no "
                                                          "silent excerpt"))
                continue
            picks, chances = [], []
            for t in ts:
                values = next(judged)
                picks.append(max(range(len(values)), key=lambda i: (values[i], -i)))
                probabilities = self.probabilities(values)
                chances.append(None if probabilities is None else probabilities[t.intruder])
            hits = [p == t.intruder for p, t in zip(picks, ts)]
            p_intruder = None if None in chances else sum(chances) / len(ts)  # type: ignore[arg-type]
            results.append(IntruderResult(sum(hits) / len(ts), p_intruder, None, picks, [t.intruder for t in ts],
                                          [list(t.excerpt_ids) for t in ts]))
        return results


class IntruderScorer(AsksLLM, IntruderJudge):
    """The judge LLM names the intruder (`scoring.intruder_judge: llm`): the log-probability of each number."""

    def __init__(self, options: ScoringSpec, llm: Any, base_dir: Any, store: Any, llms: Any, seed: int = 0):
        super().__init__("intruder", llm, base_dir, store, llms)
        self.options, self.seed = options, seed

    @staticmethod
    def messages(texts: Sequence[str]) -> list[dict[str, str]]:
        example, answer = EXAMPLE
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question(example)},
                {"role": "assistant", "content": str(answer + 1)}, {"role": "user", "content": question(texts)}]

    def values(self, planned: Sequence[Trial]) -> list[list[float]]:
        requests = [{"messages": self.messages(t.texts), "answers": [str(i + 1) for i in range(len(t.texts))]}
                    for t in planned]
        answers = self.llm.judge(requests) if requests else []  # cached like every call
        return [[a[str(i + 1)] for i in range(len(t.texts))] for a, t in zip(answers, planned)]

    def probabilities(self, values: Sequence[float]) -> list[float]:
        best = max(values)
        weights = [math.exp(v - best) for v in values]
        return [w / sum(weights) for w in weights]


class EmbeddingIntruder(IntruderJudge):
    """No LLM (`scoring.intruder_judge: embedding`): the sentence encoder names the excerpt least similar to the
    others (mean cosine of its embedding to theirs, the marks left out). No probability: p_intruder stays NULL."""

    def __init__(self, options: ScoringSpec, search: Any, base_dir: Any, seed: int = 0):
        self.options, self.seed, self.search, self.base_dir = options, seed, search, base_dir
        self.name = f"intruder:embedding:{search.encoder}"  # naming it loads nothing

    def values(self, planned: Sequence[Trial]) -> list[list[float]]:
        import numpy as np

        from autointerp.search import encoder_of

        texts = [t for trial in planned for t in trial.plain]
        if not texts:
            return []
        vectors = encoder_of(self.search, self.base_dir).embed(texts)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        out, at = [], 0
        for trial in planned:
            group = vectors[at:at + len(trial.texts)]
            at += len(trial.texts)
            similarity = group @ group.T
            out.append([-float(x) for x in (similarity.sum(1) - 1) / (len(trial.texts) - 1)])
        return out


def build_intruder(config: Any, store: Any, llms: Any, judge: str | None = None) -> IntruderJudge:
    """The intruder judge of `scoring.intruder_judge` (or `judge`): the sentence encoder of `search` (embedding), or
    the LLM of `scoring.llm`, default the explainer's (llm)."""
    from autointerp.config import build_choice

    judge = judge or config.scoring.intruder_judge
    if judge == "embedding":
        return EmbeddingIntruder(config.scoring, config.search, config.base_dir, config.seed)
    llm = config.scoring.llm or build_choice("llm", {}, "scoring.llm")
    return IntruderScorer(config.scoring, llm, config.base_dir, store, llms, config.seed)
