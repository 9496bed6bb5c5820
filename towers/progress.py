"""The one progress reporter of the project (training, embedding writes, anything long), on stderr.

On a terminal it draws a rich progress bar. Anywhere else (a log file, CI, a pipe) a bar draws nothing useful, so it
prints plain lines instead: the first update, then at most one line every ``interval_s`` seconds, and a last line at
close::

    training epoch 1/4: 120/480 steps (25%), 23,456 ex/s, loss 4.1234, ETA 0:01:12
    writing movies__v3: 9,742/9,742 items (100%), 1,870 items/s, done in 0:00:05

    with ProgressReporter("writing movies__v3", total=n, unit="items") as progress:
        for batch in batches:
            ...
            progress.advance(len(batch))

``rate`` defaults to units per second since the start (``<unit>/s``); a caller that measures its own throughput
passes ``rate`` and ``rate_unit`` (the trainer: examples per second). The ETA is the remaining units at the average
pace since the start. No torch, numpy or platform import: ``tower_platform`` uses it too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

DEFAULT_INTERVAL_S = 10.0


def _clock_text(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressReporter:
    """Progress of ``total`` units labelled ``label``; a no-op when ``enabled`` is false."""

    def __init__(
        self,
        label: str,
        *,
        total: int,
        unit: str = "items",
        enabled: bool = True,
        stream: TextIO | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        terminal: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = max(int(total), 0)
        self.unit = unit
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = float(interval_s)
        self.clock = clock
        self.completed = 0
        self.description: str | None = None
        self.fields: dict[str, Any] = {}
        self.rate: float | None = None
        self.rate_unit = f"{unit}/s"
        self._started = clock()
        self._last_line: float | None = None
        self._closed = False
        self._bar: Any = None
        self._task: Any = None
        if enabled and (terminal if terminal is not None else _isatty(self.stream)):
            self._start_bar()

    # -- reporting ----------------------------------------------------------------------------------------------
    def update(
        self,
        *,
        completed: int | None = None,
        advance: int = 0,
        description: str | None = None,
        rate: float | None = None,
        rate_unit: str | None = None,
        **fields: Any,
    ) -> None:
        """Set (``completed``) or add to (``advance``) the units done; ``fields`` (e.g. ``loss=0.42``) are shown too."""
        if not self.enabled or self._closed:
            return
        self.completed = int(completed) if completed is not None else self.completed + int(advance)
        if description is not None:
            self.description = description
        if rate is not None:
            self.rate, self.rate_unit = float(rate), rate_unit or self.rate_unit
        self.fields.update(fields)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.completed, description=self._title(),
                             extra=self._extra(with_rate=True, elapsed=self.clock() - self._started))
            return
        now = self.clock()
        if self._last_line is None or now - self._last_line >= self.interval_s:
            self._write(self.line(now))
            self._last_line = now

    def advance(self, units: int) -> None:
        self.update(advance=units)

    def close(self) -> None:
        """The last line (or the bar's last frame); further updates are ignored."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.stop()
            return
        self._write(self.line(self.clock(), final=True))

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- text ---------------------------------------------------------------------------------------------------
    def line(self, now: float, *, final: bool = False) -> str:
        """The plain line at time ``now``: counts, share, rate, fields and the ETA (or the elapsed time at the end)."""
        elapsed = max(now - self._started, 0.0)
        share = f" ({100 * self.completed / self.total:.0f}%)" if self.total else ""
        parts = [f"{self._title()}: {self.completed:,}/{self.total:,} {self.unit}{share}"]
        extra = self._extra(with_rate=True, elapsed=elapsed)
        if extra:
            parts.append(extra)
        if final:
            parts.append(f"done in {_clock_text(elapsed)}")
        elif self.completed > 0 and elapsed > 0 and self.total:
            remaining = max(self.total - self.completed, 0) * elapsed / self.completed
            parts.append(f"ETA {_clock_text(remaining)}")
        else:
            parts.append("ETA -")
        return ", ".join(parts)

    def _title(self) -> str:
        return f"{self.label} {self.description}" if self.description else self.label

    def _extra(self, *, with_rate: bool, elapsed: float | None = None) -> str:
        parts = []
        if with_rate:
            rate = self.rate
            if rate is None and elapsed:
                rate = self.completed / elapsed
            if rate is not None:
                parts.append(f"{rate:,.0f} {self.rate_unit}")
        for name, value in self.fields.items():
            parts.append(f"{name} {value:.4f}" if isinstance(value, float) else f"{name} {value}")
        return ", ".join(parts)

    def _write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[extra]}"),
            TimeRemainingColumn(),
            console=Console(file=self.stream),
            transient=False,
        )
        self._task = self._bar.add_task(self._title(), total=self.total, extra="")
        self._bar.start()


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a file
        return False


__all__ = ["DEFAULT_INTERVAL_S", "ProgressReporter"]
