"""qdrant-client's local on-disk storage, retired as a vector backend: found, it is refused with the way out.

Until the embedded engine (qdrant-edge) became the default, ``$TOWER_HOME/qdrant`` held ``QdrantClient(path=...)``
storage (``meta.json``, ``collection/<name>/storage.sqlite``). Those vectors are not read any more: every version's
vectors can be written again from its registered ``item.onnx``, so the fix is to delete the folder and re-index.
"""

from __future__ import annotations

from pathlib import Path

from tower_platform.errors import ConfigError
from tower_platform.settings import env_name

LOCAL_STORAGE_MARKERS = ("meta.json", "collection")  # what QdrantClient(path=...) writes into its folder


def holds_local_storage(folder: Path) -> bool:
    """True when ``folder`` holds qdrant-client local storage."""
    return any((Path(folder) / marker).exists() for marker in LOCAL_STORAGE_MARKERS)


def refuse_local_storage(folder: Path, *, edge_path: Path) -> None:
    """ConfigError (exit 6) naming ``folder`` and the fix when it still holds qdrant-client local storage."""
    if not holds_local_storage(folder):
        return
    raise ConfigError(
        f"{folder} holds qdrant-client local storage, which is no longer a vector backend (the embedded store now "
        f"lives in {edge_path}); delete {folder} (its vectors are recomputed from each version's item.onnx), then run "
        "`towerctl embeddings write MODEL --version N` for every version you serve and `towerctl models promote "
        f"MODEL N` for the production version to point its alias again, or set {env_name('qdrant', 'url')} to use "
        "a server."
    )
