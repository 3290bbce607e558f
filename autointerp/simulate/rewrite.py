"""`chat` and `parse`: simulators for endpoints without prompt logprobs (docs/method.md s.6).

The LLM is shown the all-at-once prompt and asked to rewrite the target excerpt with a value in place of
each placeholder. `chat` reads the top logprobs of each value it writes (chat logprobs, e.g. OpenAI's chat
API); `parse` reads the integers themselves (the reference's logprob-free simulator). A reply with too few
lines predicts 0 for the tokens it skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from autointerp.config import LLMChoice
from autointerp.prompting import UNKNOWN
from autointerp.fewshot import SIMULATOR_EXAMPLES
from autointerp.llm import AsksLLM, LoadedLLMs
from autointerp.llm.base import value_distribution
from autointerp.simulate import REGISTRY, SimulationJob, Simulator
from autointerp.simulate.prompts import build_simulator_prompt, expected_value
from autointerp.store import Store

REWRITE_INSTRUCTION = (
    "\n\nRewrite the last excerpt above, from <start> to <end>, one line per token, replacing each "
    f"'{UNKNOWN}' with your predicted activation (an integer from 0 to 10). Write nothing else."
)
_VALUE_LINE = re.compile(r"\t\s*(\d+)")
TOP_LOGPROBS = 20  # the most chat APIs return


@dataclass(frozen=True)
class RewriteOptions:
    llm: LLMChoice = None  # type: ignore[assignment]  # filled in by the parser: the default local model


class Rewrite(AsksLLM, Simulator):
    def __init__(self, kind: str, options: RewriteOptions, base_dir: Path | None, store: Store, llms: LoadedLLMs):
        super().__init__(kind, options.llm, base_dir, store, llms)
        self.kind = kind

    def simulate(self, jobs: Sequence[SimulationJob]) -> list[list[float]]:
        requests = []
        for job in jobs:
            prompt = build_simulator_prompt(SIMULATOR_EXAMPLES, job.explanation, job.tokens, placeholder=UNKNOWN)
            request: dict[str, Any] = {"messages": [{"role": "user", "content": prompt.text + REWRITE_INSTRUCTION}],
                                       "n": 1, "max_tokens": 8 * len(job.tokens) + 16, "temperature": 0.0,
                                       "top_p": 1.0, "seed": 0}
            if self.kind == "chat":
                request["top_logprobs"] = TOP_LOGPROBS
            requests.append(request)
        results = []
        # An empty reply (an endpoint answering null content) is used as zeros but never cached: asked again later.
        answers = self.llm.chat(requests, keep=lambda i, completions: bool(_text(completions[0]).strip()))
        for job, completions in zip(jobs, answers):
            reply = completions[0]
            values = _logprob_values(reply) if self.kind == "chat" else _parsed_values(reply)
            results.append(_fit(values, len(job.tokens)))
        return results


def _text(reply: Any) -> str:
    return reply["text"] if isinstance(reply, dict) else reply


def _logprob_values(reply: dict[str, Any]) -> list[float]:
    """The expected value at each value token: a digit token right after a tab."""
    values, text = [], ""
    for token, alternatives in zip(reply["tokens"], reply["top_logprobs"]):
        if text.endswith("\t") and token.strip().isdigit():
            values.append(expected_value(value_distribution(alternatives)))
        text += token
    return values


def _parsed_values(reply: str) -> list[float]:
    return [float(min(10, int(m.group(1)))) for m in map(_VALUE_LINE.search, reply.splitlines()) if m]


def _fit(values: list[float], n_tokens: int) -> list[float]:
    """Garbage in, zeros out: a reply with too few lines predicts 0 for the tokens it skipped."""
    return (values + [0.0] * n_tokens)[:n_tokens]


@REGISTRY.register("chat", RewriteOptions)
def chat(options: RewriteOptions, base_dir: Path | None, store: Store, llms: LoadedLLMs) -> Rewrite:
    return Rewrite("chat", options, base_dir, store, llms)


@REGISTRY.register("parse", RewriteOptions)
def parse(options: RewriteOptions, base_dir: Path | None, store: Store, llms: LoadedLLMs) -> Rewrite:
    return Rewrite("parse", options, base_dir, store, llms)
