import threading
from typing import ClassVar

import dagster as dg

from autointerp.config import Config, LLMSpec
from autointerp.llm import build_llm
from autointerp.llm.base import LLM, CachedLLM
from autointerp.llm.cache import LLMCache
from autointerp.store import Store


class LLMs(dg.ConfigurableResource):
    """The explainer and simulator LLMs of the config, with every call cached in the store.

    A local model is loaded once per process and shared by both roles when they name the same model.
    """

    _loaded: ClassVar[dict[tuple, LLM]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def for_role(self, config: Config, role: str, store: Store) -> CachedLLM:
        spec: LLMSpec = getattr(config, role)
        key = (spec.backend, spec.model, spec.base_url, spec.dtype, spec.batch_size, spec.mode,
               spec.concurrency, spec.timeout_s, spec.max_retries, str(config.path.parent))
        with self._lock:
            if key not in self._loaded:
                self._loaded[key] = build_llm(spec, config.path.parent)
            llm = self._loaded[key]
        return CachedLLM(llm, LLMCache(store))
