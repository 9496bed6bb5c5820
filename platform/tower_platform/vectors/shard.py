"""One qdrant-edge shard folder: created atomically, opened under its write-ahead-log lock, errors translated.

qdrant-edge raises plain ``Exception``; :data:`EDGE_ERRORS` maps its messages to this platform's errors in one table
and :func:`translated` applies it. A shard is built in a temporary folder and renamed into place, so a crash never
leaves a half-created collection; a shard opened by one process is locked against every other opener.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tower_platform.errors import ConflictError, NotFoundError, TowerError, UnavailableError
from tower_platform.vectors.index import EdgeIndexConfig
from tower_platform.vectors.points import CATEGORY_FIELD, POINT_ID_NAMESPACE

SHARD_CONFIG_FILE = "edge_config.json"  # written by qdrant-edge in every shard folder
CREATING_PREFIX = ".creating-"  # .creating-<pid>-<collection>-<uuid>: a shard being built by process <pid>
DELETING_PREFIX = ".deleting-"  # a shard renamed away, being removed
_EDGE_DISTANCES = {"cosine": "Cosine", "dot": "Dot", "euclid": "Euclid"}
_NAMESPACE_BYTES = POINT_ID_NAMESPACE.bytes

# qdrant-edge's messages and this platform's errors: (substring, error class, message template).
EDGE_ERRORS: tuple[tuple[str, type[TowerError], str], ...] = (
    (
        "WouldBlock",
        UnavailableError,
        "vector shard {folder} is held by another process (its write-ahead log is locked); wait for that process "
        "to finish or stop it, or use a Qdrant server (TOWER_QDRANT__URL) for several writers.",
    ),
    ("does not exist", NotFoundError, "vector shard {folder} does not exist; see `towerctl embeddings status MODEL`."),
    ("dimension error", ConflictError, "vector shard {folder} refused to {action}: {exc}; embed with the same model."),
    ("not initialized", UnavailableError, "vector shard {folder} is closed; open the store again."),
)


def translate(exc: Exception, *, folder: Path, action: str) -> TowerError:
    """The platform error for a qdrant-edge exception raised while doing ``action`` on the shard at ``folder``."""
    text = str(exc)
    for needle, error, template in EDGE_ERRORS:
        if needle in text:
            return error(template.format(folder=folder, action=action, exc=text))
    return UnavailableError(f"vector shard {folder} failed to {action} ({text}); check the folder and free disk space.")


@contextlib.contextmanager
def translated(action: str, folder: Path) -> Iterator[None]:
    try:
        yield
    except TowerError:
        raise
    except Exception as exc:  # noqa: BLE001 - qdrant-edge raises plain Exception; translated here
        raise translate(exc, folder=folder, action=action) from exc


def fast_point_id(item_id: str) -> str:
    """``vectors.point_id`` (UUIDv5 of the namespace and the item id) without building a ``uuid.UUID``: 4x faster."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + str(item_id).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def open_shard(folder: Path, *, lock_timeout_s: float) -> Any:
    """Load the shard at ``folder``, waiting up to ``lock_timeout_s`` while another opener holds its lock."""
    from qdrant_edge import EdgeShard

    deadline = time.monotonic() + lock_timeout_s
    while True:
        try:
            return EdgeShard.load(str(folder))
        except Exception as exc:  # noqa: BLE001
            if "WouldBlock" not in str(exc) or time.monotonic() >= deadline:
                raise translate(exc, folder=folder, action="open") from exc
            time.sleep(0.05)


def create_shard(folder: Path, *, dimension: int, distance: str, index: EdgeIndexConfig) -> None:
    """An empty, closed shard at ``folder`` with a keyword index on the category, built aside and renamed into place.

    ``indexing_threshold`` (KB of vectors) keeps segments under ``exact_below`` points plain: searched exactly.
    """
    import qdrant_edge as qe

    threshold_kb = max(1, math.ceil(index.exact_below * dimension * 4 / 1024))
    config = qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dimension, distance=getattr(qe.Distance, _EDGE_DISTANCES[distance])),
        hnsw_config=qe.HnswIndexConfig(m=index.m, ef_construct=index.ef_construct, full_scan_threshold=threshold_kb),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=threshold_kb),
    )
    temp = folder.parent / f"{CREATING_PREFIX}{os.getpid()}-{folder.name}-{uuid.uuid4().hex}"
    try:
        with translated("create a collection", folder):
            shard = qe.EdgeShard.create(str(temp), config)
            try:
                shard.update(qe.UpdateOperation.create_field_index(CATEGORY_FIELD, qe.PayloadSchemaType.Keyword))
                shard.flush()
            finally:
                shard.close()
        temp.rename(folder)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def remove_leftovers(root: Path) -> list[Path]:
    """Remove what killed processes left under ``root``: shards renamed away for deletion, and shards being created
    by a process that no longer runs (a live creator's folder is kept). Returns the folders removed."""
    removed = []
    for path in root.iterdir():
        if path.name.startswith(DELETING_PREFIX) or (
            path.name.startswith(CREATING_PREFIX) and not _running(path.name[len(CREATING_PREFIX):].split("-", 1)[0])
        ):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _running(pid: str) -> bool:
    if not pid.isdigit():
        return False  # not named by this platform's creator: nobody is building it
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
