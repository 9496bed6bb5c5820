"""What a report says in a few lines: counts, the worst segments per check, and the breaches worst first.

A report of thousands of categories is summarised, never listed whole: how many categories were evaluated, gated on
their own, pooled into "small categories" (and how many items and test queries that pool holds), how many segments
breach which check, the ``worst`` N segments of each check and the first N breaches. The whole report is in the
registry (``towerctl monitor alignment MODEL --version N --run R --json``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, zip_longest

from tower_platform.monitor.thresholds import (
    CHECK_LABELS,
    CHECKS,
    Breach,
    MonitorThresholds,
    find_breaches,
    gated_on,
    recall_drop,
)
from tower_platform.registry.entities import AlignmentSegment


@dataclass(frozen=True)
class ReportSummary:
    n_categories: int  # categories evaluated
    n_gated: int  # categories gated on their own
    n_pooled: int  # categories judged inside the pooled segment
    n_pooled_large: int  # pooled categories with min_items items: still gated on the alignment distance
    pooled_items: int
    pooled_queries: int
    breaches: tuple[Breach, ...]  # every breach, by check, worst first
    thresholds: MonitorThresholds

    @property
    def n_breaching(self) -> int:
        """Segments with at least one breach."""
        return len({(b.kind, b.segment) for b in self.breaches})

    @property
    def by_check(self) -> dict[str, int]:
        counts = Counter(b.figure for b in self.breaches)
        return {CHECK_LABELS[c]: counts[c] for c in CHECKS if counts[c]}

    def counts_sentence(self) -> str:
        """e.g. "1,604 categories evaluated: 120 gated on every check, 1,484 with fewer than 50 items or 30 test
        queries pooled into 'small categories' (9,850 items, 2,210 test queries; 40 of them with 50 items or more still
        gated on the alignment distance)"."""
        t = self.thresholds
        large = (f"; {self.n_pooled_large:,} of them with {t.min_items} items or more still gated on the alignment "
                 "distance" if self.n_pooled_large else "")
        pooled = (f", {self.n_pooled:,} with fewer than {t.min_items} items or {t.min_queries} test queries pooled "
                  f"into 'small categories' ({self.pooled_items:,} items, {self.pooled_queries:,} test queries{large})"
                  if self.n_pooled else "")
        return f"{self.n_categories:,} categories evaluated: {self.n_gated:,} gated on every check{pooled}"

    def breach_sentence(self) -> str:
        """e.g. "3 gate breaches in 1 segment (alignment distance 1, coverage 1, recall drop 1)"."""
        if not self.breaches:
            return "no gate breached"
        checks = ", ".join(f"{label} {count:,}" for label, count in self.by_check.items())
        segments = "segment" if self.n_breaching == 1 else "segments"
        return f"{len(self.breaches):,} gate breaches in {self.n_breaching:,} {segments} ({checks})"

    def listed(self, n: int | None = None) -> tuple[Breach, ...]:
        """The first ``n`` (default: ``worst``) breaches, taking the checks in turn so that each failing one shows."""
        n = self.thresholds.worst if n is None else n
        per_check = [[b for b in self.breaches if b.figure == c] for c in CHECKS]
        interleaved = [b for b in chain.from_iterable(zip_longest(*per_check)) if b is not None]
        return tuple(interleaved[:n])


def summarise(segments: Sequence[AlignmentSegment], thresholds: MonitorThresholds) -> ReportSummary:
    categories = [s for s in segments if s.kind == "category"]
    pool = next((s for s in segments if s.kind == "pooled"), None)
    return ReportSummary(
        n_categories=len(categories),
        n_gated=sum(1 for s in categories if not s.pooled),
        n_pooled=sum(1 for s in categories if s.pooled),
        n_pooled_large=sum(1 for s in categories if s.pooled and s.item_count >= thresholds.min_items),
        pooled_items=pool.item_count if pool is not None else 0,
        pooled_queries=pool.n_queries if pool is not None else 0,
        breaches=tuple(find_breaches(segments, thresholds)),
        thresholds=thresholds,
    )


def _value(segment: AlignmentSegment, check: str) -> float | None:
    if check == "mean_norm":
        return abs(segment.mean_norm - 1.0) if segment.item_count else None
    if check == "recall":
        return recall_drop(segment)
    return segment.figure(check)


def worst(segments: Sequence[AlignmentSegment], check: str, *, n: int, thresholds: MonitorThresholds,
          kinds: tuple[str, ...] = ("category", "pooled")) -> list[AlignmentSegment]:
    """The ``n`` segments of ``kinds`` gated on ``check`` that fare worst on it: largest alignment distance, lowest
    coverage, largest norm error, largest recall drop (segments without the figure are left out)."""
    measured = [(v, s) for s in segments if s.kind in kinds and gated_on(s, check, thresholds)
                and (v := _value(s, check)) is not None]
    ascending = check == "coverage"
    measured.sort(key=lambda pair: pair[0] if ascending else -pair[0])
    return [s for _, s in measured[:n]]
