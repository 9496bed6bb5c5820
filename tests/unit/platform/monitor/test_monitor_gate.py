"""The alignment gate on a real registry (SQLite and PostgreSQL), Qdrant in memory and ONNX query towers."""

from __future__ import annotations

import pytest

from monitor_world import THRESHOLDS, add_version
from tower_platform.errors import MonitorBreachError, UsageError
from tower_platform.monitor.gate import AlignmentGate
from tower_platform.monitor.version_report import build_alignment_report
from tower_platform.registry.promotion import promote
from tower_platform.vectors.store import QdrantVectorStore


@pytest.fixture
def vectors():
    store = QdrantVectorStore.memory()
    yield store
    store.close()


def _gate(registry, vectors, **kwargs) -> AlignmentGate:
    return AlignmentGate(registry, vectors, thresholds=THRESHOLDS, actor="ops", **kwargs)


def test_a_collapsed_category_breaches_and_is_refused_then_forced_with_a_reason(registry_store, vectors, world,
                                                                                 tmp_path):
    healthy = add_version(registry_store, vectors, world, tmp_path, collapsed=False)
    first = promote(registry_store, vectors, "movies", healthy, actor="ops", gate=_gate(registry_store, vectors))
    assert first.verdict is not None and first.verdict.passed and first.verdict.details["measured"]

    bad = add_version(registry_store, vectors, world, tmp_path, collapsed=True)
    events_before = len(registry_store.audit_log("movies"))
    gate = _gate(registry_store, vectors)
    with pytest.raises(MonitorBreachError) as refused:
        promote(registry_store, vectors, "movies", bad, actor="ops", gate=gate)
    message = str(refused.value)
    assert "category 'C': alignment distance 1.000" in message and "category 'C': coverage@10 0.000" in message
    assert refused.value.exit_code == 10
    assert registry_store.production_version("movies").version == healthy
    assert vectors.alias_target("movies") == f"movies__v{healthy}"
    # the refused attempt stored its report (one alignment audit event), nothing else changed
    assert [e.action for e in registry_store.audit_log("movies")[events_before:]] == ["alignment"]
    report = gate.report
    c = {s.segment: s for s in report.by_kind("category")}["C"]
    assert report.against_version == healthy and c.relative_alignment == pytest.approx(1.0)
    assert c.coverage == 0.0 and c.deltas["coverage"] < 0 and c.deltas["relative_alignment"] > 0.5

    with pytest.raises(UsageError, match="needs a reason"):
        promote(registry_store, vectors, "movies", bad, actor="ops", gate=_gate(registry_store, vectors), force=True)

    forced = promote(registry_store, vectors, "movies", bad, actor="ops", reason="C is retired next week",
                     gate=_gate(registry_store, vectors), force=True)
    assert forced.forced and forced.changed and vectors.alias_target("movies") == f"movies__v{bad}"
    event = [e for e in registry_store.audit_log("movies") if e.action == "promote"][-1]
    assert event.reason == "C is retired next week" and event.details["gate"]["forced"] is True
    figures = {(b["segment"], b["figure"]) for b in event.details["gate"]["breaches"]}
    assert {("C", "relative_alignment"), ("C", "coverage")} <= figures
    # the forced promotion reused the stored report instead of measuring again
    assert len(registry_store.alignment_reports("movies", version=bad)) == 1


def test_the_report_is_stored_per_run_and_the_gate_rejudges_it_with_current_thresholds(registry_store, vectors,
                                                                                       world, tmp_path):
    version = add_version(registry_store, vectors, world, tmp_path, collapsed=True)
    for _ in range(2):
        build_alignment_report(registry_store, vectors, model="movies", version=version, inputs=world.inputs,
                               thresholds=THRESHOLDS, actor="cron")
    runs = registry_store.alignment_reports("movies", version=version)
    assert [r.run for r in runs] == [1, 2] and runs[0].against_version is None
    assert {s.kind for s in runs[1].segments} == {"category", "popularity"}
    assert runs[1].segments == runs[0].segments  # the same vectors and queries give the same figures
    assert any(b["segment"] == "C" for b in runs[1].breaches)
    lenient = THRESHOLDS.merged({"max_alignment_distance": 1.0, "min_coverage": 0.0}, where="test")
    verdict = AlignmentGate(registry_store, vectors, thresholds=lenient, actor="ops")(
        registry_store.get_version("movies", version), None)
    assert verdict.passed and verdict.details["report_run"] == 2


def test_a_version_without_test_queries_passes_unmeasured_unless_a_report_is_required(registry_store, vectors, world,
                                                                                      tmp_path):
    from tower_platform.errors import ConflictError

    version = add_version(registry_store, vectors, world, tmp_path, collapsed=True, with_inputs=False)
    candidate = registry_store.get_version("movies", version)
    verdict = _gate(registry_store, vectors)(candidate, None)
    assert verdict.passed and verdict.details == {"measured": False, "note": "no test queries in the artifact folder"}
    strict = THRESHOLDS.merged({"require_report": True}, where="test")
    with pytest.raises(ConflictError, match="has no test queries"):
        AlignmentGate(registry_store, vectors, thresholds=strict, actor="ops")(candidate, None)


def test_promote_without_a_gate_is_unchanged(registry_store, vectors, world, tmp_path):
    version = add_version(registry_store, vectors, world, tmp_path, collapsed=True)
    result = promote(registry_store, vectors, "movies", version, actor="ops")
    assert result.verdict is None and not result.forced
    event = [e for e in registry_store.audit_log("movies") if e.action == "promote"][-1]
    assert "gate" not in event.details


def test_the_gate_measures_again_when_the_pooling_or_the_report_format_changed(registry_store, vectors, world,
                                                                               tmp_path):
    from dataclasses import replace

    version = add_version(registry_store, vectors, world, tmp_path, collapsed=False)
    candidate = registry_store.get_version("movies", version)
    assert _gate(registry_store, vectors)(candidate, None).details["report_run"] == 1
    assert _gate(registry_store, vectors)(candidate, None).details["report_run"] == 1  # reused
    pooled_more = THRESHOLDS.merged({"min_items": 35}, where="test")  # B and C (30 items) now pooled
    verdict = AlignmentGate(registry_store, vectors, thresholds=pooled_more, actor="ops")(candidate, None)
    assert verdict.details["report_run"] == 2 and verdict.details["pooled"] == 2
    # a report stored before pooling (its thresholds lack the newer keys) is never judged by today's rules
    old = registry_store.latest_alignment_report("movies", version)
    legacy = {k: v for k, v in THRESHOLDS.to_dict().items() if k not in ("recall_confidence", "worst")}
    assert registry_store.record_alignment_report(replace(old, thresholds=legacy), actor="test").run == 3
    other_limits = THRESHOLDS.merged({"max_norm_error": 0.02}, where="test")  # same pooling: reuse, but not run 3
    reused = AlignmentGate(registry_store, vectors, thresholds=other_limits, actor="ops")(candidate, None)
    assert reused.details["report_run"] == 1
