"""`combined`: the quoted tokens exactly (`token_match`) plus what the explanation's words mean (`embedding`).

`value = min(10, match + weight * embedding)`: a quoted token gets its match value, and tokens close in
meaning to the explanation (other month names after "names of months such as "May"") get up to
`10 * weight`. No LLM; a layer simulates in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from autointerp.errors import ConfigError
from autointerp.llm import LoadedLLMs
from autointerp.simulate import REGISTRY, SimulationJob, Simulator
from autointerp.simulate.embedding import DEFAULT_ENCODER, Embedding, EmbeddingOptions
from autointerp.simulate.token_match import TokenMatch, TokenMatchOptions
from autointerp.store import Store


@dataclass(frozen=True)
class CombinedOptions:
    weight: float = 0.5  # the embedding's share of the scale
    decay: float = 0.85  # token_match's options
    piece: float = 0.5
    model: str = DEFAULT_ENCODER  # embedding's options
    context: str = "token"
    floor: float = 0.2
    power: float = 2.0
    device: str = "auto"  # where the sentence encoder runs: auto | cpu | cuda | cuda:N

    def check(self, where: str) -> None:
        if not 0 <= self.weight <= 1:
            raise ConfigError(f"{where}.weight must be in [0, 1]")
        TokenMatchOptions(self.decay, self.piece).check(where)
        self.embedding_options().check(where)

    def embedding_options(self) -> EmbeddingOptions:
        return EmbeddingOptions(self.model, self.context, self.floor, self.power, device=self.device)


class Combined(Simulator):
    def __init__(self, options: CombinedOptions, base_dir: Path | None):
        self.options = options
        self.match = TokenMatch(TokenMatchOptions(options.decay, options.piece))
        self.embedding = Embedding(options.embedding_options(), base_dir)

    @property
    def name(self) -> str:
        return f"combined:{self.options.weight}+{self.match.name}+{self.embedding.name}"

    @property
    def batch(self) -> int:
        return self.embedding.batch

    def simulate(self, jobs: Sequence[SimulationJob]) -> list[list[float]]:
        matched = self.match.simulate(jobs)
        meant = self.embedding.simulate(jobs)
        return [np.minimum(10.0, np.asarray(m) + self.options.weight * np.asarray(e)).tolist()
                for m, e in zip(matched, meant)]


@REGISTRY.register("combined", CombinedOptions)
def combined(options: CombinedOptions, base_dir: Path | None, store: Store, llms: LoadedLLMs) -> Combined:
    return Combined(options, base_dir)
