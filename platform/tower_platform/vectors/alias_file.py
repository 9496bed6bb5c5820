"""Aliases as pointer files: ``<root>/aliases/<alias>`` holds the name of the collection the alias points to.

The embedded engine has no aliases of its own, so the production alias is a small file switched atomically: the new
target is written to a temporary file in the same folder, fsynced, then renamed over the pointer (``os.replace`` is
atomic on POSIX), and the folder is fsynced so the rename survives a crash. A reader sees the old target or the new
one, never a half-written file. Compare-and-swap across processes holds an exclusive ``flock`` on
``<root>/aliases/.lock`` while it reads the current target and renames::

    pointers = AliasPointers(root)
    pointers.swap("movies", "movies__v2", previous="movies__v1")
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

from tower_platform.errors import ConflictError, UsageError

ALIAS_FOLDER = "aliases"
_LOCK_NAME = ".lock"
_TEMP_PREFIX = ".tmp-"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


def check_name(name: str, *, kind: str) -> str:
    """A collection or alias name usable as a file name (letters, digits, ``_ . -``), else UsageError."""
    if not _NAME_PATTERN.match(str(name)) or name == ALIAS_FOLDER:
        raise UsageError(
            f"{kind} name {name!r} cannot be stored as a file: use letters, digits, '_', '.' and '-' "
            f"(first a letter or digit, at most 200 characters, not '{ALIAS_FOLDER}')."
        )
    return str(name)


class AliasPointers:
    """The aliases under one root folder, each a pointer file replaced atomically."""

    def __init__(self, root: str | Path) -> None:
        self.folder = Path(root) / ALIAS_FOLDER

    def read(self) -> dict[str, str]:
        """Every alias and the collection it points to."""
        if not self.folder.is_dir():
            return {}
        targets: dict[str, str] = {}
        for path in sorted(self.folder.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            target = path.read_text(encoding="utf-8").strip()
            if target:
                targets[path.name] = target
        return targets

    def target(self, alias: str) -> str | None:
        path = self.folder / check_name(alias, kind="alias")
        try:
            return path.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def swap(self, alias: str, collection: str, *, previous: str | None) -> None:
        """Point ``alias`` at ``collection`` if it points at ``previous`` now (None: no alias yet), else ConflictError."""
        check_name(alias, kind="alias")
        check_name(collection, kind="collection")
        with self._locked():
            current = self.target(alias)
            if current != previous:
                raise ConflictError(
                    f"alias '{alias}' points to {current!r}, not {previous!r} as expected; "
                    "another promotion ran meanwhile: check `towerctl models list` and retry."
                )
            self._write(alias, collection)

    def delete(self, alias: str) -> None:
        """Remove an alias (nothing happens when it does not exist)."""
        path = self.folder / check_name(alias, kind="alias")
        with self._locked():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                self._sync_folder()

    def drop_targets(self, collection: str) -> None:
        """Remove every alias that points to ``collection`` (its collection is being deleted)."""
        with self._locked():
            for alias, target in self.read().items():
                if target == collection:
                    (self.folder / alias).unlink(missing_ok=True)
            self._sync_folder()

    # -- internals ----------------------------------------------------------------------------------------------
    def _write(self, alias: str, collection: str) -> None:
        temp = self.folder / f"{_TEMP_PREFIX}{alias}-{uuid.uuid4().hex}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, f"{collection}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, self.folder / alias)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        self._sync_folder()

    def _sync_folder(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
