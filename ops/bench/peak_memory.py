"""Peak resident memory of a block, for the scale benchmarks (psutil, sampled in a thread)."""

from __future__ import annotations

import threading
from typing import Any


class PeakMemory:
    """Peak resident memory of a process tree (this process by default) while the block runs, sampled every 20 ms."""

    def __init__(self, pid: int | None = None) -> None:
        import psutil

        self._process = psutil.Process(pid)

    def rss(self) -> int:
        import psutil

        total = 0
        try:
            for process in (self._process, *self._process.children(recursive=True)):
                total += process.memory_info().rss
        except psutil.Error:
            pass
        return total

    def __enter__(self) -> PeakMemory:
        self.baseline = self.peak = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.rss())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())
