"""What `autointerp run` shows in the terminal: a tqdm bar per long step (its rate and ETA), one line per
finished step, the summary at the end; plain lines, no bars and no colour, when stdout is not a terminal.
Dagster's event stream goes to the instance (and the UI) and reaches the terminal only with --verbose."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from autointerp.progress import Progress, format_duration, watch


class TerminalProgress:
    """Draws every Progress of this process while it is installed (`close` uninstalls it)."""

    def __init__(self, interactive: bool | None = None, every_s: float = 30.0):
        self.interactive = sys.stdout.isatty() if interactive is None else interactive
        self.bars: dict[int, Any] = {}
        self.printed: dict[int, float] = {}  # when each progress last printed a line (not interactive)
        self.every_s = every_s
        self.stop = watch(self.update)

    def update(self, progress: Progress) -> None:
        key = id(progress)
        if self.interactive and not progress.finished:
            from tqdm import tqdm

            if key not in self.bars:
                self.bars[key] = tqdm(total=progress.total, desc=progress.label, unit=f" {progress.unit}",
                                      unit_scale=progress.unit == "tokens", leave=False, file=sys.stdout,
                                      dynamic_ncols=True, disable=False)
            self.bars[key].update(progress.done - self.bars[key].n)
        elif not self.interactive and not progress.finished and progress.done:
            # Piped to a file (a long run under nohup): a line with the ETA now and then instead of a bar.
            now = time.monotonic()
            if now - self.printed.get(key, progress.started) >= self.every_s:
                self.printed[key] = now
                print(f"  {progress.line()}", flush=True)
        if progress.finished and not getattr(progress, "_shown", False):
            progress._shown = True  # type: ignore[attr-defined]
            bar = self.bars.pop(key, None)
            if bar is not None:
                bar.close()
            self.finished(progress)

    @staticmethod
    def finished(progress: Progress) -> None:
        rate = (f"{progress.rate:,.0f} {progress.unit}/s" if progress.rate >= 1
                else f"{progress.rate * 60:,.1f} {progress.unit}/min")
        elapsed = format_duration(progress.done / progress.rate) if progress.rate > 0 else "0m00s"
        print(f"  {progress.label}: {progress.total:,} {progress.unit} in {elapsed} ({rate})", flush=True)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.stop()


def quiet_libraries() -> None:
    """The libraries' own progress bars and warnings are for developers: off unless --verbose."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")  # bars libraries draw with tqdm directly (GGUF conversion); not ours
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
