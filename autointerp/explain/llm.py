"""`llm`: an explainer LLM reads a neuron's top train-split records and writes one sentence (docs/method.md s.5).

Each of `formats` (`explain/formats/`) shows the records its own way; `samples` completions are drawn per
format. One candidate is the neuron's explanation; several are chosen between on the valid split by the
explain stage (best-of-n, `explain/best_of_n.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from autointerp.config import LLMChoice
from autointerp.errors import ConfigError
from autointerp.explain import REGISTRY, Explainer, ExplainerInput, Explanation
from autointerp.explain.formats import REGISTRY as FORMATS
from autointerp.llm import AsksLLM, LoadedLLMs
from autointerp.store.quality import EXPLANATION_CHARS, PROMPT_ECHO

if TYPE_CHECKING:  # annotations only: the store (DuckDB) is not needed to explain or simulate
    from autointerp.store import Store

_ECHO = re.compile(PROMPT_ECHO)


@dataclass(frozen=True)
class LLMExplainerOptions:
    llm: LLMChoice = None  # type: ignore[assignment]  # filled in by the parser: the default local model
    formats: tuple[str, ...] = ("listing",)  # prompt formats to draw candidates from (explain/formats/)
    samples: int = 1  # completions per format
    examples: int = 5  # top records of the train split shown
    temperature: float = 1.0  # reference defaults: temperature 1, top_p 1, 60 new tokens
    top_p: float = 1.0
    max_tokens: int = 60
    attempts: int = 3  # an unusable completion (empty, or an echo of the prompt) is drawn again up to this often

    def check(self, where: str) -> None:
        if not self.formats:
            raise ConfigError(f"{where}.formats must name at least one prompt format")
        for name in self.formats:
            FORMATS.get(name, f"{where}.formats")
        for name in ("samples", "examples", "max_tokens", "attempts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name} must be a positive integer")
        if not (0 <= self.temperature <= 2 and 0 < self.top_p <= 1):
            raise ConfigError(f"{where}: temperature must be in [0, 2] and top_p in (0, 1]")


def usable(explanation: str) -> bool:
    """An explanation worth keeping (the explanations suite's rule): not empty, not a runaway answer, and not the
    model echoing its prompt's syntax."""
    return EXPLANATION_CHARS[0] <= len(explanation) <= EXPLANATION_CHARS[1] and not _ECHO.search(explanation)


class LLMExplainer(AsksLLM, Explainer):
    def __init__(self, options: LLMExplainerOptions, base_dir: Path | None, store: Store, llms: LoadedLLMs):
        super().__init__("+".join(options.formats), options.llm, base_dir, store, llms)
        self.options = options
        self.formats = {name: FORMATS.get(name).factory() for name in options.formats}

    @property
    def candidates(self) -> int:
        return len(self.formats) * self.options.samples

    def explain(self, neurons: Sequence[ExplainerInput], seed: int) -> list[Explanation]:
        """An unusable sample is drawn again (new seed) up to `attempts` times; what is still unusable after
        that is returned as is (it is not chosen, and the quality check rejects a chosen one)."""
        o = self.options
        best: dict[tuple[int, int, int, int], Explanation] = {}  # (layer, neuron, format, sample)

        def missing(n: ExplainerInput, f: int) -> bool:
            return any(not usable(best[(n.layer, n.neuron, f, s)].explanation) if (n.layer, n.neuron, f, s) in best
                       else True for s in range(o.samples))

        for attempt in range(o.attempts):
            todo = [(n, f) for n in neurons for f in range(len(self.formats)) if missing(n, f)]
            if not todo:
                break
            formats = list(self.formats.values())
            requests = [{"messages": formats[f].messages(n.records[: o.examples], n.writes), "n": o.samples,
                         "max_tokens": o.max_tokens, "temperature": o.temperature, "top_p": o.top_p,
                         "seed": seed * 1_000_003 + n.layer * 10_007 + n.neuron + 7_919 * attempt + 104_729 * f}
                        for n, f in todo]
            answers = self.llm.chat(requests, keep=lambda i, completions: all(
                usable(formats[todo[i][1]].parse(c)) for c in completions))
            for (n, f), completions in zip(todo, answers):
                for sample, completion in enumerate(completions):
                    key = (n.layer, n.neuron, f, sample)
                    if key not in best or not usable(best[key].explanation):
                        best[key] = Explanation(n.layer, n.neuron, f * o.samples + sample, formats[f].parse(completion),
                                                completion, variant=list(self.formats)[f])
        return [best[(n.layer, n.neuron, f, s)] for n in neurons for f in range(len(self.formats))
                for s in range(o.samples)]


@REGISTRY.register("llm", LLMExplainerOptions)
def llm_explainer(options: LLMExplainerOptions, base_dir: Path | None, store: Store,
                  llms: LoadedLLMs) -> LLMExplainer:
    return LLMExplainer(options, base_dir, store, llms)
