"""Folders written under a temporary name and renamed into place when complete, and the leftovers of killed runs.

    with staged_folder(parent, "sources", replace=True) as staging:   # parent/.sources.tmp-<token>
        ... write the files into staging ...
    # on success: renamed to parent/sources (a previous one is moved to .sources.old-<token>, then removed);
    # on an exception: removed, the previous folder left as it was

Each run takes an exclusive ``flock`` on its own lock file (``.<name>.lock-<token>``) before it creates anything
and holds it until it has finished; the kernel releases the lock when the process dies, SIGKILL included. A run
first removes the leftovers of the runs before it (:func:`remove_leftovers`): the ``.tmp-``/``.old-`` folders of every
token whose lock it can take, i.e. whose process is gone. A live run's folders are never touched, however old. A
killed run that had already moved the previous folder aside (``.old-`` present, the folder itself missing) gets it
back. Folders of the naming used before lock files (``.<name>.tmp-*``, ``.<name>.old-*``, ``.<name>.partial``, no lock
file) are taken as leftovers once they are older than :data:`UNLOCKED_GRACE_S`.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

UNLOCKED_GRACE_S = 3600.0  # leftovers without a lock file (older releases) are removed after an hour
_ENTRY = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old|lock)-(?P<token>[0-9]+-[0-9a-f]{8})")
_UNLOCKED = re.compile(r"\.(?P<name>.+)\.(?:(?:tmp|old)-[0-9a-f]{8}|partial)")


def _token() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def staging_path(parent: Path, name: str, token: str, kind: str = "tmp") -> Path:
    return Path(parent) / f".{name}.{kind}-{token}"


@contextmanager
def staged_folder(parent: str | Path, name: str, *, replace: bool) -> Iterator[Path]:
    """A fresh staging folder for ``parent/name``, published by rename when the block completes.

    ``replace``: an existing ``parent/name`` is swapped out (else its existence raises FileExistsError at the end).
    The leftovers of earlier killed runs in ``parent`` are removed first.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(parent)
    token = _token()
    lock = os.open(staging_path(parent, name, token, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)  # a new file: never contended; held until this run ends or dies
    staging, retired, target = (staging_path(parent, name, token), staging_path(parent, name, token, "old"),
                                parent / name)
    try:
        staging.mkdir()
        try:
            yield staging
            if target.exists():
                if not replace:
                    raise FileExistsError(f"{target} appeared while it was being written")
                os.replace(target, retired)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if retired.exists() and not target.exists():
                os.replace(retired, target)
            raise
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        staging_path(parent, name, token, "lock").unlink(missing_ok=True)
        os.close(lock)


def remove_leftovers(parent: str | Path, *, now: float | None = None) -> list[Path]:
    """Remove what killed runs left in ``parent`` (only runs whose lock is free); returns the paths removed."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    groups: dict[tuple[str, str], dict[str, Path]] = {}
    unlocked: list[tuple[str, Path]] = []
    for entry in parent.iterdir():
        matched = _ENTRY.fullmatch(entry.name)
        if matched:
            groups.setdefault((matched["name"], matched["token"]), {})[matched["kind"]] = entry
        elif _UNLOCKED.fullmatch(entry.name):
            unlocked.append((_UNLOCKED.fullmatch(entry.name)["name"], entry))  # type: ignore[index]
    removed: list[Path] = []
    for (name, _token_), entries in sorted(groups.items()):
        removed += _remove_group(parent / name, entries)
    clock = time.time() if now is None else now
    for name, entry in sorted(unlocked, key=lambda e: e[1].name):
        try:
            old = clock - entry.lstat().st_mtime > UNLOCKED_GRACE_S
        except FileNotFoundError:
            continue
        if old:
            removed += _remove_group(parent / name, {"old" if ".old-" in entry.name else "tmp": entry})
    return removed


def _remove_group(target: Path, entries: dict[str, Path]) -> list[Path]:
    """One earlier run's folders, removed when its lock is free (or it has none); its ``.old-`` folder is put back
    when the run died between moving the previous folder aside and renaming the new one in."""
    lock_path = entries.get("lock")
    fd = None
    if lock_path is not None:
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:
            return []  # that run has just finished
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return []  # alive: its process still holds the lock
    try:
        removed = []
        retired = entries.get("old")
        if retired is not None and retired.is_dir() and not target.exists():
            os.replace(retired, target)  # the previous folder, moved aside by the killed run: restore it
            retired = None
        for path in (entries.get("tmp"), retired):
            if path is not None and path.exists():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        if lock_path is not None:
            lock_path.unlink(missing_ok=True)
        return removed
    finally:
        if fd is not None:
            os.close(fd)
