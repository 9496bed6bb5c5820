"""Dataset configuration: one YAML file per dataset (``bundled/configs/<name>.yaml``).

Keys owned here: ``name``, ``adapter``, ``source``, ``model``, ``weight``, ``features``, ``split``. Any other top-level
section (``training``, ``monitor``, ...) is kept verbatim in :attr:`DatasetConfig.extra` for the code that owns it.

    name: movielens-latest-small
    adapter: movielens-latest          # a key of tower_platform.datasets.ADAPTERS
    source: ../movielens-latest-small  # relative to this file; null = give --source PATH on the command line
    model: movies                      # model name in the registry
    weight: constant                   # constant: every interaction weighs 1.0; rating: rating / highest rating
    features:
      recent_items: 20                 # user_history.recent_items: last N distinct items, most recent first
      top_genres: 3                    # user_history.top_genres: the user's N most frequent genres so far
      item_genres: 6                   # item_profile.genres: padded length at serving
      ttl_days: {user_history: 0}      # per feature view; 0 = rows never expire
      kinds: {item_profile__release_year: numeric}   # per-feature kind overrides
    split:
      method: global_time              # or leave_last_out
      validation_quantile: 0.8
      test_quantile: 0.9
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tower_platform._feature_repo import tower_layout as layout
from tower_platform.errors import ConfigError, InputError

SplitMethod = Literal["global_time", "leave_last_out"]
WeightMethod = Literal["constant", "rating"]

SPLIT_METHODS: tuple[str, ...] = ("global_time", "leave_last_out")
WEIGHT_METHODS: tuple[str, ...] = ("constant", "rating")
FEATURE_KINDS: tuple[str, ...] = ("categorical", "multi_categorical", "numeric")
FEATURE_VIEWS: tuple[str, ...] = tuple(layout.VIEW_ENTITY)

_OWNED_KEYS = ("name", "adapter", "source", "model", "weight", "features", "split")


@dataclass(frozen=True)
class FeatureConfig:
    recent_items: int = 20
    top_genres: int = 3
    item_genres: int = 6
    ttl_days: dict[str, float] = field(default_factory=dict)  # view -> days; missing or 0 = never expire
    kinds: dict[str, str] = field(default_factory=dict)  # full feature name -> kind

    def ttl_seconds(self, view: str) -> int:
        return int(round(float(self.ttl_days.get(view, 0)) * 86400))


@dataclass(frozen=True)
class SplitConfig:
    method: SplitMethod = "global_time"
    validation_quantile: float = 0.8
    test_quantile: float = 0.9


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    adapter: str
    model: str
    source: Path | None = None
    weight: WeightMethod = "constant"
    features: FeatureConfig = field(default_factory=FeatureConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # the YAML file it was read from


def load_dataset_config(path: Path) -> DatasetConfig:
    """Read and validate a dataset config; problems raise InputError (file) or ConfigError (keys and values)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Dataset config {path} does not exist; pass an existing YAML file with --config.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Dataset config {path} is not valid YAML ({exc}); fix the file's syntax.") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"Dataset config {path} must be a mapping of keys (name, adapter, model, ...).")
    reader = _KeyReader(path)
    for key in ("name", "adapter", "model"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise ConfigError(f"Dataset config {path}: key '{key}' is required and must be a non-empty string.")
    source = raw.get("source")
    if source is not None and not isinstance(source, str):
        raise ConfigError(f"Dataset config {path}: key 'source' must be a path string or null.")
    weight = reader.choice(raw, "weight", WEIGHT_METHODS, default="constant")
    return DatasetConfig(
        name=raw["name"],
        adapter=raw["adapter"],
        model=raw["model"],
        source=(path.parent / source).resolve() if source is not None else None,
        weight=weight,  # type: ignore[arg-type]
        features=_read_features(reader, raw.get("features") or {}),
        split=_read_split(reader, raw.get("split") or {}),
        extra={k: v for k, v in raw.items() if k not in _OWNED_KEYS},
        path=path.resolve(),
    )


def _read_features(reader: _KeyReader, raw: Any) -> FeatureConfig:
    section = reader.section(raw, "features", ("recent_items", "top_genres", "item_genres", "ttl_days", "kinds"))
    ttl_days = reader.section(section.get("ttl_days") or {}, "features.ttl_days", FEATURE_VIEWS)
    for view, days in ttl_days.items():
        if not isinstance(days, (int, float)) or isinstance(days, bool) or days < 0:
            reader.fail(f"features.ttl_days.{view}", "must be a number of days >= 0 (0 = never expire)")
    kinds = section.get("kinds") or {}
    if not isinstance(kinds, dict):
        reader.fail("features.kinds", "must map full feature names (view__feature) to a kind")
    for name, kind in kinds.items():
        if kind not in FEATURE_KINDS or "__" not in str(name):
            reader.fail(f"features.kinds.{name}", f"must name a feature as view__feature and a kind of {FEATURE_KINDS}")
    return FeatureConfig(
        recent_items=reader.positive_int(section, "features.recent_items", default=20),
        top_genres=reader.positive_int(section, "features.top_genres", default=3),
        item_genres=reader.positive_int(section, "features.item_genres", default=6),
        ttl_days={str(k): float(v) for k, v in ttl_days.items()},
        kinds={str(k): str(v) for k, v in kinds.items()},
    )


def _read_split(reader: _KeyReader, raw: Any) -> SplitConfig:
    section = reader.section(raw, "split", ("method", "validation_quantile", "test_quantile"))
    method = reader.choice(section, "method", SPLIT_METHODS, default="global_time", label="split.method")
    val_q = section.get("validation_quantile", 0.8)
    test_q = section.get("test_quantile", 0.9)
    for key, value in (("validation_quantile", val_q), ("test_quantile", test_q)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1:
            reader.fail(f"split.{key}", "must be a number strictly between 0 and 1")
    if not val_q < test_q:
        reader.fail("split.validation_quantile", "must be smaller than split.test_quantile")
    return SplitConfig(method=method, validation_quantile=float(val_q), test_quantile=float(test_q))  # type: ignore[arg-type]


class _KeyReader:
    """Validation helpers whose messages name the config file and the dotted key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> None:
        raise ConfigError(f"Dataset config {self.path}: key '{key}' {problem}.")

    def section(self, raw: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.fail(key, "must be a mapping")
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            self.fail(f"{key}.{unknown[0]}", f"is unknown; allowed keys are {', '.join(allowed)}")
        return raw

    def choice(self, raw: dict[str, Any], key: str, allowed: tuple[str, ...], *, default: str, label: str | None = None) -> str:
        value = raw.get(key, default)
        if value not in allowed:
            self.fail(label or key, f"is {value!r}; use one of {', '.join(allowed)}")
        return value

    def positive_int(self, raw: dict[str, Any], key: str, *, default: int) -> int:
        value = raw.get(key.rsplit(".", 1)[-1], default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            self.fail(key, "must be an integer >= 1")
        return value
