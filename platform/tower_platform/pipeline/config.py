"""The ``training`` section of a dataset config, translated into the towers' own config dataclass.

Every value is checked before any work (types, ranges, combinations: ``towers.config``); a bad value in the file is a
ConfigError naming the file, a bad ``--set KEY=VALUE`` a UsageError naming the option as it was typed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tower_platform.errors import ConfigError, UsageError

if TYPE_CHECKING:  # pragma: no cover - heavy imports stay inside the functions
    from tower_platform.datasets.config import DatasetConfig
    from towers.config import TowerConfig

TRAINING_SECTION = "training"


def tower_config_from(
    dataset: DatasetConfig, *, overrides: Mapping[str, Any] | None = None, written_as: Mapping[str, str] | None = None
) -> TowerConfig:
    """The ``training`` section of a dataset config, then each override (``--set``), as the towers' config dataclass.

    ``written_as`` maps an override's key to the text the user typed (``epochs=abc``), for messages.
    """
    from towers.config import TowerConfig
    from towers.errors import TowersConfigError

    section = dataset.extra.get(TRAINING_SECTION) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"Dataset config {dataset.path}: section '{TRAINING_SECTION}' must be a mapping.")
    try:
        config = TowerConfig.from_dict(section)
    except TowersConfigError as exc:
        raise ConfigError(f"Dataset config {dataset.path}: section '{TRAINING_SECTION}' is invalid: {exc}") from exc
    overrides = dict(overrides or {})
    if not overrides:
        return config
    try:  # together, so that settings which only make sense jointly can be given in any order
        return config.with_overrides(overrides)
    except TowersConfigError as together:
        texts = {key: (written_as or {}).get(key) or f"{key}={value!r}" for key, value in overrides.items()}
        for key, value in overrides.items():  # name the option that is wrong on its own, where one is
            try:
                config.with_overrides({key: value})
            except TowersConfigError as exc:
                raise UsageError(f"--set {texts[key]}: {_clause(exc)}.") from together
        raise UsageError(f"--set {', '.join(texts.values())}: {_clause(together)}.") from together


def _clause(exc: Exception) -> str:
    """The towers' message as a clause: ``training.epochs must be >= 1, got 0``."""
    problem = str(getattr(exc, "problem", "") or exc).rstrip(".")
    return problem[:1].lower() + problem[1:]
