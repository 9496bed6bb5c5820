"""Data-parallel training on 2 gloo processes against one process on the concatenated batch.

The ranks run once for the module (``distributed_steps.equivalence_worker``): two steps with the sampling-bias
correction, mixed negatives, accidental-hit removal, the queue, DAT mimic and the Category Alignment Loss on; one step
with SSL; a 2-epoch run, and the same run stopped after one epoch and resumed. The single process here replays the
ranks' uniform draws (a single process drawing the W * B' items the ranks drew), and must give the same loss and
every parameter's gradient within 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distributed_steps import (
    BATCH,
    MAIN,
    RESUME,
    SSL,
    TOLERANCE,
    WORLD,
    assert_gradients_equal,
    check_main_equivalence,
    equivalence_worker,
    replay_uniform_draws,
    run_ranks,
    single_process,
)
from synthetic_interactions import trainable_towers
from synthetic_interactions import single_threaded_torch  # noqa: F401  (autouse fixture)
from towers.config import TowerConfig
from towers.features.schema import ITEM_KEY
from towers.errors import TowersArtifactError
from towers.tasks.auxiliary import SelfSupervisedLoss
from towers.training import Trainer

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    run_ranks(equivalence_worker, world_size=WORLD, out_dir=out)
    return out


def _records(out: Path, name: str) -> list[dict]:
    return [torch.load(out / f"{name}-rank{k}.pt", weights_only=False) for k in range(WORLD)]


def test_two_ranks_equal_one_process_with_correction_mixed_negatives_hits_queue_and_dat(ranks: Path) -> None:
    check_main_equivalence(_records(ranks, "main"), MAIN)


def test_ssl_is_the_mean_of_the_ranks_own_ssl_terms(ranks: Path) -> None:
    records = _records(ranks, "ssl")
    model, trainer = single_process(SSL, records)
    replay_uniform_draws(model, records, steps=1)
    batch = trainer.batch(trainer.batch_index(trainer.permutation(0), 0))
    towers, task = model.model, model.task
    task.estimator.update(batch[ITEM_KEY])  # as the task's forward does before the main loss: the global batch
    main = task.softmax_loss(towers.embed_queries(batch), towers.embed_items(batch), batch, model=towers)
    ssl = next(a for a in task.auxiliaries if isinstance(a, SelfSupervisedLoss))
    terms = []
    for rank, record in enumerate(records):  # rank k's SSL batch and views, from the random state it started from
        torch.set_rng_state(record["steps"][0]["ssl_rng"][0])
        rows = {n: t[rank * BATCH : (rank + 1) * BATCH] for n, t in batch.items()}
        terms.append(ssl.terms(towers, rows, queries=None, items=None, corpus=task.corpus)["ssl"][1])
    assert abs(float(terms[0].detach()) - float(terms[1].detach())) > 1e-4  # two different SSL batches
    total = main + ssl.weight * sum(terms) / WORLD
    model.zero_grad(set_to_none=True)
    total.backward()
    distributed_loss = sum(r["steps"][0]["loss"] for r in records) / WORLD
    assert abs(float(total.detach()) - distributed_loss) <= TOLERANCE, (float(total.detach()), distributed_loss)
    assert_gradients_equal(model, records, 0)


def test_resume_with_the_same_world_size_continues_the_run(ranks: Path) -> None:
    for rank in range(WORLD):
        runs = torch.load(ranks / f"resume-rank{rank}.pt", weights_only=False)
        weights = [k for k in runs["uninterrupted"] if k.startswith("model.")]
        assert any(not torch.allclose(runs["first epoch"][k], runs["uninterrupted"][k]) for k in weights)
        for key, value in runs["uninterrupted"].items():
            assert torch.allclose(runs["resumed"][key], value, atol=1e-6), (rank, key)


def test_a_checkpoint_of_two_ranks_is_refused_by_one_process(ranks: Path) -> None:
    config = TowerConfig().with_overrides(RESUME)
    model, rows = trainable_towers(config)
    trainer = Trainer(model, rows, config.training, checkpoint_path=ranks / "checkpoint.pt")
    with pytest.raises(TowersArtifactError, match=r"checkpoint\.pt was written by a run on 2 process\(es\) and this "
                                                   r"run has 1; resume it with 2"):
        trainer.run()


def test_a_single_process_checkpoint_records_world_size_one(tmp_path: Path) -> None:
    config = TowerConfig().with_overrides({**RESUME, "epochs": 1})
    model, rows = trainable_towers(config)
    path = tmp_path / "checkpoint.pt"
    Trainer(model, rows, config.training, checkpoint_path=path).run()
    state = torch.load(path, weights_only=True)
    assert state["world_size"] == 1 and "rank_rng" not in state and state["cuda_rng"] is None


def test_joining_a_run_needs_torchruns_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from towers.errors import TowersInputError
    from towers.training.distributed import DataParallel, launched_by_torchrun

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched_by_torchrun()
    with pytest.raises(TowersInputError, match=r"needs \['RANK'\] in the environment; start it with torchrun"):
        DataParallel.from_environment()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not launched_by_torchrun()
