"""Every LLM call is cached in the store (`llm_calls`): a re-run never pays twice for the same answer.

The key is a hash of everything that determines the answer: backend, model (with its revision),
the kind of call, the prompt and the sampling parameters. Secrets (API keys) are never part of it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:  # the store (DuckDB) is imported when a cache is used, not to name CallResult (bench/gpu.py)
    from autointerp.store import Store


def call_key(backend: str, model: str, kind: str, request: Any) -> str:
    payload = json.dumps({"backend": backend, "model": model, "kind": kind, "request": request},
                         sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class CallResult:
    response: Any
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


class LLMCache:
    """Look up many calls at once, run the missing ones, store them; one short transaction per batch."""

    def __init__(self, store: Store):
        self.store = store
        self.stats = CacheStats()

    def run(self, backend: str, model: str, kind: str, requests: Sequence[Any],
            call: Callable[[list[Any]], list[CallResult]]) -> list[Any]:
        """Answer `requests`, calling `call` only with those not answered before (in one batch)."""
        keys = [call_key(backend, model, kind, r) for r in requests]
        from autointerp.store.queries import cached_responses
        from autointerp.store.schema import table

        known = cached_responses(self.store, keys)
        missing = [i for i, key in enumerate(keys) if key not in known]
        self.stats.hits += len(requests) - len(missing)
        self.stats.misses += len(missing)
        if missing:
            started = time.monotonic()
            results = call([requests[i] for i in missing])
            latency = (time.monotonic() - started) / len(missing)
            now = datetime.now(timezone.utc).replace(tzinfo=None)
            rows = table("llm_calls", rows=[{
                "key": keys[i], "backend": backend, "model": model, "kind": kind,
                "request": json.dumps(requests[i], ensure_ascii=False), "response": json.dumps(result.response),
                "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                "latency_s": latency, "created_at": now,
            } for i, result in zip(missing, results)])
            with self.store.connect() as con:
                con.register("_calls", rows)
                con.execute("INSERT INTO llm_calls BY NAME SELECT * FROM _calls "
                            "WHERE key NOT IN (SELECT key FROM llm_calls)")
            for i, result in zip(missing, results):
                known[keys[i]] = json.loads(json.dumps(result.response))  # same shape as a cache hit
        return [known[key] for key in keys]
