"""Where the files shipped with the package live (works from a source tree and from an installed wheel)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def packaged_feature_repo() -> Path:
    return Path(str(resources.files("tower_platform._feature_repo")))


def packaged_migrations() -> Path:
    return Path(str(resources.files("tower_platform._migrations")))


def bundled_dir() -> Path:
    return Path(str(resources.files("tower_platform") / "bundled"))


def bundled_config(name: str = "movielens-latest-small") -> Path:
    return bundled_dir() / "configs" / f"{name}.yaml"
