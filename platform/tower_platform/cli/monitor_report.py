"""How an alignment report reads on a terminal: a summary of any size, never a table of every category.

Printed: the counts (categories evaluated, gated on their own, pooled into "small categories"), the segments judged
as groups (popularity buckets, the pooled segment), the ``worst`` N segments of each check, the first N breaches,
and the command that prints the whole report as JSON. ``report_payload`` is that JSON: every segment, pooled or not.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tower_platform.cli.output import out_console, print_table
from tower_platform.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.monitor.thresholds import MonitorThresholds
    from tower_platform.registry.entities import AlignmentReport, AlignmentSegment

SEGMENT_COLUMNS = ["segment", "items", "train share", "distance", "mean norm", "centroid", "queries", "recall@K",
                   "Δ recall", "ndcg@K", "coverage", "Δ coverage"]
WORST_TITLES = {"relative_alignment": "largest alignment distance", "coverage": "lowest coverage",
                "mean_norm": "largest norm error", "recall": "largest recall drop"}


def judged_thresholds(report: AlignmentReport, thresholds: MonitorThresholds | None) -> MonitorThresholds:
    from tower_platform.monitor.thresholds import MonitorThresholds

    return thresholds or MonitorThresholds.from_mapping(report.thresholds, where="the stored report")


def full_report_command(report: AlignmentReport) -> str:
    return f"towerctl monitor alignment {report.model} --version {report.version} --run {report.run} --json"


def _cell_delta(segment: AlignmentSegment, name: str) -> Any:
    value = segment.deltas.get(name)
    return None if value is None else f"{value:+.4f}"


def segment_name(segment: AlignmentSegment) -> str:
    """The name as tables show it: the pooled segment and the categories inside it are marked."""
    if segment.kind == "pooled":
        return f"{segment.segment} (the pool)"
    return f"{segment.segment} (pooled)" if segment.pooled else segment.segment


def segment_cells(segment: AlignmentSegment) -> list[Any]:
    name = segment_name(segment)
    return [
        name,
        segment.item_count,
        segment.interaction_share,
        segment.relative_alignment,
        segment.mean_norm,
        segment.centroid_norm,
        segment.n_queries,
        segment.recall,
        _cell_delta(segment, "recall"),
        segment.ndcg,
        segment.coverage,
        _cell_delta(segment, "coverage"),
    ]


def _segment_table(title: str, segments: list[AlignmentSegment], breached: set[tuple[str, str]]) -> None:
    print_table(title, SEGMENT_COLUMNS, [segment_cells(s) for s in segments],
                highlight_rows={i for i, s in enumerate(segments) if (s.kind, s.segment) in breached})


def print_alignment_report(report: AlignmentReport, *, thresholds: MonitorThresholds | None = None) -> None:
    """The summary of a report (bounded whatever the number of categories), breached segments in bold red."""
    from tower_platform.monitor.summary import summarise, worst
    from tower_platform.monitor.thresholds import CHECKS, gated_on

    judged = judged_thresholds(report, thresholds)
    summary = summarise(report.segments, judged)
    breached = {(b.kind, b.segment) for b in summary.breaches}
    against = f"against v{report.against_version}" if report.against_version is not None else "no comparison"
    line = lambda text: out_console.print(text, markup=False, highlight=False)  # noqa: E731
    line(f"{report.model} v{report.version} run {report.run}: K={report.k}, {against}, distance relative to "
         f"'{report.major_category}'")
    line(f"{summary.counts_sentence()}; {report.n_queries:,} test queries ({report.n_skipped:,} skipped: target not "
         f"served or a repeat), {report.n_items:,} items in {report.collection}")
    groups = [s for s in report.segments if s.kind in ("popularity", "pooled")]
    _segment_table("segments judged as groups (popularity buckets, pooled small categories)", groups, breached)
    compared = report.against_version is not None
    for check in CHECKS:
        failing = any(b.figure == check for b in summary.breaches)
        if (check == "recall" and not compared) or (check == "mean_norm" and not failing):
            continue  # nothing to rank (no comparison) / every norm within its gate
        ranked = worst(report.segments, check, n=judged.worst, thresholds=judged)
        if ranked:
            n_gated = sum(1 for s in report.segments if s.kind in ("category", "pooled") and gated_on(s, check, judged))
            _segment_table(f"worst {len(ranked)} of {n_gated:,} gated segments by {WORST_TITLES[check]}", ranked,
                           breached)
    listed = summary.listed()
    if listed:
        print_table(f"breaches (the first {len(listed)} of {len(summary.breaches):,}, worst first per check)",
                    ["segment", "figure", "value", "threshold", "what"],
                    [[f"{b.kind} {b.segment}", b.figure, b.value, b.threshold, b.message] for b in listed],
                    highlight_rows=set(range(len(listed))))
    line(f"{summary.breach_sentence()}; every segment: {full_report_command(report)}")


def report_payload(report: AlignmentReport, *, thresholds: MonitorThresholds | None = None) -> dict[str, Any]:
    """The whole report as plain JSON data: every segment, the breaches judged by ``thresholds`` (default: the
    stored ones) and the summary counts."""
    from dataclasses import asdict

    from tower_platform.monitor.summary import summarise

    judged = judged_thresholds(report, thresholds)
    summary = summarise(report.segments, judged)
    payload = asdict(report)
    payload["breaches"] = [b.to_dict() for b in summary.breaches]
    payload["thresholds"] = judged.to_dict()
    payload["summary"] = {"categories": summary.n_categories, "gated": summary.n_gated, "pooled": summary.n_pooled,
                          "pooled_items": summary.pooled_items, "pooled_queries": summary.pooled_queries,
                          "breaches": len(summary.breaches), "breaching_segments": summary.n_breaching,
                          "by_check": summary.by_check}
    return payload


def write_payload(payload: dict[str, Any], path: Path) -> Path:
    """Write the JSON report to ``path`` via a temporary name (nothing half-written)."""
    from tower_platform.cli.output import strict_json

    path = Path(path)
    if path.suffix.lower() != ".json":
        raise InputError(f"--out {path} must name a .json file.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.json")
        try:
            tmp.write_text(json.dumps(strict_json(payload), indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise InputError(f"--out {path} cannot be written ({exc.strerror}); give a writable path.") from None
    return path
