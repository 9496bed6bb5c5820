"""Artifact integrity: the sha256 of a file, checked against what the registry recorded."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from tower_platform.errors import IntegrityError
from tower_platform.registry.entities import Artifact

_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_artifacts(artifacts: Iterable[Artifact], *, model: str, version: int | None) -> None:
    """Raise IntegrityError when a file is missing or its sha256 is not the recorded one."""
    label = f"model '{model}'" + (f" version {version}" if version is not None else "")
    for artifact in artifacts:
        path = Path(artifact.path)
        if not path.is_file():
            raise IntegrityError(
                f"Artifact {artifact.name} of {label} is missing at {path}; restore it or export the model again."
            )
        actual = file_sha256(path)
        if actual != artifact.sha256.lower():
            raise IntegrityError(
                f"Artifact {artifact.name} of {label} at {path} has sha256 {actual[:12]}…, not the recorded "
                f"{artifact.sha256[:12]}…; the file was changed after export: restore it or register a new version."
            )
