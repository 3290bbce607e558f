"""The one LLM interface the explainer and simulator use, whatever runs the model.

Requests are plain JSON-able dicts, so that every call can be cached (see `cache.py`):
- chat: {"messages": [...], "n", "max_tokens", "temperature", "top_p", "seed"} -> list of n completions;
- slots: {"prefix", "body", "slots"} -> one {"0": p, ..., "10": p} per slot: the simulator model's
  probability of each activation value written at that character offset of `body` (METHOD.md s.5).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

from autointerp.llm.cache import CallResult, LLMCache

ChatRequest = dict[str, Any]
SlotRequest = dict[str, Any]


class LLM(ABC):
    backend: str
    model: str  # what produced the answers, e.g. a Hub id, "package:...gguf@sha256:..." or an API model name

    @property
    def name(self) -> str:
        return f"{self.backend}:{self.model}"

    @abstractmethod
    def chat(self, requests: Sequence[ChatRequest]) -> list[CallResult]:
        """Answer each chat request with CallResult(response=[completion, ...])."""

    @abstractmethod
    def slots(self, requests: Sequence[SlotRequest]) -> list[CallResult]:
        """Answer each slot request with CallResult(response=[{value: probability}, ...])."""


class CachedLLM:
    """Wraps an LLM so that no request it answered before is sent again."""

    def __init__(self, llm: LLM, cache: LLMCache):
        self.llm, self.cache = llm, cache

    @property
    def name(self) -> str:
        return self.llm.name

    def chat(self, requests: Sequence[ChatRequest]) -> list[list[str]]:
        return self.cache.run(self.llm.backend, self.llm.model, "chat", requests, self.llm.chat)

    def slots(self, requests: Sequence[SlotRequest]) -> list[list[dict[str, float]]]:
        return self.cache.run(self.llm.backend, self.llm.model, "slots", requests, self.llm.slots)
