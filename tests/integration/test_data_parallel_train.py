"""`towerctl train --nproc 2 --register` on the bundled dataset: two gloo ranks train, rank 0 evaluates, exports and
registers a version whose ONNX towers reproduce the trained torch towers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TINY = ["--set", "epochs=1", "--set", "max_steps=6", "--set", "embedding_dim=8", "--set", "output_dim=8",
        "--set", "hidden_dims=[16]", "--set", "batch_size=256", "--set", "loss.category_discount=0",
        "--set", "loss.negatives=sampled", "--set", "uniform_negatives=64"]  # sampled negatives (so without the full
# softmax's category discount): their gather across ranks is what this run checks

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def trained(tower_home: Path, feature_store) -> tuple[dict, str]:
    """The JSON result and stderr of a 2-process `towerctl train` in the session's home (Feast applied there)."""
    result = subprocess.run(
        [sys.executable, "-m", "tower_platform", "train", "--nproc", "2", "--register", "--json", *TINY],
        capture_output=True, text=True, timeout=840, env={**os.environ, "TOWER_HOME": str(tower_home)},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout), result.stderr


def test_two_ranks_train_and_rank_zero_exports_and_registers(trained: tuple[dict, str], tower_home: Path) -> None:
    from tower_platform.registry.store import SqlRegistryStore

    payload, stderr = trained
    assert "data-parallel run on 2 processes" in stderr
    assert stderr.count("training on ") == 1  # rank 0 alone builds the training set and reports it
    assert payload["registered"] is True and payload["parity_max_abs_diff"] <= 1e-5
    folder = Path(payload["export"])
    with SqlRegistryStore(f"sqlite:///{tower_home / 'registry.db'}") as registry:
        version = registry.get_version("movies", payload["version"])
    assert version.status == "registered"
    assert version.training_config["loss"]["uniform_negatives"] == 64  # per rank: 128 uniform candidates a step
    assert {a.name: a.sha256 for a in version.artifacts if a.name.endswith(".onnx")} == payload["sha256"]
    assert folder.is_dir() and {"query.onnx", "item.onnx", "towers.pt"} <= {p.name for p in folder.iterdir()}


def test_the_registered_onnx_towers_reproduce_the_trained_towers(trained: tuple[dict, str], training_set,
                                                                   feature_store) -> None:
    from datetime import UTC, datetime

    from towers.onnx import load_onnx_tower
    from towers.training import TrainedTowers

    payload, _ = trained
    folder = Path(payload["export"])
    towers = TrainedTowers.load(folder / "towers.pt")
    rows = training_set.table.slice(0, 300)  # real rows, as Feast serves them
    items = feature_store.item_corpus(datetime.now(UTC)).slice(0, 300)
    for side, table, torch_embed in (("query", rows, towers.embed_queries), ("item", items, towers.embed_items)):
        tower = load_onnx_tower(folder / f"{side}.onnx", sha256=payload["sha256"][f"{side}.onnx"])
        onnx_vectors, torch_vectors = tower.embed_table(table), torch_embed(table)
        assert onnx_vectors.shape == (300, 8)
        assert float(np.abs(onnx_vectors - torch_vectors).max()) <= 1e-5, side
        assert float(np.abs(torch_vectors).max()) > 0.1  # trained vectors, not zeros


def test_a_bad_setting_is_refused_before_any_rank_starts(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tower_platform", "train", "--nproc", "2", "--set", "loss.temperature=-1"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TOWER_HOME": str(tmp_path)},
    )
    assert result.returncode == 2, result.stderr[-3000:]  # a bad --set value, as in one process
    assert "--set loss.temperature=-1" in result.stderr
    assert "data-parallel run" not in result.stderr  # no rank was started
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_failing_rank_gives_its_exit_code_and_message(tmp_path: Path) -> None:
    # a valid setting that fails on the ranks: no dataset sources under this home yet (ingest never ran)
    result = subprocess.run(
        [sys.executable, "-m", "tower_platform", "train", "--nproc", "2"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TOWER_HOME": str(tmp_path / "home")},
    )
    assert result.returncode != 0, result.stderr[-3000:]
    assert f"towerctl train on 2 processes failed: rank 0 exited with code {result.returncode}" in result.stderr


def test_nproc_is_refused_under_torchrun(tmp_path: Path) -> None:
    env = {**os.environ, "TOWER_HOME": str(tmp_path), "WORLD_SIZE": "2", "RANK": "0"}
    result = subprocess.run([sys.executable, "-m", "tower_platform", "train", "--nproc", "2"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    assert "--nproc starts the processes itself; under torchrun leave it out" in result.stderr
