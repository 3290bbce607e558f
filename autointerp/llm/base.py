"""The one LLM interface the explainers and simulators use, whatever runs the model.

Requests are plain JSON-able dicts, so that every call can be cached (see `cache.py`):
- chat: {"messages": [...], "n", "max_tokens", "temperature", "top_p", "seed"} -> n completions (strings).
  With "top_logprobs": k, each completion is {"text", "tokens": [...], "top_logprobs": [{token: logprob}, ...]}:
  the k most likely tokens at each generated position.
- slots: {"prefix", "body", "slots"} -> one {"0": p, ..., "10": p} per slot: the model's probability of each
  activation value written at that character offset of `body` (docs/method.md s.6).
- judge: {"messages": [...], "answers": ["yes", "no"]} -> {answer: log-probability} of each answer as the first
  word of the reply (case and a leading space ignored), read from ONE forward pass, no decoding (judging
  scorers, docs/method.md s.10). Requests that share their first messages share that prefix's computation.
A backend answers what it can; a request it cannot answer raises `Unsupported` with the reason.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Sequence

from autointerp.errors import AutointerpError
from autointerp.llm.cache import CallResult, LLMCache

ChatRequest = dict[str, Any]
SlotRequest = dict[str, Any]
JudgeRequest = dict[str, Any]
LOGPROB_FLOOR = -30.0  # an answer the model gives (almost) no probability: JSON has no -inf
VALUE_STRINGS = tuple(str(v) for v in range(11))  # the activation values a simulator writes, "0".."10"


class Unsupported(AutointerpError):
    """The backend or endpoint cannot answer this kind of request (e.g. no prompt logprobs)."""


class LLMEndpointError(AutointerpError):
    """The endpoint is unreachable, refuses the key, or answers in a way we cannot use."""


class LLM(ABC):
    backend: str
    model: str  # what produced the answers, e.g. a Hub id, "package:...gguf@sha256:..." or an API model name

    @classmethod
    @abstractmethod
    def name_for(cls, options: Any, base_dir: Path | None = None) -> str:
        """How results name this LLM, without loading it (a local model's name carries its file hash)."""

    @property
    def name(self) -> str:
        return f"{self.backend}:{self.model}"

    @abstractmethod
    def chat(self, requests: Sequence[ChatRequest]) -> list[CallResult]:
        """Answer each chat request with CallResult(response=[completion, ...])."""

    @abstractmethod
    def slots(self, requests: Sequence[SlotRequest]) -> list[CallResult]:
        """Answer each slot request with CallResult(response=[{value: probability}, ...])."""

    def judge(self, requests: Sequence[JudgeRequest]) -> list[CallResult]:
        """Answer each judge request with CallResult(response={answer: log-probability})."""
        raise Unsupported(f"the {self.backend} backend cannot judge (yes/no log-probabilities)")

    def close(self) -> None:
        """Release what the backend holds open (an endpoint's connections); a local model needs nothing."""


class CachedLLM:
    """An LLM behind the `llm_calls` cache: no request answered before is sent again, and the model itself is
    loaded only when a request misses the cache (a re-run of unchanged prompts never loads it)."""

    def __init__(self, backend: str, model: str, load: Callable[[], LLM], cache: LLMCache):
        self.backend, self.model, self._load, self.cache = backend, model, load, cache
        self._llm: LLM | None = None

    @classmethod
    def of(cls, llm: LLM, cache: LLMCache) -> "CachedLLM":
        return cls(llm.backend, llm.model, lambda: llm, cache)

    @property
    def name(self) -> str:
        return f"{self.backend}:{self.model}"

    @property
    def llm(self) -> LLM:
        if self._llm is None:
            self._llm = self._load()
        return self._llm

    def chat(self, requests: Sequence[ChatRequest],
             keep: Callable[[int, list[Any]], bool] | None = None) -> list[list[Any]]:
        """`keep(i, completions)`: whether the answer to requests[i] is usable, so worth caching (see LLMCache)."""
        return self.cache.run(self.backend, self.model, "chat", requests, lambda todo: self.llm.chat(todo), keep)

    def slots(self, requests: Sequence[SlotRequest]) -> list[list[dict[str, float]]]:
        return self.cache.run(self.backend, self.model, "slots", requests, lambda todo: self.llm.slots(todo))

    def judge(self, requests: Sequence[JudgeRequest]) -> list[dict[str, float]]:
        return self.cache.run(self.backend, self.model, "judge", requests, lambda todo: self.llm.judge(todo))


def value_distribution(top_logprobs: dict[str, float]) -> dict[str, float]:
    """Probabilities of "0".."10" among top logprobs (tokens compared without surrounding spaces, so " 3"
    counts as "3")."""
    distribution = {value: 0.0 for value in VALUE_STRINGS}
    for token, logprob in top_logprobs.items():
        value = token.strip()
        if value in distribution:
            distribution[value] += math.exp(logprob)
    return distribution


def answer_logprobs(logprobs: Any, answer_ids: dict[str, list[int]]) -> dict[str, float]:
    """{answer: log of the summed probability of its token variants} from one position's log-softmax
    (a 1-D torch tensor or numpy array over the vocabulary), floored at LOGPROB_FLOOR."""
    out = {}
    for answer, ids in answer_ids.items():
        total = float(sum(math.exp(float(logprobs[i])) for i in ids))
        out[answer] = max(LOGPROB_FLOOR, math.log(total)) if total > 0 else LOGPROB_FLOOR
    return out


def answer_token_ids(tokenizer: Any, answers: Sequence[str]) -> dict[str, list[int]]:
    """The first token of each way a reply can start with an answer ("yes", "Yes", " yes", " YES"...): the ids
    one answer owns alone (a first token two answers share tells nothing)."""
    firsts: dict[str, set[int]] = {}
    for answer in answers:
        for variant in {answer, answer.lower(), answer.capitalize(), answer.upper()}:
            for text in (variant, " " + variant):
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                if ids:
                    firsts.setdefault(answer, set()).add(ids[0])
    shared = {i for a in firsts for i in firsts[a] if any(i in firsts[b] for b in firsts if b != a)}
    owned = {a: sorted(ids - shared) for a, ids in firsts.items()}
    empty = [a for a, ids in owned.items() if not ids]
    if empty:
        raise Unsupported(f"the tokenizer cannot tell the answers {', '.join(map(repr, answers))} apart by their "
                          "first token")
    return owned


def answers_from_text(text: str, answers: Sequence[str]) -> dict[str, float]:
    """A reply without logprobs: the answer it starts with gets log-probability 0, the others the floor; a reply
    that starts with none of them gets the floor for all (an undecided judgement, log-odds 0)."""
    first = text.strip().lstrip("\"'*`([").lower()
    said = next((a for a in answers if first.startswith(a.lower())), None)
    return {a: 0.0 if a == said else LOGPROB_FLOOR for a in answers}
