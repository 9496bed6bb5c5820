"""The gates on a retail-sized catalogue: 1,600 categories, most with a handful of items and test queries.

A healthy first version passes the default gates, a second healthy training run passes against it, a version with
one collapsed category is refused naming it, and a version with fifty collapsed categories is refused with a message
of a few lines. Arrays in (:mod:`catalogue_world`), the real monitor code out: exact top-K over every item,
covariances, pooling, gates, summaries; the last tests go through the registry, Qdrant in memory and ONNX query
towers as ``towerctl models promote`` does.
"""

from __future__ import annotations

import numpy as np
import pytest

from catalogue_world import build_catalogue
from tower_platform.monitor.alignment import alignment_figures
from tower_platform.monitor.covariance import covariance_of
from tower_platform.monitor.summary import summarise
from tower_platform.monitor.thresholds import MonitorThresholds, find_breaches, recall_drop
from tower_platform.monitor.version_report import with_deltas

DEFAULTS = MonitorThresholds()


@pytest.fixture(scope="module")
def catalogue():
    return build_catalogue(seed=0)


def _figures(catalogue, pooled=None):
    return alignment_figures(catalogue.items, catalogue.queries, k=DEFAULTS.k, min_items=DEFAULTS.min_items,
                             min_queries=DEFAULTS.min_queries, pooled=pooled)


@pytest.fixture(scope="module")
def healthy(catalogue):
    return _figures(catalogue)


def _gated_category(catalogue, healthy) -> str:
    """A category gated on its own other than the major one: the second largest of them."""
    gated = sorted((s for s in healthy.segments if s.kind == "category" and not s.pooled),
                   key=lambda s: (-s.item_count, s.segment))
    return gated[1].segment


def test_the_catalogue_is_retail_shaped(catalogue, healthy):
    sizes, demand = catalogue.sizes(), catalogue.queries_per_category()
    assert len(sizes) >= 1_500 and np.median(sizes) <= 5 and sizes.max() >= 1_000
    assert np.median(demand) <= 2  # few test queries per category: sampling noise everywhere
    summary = summarise(healthy.segments, DEFAULTS)
    assert summary.n_categories == len(sizes) and 5 <= summary.n_gated <= 60
    assert summary.n_pooled == summary.n_categories - summary.n_gated and summary.pooled_items > 0
    # the old relative distance ||A - B||^2 / ||A||^2 had no upper bound: far above 1 here (19.8 on a real log)
    major = max((s for s in healthy.segments if s.kind == "category"), key=lambda s: s.item_count)
    a = covariance_of(catalogue.items.vectors, np.flatnonzero(catalogue.items.categories == major.segment))[1]
    old = max(s.alignment_distance for s in healthy.segments if s.kind == "category") / float((a * a).sum())
    assert old > 5
    assert all(0.0 <= s.relative_alignment <= 1.0 for s in healthy.segments)


def test_a_healthy_first_version_passes_the_default_gates(healthy):
    assert find_breaches(healthy.segments, DEFAULTS) == []
    gated = [s for s in healthy.segments if s.kind == "category" and not s.pooled]
    assert max(s.relative_alignment for s in gated) < DEFAULTS.max_alignment_distance
    assert all(s.n_queries >= DEFAULTS.min_queries and s.item_count >= DEFAULTS.min_items for s in gated)


def test_another_healthy_training_run_passes_against_the_first(catalogue, healthy):
    # new within-category offsets: per-category recall moves by sampling noise, which must not read as a drop
    retrained = _figures(catalogue.retrained(seed=1), pooled=None)
    pooled = {s.segment for s in healthy.segments if s.kind == "category" and s.pooled}
    compared = with_deltas(_figures(catalogue.retrained(seed=1), pooled=pooled).segments, healthy.segments)
    assert {s.segment for s in retrained.segments if s.kind == "category" and s.pooled} == pooled
    moved = [s for s in compared if s.deltas.get("recall") not in (None, 0.0)]
    assert moved  # the figures did move
    assert find_breaches(compared, DEFAULTS) == []
    # with as few as 5 queries a category is gated alone, and some healthy category "drops" by more than half by
    # chance: the confidence bound keeps that from reading as a breach
    few = MonitorThresholds(min_items=20, min_queries=5)
    first = alignment_figures(catalogue.items, catalogue.queries, k=few.k, **few.pooling())
    pooled = {s.segment for s in first.segments if s.kind == "category" and s.pooled}
    again = catalogue.retrained(seed=1)
    noisy = with_deltas(alignment_figures(again.items, again.queries, k=few.k, pooled=pooled).segments, first.segments)
    halved = [s for s in noisy if s.kind == "category" and not s.pooled and (recall_drop(s) or 0) > 0.5]
    assert halved and all(s.n_queries >= 5 for s in halved)
    assert find_breaches(noisy, few) == []


