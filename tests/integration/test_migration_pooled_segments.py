"""Revision 0005: the pooled alignment segment and the ``pooled`` flag survive a round trip; a downgrade drops them."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from registry_support import register_placeholder_version
from test_migration_production_alias import _artifacts
from tower_platform.registry.entities import AlignmentReport, AlignmentSegment
from tower_platform.registry.migration import downgrade_schema, upgrade_schema
from tower_platform.registry.store import SqlRegistryStore


def _segment(kind: str, name: str, *, pooled: bool = False) -> AlignmentSegment:
    return AlignmentSegment(kind, name, 10, 0.5, 0.1, 0.2, 1.0, 0.5, 3, 0.3, 0.2, 0.4, deltas={}, pooled=pooled)


def _report() -> AlignmentReport:
    return AlignmentReport(
        model="movies", version=1, run=0, k=10, against_version=None, collection="movies__v1", major_category="A",
        n_items=30, n_queries=9, n_skipped=0, thresholds={"min_items": 20, "min_queries": 5}, breaches=(),
        segments=(_segment("category", "A"), _segment("category", "B", pooled=True),
                  _segment("pooled", "small categories")),
    )


def _rows(url: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.execute(text("SELECT kind, segment FROM alignment_segments "
                                                              "ORDER BY id")).all()]
    finally:
        engine.dispose()


def test_pooled_segments_round_trip_and_the_downgrade_removes_them(migrated_database_url, tmp_path):
    url = migrated_database_url
    with SqlRegistryStore(url) as registry:
        register_placeholder_version(registry, artifacts=_artifacts(tmp_path))
        stored = registry.record_alignment_report(_report(), actor="test")
    assert [(s.kind, s.segment, s.pooled) for s in stored.segments] == [
        ("category", "A", False), ("category", "B", True), ("pooled", "small categories", False)]

    downgrade_schema(url, revision="0004")  # before pooling: no pooled kind, no flag
    assert _rows(url) == [("category", "A"), ("category", "B")]
    engine = create_engine(url)
    try:
        with pytest.raises(IntegrityError), engine.begin() as connection:  # the old CHECK refuses the new kind
            connection.execute(text(
                "INSERT INTO alignment_segments (report_id, kind, segment, item_count, interaction_share, "
                "alignment_distance, mean_norm, centroid_norm, n_queries, coverage, deltas) "
                "VALUES (1, 'pooled', 'x', 1, 0, 0, 1, 1, 0, 0, '{}')"))
    finally:
        engine.dispose()

    upgrade_schema(url)
    with SqlRegistryStore(url) as registry:
        (again,) = registry.alignment_reports("movies", version=1)
        assert [(s.segment, s.pooled) for s in again.segments] == [("A", False), ("B", False)]  # flag defaults false
        registry.record_alignment_report(_report(), actor="test")
        assert registry.latest_alignment_report("movies", 1).by_kind("pooled")[0].segment == "small categories"
