"""Scores comparing real activations with simulated ones (docs/method.md s.7).

Real activations are the unnormalised values from the store; simulated ones are the simulator's expected
values (0..10). All scores pool every token of every scored excerpt: the correlation is computed once over
the pooled tokens, never averaged over excerpts, so an explanation must also get the relative level of
excerpts right. A score that is undefined is None together with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

Excerpts = Sequence[Sequence[float]]


@dataclass(frozen=True)
class ScoreResult:
    value: float | None
    reason: str | None = None  # why value is None


@dataclass
class NeuronScores:
    score_top_and_random: float | None  # correlation over the test top and random records pooled
    score_random_only: float | None  # correlation over the test random records alone
    rsquared: float | None  # on top-and-random
    absolute_dev_explained: float | None  # on top-and-random
    n_tokens: int  # tokens in top-and-random
    reason: str | None  # why any of the scores is None


def _pooled(real: Excerpts, simulated: Excerpts, what: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Flatten both sides after checking they line up excerpt by excerpt."""
    label = f"{what} " if what else ""
    if len(real) != len(simulated):
        raise ValueError(f"{len(real)} {label}excerpts of real activations but {len(simulated)} simulated")
    for i, (a, s) in enumerate(zip(real, simulated)):
        if len(a) != len(s):
            raise ValueError(f"{label}excerpt {i}: {len(a)} real activations but {len(s)} simulated")
    a = np.concatenate([np.asarray(x, dtype=np.float64) for x in real]) if real else np.zeros(0)
    s = np.concatenate([np.asarray(x, dtype=np.float64) for x in simulated]) if simulated else np.zeros(0)
    if not (np.isfinite(a).all() and np.isfinite(s).all()):
        raise ValueError(f"{label}activations contain NaN or infinite values")
    return a, s


def _correlation(a: np.ndarray, s: np.ndarray) -> ScoreResult:
    if a.size == 0:
        return ScoreResult(None, "no tokens to score")
    # Exact constancy is what makes Pearson undefined; checking it avoids dividing by a rounding residue.
    if (a == a[0]).all():
        return ScoreResult(None, "real activations are constant")
    if (s == s[0]).all():
        return ScoreResult(None, "simulated activations are constant")
    da, ds = a - a.mean(), s - s.mean()
    r = float(np.dot(da, ds) / np.sqrt(np.dot(da, da) * np.dot(ds, ds)))
    return ScoreResult(min(1.0, max(-1.0, r)))


def _rsquared(a: np.ndarray, s: np.ndarray) -> ScoreResult:
    if a.size == 0:
        return ScoreResult(None, "no tokens to score")
    denominator = np.mean(a ** 2)
    if denominator == 0:
        return ScoreResult(None, "real activations are all zero (mean(a^2) = 0)")
    return ScoreResult(float(1 - np.mean((a - s) ** 2) / denominator))


def _absolute_dev_explained(a: np.ndarray, s: np.ndarray) -> ScoreResult:
    if a.size == 0:
        return ScoreResult(None, "no tokens to score")
    denominator = np.mean(np.abs(a))
    if denominator == 0:
        return ScoreResult(None, "real activations are all zero (mean(|a|) = 0)")
    return ScoreResult(float(1 - np.mean(np.abs(a - s)) / denominator))


def correlation_result(real: Excerpts, simulated: Excerpts) -> ScoreResult:
    """Pearson correlation over all tokens of all excerpts pooled, with the reason when undefined."""
    return _correlation(*_pooled(real, simulated))


def correlation(real: Excerpts, simulated: Excerpts) -> float | None:
    """Pooled Pearson correlation; None when either side is constant (see `correlation_result` for why)."""
    return correlation_result(real, simulated).value


def rsquared_result(real: Excerpts, simulated: Excerpts) -> ScoreResult:
    """`1 - mean((a - s)^2) / mean(a^2)` over the pooled tokens (the reference's definition)."""
    return _rsquared(*_pooled(real, simulated))


def rsquared(real: Excerpts, simulated: Excerpts) -> float | None:
    return rsquared_result(real, simulated).value


def absolute_dev_explained_result(real: Excerpts, simulated: Excerpts) -> ScoreResult:
    """`1 - mean(|a - s|) / mean(|a|)` over the pooled tokens."""
    return _absolute_dev_explained(*_pooled(real, simulated))


def absolute_dev_explained(real: Excerpts, simulated: Excerpts) -> float | None:
    return absolute_dev_explained_result(real, simulated).value


def score_neuron(top_real: Excerpts, top_sim: Excerpts, random_real: Excerpts, random_sim: Excerpts) -> NeuronScores:
    """All scores of one explanation: top-and-random pools the test top and random records; random-only
    uses the random ones alone. rsquared and absolute_dev_explained are on top-and-random."""
    top_a, top_s = _pooled(top_real, top_sim, "top")
    random_a, random_s = _pooled(random_real, random_sim, "random")
    a, s = np.concatenate([top_a, random_a]), np.concatenate([top_s, random_s])
    results = {
        "top-and-random": _correlation(a, s),
        "random-only": _correlation(random_a, random_s),
        "rsquared": _rsquared(a, s),
        "absolute_dev_explained": _absolute_dev_explained(a, s),
    }
    reasons = [f"{name}: {r.reason}" for name, r in results.items() if r.value is None]
    return NeuronScores(
        score_top_and_random=results["top-and-random"].value,
        score_random_only=results["random-only"].value,
        rsquared=results["rsquared"].value,
        absolute_dev_explained=results["absolute_dev_explained"].value,
        n_tokens=int(a.size),
        reason="; ".join(reasons) or None,
    )


def score_simulations(simulations: Sequence[Any]) -> NeuronScores:
    """The scores of one explanation from its simulated excerpts (`simulate.Simulation`: kind, real, simulated)."""
    top = [s for s in simulations if s.kind == "top"]
    rnd = [s for s in simulations if s.kind == "random"]
    return score_neuron([s.real for s in top], [s.simulated for s in top],
                        [s.real for s in rnd], [s.simulated for s in rnd])
