"""A PNG of an alignment report that stays readable at any number of categories (matplotlib, Agg backend).

Three rows, one per figure (relative alignment distance, Recall@K, coverage); on the left the ``worst`` N segments
gated on their own (the pooled "small categories" segment among them), on the right the distribution of that figure
over every category as an empirical CDF, categories gated on their own and pooled ones drawn apart, with the gate as
a dashed line. The canvas has a fixed size (FIGSIZE at DPI: 1,400 x 1,200 pixels), whatever the number of
categories. Written via a temporary name.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tower_platform.errors import InputError
from tower_platform.monitor.summary import worst
from tower_platform.monitor.thresholds import MonitorThresholds, find_breaches, gated_on
from tower_platform.registry.entities import AlignmentReport, AlignmentSegment

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

FIGSIZE = (14.0, 12.0)  # inches
DPI = 100
LABEL_CHARS = 28


def _label(segment: AlignmentSegment) -> str:
    """The name, shortened in the middle (names often differ only at their end)."""
    name = segment.segment + (" (the pool)" if segment.kind == "pooled" else " (pooled)" if segment.pooled else "")
    if len(name) <= LABEL_CHARS:
        return name
    head = (LABEL_CHARS - 1) // 2
    return name[:head] + "…" + name[-(LABEL_CHARS - 1 - head):]


def _ecdf(axes: Axes, values: list[float], *, label: str, color: str) -> None:
    if not values:
        return
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    axes.step(ordered, np.arange(1, ordered.size + 1) / ordered.size, where="post", color=color,
              label=f"{label} ({ordered.size:,})")


def _row(axes_pair, report: AlignmentReport, figure: str, *, title: str, ranking: str, limit: float | None,
         thresholds: MonitorThresholds, breached: set[tuple[str, str]]) -> None:
    left, right = axes_pair
    n = thresholds.worst
    ranked = (_lowest_recall(report.segments, thresholds) if figure == "recall"
              else worst(report.segments, figure, n=n, thresholds=thresholds))
    values = [np.nan if s.figure(figure) is None else float(s.figure(figure)) for s in ranked]
    y = np.arange(len(ranked))
    colors = ["tab:red" if (s.kind, s.segment) in breached else "tab:purple" if s.kind == "pooled" else
              "tab:gray" if s.pooled else "tab:blue" for s in ranked]
    left.barh(y, np.nan_to_num(values), color=colors)
    if figure == "recall" and report.against_version is not None:
        theirs = [np.nan if s.recall is None or s.deltas.get("recall") is None else s.recall - s.deltas["recall"]
                  for s in ranked]
        left.scatter(np.nan_to_num(theirs), y, color="black", marker="|", s=120, zorder=3)
    left.set_yticks(y, [_label(s) for s in ranked], fontsize=8)
    left.invert_yaxis()
    left.set_title(f"{title}: the {len(ranked)} gated segments with the {ranking}", fontsize=10)
    if limit is not None:
        left.axvline(limit, color="tab:red", linestyle="--", linewidth=1)
    categories = report.by_kind("category")
    for pooled, label, color in ((False, "gated on their own", "tab:blue"), (True, "pooled", "tab:gray")):
        _ecdf(right, [float(s.figure(figure)) for s in categories if s.pooled == pooled
                      and s.figure(figure) is not None], label=f"categories {label}", color=color)
    if limit is not None:
        right.axvline(limit, color="tab:red", linestyle="--", linewidth=1, label="gate")
    right.set_ylim(0, 1.02)
    right.set_ylabel("share of categories ≤ x")
    right.set_title(f"{title}: every category", fontsize=10)
    right.legend(loc="lower right", fontsize=8)


def _lowest_recall(segments, thresholds: MonitorThresholds) -> list[AlignmentSegment]:
    """Gated segments by largest recall drop when compared, else by lowest Recall@K."""
    n = thresholds.worst
    dropped = worst(segments, "recall", n=n, thresholds=thresholds)
    if dropped:
        return dropped
    measured = [s for s in segments if s.kind in ("category", "pooled") and gated_on(s, "recall", thresholds)
                and s.recall is not None]
    return sorted(measured, key=lambda s: s.recall)[:n]


def plot_report(report: AlignmentReport, path: str | Path, *, thresholds: MonitorThresholds | None = None) -> Path:
    """Write the figure to ``path`` (PNG); breached segments are drawn in red, the pooled segment in purple."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"--plot {path} must name a .png file.")
    judged = thresholds or MonitorThresholds.from_mapping(report.thresholds, where="the stored report")
    breached = {(b.kind, b.segment) for b in find_breaches(report.segments, judged)}
    figure, axes = plt.subplots(3, 2, figsize=FIGSIZE, gridspec_kw={"width_ratios": [1.1, 1.0]})
    against = f"against v{report.against_version}" if report.against_version is not None else "no comparison"
    figure.suptitle(f"{report.model} v{report.version} run {report.run} (K={report.k}, {against}): "
                    f"{len(report.by_kind('category')):,} categories, distance relative to '{report.major_category}'"
                    "\nbars: red = the segment breaches a gate, purple = the pooled small categories, "
                    "gray = a pooled category; dashed = gate")
    _row(axes[0], report, "relative_alignment", title="alignment distance (1 = collapsed)", ranking="largest distance",
         limit=judged.max_alignment_distance, thresholds=judged, breached=breached)
    axes[0][1].set_xlim(0, 1)
    compared = report.against_version is not None
    _row(axes[1], report, "recall", title=f"Recall@{report.k}", limit=None, thresholds=judged, breached=breached,
         ranking=f"largest drop (ticks: v{report.against_version})" if compared else "lowest recall")
    _row(axes[2], report, "coverage", title=f"coverage@{report.k}", ranking="lowest coverage", limit=judged.min_coverage,
         thresholds=judged, breached=breached)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.png")
    try:
        figure.savefig(tmp, format="png", dpi=DPI)
        os.replace(tmp, path)
    finally:
        plt.close(figure)
        tmp.unlink(missing_ok=True)
    return path

