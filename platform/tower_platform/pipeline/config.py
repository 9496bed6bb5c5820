"""The ``training`` section of a dataset config, translated into the towers' own config dataclass."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tower_platform.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover - heavy imports stay inside the functions
    from tower_platform.datasets.config import DatasetConfig
    from towers.config import TowerConfig

TRAINING_SECTION = "training"


def tower_config_from(dataset: DatasetConfig, *, overrides: dict[str, Any] | None = None) -> TowerConfig:
    """The ``training`` section of a dataset config (plus overrides) as the towers' config dataclass."""
    from towers.config import TowerConfig
    from towers.errors import TowersConfigError

    section = dataset.extra.get(TRAINING_SECTION) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"Dataset config {dataset.path}: section '{TRAINING_SECTION}' must be a mapping.")
    try:
        return TowerConfig.from_dict(section).with_overrides(overrides or {})
    except TowersConfigError as exc:
        raise ConfigError(f"Dataset config {dataset.path}: section '{TRAINING_SECTION}' is invalid: {exc}") from exc
