"""How well a per-token simulator tells a rule's explanation from its near-misses and from a token list.

For each rule: its test excerpts (up to 10 crops where it fires, 10 where it does not), and candidate explanations
- the rule's own (its first phrasing), each near-miss rule's, and the token-list decoy - each simulated on them;
a candidate's score is the pooled correlation of its simulation with the rule's truth (the paper's score). The
true explanation should score highest. Fractions come with a 95% bootstrap interval over rules.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from autointerp.judge.rules import Rule

Simulate = Callable[[Sequence[str], Sequence[Sequence[str]]], list[np.ndarray]]
# (explanation, excerpts, the truth per token) -> how well the explanation fits (higher is better)
Score = Callable[[str, Sequence[Sequence[str]], Sequence[Sequence[bool]]], float]


def pooled_correlation(predicted: Sequence[Sequence[float]], truth: Sequence[Sequence[float]]) -> float:
    x = np.concatenate([np.asarray(p, dtype=np.float64)[:len(t)] for p, t in zip(predicted, truth)])
    y = np.concatenate([np.asarray(t, dtype=np.float64) for t in truth])
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


@dataclass
class RuleRanking:
    rule: str
    true: float
    near_misses: dict[str, float]
    token_list: float
    decoy: str


@dataclass
class Rankings:
    rules: list[RuleRanking] = field(default_factory=list)

    def summary(self, seed: int = 0) -> dict[str, Any]:
        pairs = [(r.true > v) for r in self.rules for v in r.near_misses.values()]
        every = [all(r.true > v for v in r.near_misses.values()) for r in self.rules]
        over_list = [r.true > r.token_list for r in self.rules]
        return {"rules": len(self.rules),
                "above_near_misses": _mean(pairs), "above_near_misses_ci": bootstrap(self.rules, _pairwise, seed),
                "above_all_near_misses": _mean(every),
                "above_token_list": _mean(over_list),
                "above_token_list_ci": bootstrap(self.rules, lambda rs: _mean([r.true > r.token_list for r in rs]), seed),
                "mean_true_correlation": _mean([r.true for r in self.rules])}


def _pairwise(rules: Sequence[RuleRanking]) -> float:
    return _mean([r.true > v for r in rules for v in r.near_misses.values()])


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def bootstrap(rules: Sequence[RuleRanking], statistic: Callable[[Sequence[RuleRanking]], float], seed: int = 0,
              rounds: int = 1000) -> list[float]:
    """95% interval of `statistic` over rules resampled with replacement."""
    if not rules:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    values = [statistic([rules[i] for i in rng.integers(0, len(rules), len(rules))]) for _ in range(rounds)]
    return [round(float(np.percentile(values, 2.5)), 3), round(float(np.percentile(values, 97.5)), 3)]


def test_set(rule: Rule, pool: Sequence[Sequence[str]], rng: random.Random, per_class: int = 10
             ) -> tuple[list[Sequence[str]], list[list[bool]]]:
    firing, silent = [], []
    for tokens in rng.sample(list(pool), len(pool)):
        labels = rule.labels(tokens)
        (firing if any(labels) else silent).append((tokens, labels))
        if len(firing) >= per_class and len(silent) >= per_class:
            break
    chosen = firing[:per_class] + silent[:per_class]
    return [t for t, _ in chosen], [l for _, l in chosen]


def by_correlation(simulate: Simulate) -> Score:
    """A per-token simulator's score: the pooled correlation of its simulation with the truth."""
    return lambda explanation, excerpts, truth: pooled_correlation(simulate([explanation] * len(excerpts), excerpts),
                                                                   truth)


def near_miss_rules(every: dict[str, Rule]) -> Callable[[Rule], dict[str, str]]:
    """A rule's near-misses as their rules' first phrasings."""
    return lambda rule: {name: every[name].phrasings[0] for name in rule.near_misses}


def rank_rules(score: Score, rules: Sequence[Rule], near_misses: Callable[[Rule], dict[str, str]],
               pool: Sequence[Sequence[str]], rng: random.Random, min_firing: int = 3) -> Rankings:
    """Rules that fire in fewer than `min_firing` test excerpts are left out (nothing to rank on). Each rule's
    excerpts are drawn with its own generator (from one draw of `rng` and its name), so a subset of the rules, as
    a slow scorer gets, sees the same excerpts as the whole set."""
    from autointerp.judge.train import token_list_decoy

    out = Rankings()
    base = rng.getrandbits(32)
    for rule in rules:
        excerpts, truth = test_set(rule, pool, random.Random(f"{base}/{rule.name}"))
        if sum(any(t) for t in truth) < min_firing:
            continue
        decoy = token_list_decoy(rule, pool)
        candidates = {"true": rule.phrasings[0], "token_list": decoy, **near_misses(rule)}
        scores = {key: score(explanation, excerpts, truth) for key, explanation in candidates.items()}
        out.rules.append(RuleRanking(rule.name, scores.pop("true"), {k: v for k, v in scores.items()
                                                                      if k != "token_list"},
                                     scores["token_list"], decoy))
    return out
