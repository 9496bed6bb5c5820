"""Warnings at the CLI edge: what third-party libraries emit is not the operator's business.

Without ``-v``, deprecation warnings (DeprecationWarning, PendingDeprecationWarning, FutureWarning) raised from code
outside ``tower_platform`` and ``towers`` are dropped; ours stay visible. The Qdrant client's insecure-connection
warning is always dropped: :func:`tower_platform.cli.context.open_vectors` prints one line of ours instead. This
hooks ``warnings.showwarning`` rather than the filter list, because libraries reset the filters when they are imported
(Feast calls ``warnings.simplefilter("once", DeprecationWarning)``), and most are imported inside the commands.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
REPLACED = ("Api key is used with an insecure connection", "Auth token provider is used with an insecure connection")


def _package_dirs() -> tuple[str, ...]:
    """The folders of tower_platform and towers (found without importing towers: ``--help`` stays fast)."""
    folders = [Path(__file__).resolve().parents[1]]
    spec = importlib.util.find_spec("towers")
    if spec is not None and spec.origin:
        folders.append(Path(spec.origin).resolve().parent)
    return tuple(f"{folder}/" for folder in folders)


_OURS = _package_dirs()


def _is_ours(filename: str) -> bool:
    return str(Path(filename).resolve()).startswith(_OURS)


def install(*, verbose: bool) -> None:
    """Route every warning of this process through the edge's filter (idempotent)."""
    shown = getattr(warnings.showwarning, "__wrapped__", warnings.showwarning)

    def showwarning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
                    line: str | None = None) -> None:
        if any(text in str(message) for text in REPLACED):
            return
        if not verbose and issubclass(category, DEPRECATIONS) and not _is_ours(filename):
            return
        shown(message, category, filename, lineno, file, line)

    showwarning.__wrapped__ = shown  # type: ignore[attr-defined]
    warnings.showwarning = showwarning
