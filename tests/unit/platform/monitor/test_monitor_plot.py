"""The report plot stays one fixed-size, readable PNG at any number of categories."""

from __future__ import annotations

import numpy as np
import pytest

from tower_platform.errors import InputError
from tower_platform.monitor.plot import DPI, FIGSIZE, plot_report
from tower_platform.monitor.thresholds import MonitorThresholds
from tower_platform.registry.entities import AlignmentReport, AlignmentSegment


def _report(n_categories: int, *, compared: bool) -> AlignmentReport:
    rng = np.random.default_rng(0)
    segments = []
    for c in range(n_categories):
        items = int(rng.integers(1, 400))
        queries = int(rng.integers(0, 80))
        recall = float(rng.uniform(0, 1)) if queries else None
        deltas = {"recall": float(rng.uniform(-0.3, 0.1)) if recall is not None and compared else None,
                  "n_queries": 0}
        segments.append(AlignmentSegment(
            "category", f"a rather long category name number {c:05d}", items, 1 / n_categories, 0.1,
            float(rng.uniform(0, 1)), 1.0, 0.5, queries, recall, recall, float(rng.uniform(0, 1)), deltas=deltas,
            pooled=items < 50 or queries < 30))
    segments.append(AlignmentSegment("pooled", "small categories", 9_000, 0.4, 0.1, 0.5, 1.0, 0.1, 900, 0.3, 0.2, 0.6,
                                     deltas={"recall": -0.01, "n_queries": 0} if compared else {}))
    segments += [AlignmentSegment("popularity", b, 3_000, 0.3, 0.1, 0.4, 1.0, 0.2, 500, 0.3, 0.2, 0.5)
                 for b in ("head", "torso", "tail")]
    return AlignmentReport(model="products", version=2, run=1, k=100, against_version=1 if compared else None,
                           collection="products__v2", major_category="a rather long category name number 00000",
                           n_items=400_000, n_queries=50_000, n_skipped=0, thresholds=MonitorThresholds().to_dict(),
                           breaches=(), segments=tuple(segments))


@pytest.mark.parametrize(("n_categories", "compared"), [(3, False), (2_400, True)])
def test_the_plot_has_one_size_whatever_the_number_of_categories(tmp_path, n_categories, compared):
    import matplotlib.image

    path = plot_report(_report(n_categories, compared=compared), tmp_path / "out" / "report.png")
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (int(FIGSIZE[1] * DPI), int(FIGSIZE[0] * DPI)) == (1200, 1400)
    assert image[..., :3].std() > 0.05  # something is drawn
    assert [p.name for p in path.parent.iterdir()] == ["report.png"]  # no temporary file left


def test_the_plot_refuses_another_suffix(tmp_path):
    with pytest.raises(InputError, match="must name a .png file"):
        plot_report(_report(3, compared=False), tmp_path / "report.jpg")
