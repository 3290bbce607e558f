"""`all_at_once`: the reference simulator (docs/method.md s.6).

Every excerpt gets one prompt: few-shot neurons with revealed activations, then the explanation and the
excerpt with a placeholder in each value slot; the LLM's distribution over "0".."10" at each slot gives the
simulated activation as its expected value. A local model reads every slot in one forward pass; an
OpenAI-compatible endpoint needs prompt logprobs (completions with echo).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from autointerp.config import LLMChoice
from autointerp.errors import ConfigError
from autointerp.prompting import UNKNOWN
from autointerp.fewshot import SIMULATOR_EXAMPLES
from autointerp.llm import AsksLLM, LoadedLLMs
from autointerp.simulate import REGISTRY, SimulationJob, Simulator
from autointerp.simulate.prompts import build_simulator_prompt, expected_value
from autointerp.store import Store


@dataclass(frozen=True)
class AllAtOnceOptions:
    llm: LLMChoice = None  # type: ignore[assignment]  # filled in by the parser: the default local model
    # What stands in each value slot. "unknown" is the reference; small models copy it forward and their value
    # distribution after the first few slots is noise, while "0" (the value almost every token has) lets them
    # break out only where the explanation applies (README, Evaluation).
    placeholder: str = UNKNOWN
    # Share of each few-shot record whose values are hidden behind the placeholder, as the reference's
    # first_revealed_activation_indices hide the start of its examples (0: all revealed).
    hidden: float = 0.0

    def check(self, where: str) -> None:
        if self.placeholder not in (UNKNOWN, "0"):
            raise ConfigError(f"{where}.placeholder must be {UNKNOWN} or 0, got '{self.placeholder}'")
        if not 0 <= self.hidden < 1:
            raise ConfigError(f"{where}.hidden must be in [0, 1)")


class AllAtOnce(AsksLLM, Simulator):
    def __init__(self, options: AllAtOnceOptions, base_dir: Path | None, store: Store, llms: LoadedLLMs):
        super().__init__("all_at_once", options.llm, base_dir, store, llms)
        self.options = options

    def simulate(self, jobs: Sequence[SimulationJob]) -> list[list[float]]:
        requests = [build_simulator_prompt(SIMULATOR_EXAMPLES, job.explanation, job.tokens,
                                           placeholder=self.options.placeholder, hidden=self.options.hidden).request
                    for job in jobs]
        return [[expected_value(d) for d in distributions] for distributions in self.llm.slots(requests)]


@REGISTRY.register("all_at_once", AllAtOnceOptions)
def all_at_once(options: AllAtOnceOptions, base_dir: Path | None, store: Store, llms: LoadedLLMs) -> AllAtOnce:
    return AllAtOnce(options, base_dir, store, llms)
