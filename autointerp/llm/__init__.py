"""LLM clients: one interface (`base.LLM`), backends registered by name (`local`, `openai`), every call cached.

A backend is one module here: an `LLM` subclass registered with its options dataclass, e.g.
`@REGISTRY.register("local", LocalOptions)`; the config's `llm: {backend: NAME, ...}` picks it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from autointerp.plugins import Registry

REGISTRY: Registry[Any] = Registry("LLM backend", __name__)


def llm_name(choice: Any, base_dir: Path | None = None) -> str:
    """How results name the LLM a config chose (`LLMChoice`), without loading it."""
    return REGISTRY.get(choice.kind).factory.name_for(choice.options, base_dir)


class LoadedLLMs:
    """The LLMs one owner has loaded: each chosen LLM once, shared by every role that asks it (explainer,
    simulator and judges may be one model), released together by `close`. The owner is a Dagster run's
    `LLMResource` in the pipeline, or the script (`Stages`, eval/, bench/) that made it."""

    def __init__(self) -> None:
        self._loaded: dict[tuple, Any] = {}
        self._lock = threading.Lock()  # two threads asking at once must not load two copies

    def get(self, choice: Any, base_dir: Path | None = None) -> Any:
        key = (choice.kind, choice.options, str(base_dir))
        with self._lock:
            if key not in self._loaded:
                self._loaded[key] = REGISTRY.get(choice.kind).factory(choice.options, base_dir)
            return self._loaded[key]

    def close(self) -> None:
        """Close every loaded model and drop it (its memory is freed once no role holds it)."""
        with self._lock:
            loaded, self._loaded = list(self._loaded.values()), {}
        for llm in loaded:
            llm.close()


def cached_llm(choice: Any, base_dir: Path | None, store: Any, llms: LoadedLLMs) -> Any:
    """The LLM a config chose, behind the store's call cache; loaded (into `llms`) on the first call the cache
    misses."""
    from autointerp.llm.base import CachedLLM
    from autointerp.llm.cache import LLMCache

    backend, _, model = llm_name(choice, base_dir).partition(":")
    return CachedLLM(backend, model, lambda: llms.get(choice, base_dir), LLMCache(store))


class AsksLLM:
    """For an explainer or simulator that asks one LLM: its name (`<kind>:<llm>`), the cached client, and how
    many neurons to hand it per call (progress and the cache advance per call)."""

    def __init__(self, kind: str, choice: Any, base_dir: Path | None, store: Any, llms: LoadedLLMs):
        self._name = f"{kind}:{llm_name(choice, base_dir)}"
        self.llm = cached_llm(choice, base_dir, store, llms)
        # An endpoint answers `concurrency` requests at once; a local model samples `chat_batch` together on the
        # CPU, `device_batch` on CUDA (its `rows_per_call`).
        per_call = getattr(choice.options, "rows_per_call", None)
        self._batch = int(per_call() if per_call is not None else
                          getattr(choice.options, "concurrency", getattr(choice.options, "chat_batch", 1)))

    @property
    def name(self) -> str:
        return self._name

    @property
    def batch(self) -> int:
        return self._batch
