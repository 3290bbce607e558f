"""Progress lines with rate and ETA for long loops, written to any logger (terminal or Dagster).

A process may also watch every Progress (`watch`): the CLI draws a progress bar per long step from it,
while the lines go to the Dagster run's log.
"""

from __future__ import annotations

import time
from typing import Callable


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


# Called with each Progress as it starts, advances and finishes (the CLI's terminal display).
_watchers: list[Callable[["Progress"], None]] = []


def watch(watcher: Callable[["Progress"], None]) -> Callable[[], None]:
    """Call `watcher` on every progress update in this process; returns what stops it."""
    _watchers.append(watcher)
    return lambda: _watchers.remove(watcher)


class Progress:
    """Call `advance(n)` as work is done; a line is logged at most every `every_s` seconds, and at the end."""

    def __init__(self, label: str, total: int, unit: str, log: Callable[[str], None], every_s: float = 10.0):
        self.label, self.total, self.unit, self.log, self.every_s = label, total, unit, log, every_s
        self.done = 0
        self.started = self._last = time.monotonic()
        self._notify()

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def _notify(self) -> None:
        for watcher in list(_watchers):
            watcher(self)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def advance(self, n: int) -> None:
        self.done += n
        self._notify()
        now = time.monotonic()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            self.log(self.line())

    def line(self) -> str:
        rate = self.rate
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = format_duration((self.total - self.done) / rate) if rate > 0 else "?"
        speed = f"{rate:,.0f} {self.unit}/s" if rate >= 1 else f"{rate * 60:,.1f} {self.unit}/min"
        return f"{self.label}: {self.done:,}/{self.total:,} {self.unit} ({pct:.0f}%), {speed}, ETA {eta}"
