"""Headless Chromium (Debian's `chromium`) for page tests: the DOM after scripts ran, and screenshots.

Background networking is off: this machine's closed network refuses Chromium's own connections.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("Debian's chromium is not installed: run ./scripts/setup.sh (apt-get install chromium)")
    return path


def _run(url: str, extra: list[str], wait_ms: int, timeout_s: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        # --virtual-time-budget lets the page's scripts (and the requests they make) finish before the dump.
        command = [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={wait_ms}", *extra, url]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise RuntimeError(f"chromium failed ({result.returncode}) on {url}: {result.stderr[-2000:]}")
    return result


def dump_dom(url: str, wait_ms: int = 3000, timeout_s: float = 120) -> str:
    """The page's DOM as HTML after its scripts ran."""
    return _run(url, ["--dump-dom"], wait_ms, timeout_s).stdout


def screenshot(url: str, path: Path, size: tuple[int, int] = (1400, 900), wait_ms: int = 3000,
               timeout_s: float = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(url, [f"--screenshot={path}", f"--window-size={size[0]},{size[1]}"], wait_ms, timeout_s)
    if not path.exists() or path.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot of {url}")
    return path
