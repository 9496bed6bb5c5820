"""The dataset adapters by name: a config's ``adapter:`` key picks one."""

from __future__ import annotations

from pathlib import Path

from tower_platform.datasets.base import DatasetAdapter
from tower_platform.datasets.movielens_100k import MovieLens100kAdapter
from tower_platform.datasets.movielens_latest import MovieLensLatestAdapter
from tower_platform.errors import ConfigError

ADAPTERS: dict[str, type[DatasetAdapter]] = {
    MovieLensLatestAdapter.name: MovieLensLatestAdapter,
    MovieLens100kAdapter.name: MovieLens100kAdapter,
}


def get_adapter(name: str, *, config_path: Path | None = None) -> DatasetAdapter:
    try:
        return ADAPTERS[name]()
    except KeyError:
        where = f"Dataset config {config_path}: key 'adapter'" if config_path else "Adapter"
        raise ConfigError(f"{where} names '{name}', which is not one of {', '.join(sorted(ADAPTERS))}.") from None
