"""The harness's classical baselines against the reference figures of docs/evaluation.md (test stage).

Each dataset is split at its global 80% / 90% time cutoffs; MostPopular, ItemKNN (100 neighbours) and EASE (the
reference's lambda: 200 on latest-small, 500 on MovieLens-100K) are fit on train + validation and evaluated on test
with the next-item protocol. Every figure must agree with the reference to within 0.005; the query and user counts
exactly. The reference table lives in the shared folder beside the repository, so the test runs only where that
folder (and, for MovieLens-100K, its dataset) is present; the numbers below are copied from it.

Run with ``-s`` to see the harness's table next to the reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from towers.evaluation.baseline import EASE, ItemKNN, MostPopular, fit_on_periods, next_item_scorer
from towers.evaluation import EvaluationReport, InteractionHistory, InteractionLog, evaluate_next_item

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
LATEST_SMALL_RATINGS = REPO / "platform" / "tower_platform" / "bundled" / "movielens-latest-small" / "ratings.csv"
ML_100K_RATINGS = SHARED / "datasets" / "movielens-100k" / "u.data"
TOLERANCE = 0.005

FIGURES = ("recall@10", "recall@50", "recall@100", "ndcg@10", "mrr", "recall@100_per_user",
           "recall@100_head", "recall@100_torso", "recall@100_tail")  # fmt: skip

# docs/evaluation.md, "Reference figures (test stage)": R@10, R@50, R@100, NDCG@10, MRR, R@100 per user, head/torso/tail.
REFERENCE: dict[str, dict[str, tuple[float, ...]]] = {
    "latest-small": {
        "MostPopular": (0.033, 0.109, 0.175, 0.018, 0.017, 0.254, 0.255, 0.000, 0.000),
        "ItemKNN": (0.060, 0.168, 0.255, 0.031, 0.029, 0.359, 0.364, 0.024, 0.009),
        "EASE": (0.074, 0.204, 0.303, 0.038, 0.034, 0.427, 0.438, 0.010, 0.000),
    },
    "100k": {
        "MostPopular": (0.070, 0.226, 0.360, 0.033, 0.030, 0.381, 0.597, 0.001, 0.000),
        "ItemKNN": (0.133, 0.369, 0.525, 0.068, 0.061, 0.468, 0.778, 0.148, 0.017),
        "EASE": (0.132, 0.400, 0.564, 0.066, 0.060, 0.571, 0.757, 0.284, 0.000),
    },
}
# queries, users, share of test interactions skipped because the item is not in the fit data
REFERENCE_COUNTS = {"latest-small": (8593, 74, 0.148), "100k": (9872, 163, 0.013)}
EASE_LAMBDA = {"latest-small": 200.0, "100k": 500.0}

MODELS = {
    "MostPopular": lambda dataset: MostPopular(),
    "ItemKNN": lambda dataset: ItemKNN(neighbours=100),
    "EASE": lambda dataset: EASE(l2=EASE_LAMBDA[dataset]),
}


def read_ratings(dataset: str) -> pd.DataFrame:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} (the reference figures) is absent")
    if dataset == "latest-small":
        return pd.read_csv(LATEST_SMALL_RATINGS, usecols=["userId", "movieId", "timestamp"])
    if not ML_100K_RATINGS.is_file():
        pytest.skip(f"{ML_100K_RATINGS} is absent")
    return pd.read_csv(ML_100K_RATINGS, sep="\t", header=None, names=["userId", "movieId", "rating", "timestamp"])


class Dataset:
    def __init__(self, name: str) -> None:
        ratings = read_ratings(name)
        _, users = np.unique(ratings["userId"].to_numpy(), return_inverse=True)
        _, items = np.unique(ratings["movieId"].to_numpy(), return_inverse=True)
        self.name = name
        self.log = InteractionLog.split_by_time(
            users, item_codes=items, timestamps=ratings["timestamp"].to_numpy(np.int64),
            n_users=int(users.max()) + 1, n_items=int(items.max()) + 1,
        )  # fmt: skip
        self.history = InteractionHistory.build(self.log)


@pytest.fixture(scope="module", params=["latest-small", "100k"])
def dataset(request: pytest.FixtureRequest) -> Dataset:
    return Dataset(request.param)


def table_rows(dataset: str, model: str, report: EvaluationReport) -> str:
    headline = report.headline()
    ours = " ".join(f"{headline[f]:.3f}" for f in FIGURES)
    reference = " ".join(f"{v:.3f}" for v in REFERENCE[dataset][model])
    counts = f"{report.n_queries} q, {report.n_users} users, {headline['skipped_unseen_share']:.1%} unseen"
    return f"{dataset:12s} {model:11s} harness   {ours}  ({counts})\n{'':24s} reference {reference}"


@pytest.mark.parametrize("model_name", list(MODELS))
def test_baseline_agrees_with_the_reference(dataset: Dataset, model_name: str):
    model = fit_on_periods(MODELS[model_name](dataset.name), dataset.log, periods=("train", "validation"))
    report = evaluate_next_item(
        dataset.log,
        next_item_scorer(model, history=dataset.history),
        fit_periods=("train", "validation"),
        eval_period="test",
        history=dataset.history,
    )
    table = table_rows(dataset.name, model_name, report)
    print("\n" + "R@10  R@50  R@100 NDCG@10 MRR R@100/user head torso tail".rjust(80) + "\n" + table)

    n_queries, n_users, skipped_share = REFERENCE_COUNTS[dataset.name]
    assert (report.n_queries, report.n_users) == (n_queries, n_users), table
    assert report.headline()["skipped_unseen_share"] == pytest.approx(skipped_share, abs=TOLERANCE), table
    assert report.n_skipped_repeat == 0, table  # MovieLens rates each (user, movie) pair once
    headline = report.headline()
    off = {
        figure: (round(headline[figure], 4), reference)
        for figure, reference in zip(FIGURES, REFERENCE[dataset.name][model_name], strict=True)
        if abs(headline[figure] - reference) > TOLERANCE
    }
    assert not off, f"figures off the reference by more than {TOLERANCE}: {off}\n{table}"
