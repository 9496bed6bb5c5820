"""Garbage collection: retire every version but the newest ``keep``, production and the rollback target.

Retiring deletes the version's Qdrant collection and its artifact folder; the registry changes commit only when the
external deletions succeed, and re-running finishes a gc that failed half-way. gc holds the model's promotion lock and
refuses, like promote, while the registry and the vector store disagree (``towerctl models reconcile MODEL`` first).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tower_platform.errors import ConflictError, UsageError
from tower_platform.naming import production_alias
from tower_platform.registry.entities import ModelVersion
from tower_platform.registry.production_history import rollback_target_or_none
from tower_platform.registry.serving_state import read_serving_state, require_consistent
from tower_platform.registry.store import SqlRegistryStore

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.registry.promotion import VectorAliasStore


@dataclass(frozen=True)
class RetiredVersion:
    version: int
    status: str  # before gc
    collection: str | None  # deleted (or, with dry_run, to delete); None when there was none left
    artifact_dir: str | None  # deleted folder (None: outside the artifacts root or already gone)


@dataclass(frozen=True)
class GcResult:
    model: str
    dry_run: bool
    kept: tuple[int, ...]
    retired: tuple[RetiredVersion, ...]


def gc(
    store: SqlRegistryStore,
    vectors: VectorAliasStore,
    model: str,
    *,
    keep: int,
    artifacts_root: str | Path,
    dry_run: bool,
    actor: str = "system",
    reason: str | None = None,
) -> GcResult:
    """Retire every version but the newest ``keep``, production and the rollback target.

    Retiring deletes the version's Qdrant collection and its artifact folder (only a folder inside
    ``artifacts_root``, and only one that no kept version uses). Re-running finishes a gc that failed half-way.
    """
    if keep < 0:
        raise UsageError(f"--keep {keep} for model '{model}' is negative; pass 0 or more versions to keep.")
    if dry_run:
        return _gc(store, vectors, model, keep=keep, artifacts_root=artifacts_root, dry_run=True, actor=actor,
                   reason=reason)
    with store.promotion_lock(model):
        return _gc(store, vectors, model, keep=keep, artifacts_root=artifacts_root, dry_run=False, actor=actor,
                   reason=reason)


def _gc(
    store: SqlRegistryStore,
    vectors: VectorAliasStore,
    model: str,
    *,
    keep: int,
    artifacts_root: str | Path,
    dry_run: bool,
    actor: str,
    reason: str | None,
) -> GcResult:
    require_consistent(read_serving_state(store, vectors, model))
    root = Path(artifacts_root).expanduser().resolve()
    alias = production_alias(model)
    with store.locked_model(model) as unit:
        versions = unit.versions()
        production = unit.production()
        target = rollback_target_or_none(unit, production)
        newest = {v.version for v in sorted(versions, key=lambda v: v.version, reverse=True)[:keep]}
        kept = newest | {v.version for v in (production, target) if v is not None}
        live_dirs = {_artifact_dir(v, root) for v in versions if v.version in kept} - {None}
        alias_target = vectors.alias_target(alias)
        retired: list[RetiredVersion] = []
        for version in versions:
            if version.version in kept:
                continue
            collection = _deletable_collection(version, vectors)
            if collection is not None and collection == alias_target:
                raise ConflictError(
                    f"Qdrant alias '{alias}' points to '{collection}' of version {version.version}, not to the "
                    f"registry's production version; promote the production version again before `towerctl models gc`."
                )
            folder = _artifact_dir(version, root)
            folder = folder if folder is not None and folder not in live_dirs and folder.exists() else None
            if version.status == "retired" and collection is None and folder is None:
                continue  # nothing left to do
            retired.append(RetiredVersion(version.version, version.status, collection, str(folder) if folder else None))
            if dry_run:
                continue
            if version.status != "retired":
                unit.set_status(version.version, "retired")
            unit.mark_collection_deleted(version.version)
            unit.audit(
                "retire",
                version=version.version,
                actor=actor,
                reason=reason,
                from_status=version.status,
                to_status="retired",
                details={"collection": collection, "artifact_dir": str(folder) if folder else None, "keep": keep},
            )
        if not dry_run:  # external deletions last: a failure here rolls the registry changes back
            for item in retired:
                if item.collection is not None:
                    vectors.delete_collection(item.collection)
                if item.artifact_dir is not None:
                    _remove_folder(Path(item.artifact_dir))
    return GcResult(model=model, dry_run=dry_run, kept=tuple(sorted(kept)), retired=tuple(retired))


def _deletable_collection(version: ModelVersion, vectors: VectorAliasStore) -> str | None:
    if version.collection is None:
        return None
    name = version.collection.name
    return name if vectors.collection_exists(name) else None


def _artifact_dir(version: ModelVersion, root: Path) -> Path | None:
    """The one folder holding all of a version's artifacts, when it lies strictly inside ``root``."""
    parents = {Path(a.path).parent for a in version.artifacts}
    if len(parents) != 1:
        return None
    folder = parents.pop().resolve()
    return folder if folder != root and folder.is_relative_to(root) else None


def _remove_folder(folder: Path) -> None:
    """Rename first (one atomic step: the folder is gone for every reader), then delete the renamed copy."""
    doomed = folder.with_name(f".{folder.name}.deleting")
    if doomed.exists():
        shutil.rmtree(doomed)
    if folder.exists():
        os.replace(folder, doomed)
        shutil.rmtree(doomed)
