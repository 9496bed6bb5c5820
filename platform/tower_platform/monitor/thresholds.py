"""Gate thresholds of the alignment monitor and the breaches a report's segments make against them.

Thresholds come, later sources winning, from the defaults below, the ``monitor`` section of the dataset config YAML
(``DatasetConfig.extra["monitor"]``) and the YAML file named by ``TOWER_MONITOR_CONFIG`` (``Settings.monitor_config``:
either a top-level ``monitor:`` mapping or the keys themselves)::

    monitor:
      k: 100                        # the K of Recall@K, NDCG@K and coverage
      max_recall_drop: 0.5          # largest relative drop of a segment's Recall@K against production (0.5 = halved)
      max_alignment_distance: 0.95  # largest ||C(S_major) - C(S)||_F^2 / ||C(S_major)||_F^2 of a category (1.0 = collapsed)
      min_coverage: 0.005           # smallest share of a category's items in anyone's top-K
      max_norm_error: 0.01          # largest |mean vector norm - 1| of a segment
      min_items: 20                 # categories with fewer items are reported but not gated on distance / coverage
      min_queries: 30               # the recall gate needs this many test queries in the segment, on both versions
      require_report: false         # true: refuse to promote a version that cannot be measured (no test queries)

The alignment and coverage gates apply to categories; the norm and recall-drop gates to categories and popularity
buckets. A breach names the segment, the figure, its value and the threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from tower_platform.errors import ConfigError
from tower_platform.registry.entities import AlignmentSegment

SECTION = "monitor"


@dataclass(frozen=True)
class MonitorThresholds:
    k: int = 100
    max_recall_drop: float = 0.5
    max_alignment_distance: float = 0.95
    min_coverage: float = 0.005
    max_norm_error: float = 0.01
    min_items: int = 20
    min_queries: int = 30
    require_report: bool = False

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"monitor threshold k={self.k} must be at least 1; set monitor.k to e.g. 100.")
        for name in ("max_recall_drop", "max_alignment_distance", "min_coverage", "max_norm_error"):
            if getattr(self, name) < 0:
                raise ConfigError(f"monitor threshold {name}={getattr(self, name)} is negative; give 0 or more.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, where: str) -> MonitorThresholds:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{where}: unknown monitor keys {unknown}; the keys are {sorted(known)}.")
        try:
            typed = {name: _typed(value, known[name].type, name=name) for name, value in values.items()}
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: a monitor threshold has the wrong type ({exc}); see the monitor docs.") from exc
        return cls(**typed)

    def merged(self, values: Mapping[str, Any] | None, *, where: str) -> MonitorThresholds:
        if not values:
            return self
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: the monitor section must be a mapping of thresholds.")
        return MonitorThresholds.from_mapping({**self.to_dict(), **dict(values)}, where=where)


def _typed(value: Any, annotation: Any, *, name: str) -> Any:
    kind = str(annotation)
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be true or false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or int(value) != value:
            raise TypeError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


def load_thresholds(*, dataset_section: Mapping[str, Any] | None = None, path: Path | None = None) -> MonitorThresholds:
    """Defaults, then a dataset config's ``monitor`` section, then the file at ``path`` (``TOWER_MONITOR_CONFIG``)."""
    thresholds = MonitorThresholds().merged(dataset_section, where="the dataset config's monitor section")
    if path is None:
        return thresholds
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"Monitor config {path} does not exist; fix TOWER_MONITOR_CONFIG or create the file.")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Monitor config {path} is not valid YAML ({exc}); fix the file.") from exc
    if isinstance(loaded, Mapping) and SECTION in loaded:
        loaded = loaded[SECTION]
    return thresholds.merged(loaded, where=f"monitor config {path}")


# --- breaches ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Breach:
    kind: str  # category | popularity
    segment: str
    figure: str  # the figure that breached, e.g. "coverage"
    value: float
    threshold: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _breach(segment: AlignmentSegment, figure: str, value: float, threshold: float, text: str) -> Breach:
    return Breach(segment.kind, segment.segment, figure, float(value), float(threshold),
                  f"{segment.kind} '{segment.segment}': {text}")


def recall_drop(segment: AlignmentSegment) -> float | None:
    """Relative drop of Recall@K against the compared version: (theirs - ours) / theirs (None: not comparable)."""
    delta = segment.deltas.get("recall")
    if segment.recall is None or delta is None:
        return None
    theirs = segment.recall - delta
    return (theirs - segment.recall) / theirs if theirs > 0 else None


def find_breaches(segments: Sequence[AlignmentSegment], thresholds: MonitorThresholds) -> list[Breach]:
    """Every gate each segment breaches, categories first, in segment order."""
    found: list[Breach] = []
    for s in segments:
        gated_category = s.kind == "category" and s.item_count >= thresholds.min_items
        if gated_category and s.relative_alignment is not None and s.relative_alignment > thresholds.max_alignment_distance:
            found.append(_breach(s, "relative_alignment", s.relative_alignment, thresholds.max_alignment_distance,
                                 f"alignment distance {s.relative_alignment:.3f} (relative to the major category) "
                                 f"above the maximum {thresholds.max_alignment_distance:g}"))
        if gated_category and s.coverage < thresholds.min_coverage:
            found.append(_breach(s, "coverage", s.coverage, thresholds.min_coverage,
                                 f"coverage@{thresholds.k} {s.coverage:.3f} below the minimum {thresholds.min_coverage:g}"))
        norm_error = abs(s.mean_norm - 1.0)
        if s.item_count > 0 and norm_error > thresholds.max_norm_error:
            found.append(_breach(s, "mean_norm", s.mean_norm, thresholds.max_norm_error,
                                 f"mean vector norm {s.mean_norm:.4f} is off 1 by more than {thresholds.max_norm_error:g}"))
        drop = recall_drop(s)
        delta_queries = s.deltas.get("n_queries")
        their_queries = s.n_queries - delta_queries if delta_queries is not None else 0
        if (drop is not None and drop > thresholds.max_recall_drop and s.n_queries >= thresholds.min_queries
                and their_queries >= thresholds.min_queries):
            found.append(_breach(s, "recall", drop, thresholds.max_recall_drop,
                                 f"Recall@{thresholds.k} {s.recall:.3f} dropped {drop:.0%} against the compared "
                                 f"version (maximum drop {thresholds.max_recall_drop:.0%})"))
    return found
