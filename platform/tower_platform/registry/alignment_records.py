"""Alignment reports in the registry: rows in, frozen :class:`AlignmentReport` entities out.

Used through :class:`tower_platform.registry.unit_of_work.ModelUnitOfWork` inside one transaction: a report and its
segment rows are written together, and its run number is the version's next one (taken under the model lock).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tower_platform.registry.entities import AlignmentReport, AlignmentSegment
from tower_platform.timestamp import as_utc
from tower_platform.registry.schema import (
    SEGMENT_KINDS,
    AlignmentReportRow,
    AlignmentSegmentRow,
    ModelVersionRow,
    utc_now,
)


def _finite(value: float | None) -> float | None:
    """NaN and inf are stored as NULL (PostgreSQL's JSON refuses them; a missing figure reads back as None)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def add_report(
    session: Session,
    *,
    version_row: ModelVersionRow,
    model: str,
    report: AlignmentReport,
    actor: str,
) -> AlignmentReport:
    """Insert ``report`` (its run, id and created_at are assigned here) with one row per segment."""
    for segment in report.segments:
        if segment.kind not in SEGMENT_KINDS:
            raise ValueError(f"segment kind {segment.kind!r} is not one of {SEGMENT_KINDS}")
    latest = session.scalar(
        select(func.max(AlignmentReportRow.run)).where(AlignmentReportRow.model_version_id == version_row.id)
    )
    row = AlignmentReportRow(
        model_version_id=version_row.id,
        run=int(latest or 0) + 1,
        k=int(report.k),
        against_version=report.against_version,
        collection=report.collection,
        major_category=report.major_category,
        n_items=int(report.n_items),
        n_queries=int(report.n_queries),
        n_skipped=int(report.n_skipped),
        thresholds=dict(report.thresholds),
        breaches=[dict(b) for b in report.breaches],
        created_at=utc_now(),
        created_by=actor,
    )
    session.add(row)
    session.flush()
    session.add_all(
        AlignmentSegmentRow(
            report_id=row.id,
            kind=s.kind,
            segment=s.segment,
            item_count=int(s.item_count),
            interaction_share=float(s.interaction_share),
            alignment_distance=float(s.alignment_distance),
            relative_alignment=_finite(s.relative_alignment),
            mean_norm=float(s.mean_norm),
            centroid_norm=float(s.centroid_norm),
            n_queries=int(s.n_queries),
            recall=_finite(s.recall),
            ndcg=_finite(s.ndcg),
            coverage=float(s.coverage),
            deltas={k: _finite(v) for k, v in s.deltas.items()},
            pooled=bool(s.pooled),
        )
        for s in report.segments
    )
    session.flush()
    return _to_report(row, model=model, version=version_row.version, segments=_segment_rows(session, [row.id]))


def reports(session: Session, *, model: str, version_rows: Sequence[ModelVersionRow]) -> list[AlignmentReport]:
    """Every report of these versions, by version then run."""
    versions = {r.id: r.version for r in version_rows}
    rows = session.scalars(
        select(AlignmentReportRow)
        .where(AlignmentReportRow.model_version_id.in_(list(versions)))
        .order_by(AlignmentReportRow.model_version_id, AlignmentReportRow.run)
    ).all()
    segments = _segment_rows(session, [r.id for r in rows])
    reports_ = [_to_report(r, model=model, version=versions[r.model_version_id], segments=segments) for r in rows]
    return sorted(reports_, key=lambda r: (r.version, r.run))


def _segment_rows(session: Session, report_ids: list[int]) -> dict[int, list[AlignmentSegmentRow]]:
    by_report: dict[int, list[AlignmentSegmentRow]] = {i: [] for i in report_ids}
    if not report_ids:
        return by_report
    for row in session.scalars(
        select(AlignmentSegmentRow).where(AlignmentSegmentRow.report_id.in_(report_ids)).order_by(AlignmentSegmentRow.id)
    ).all():
        by_report[row.report_id].append(row)
    return by_report


def _to_segment(row: AlignmentSegmentRow) -> AlignmentSegment:
    return AlignmentSegment(
        kind=row.kind,
        segment=row.segment,
        item_count=row.item_count,
        interaction_share=row.interaction_share,
        alignment_distance=row.alignment_distance,
        relative_alignment=row.relative_alignment,
        mean_norm=row.mean_norm,
        centroid_norm=row.centroid_norm,
        n_queries=row.n_queries,
        recall=row.recall,
        ndcg=row.ndcg,
        coverage=row.coverage,
        deltas=dict(row.deltas or {}),
        pooled=bool(row.pooled),
    )


def _to_report(
    row: AlignmentReportRow, *, model: str, version: int, segments: dict[int, list[AlignmentSegmentRow]]
) -> AlignmentReport:
    thresholds: dict[str, Any] = dict(row.thresholds or {})
    return AlignmentReport(
        model=model,
        version=version,
        run=row.run,
        k=row.k,
        against_version=row.against_version,
        collection=row.collection,
        major_category=row.major_category,
        n_items=row.n_items,
        n_queries=row.n_queries,
        n_skipped=row.n_skipped,
        thresholds=thresholds,
        breaches=tuple(dict(b) for b in (row.breaches or [])),
        segments=tuple(_to_segment(s) for s in segments.get(row.id, [])),
        created_at=as_utc(row.created_at),
        created_by=row.created_by,
        id=row.id,
    )
