"""A PNG of an alignment report: per-category Recall@K of the version beside the compared version, and the
relative alignment distance of each category (matplotlib, Agg backend, written via a temporary name)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from tower_platform.errors import InputError
from tower_platform.registry.entities import AlignmentReport


def plot_report(report: AlignmentReport, path: str | Path, *, breached: set[str] | None = None) -> Path:
    """Write the figure to ``path`` (PNG); categories in ``breached`` are drawn in red in the distance panel."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"--plot {path} must name a .png file.")
    categories = report.by_kind("category")
    names = [s.segment for s in categories]
    ours = np.array([np.nan if s.recall is None else s.recall for s in categories])  # (C,)
    deltas = [s.deltas.get("recall") for s in categories]
    theirs = np.array([np.nan if s.recall is None or d is None else s.recall - d for s, d in zip(categories, deltas,
                                                                                                 strict=True)])
    distance = np.array([np.nan if s.relative_alignment is None else s.relative_alignment for s in categories])
    x = np.arange(len(names))
    width = 0.4
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(max(8.0, 0.45 * len(names) + 2), 8), sharex=True)
    top.bar(x - width / 2, np.nan_to_num(ours), width, label=f"v{report.version}", color="tab:blue")
    if report.against_version is not None:
        top.bar(x + width / 2, np.nan_to_num(theirs), width, label=f"v{report.against_version} (compared)",
                color="tab:gray")
    top.set_ylabel(f"Recall@{report.k}")
    top.set_title(f"{report.model} v{report.version} run {report.run}: per-category Recall@{report.k}")
    top.legend()
    colors = ["tab:red" if breached and n in breached else "tab:green" for n in names]
    bottom.bar(x, np.nan_to_num(distance), color=colors)
    limit = report.thresholds.get("max_alignment_distance")
    if limit is not None:
        bottom.axhline(float(limit), color="tab:red", linestyle="--", linewidth=1, label="gate")
        bottom.legend()
    bottom.set_ylabel("||C(major) - C(c)||²_F / ||C(major)||²_F")
    bottom.set_title(f"alignment distance to the major category ({report.major_category})")
    bottom.set_xticks(x, names, rotation=60, ha="right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.png")
    try:
        figure.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(figure)
        tmp.unlink(missing_ok=True)
    return path
