"""The one progress reporter: plain periodic lines (rate, ETA) on a non-terminal, a rich bar on a terminal; used by
the trainer and by the embedding writer."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest

from towers.progress import ProgressReporter


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_non_terminal_gets_periodic_lines_with_rate_and_eta():
    stream, clock = io.StringIO(), FakeClock()
    progress = ProgressReporter("writing movies__v1", total=100, unit="items", stream=stream, interval_s=10,
                                clock=clock)
    progress.advance(0)  # the first update prints at once: a sign of life
    clock.now += 5
    progress.advance(10)  # 5 s later: within the interval, nothing
    clock.now += 5
    progress.advance(15)  # 10 s after the start: 25 items, 2.5 items/s, 75 left -> ETA 30 s
    clock.now += 30
    progress.advance(75)  # 40 s, 100 items: 2.5 items/s (printed rounded half to even: 2)
    progress.close()
    assert stream.getvalue().splitlines() == [
        "writing movies__v1: 0/100 items (0%), ETA -",
        "writing movies__v1: 25/100 items (25%), 2 items/s, ETA 0:00:30",
        "writing movies__v1: 100/100 items (100%), 2 items/s, ETA 0:00:00",
        "writing movies__v1: 100/100 items (100%), 2 items/s, done in 0:00:40",
    ]
    progress.advance(5)  # closed: ignored
    assert len(stream.getvalue().splitlines()) == 4


def test_a_measured_rate_and_fields_are_shown():
    stream, clock = io.StringIO(), FakeClock()
    progress = ProgressReporter("training", total=480, unit="steps", stream=stream, interval_s=0, clock=clock)
    clock.now += 60
    progress.update(completed=120, description="epoch 1/4", rate=23456.0, rate_unit="ex/s", loss=4.12341)
    # 120 steps in 60 s; 360 left at 2 steps/s -> 180 s
    assert stream.getvalue().splitlines() == [
        "training epoch 1/4: 120/480 steps (25%), 23,456 ex/s, loss 4.1234, ETA 0:03:00"
    ]


def test_disabled_prints_nothing_and_a_terminal_gets_a_bar():
    quiet = io.StringIO()
    with ProgressReporter("x", total=3, stream=quiet, enabled=False) as progress:
        progress.advance(3)
    assert quiet.getvalue() == ""
    tty = io.StringIO()
    with ProgressReporter("drawing", total=3, stream=tty, terminal=True) as progress:
        progress.advance(3)
    assert "drawing" in tty.getvalue() and "3/3" in tty.getvalue()
    assert "ETA" not in tty.getvalue()  # the bar's own columns, not the plain lines


def test_training_on_a_non_terminal_prints_progress_lines(capsys):
    import torch

    from towers.config import TrainerConfig
    from towers.training.trainer import Trainer

    class Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Linear(2, 1)

        def loss(self, batch):
            return ((self.w(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean(), {}

    tensors = {"x": torch.randn(64, 2), "y": torch.randn(64)}
    Trainer(Linear(), tensors, TrainerConfig(epochs=2, batch_size=16, log_every=1, device="cpu")).run()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("training")]
    # 64 rows / 16 per batch = 4 steps per epoch, 8 in all; the first update prints, then at most every 10 s
    assert lines[0].startswith("training epoch 1/2: 1/8 steps (12%), ") and " ex/s, loss " in lines[0]
    assert lines[-1].startswith("training epoch 2/2: 8/8 steps (100%), ") and "done in " in lines[-1]


def test_writing_embeddings_on_a_non_terminal_prints_progress_lines(tmp_path, capsys):
    from reference_tower import ReferenceFeature, build_reference_tower

    from tower_platform.vectors.store import QdrantVectorStore
    from tower_platform.vectors.writer import QdrantEmbeddingWriter, StaticItemSource

    ids = [str(i) for i in range(30)]
    tower = build_reference_tower(tmp_path / "item.onnx", features=[ReferenceFeature("item_id", "categorical", tuple(ids))],
                                  dimension=4, model_name="movies", model_version=1, schema={"item_id": "item_id"})
    corpus = pa.table({"item_id": pa.array(np.arange(30), pa.int64())})
    with QdrantVectorStore.memory() as vectors:
        QdrantEmbeddingWriter(vectors, tower, batch_size=8, progress=True).write(StaticItemSource(corpus))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("writing movies__v1")]
    assert lines[0].startswith("writing movies__v1: 8/30 items (27%), ")
    assert lines[-1].startswith("writing movies__v1: 30/30 items (100%), ") and "done in " in lines[-1]


@pytest.mark.parametrize("total", [0, 1])
def test_tiny_totals_do_not_divide_by_zero(total):
    stream = io.StringIO()
    with ProgressReporter("x", total=total, stream=stream) as progress:
        progress.advance(total)
    assert stream.getvalue().splitlines()[-1].startswith(f"x: {total}/{total} items")