def test_a_collapsed_category_fails_and_is_named(catalogue, healthy):
    name = _gated_category(catalogue, healthy)
    collapsed = _figures(catalogue.collapse([name]), pooled=None)
    breaches = find_breaches(with_deltas(collapsed.segments, healthy.segments), DEFAULTS)
    assert {(b.segment, b.figure) for b in breaches} >= {(name, "relative_alignment")}
    assert {b.segment for b in breaches} == {name}
    assert next(s for s in collapsed.segments if s.segment == name).relative_alignment == pytest.approx(1.0)


def test_fifty_collapsed_categories_give_a_summary_not_a_wall_of_text(catalogue, healthy):
    big = [s.segment for s in sorted(healthy.segments, key=lambda s: -s.item_count) if s.kind == "category"][1:51]
    figures = _figures(catalogue.collapse(big), pooled=None)
    summary = summarise(figures.segments, DEFAULTS)
    pooled_collapsed = [s for s in figures.segments if s.segment in big and s.pooled]
    assert len(pooled_collapsed) >= 20  # few test queries target them: pooled, yet big enough to be checked ...
    distance = [b for b in summary.breaches if b.figure == "relative_alignment"]
    assert sorted(b.segment for b in distance) == sorted(big)  # ... so every collapsed category is named
    assert summary.n_pooled_large >= len(pooled_collapsed)
    assert len(summary.listed()) == DEFAULTS.worst
    assert len(summary.breach_sentence()) + len(summary.counts_sentence()) < 400


# --- through the registry, Qdrant and ONNX query towers, as `towerctl models promote` runs the gate ------------------


@pytest.fixture
def vectors(tmp_path):
    from tower_platform.vectors.edge import EdgeVectorStore  # the embedded store: 20k points in a second

    store = EdgeVectorStore(tmp_path / "vectors")
    yield store
    store.close()


def _register(registry, vectors, root, catalogue, item_vectors, inputs) -> int:
    from monitor_world import register_indexed_version

    return register_indexed_version(
        registry, vectors, root, item_ids=catalogue.items.ids, categories=catalogue.items.categories,
        item_vectors=item_vectors, user_ids=[f"u{u}" for u in range(len(catalogue.queries))],
        user_vectors=catalogue.queries.vectors, inputs=inputs)


def test_promotion_passes_a_healthy_first_version_and_refuses_collapsed_ones_in_a_few_lines(
        registry_store, vectors, catalogue, healthy, tmp_path):
    from catalogue_world import monitor_table
    from tower_platform.errors import MonitorBreachError
    from tower_platform.monitor.gate import AlignmentGate
    from tower_platform.monitor.inputs import MonitorInputs
    from tower_platform.registry.promotion import promote

    inputs = MonitorInputs.from_training_set(monitor_table(catalogue))
    gate = lambda: AlignmentGate(registry_store, vectors, thresholds=DEFAULTS, actor="ops")  # noqa: E731
    first = _register(registry_store, vectors, tmp_path, catalogue, catalogue.items.vectors, inputs)
    passed = promote(registry_store, vectors, "movies", first, actor="ops", gate=gate())
    assert passed.verdict.passed and passed.verdict.details["categories"] == len(catalogue.names)
    stored = registry_store.latest_alignment_report("movies", first)
    assert len(stored.by_kind("category")) == len(catalogue.names) and len(stored.by_kind("pooled")) == 1
    assert sum(s.pooled for s in stored.segments) == passed.verdict.details["pooled"] > 1_000
    # the registry path measures what the arrays give: the same pooled segment
    pool = next(s for s in healthy.segments if s.kind == "pooled")
    assert stored.by_kind("pooled")[0].item_count == pool.item_count

    big = [s.segment for s in sorted(healthy.segments, key=lambda s: -s.item_count) if s.kind == "category"][1:51]
    bad = _register(registry_store, vectors, tmp_path, catalogue, catalogue.collapse(big).items.vectors, inputs)
    with pytest.raises(MonitorBreachError) as refused:
        promote(registry_store, vectors, "movies", bad, actor="ops", gate=gate())
    message = str(refused.value)
    lines = message.splitlines()
    assert lines[0].startswith(f"Model 'movies' version {bad} fails its alignment gate: ")
    assert f"the full list: `towerctl monitor alignment movies --version {bad} --run 1 --json`" in lines[0]
    assert f"{len(catalogue.names):,} categories evaluated" in lines[0]
    assert len(lines) <= DEFAULTS.worst + 2 and len(message) < 3_000  # one sentence, ten breaches, "... and N more"
    assert lines[-1].startswith("  ... and ") and all(line.startswith("  - category '") for line in lines[1:-1])
    assert registry_store.production_version("movies").version == first
