"""A throwaway Redis (Debian's `redis-server`) on 127.0.0.1, no persistence: the Celery broker for the worker tests
and bench/workers.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

from servers import LOOPBACK, free_port, start_process, stop_process_group, tail


def _answers(port: int, password: str | None) -> bool:
    import redis

    with contextlib.suppress(Exception):
        return bool(redis.Redis(host=LOOPBACK, port=port, password=password, socket_timeout=1).ping())
    return False


@contextlib.contextmanager
def redis_server(password: str | None = None) -> Iterator[str]:
    """Yields the broker URL (redis://127.0.0.1:PORT/0, never with the password); stopped at the end."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise RuntimeError("Debian's redis-server is not installed: run ./scripts/setup.sh")
    root = Path(tempfile.mkdtemp(prefix="autointerp-redis-"))
    port = free_port()
    process = start_process([binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
                             "--dir", str(root), "--protected-mode", "yes",
                             *(["--requirepass", password] if password else [])], cwd=root, env=dict(os.environ),
                            log_path=root / "redis.log")
    try:
        deadline = time.monotonic() + 30
        while not _answers(port, password):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{tail(root / 'redis.log')}")
            time.sleep(0.2)
        yield f"redis://{LOOPBACK}:{port}/0"
    finally:
        stop_process_group(process)
        shutil.rmtree(root, ignore_errors=True)
