"""Datasets: the declarative dataset config, the generic tabular adapter and the ingestion into Feast source tables.

The names below load on first use, so that ``tower_platform.datasets.layout`` stays a cheap import.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "DatasetConfig": "tower_platform.datasets.config",
    "SplitConfig": "tower_platform.datasets.config",
    "load_dataset_config": "tower_platform.datasets.config",
    "IngestReport": "tower_platform.datasets.ingest",
    "ingest": "tower_platform.datasets.ingest",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value  # the function, not the submodule of the same name that the import just bound
        return value
    raise AttributeError(f"module 'tower_platform.datasets' has no attribute {name!r}")
