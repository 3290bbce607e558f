"""`top_tokens`: the no-LLM baseline. The explanation lists the neuron's most active train-split tokens.

`words like "and", "the" and "to"`: the tokens whose activation reaches half the strongest shown, ranked
by their summed activation. A floor every explainer is measured against (README, Evaluation), not an
answer to ship: a person learns little from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from autointerp.errors import ConfigError
from autointerp.explain import REGISTRY, Explainer, ExplainerInput, Explanation
from autointerp.llm import LoadedLLMs
from autointerp.prompting import active_tokens, quote_list
from autointerp.store import Store


@dataclass(frozen=True)
class TopTokensOptions:
    count: int = 3  # tokens listed
    threshold: int = 5  # normalised activation (0-10) from which a token counts as active

    def check(self, where: str) -> None:
        if self.count < 1 or not 1 <= self.threshold <= 10:
            raise ConfigError(f"{where}: count must be positive and threshold in 1..10")


class TopTokens(Explainer):
    def __init__(self, options: TopTokensOptions):
        self.options = options

    @property
    def name(self) -> str:
        return f"top_tokens:{self.options.count}"

    @property
    def batch(self) -> int:
        return 1024  # no model: any number at once

    def explain(self, neurons: Sequence[ExplainerInput], seed: int) -> list[Explanation]:
        results = []
        for n in neurons:
            tokens = [a.token for a in active_tokens(n.records, self.options.threshold)[: self.options.count]]
            text = f"words like {quote_list(tokens)}" if tokens else "nothing: it never fires on these excerpts"
            results.append(Explanation(n.layer, n.neuron, 0, text, text, variant="top_tokens"))
        return results


@REGISTRY.register("top_tokens", TopTokensOptions)
def top_tokens(options: TopTokensOptions, base_dir: Path | None, store: Store, llms: LoadedLLMs) -> TopTokens:
    return TopTokens(options)
