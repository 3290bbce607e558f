"""Stage 3, simulate: predict each token's activation (0-10) from an explanation alone.

A `Simulator` is one module here, registered by name with its options; the config's
`simulator: {kind: NAME, ...}` picks it. It sees an explanation and an excerpt's tokens, never the real
activations: the stage pairs its predictions with the recorded ones for scoring.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from autointerp.plugins import Registry

if TYPE_CHECKING:  # annotations only: the store (DuckDB) is not needed to explain or simulate
    from autointerp.llm import LoadedLLMs
    from autointerp.store import Store


@dataclass(frozen=True)
class SimulationJob:
    explanation: str
    tokens: tuple[str, ...]


@dataclass(frozen=True)
class Simulation:
    """One excerpt simulated from one explanation, next to the real activations it is scored against."""

    layer: int
    neuron: int
    sample: int
    excerpt_id: int
    kind: str  # top or random
    simulated: tuple[float, ...]  # one value in [0, 10] per token
    real: tuple[float, ...]  # the recorded activations


class Simulator(ABC):
    @property
    @abstractmethod
    def name(self) -> str:
        """Stored in `simulations.simulator` and `scores.simulator` (cheap: no model is loaded)."""

    @property
    def batch(self) -> int:
        """Explanations per call the stage makes (progress and the LLM cache advance per call)."""
        return 1

    @abstractmethod
    def simulate(self, jobs: Sequence[SimulationJob]) -> list[list[float]]:
        """One value in [0, 10] per token of each job's excerpt."""


REGISTRY: Registry[Simulator] = Registry("simulator", __name__)


def build_simulator(choice: Any, base_dir: Path | None, store: Store, llms: LoadedLLMs) -> Simulator:
    """The simulator a config chose (`config.simulator`); its LLM, if any, loads into `llms` on first use."""
    return REGISTRY.get(choice.kind).factory(choice.options, base_dir, store, llms)
