"""The storage lock of Qdrant local storage: one opener of a folder at a time, across processes."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from tower_platform.errors import UnavailableError

LOCK_FILE_NAME = ".tower.lock"


class StorageLock:
    """An exclusive advisory lock on ``<folder>/.tower.lock`` shared by every process of this platform."""

    def __init__(self, folder: Path, *, timeout_s: float = 30.0, poll_s: float = 0.05) -> None:
        self.path = Path(folder) / LOCK_FILE_NAME
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise UnavailableError(
                        f"Qdrant local storage {self.path.parent} is held by another process for more than "
                        f"{self.timeout_s:.0f} s; wait for it to finish or use a Qdrant server (TOWER_QDRANT__URL)."
                    ) from None
                time.sleep(self.poll_s)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
