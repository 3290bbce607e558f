"""`token_match`: no model at all; the tokens an explanation quotes are where the neuron fires.

`words like "and", "the"` predicts a high value on every token that is "and" or "the" (case and surrounding
whitespace ignored) and 0 elsewhere. Explanations quote the tokens the neuron fires on most first (the
convention of the `marked` format and of `top_tokens`), so the k-th quoted token gets `10 * decay^(k-1)`; a
token that is only a piece of a quoted word (" General" of "Attorney-General") gets `piece` of that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from autointerp.errors import ConfigError
from autointerp.llm import LoadedLLMs
from autointerp.simulate import REGISTRY, SimulationJob, Simulator
from autointerp.store import Store

_QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”')
_PIECES = re.compile(r"[^\W_]+")


def quoted(explanation: str) -> list[str]:
    """The strings an explanation quotes, in order, each once."""
    found: list[str] = []
    for match in _QUOTED.finditer(explanation):
        text = (match.group(1) or match.group(2)).strip()
        if text and text.lower() not in (f.lower() for f in found):
            found.append(text)
    return found


@dataclass(frozen=True)
class TokenMatchOptions:
    decay: float = 0.85  # the k-th quoted token's value is 10 * decay^(k-1)
    piece: float = 0.5  # a token that is a piece of a quoted word gets this share of that word's value

    def check(self, where: str) -> None:
        if not (0 < self.decay <= 1 and 0 <= self.piece <= 1):
            raise ConfigError(f"{where}: decay must be in (0, 1] and piece in [0, 1]")


class TokenMatch(Simulator):
    def __init__(self, options: TokenMatchOptions):
        self.options = options

    @property
    def name(self) -> str:
        return f"token_match:{self.options.decay}/{self.options.piece}"

    def values(self, explanation: str) -> tuple[dict[str, float], dict[str, float]]:
        """(whole quoted token -> value, piece of a quoted token -> value), lower-cased."""
        whole: dict[str, float] = {}
        pieces: dict[str, float] = {}
        for k, text in enumerate(quoted(explanation)):
            value = 10.0 * self.options.decay ** k
            whole.setdefault(text.lower(), value)
            for piece in _PIECES.findall(text.lower()):
                if len(piece) >= 2 and piece != text.lower():
                    pieces.setdefault(piece, value * self.options.piece)
        return whole, pieces

    def simulate(self, jobs: Sequence[SimulationJob]) -> list[list[float]]:
        results = []
        for job in jobs:
            whole, pieces = self.values(job.explanation)
            results.append([whole.get(t.strip().lower(), pieces.get(t.strip().lower(), 0.0)) for t in job.tokens])
        return results


@REGISTRY.register("token_match", TokenMatchOptions)
def token_match(options: TokenMatchOptions, base_dir: Path | None, store: Store, llms: LoadedLLMs) -> TokenMatch:
    return TokenMatch(options)
