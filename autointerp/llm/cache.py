"""Every LLM call is cached in the store (`llm_calls`): a re-run never pays twice for the same answer.

The key is a hash of everything that determines the answer: backend, model (with its revision),
the kind of call, the prompt and the sampling parameters. Secrets (API keys) are never part of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

if TYPE_CHECKING:  # the store (DuckDB) is imported when a cache is used, not to name CallResult (bench/gpu.py)
    from autointerp.store import Store

log = logging.getLogger("autointerp.llm")


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
            call: Callable[[list[Any]], list[CallResult]],
            keep: Callable[[int, Any], bool] | None = None) -> list[Any]:
        """Answer `requests`, calling `call` only with those not answered before (in one batch).

        `keep(i, response)` says whether the answer to `requests[i]` is usable. An unusable one is returned
        but never stored, and one stored before (by an older version, or a caller that did not check) counts
        as missing: a misbehaving endpoint's answers must not be replayed as successes once it is fixed.
        """
        keys = [call_key(backend, model, kind, r) for r in requests]
        known = self._known(keys, keep)
        missing = [i for i, key in enumerate(keys) if key not in known]
        if not missing:
            self.stats.hits += len(requests)
            return [known[key] for key in keys]
        with self._asking():
            # Another run on this store may have asked the same while we waited: its answers are free now.
            known = self._known(keys, keep)
            missing = [i for i, key in enumerate(keys) if key not in known]
            self._ask(backend, model, kind, requests, keys, known, missing, call, keep)
        return [known[key] for key in keys]

    def _known(self, keys: list[str], keep: Callable[[int, Any], bool] | None) -> dict[str, Any]:
        known = cached_responses(self.store, keys)
        if keep is not None:
            stale = {key for i, key in enumerate(keys) if key in known and not keep(i, known[key])}
            known = {key: response for key, response in known.items() if key not in stale}
        return known

    @contextlib.contextmanager
    def _asking(self) -> Iterator[None]:
        """One process at a time asks the LLM on behalf of a store (an advisory lock beside its file), so two
        runs on one home never pay twice for the same answer: the second waits, then reads the first's."""
        path = self.store.lock_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                log.warning(f"waiting for {holder}, which is asking the LLM for this store ({self.store}); "
                            "its answers will be reused")
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.truncate(0)
                handle.write(f"PID {os.getpid()}")
                handle.flush()
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _ask(self, backend: str, model: str, kind: str, requests: Sequence[Any], keys: list[str],
             known: dict[str, Any], missing: list[int], call: Callable[[list[Any]], list[CallResult]],
             keep: Callable[[int, Any], bool] | None) -> None:
        """Call the LLM with the `missing` requests; store the usable answers; put every answer in `known`."""
        # The same request twice in one batch (two excerpts with the same text) is asked, paid and stored once.
        firsts: dict[str, int] = {}
        for i in missing:
            firsts.setdefault(keys[i], i)
        missing = list(firsts.values())
        self.stats.hits += len(requests) - len(missing)
        self.stats.misses += len(missing)
        if not missing:
            return
        started = time.monotonic()
        results = call([requests[i] for i in missing])
        latency = (time.monotonic() - started) / len(missing)
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        answers = {i: json.loads(json.dumps(result.response)) for i, result in zip(missing, results)}
        kept = [(i, result) for i, result in zip(missing, results) if keep is None or keep(i, answers[i])]
        if kept:
            from autointerp.store.schema import table

            rows = table("llm_calls", rows=[{
                "key": keys[i], "backend": backend, "model": model, "kind": kind,
                "request": json.dumps(requests[i], ensure_ascii=False), "response": json.dumps(result.response),
                "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                "latency_s": latency, "created_at": now,
            } for i, result in kept])
            with self.store.connect() as con:
                con.register("_calls", rows)
                con.execute("BEGIN")
                # an unusable answer stored earlier under the same key gives way to the usable one
                con.execute("DELETE FROM llm_calls WHERE key IN (SELECT key FROM _calls)")
                con.execute("INSERT INTO llm_calls BY NAME SELECT * FROM _calls")
                con.execute("COMMIT")
        for i in missing:
            known[keys[i]] = answers[i]  # same shape as a cache hit


def cached_responses(store: Store, keys: Sequence[str]) -> dict[str, Any]:
    """key -> the stored answer, for the keys answered before."""
    if not keys:
        return {}
    with store.connect() as con:
        rows = con.execute("SELECT key, response FROM llm_calls WHERE key IN (SELECT unnest(?::VARCHAR[]))",
                           [list(set(keys))]).fetchall()
    return {key: json.loads(response) for key, response in rows}
