"""Leftovers of killed runs (`.sources.tmp-*`, `.sources.old-*`, `.run-*.partial`) are removed by the next run of the
same command, never those of a run that is still alive. The runs here are real processes, killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tower_platform.datasets import ingest, load_dataset_config
from tower_platform.staging import UNLOCKED_GRACE_S, remove_leftovers, staged_folder

CONFIG = """name: clicks
model: clicks
source: data
interactions:
  path: events.csv
  user_id: u
  item_id: i
  timestamp: {column: t}
items:
  path: items.csv
  id: i
  attributes: {shelf: {kind: categorical}}
"""

# A child that ingests the dataset and stops at a chosen point, touching READY, until it is killed:
#   "writing"   inside the staging folder, after the first table was written
#   "swapping"  after the previous sources were moved aside (.sources.old-*), before the new ones are renamed in
CHILD = r"""
import os, sys, time, importlib
from pathlib import Path
config_path, home, ready, stop_at = sys.argv[1:5]
staging = importlib.import_module("tower_platform.staging")
ingest_module = importlib.import_module("tower_platform.datasets.ingest")

def pause():
    Path(ready).write_text(str(os.getpid()))
    time.sleep(600)

if stop_at == "writing":
    real_write = ingest_module.pq.write_table
    def write_then_pause(table, where, *args, **kwargs):
        real_write(table, where, *args, **kwargs)
        pause()
    ingest_module.pq.write_table = write_then_pause
else:
    real_replace = staging.os.replace
    def replace_then_pause(src, dst):
        real_replace(src, dst)
        if ".old-" in str(dst):
            pause()
    staging.os.replace = replace_then_pause

from tower_platform.datasets.config import load_dataset_config
ingest_module.ingest(load_dataset_config(Path(config_path)), home_dir=Path(home))
"""


def _dataset(tmp_path: Path, *, shelf: str = "a") -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "events.csv").write_text("u,i,t\nu1,i1,1000\nu2,i2,2000\nu1,i2,3000\n", encoding="utf-8")
    (data / "items.csv").write_text(f"i,shelf\ni1,{shelf}\ni2,b\n", encoding="utf-8")
    path = tmp_path / "clicks.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def _start_child(config: Path, home: Path, stop_at: str, tmp_path: Path) -> subprocess.Popen:
    ready = tmp_path / f"ready-{stop_at}"
    ready.unlink(missing_ok=True)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(config), str(home), str(ready), stop_at],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not ready.exists():
        if child.poll() is not None:
            raise AssertionError(child.stderr.read().decode())
        assert time.monotonic() < deadline, "the child never reached its stop point"
        time.sleep(0.05)
    return child


def _kill(child: subprocess.Popen) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def _leftovers(home: Path) -> list[str]:
    return sorted(p.name for p in home.iterdir() if p.name.startswith(".sources."))


@pytest.mark.parametrize("stop_at", ["writing", "swapping"])
def test_the_next_ingest_removes_what_a_killed_ingest_left(tmp_path, stop_at):
    config_path = _dataset(tmp_path)
    home = tmp_path / "home"
    first = ingest(load_dataset_config(config_path), home_dir=home)
    schema_before = (home / "sources" / "schema.json").read_bytes()

    _kill(_start_child(config_path, home, stop_at, tmp_path))
    left = _leftovers(home)
    kinds = {name.split(".")[2].split("-")[0] for name in left}  # tmp, old, lock
    assert kinds == ({"tmp", "lock"} if stop_at == "writing" else {"tmp", "old", "lock"}), left
    assert (home / "sources").exists() == (stop_at == "writing")  # the killed swap left no sources/ behind

    removed = remove_leftovers(home)  # what the next ingest does first
    assert {p.name.split(".")[2].split("-")[0] for p in removed} == {"tmp"}  # .old- was put back, not removed
    assert _leftovers(home) == []
    assert (home / "sources" / "schema.json").read_bytes() == schema_before  # the previous sources, restored

    _kill(_start_child(config_path, home, stop_at, tmp_path))
    again = ingest(load_dataset_config(_dataset(tmp_path, shelf="c")), home_dir=home)  # the next run of the command
    assert _leftovers(home) == []
    assert again.rows == first.rows
    assert json.loads((home / "sources" / "schema.json").read_text())["source_fingerprint"] != first.source_fingerprint


def test_a_live_ingest_keeps_its_staging_folder(tmp_path):
    config_path = _dataset(tmp_path)
    home = tmp_path / "home"
    ingest(load_dataset_config(config_path), home_dir=home)
    child = _start_child(config_path, home, "writing", tmp_path)
    try:
        live = _leftovers(home)
        assert len(live) == 2  # its .tmp- folder and its .lock- file
        assert remove_leftovers(home, now=time.time() + 10 * UNLOCKED_GRACE_S) == []  # alive: untouched, however old
        ingest(load_dataset_config(config_path), home_dir=home)  # another ingest meanwhile
        assert _leftovers(home) == live
    finally:
        _kill(child)
    assert [p.name for p in remove_leftovers(home)] == [name for name in live if ".tmp-" in name]
    assert _leftovers(home) == []


def test_leftovers_of_the_naming_before_lock_files_go_once_an_hour_old(tmp_path):
    parent = tmp_path / "artifacts" / "movies"
    legacy = [parent / ".run-20250101T000000Z.partial", parent / ".sources.tmp-1a2b3c4d"]
    for folder in legacy:
        folder.mkdir(parents=True)
        (folder / "query.onnx").write_bytes(b"half")
    (parent / "run-20250101T000000Z").mkdir()  # a complete export: never a leftover
    assert remove_leftovers(parent) == []  # fresh: might belong to a running older release
    later = time.time() + UNLOCKED_GRACE_S + 1
    assert sorted(remove_leftovers(parent, now=later)) == sorted(legacy)
    assert [p.name for p in parent.iterdir()] == ["run-20250101T000000Z"]


def test_a_failed_block_leaves_the_previous_folder(tmp_path):
    (tmp_path / "sources").mkdir()
    (tmp_path / "sources" / "a.txt").write_text("previous")
    with pytest.raises(RuntimeError), staged_folder(tmp_path, "sources", replace=True) as staging:
        (staging / "a.txt").write_text("half")
        raise RuntimeError("bad data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sources"]
    assert (tmp_path / "sources" / "a.txt").read_text() == "previous"
    with staged_folder(tmp_path, "sources", replace=True) as staging:
        (staging / "a.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sources"]
    assert (tmp_path / "sources" / "a.txt").read_text() == "new"
