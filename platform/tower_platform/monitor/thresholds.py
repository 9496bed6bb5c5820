"""Gate thresholds of the alignment monitor and the breaches a report's segments make against them.

Thresholds come, later sources winning, from the defaults below, the ``monitor`` section of the dataset config YAML
(``DatasetConfig.extra["monitor"]``) and the YAML file named by ``TOWER_MONITOR_CONFIG`` (``Settings.monitor_config``:
either a top-level ``monitor:`` mapping or the keys themselves)::

    monitor:
      k: 100                        # the K of Recall@K, NDCG@K and coverage
      min_items: 50                 # categories with fewer items ...
      min_queries: 30               # ... or fewer test queries are pooled into one "small categories" segment
      max_alignment_distance: 0.95  # largest relative alignment distance, in [0, 1] (1.0 = collapsed to a point)
      min_coverage: 0.005           # smallest share of a segment's items in anyone's top-K
      max_norm_error: 0.01          # largest |mean vector norm - 1| of a segment
      max_recall_drop: 0.5          # largest relative drop of Recall@K against production (0.5 = halved) ...
      recall_confidence: 0.95       # ... that the drop must exceed with this one-sided confidence
      worst: 10                     # segments listed per check in reports and errors (the full list: --json)
      require_report: false         # true: refuse to promote a version that cannot be measured (no test queries)

Which segments are gated, on what:

- a category is gated on its own when it has at least ``min_items`` items and ``min_queries`` test queries; the
  others are ``pooled``: their own figures are recorded, and they are judged together as the segment of kind
  ``pooled`` ("small categories"), which is gated like a category;
- alignment distance: every category (pooled or not) and the pooled segment with at least ``min_items`` items -- the
  figure needs items, not queries, so a large category that few test queries target is still checked. A healthy
  segment of n items scores about (k/n) / (2 + k/n) from sampling alone (k: the dimensions its vectors spread over;
  0.39 at k = 64, n = 50), a collapsed one exactly 1.0;
- coverage: categories gated on their own and the pooled segment, with ``min_items`` items and ``min_queries`` test
  queries (a category nobody asks for is not reached, and that is no defect);
- mean norm: every segment judged alone (categories, the pooled segment, popularity buckets) and every category
  with ``min_items`` items;
- recall drop: every gated segment with ``min_queries`` test queries on both versions, when the drop is significant:
  the Wilson upper bound (at ``recall_confidence``) of the candidate's Recall@K, ub, must lie below
  (1 - max_recall_drop) x the compared version's Recall@K. With 30 queries and a production recall of 0.4, a
  candidate at 0.100 (3 hits, ub 0.226 at 95 %) is not yet proof of a halved recall, one at 0.067 (2 hits, ub 0.183)
  is.

A breach names the segment, the figure, its value and the threshold. Breaches come worst first within each check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from statistics import NormalDist
from typing import Any

import yaml

from tower_platform.errors import ConfigError
from tower_platform.registry.entities import AlignmentSegment

SECTION = "monitor"


POOLING_KEYS: tuple[str, ...] = ("min_items", "min_queries")  # fixed when a report is measured


@dataclass(frozen=True)
class MonitorThresholds:
    k: int = 100
    max_recall_drop: float = 0.5
    recall_confidence: float = 0.95
    max_alignment_distance: float = 0.95
    min_coverage: float = 0.005
    max_norm_error: float = 0.01
    min_items: int = 50
    min_queries: int = 30
    worst: int = 10
    require_report: bool = False

    def __post_init__(self) -> None:
        for name in ("k", "worst"):
            if getattr(self, name) < 1:
                raise ConfigError(f"monitor threshold {name}={getattr(self, name)} must be at least 1; set "
                                  f"monitor.{name} to e.g. {MonitorThresholds.__dataclass_fields__[name].default}.")
        for name in ("max_recall_drop", "max_alignment_distance", "min_coverage", "max_norm_error", "min_items",
                     "min_queries"):
            if getattr(self, name) < 0:
                raise ConfigError(f"monitor threshold {name}={getattr(self, name)} is negative; give 0 or more.")
        if self.max_alignment_distance > 1:
            raise ConfigError(f"monitor threshold max_alignment_distance={self.max_alignment_distance:g} is above 1, "
                              "the largest relative alignment distance there is (a collapsed segment); give a value "
                              "in [0, 1] (1 turns the gate off).")
        if not 0.5 <= self.recall_confidence < 1:
            raise ConfigError(f"monitor threshold recall_confidence={self.recall_confidence} must be at least 0.5 "
                              "and below 1; give e.g. 0.95.")

    def pooling(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in POOLING_KEYS}

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

CHECKS: tuple[str, ...] = ("relative_alignment", "coverage", "mean_norm", "recall")  # gate order
CHECK_LABELS = {"relative_alignment": "alignment distance", "coverage": "coverage", "mean_norm": "mean norm",
                "recall": "recall drop"}


@dataclass(frozen=True)
class Breach:
    kind: str  # category | popularity | pooled
    segment: str
    figure: str  # the figure that breached, e.g. "coverage"
    value: float
    threshold: float
    message: str
    severity: float = 0.0  # how far past the threshold (in the figure's units); orders breaches worst first

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _breach(segment: AlignmentSegment, figure: str, value: float, threshold: float, text: str,
            severity: float) -> Breach:
    return Breach(segment.kind, segment.segment, figure, float(value), float(threshold),
                  f"{segment.kind} '{segment.segment}': {text}", float(severity))


def judged_alone(segment: AlignmentSegment) -> bool:
    """Categories not pooled, the pooled segment and the popularity buckets are gated on every check; a pooled
    category only on the item figures, and only with enough items (see :func:`gated_on`)."""
    return not (segment.kind == "category" and segment.pooled)


def gated_on(segment: AlignmentSegment, check: str, thresholds: MonitorThresholds) -> bool:
    """Whether ``segment`` has the support that ``check`` needs (recall: also on the compared version, which
    :func:`segment_breaches` checks). The item figures (alignment distance, mean norm) need ``min_items`` items and no
    test query at all, so a large category with few queries is still gated on them; the query figures (coverage,
    recall) only apply to segments judged alone."""
    if segment.item_count == 0:
        return False
    enough_items = segment.item_count >= thresholds.min_items
    if check == "relative_alignment":
        return segment.kind in ("category", "pooled") and enough_items
    if check == "mean_norm":
        return judged_alone(segment) or enough_items
    if not judged_alone(segment):
        return False
    if check == "coverage":
        return segment.kind in ("category", "pooled") and enough_items and segment.n_queries >= thresholds.min_queries
    return segment.n_queries >= thresholds.min_queries  # recall


def recall_drop(segment: AlignmentSegment) -> float | None:
    """Relative drop of Recall@K against the compared version: (theirs - ours) / theirs (None: not comparable)."""
    delta = segment.deltas.get("recall")
    if segment.recall is None or delta is None:
        return None
    theirs = segment.recall - delta
    return (theirs - segment.recall) / theirs if theirs > 0 else None


def wilson_upper(hits: float, n: int, *, confidence: float) -> float:
    """One-sided Wilson score upper bound of a proportion of ``hits`` in ``n`` trials."""
    if n <= 0:
        return 1.0
    z = NormalDist().inv_cdf(confidence)
    p = hits / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z * z / n))


def _recall_breach(s: AlignmentSegment, thresholds: MonitorThresholds) -> Breach | None:
    drop = recall_drop(s)
    delta_queries = s.deltas.get("n_queries")
    their_queries = s.n_queries - delta_queries if delta_queries is not None else 0
    if drop is None or s.n_queries < thresholds.min_queries or their_queries < thresholds.min_queries:
        return None
    theirs = s.recall - s.deltas["recall"]
    upper = wilson_upper(s.recall * s.n_queries, s.n_queries, confidence=thresholds.recall_confidence)
    least_drop = 1 - upper / theirs  # the drop at the confidence bound
    if least_drop <= thresholds.max_recall_drop:
        return None
    return _breach(s, "recall", drop, thresholds.max_recall_drop,
                   f"Recall@{thresholds.k} {s.recall:.3f} on {s.n_queries} queries, down {drop:.0%} from "
                   f"{theirs:.3f} (at least {least_drop:.0%} at {thresholds.recall_confidence:.0%} confidence; "
                   f"maximum drop {thresholds.max_recall_drop:.0%})", least_drop - thresholds.max_recall_drop)


def segment_breaches(s: AlignmentSegment, thresholds: MonitorThresholds) -> list[Breach]:
    """The gates one segment breaches, on the checks it has the support for (:func:`gated_on`)."""
    found: list[Breach] = []
    limit = thresholds.max_alignment_distance
    if (gated_on(s, "relative_alignment", thresholds) and s.relative_alignment is not None
            and s.relative_alignment > limit):
        found.append(_breach(s, "relative_alignment", s.relative_alignment, limit,
                             f"alignment distance {s.relative_alignment:.3f} above the maximum {limit:g} (1 = collapsed)",
                             s.relative_alignment - limit))
    if gated_on(s, "coverage", thresholds) and s.coverage < thresholds.min_coverage:
        found.append(_breach(s, "coverage", s.coverage, thresholds.min_coverage,
                             f"coverage@{thresholds.k} {s.coverage:.3f} below the minimum {thresholds.min_coverage:g}",
                             thresholds.min_coverage - s.coverage))
    norm_error = abs(s.mean_norm - 1.0)
    if gated_on(s, "mean_norm", thresholds) and norm_error > thresholds.max_norm_error:
        found.append(_breach(s, "mean_norm", s.mean_norm, thresholds.max_norm_error,
                             f"mean vector norm {s.mean_norm:.4f} is off 1 by more than {thresholds.max_norm_error:g}",
                             norm_error - thresholds.max_norm_error))
    recall = _recall_breach(s, thresholds) if gated_on(s, "recall", thresholds) else None
    if recall is not None:
        found.append(recall)
    return found


def find_breaches(segments: Sequence[AlignmentSegment], thresholds: MonitorThresholds) -> list[Breach]:
    """Every gate the gated segments breach: by check (alignment distance, coverage, mean norm, recall), worst first
    within a check (ties: segment order)."""
    found = [b for s in segments for b in segment_breaches(s, thresholds)]
    rank = {figure: position for position, figure in enumerate(CHECKS)}
    return sorted(found, key=lambda b: (rank[b.figure], -b.severity))
