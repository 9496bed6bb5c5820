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

from distributed_steps import BATCH, MAIN, RESUME, SSL, UNIFORM, equivalence_worker, run_ranks, trainer_for
from synthetic_interactions import ITEM_GENRES, trainable_towers
from synthetic_interactions import single_threaded_torch  # noqa: F401  (autouse fixture)
from towers.config import TowerConfig
from towers.errors import TowersArtifactError
from towers.features.schema import ITEM_KEY
from towers.losses.dat import category_alignment_loss
from towers.tasks.auxiliary import SelfSupervisedLoss
from towers.training import Trainer

WORLD = 2
TOLERANCE = 1e-5

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    run_ranks(equivalence_worker, world_size=WORLD, out_dir=out)
    return out


def _records(out: Path, name: str) -> list[dict]:
    return [torch.load(out / f"{name}-rank{k}.pt", weights_only=False) for k in range(WORLD)]


def _single_process(overrides: dict, records: list[dict]):
    """The towers of ``overrides`` with the global batch size and W * B' uniform negatives, from the ranks' weights."""
    config = TowerConfig().with_overrides(
        {**overrides, "batch_size": WORLD * BATCH, "uniform_negatives": WORLD * UNIFORM}
    )
    model, rows = trainable_towers(config)
    model.load_state_dict(records[0]["initial"])
    model.train()
    return model, trainer_for(model, rows, config)


def _replay_uniform_draws(model, records: list[dict], *, steps: int) -> None:
    """The single process's uniform draws of step s: the ranks' draws of step s, in rank order."""
    corpus = model.task.corpus
    position = {key: row for row, key in enumerate(corpus.keys.tolist())}
    columns = {name: getattr(corpus, f"feature_{i}") for i, name in enumerate(corpus.names)}
    per_step = [
        torch.cat([keys for r in records for count, keys in r["steps"][s]["draws"] if count == UNIFORM])
        for s in range(steps)
    ]
    draw = corpus.sample

    def replay(count: int):
        if count != WORLD * UNIFORM:
            return draw(count)
        index = torch.tensor([position[key] for key in per_step.pop(0).tolist()])
        return {name: column[index] for name, column in columns.items()}, corpus.keys[index]

    corpus.sample = replay


def _assert_gradients_equal(model, records: list[dict], step: int) -> None:
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    for rank, record in enumerate(records):
        ranked = record["steps"][step]["grads"]
        assert set(ranked) == set(grads), f"rank {rank}: parameters with a gradient differ"
        for name, grad in grads.items():
            difference = float((ranked[name] - grad).abs().max())
            assert difference <= TOLERANCE, f"step {step}, rank {rank}, {name}: max |diff| {difference:.2e}"
    assert any(float(g.abs().max()) > 1e-3 for g in grads.values())  # gradients that are not all zero


def test_two_ranks_equal_one_process_with_correction_mixed_negatives_hits_queue_and_dat(ranks: Path) -> None:
    records = _records(ranks, "main")
    model, trainer = _single_process(MAIN, records)
    _replay_uniform_draws(model, records, steps=2)
    permutation = trainer.permutation(0)
    for step in range(2):
        index = trainer.batch_index(permutation, step)
        # each rank's shard of step s is its block of the single process's batch s
        assert torch.equal(index, torch.cat([r["steps"][step]["index"] for r in records]))
        batch = trainer.batch(index)
        keys = batch[ITEM_KEY]
        if step == 0:  # the case is not vacuous: an item of rank 0's rows is also among rank 1's
            assert set(keys[:BATCH].tolist()) & set(keys[BATCH:].tolist())
            with torch.no_grad():
                genres = batch[ITEM_GENRES][:, 0]
                assert float(category_alignment_loss(model.model.embed_items(batch), genres, min_items=2)) > 0
        else:  # the queue holds the items of step 0
            assert int((model.task.queue.keys >= 0).sum()) == model.task.queue.size
        loss = float(trainer.train_step(batch))
        distributed_loss = sum(r["steps"][step]["loss"] for r in records) / WORLD  # DDP averages the rank losses
        assert abs(loss - distributed_loss) <= TOLERANCE, (loss, distributed_loss)
        _assert_gradients_equal(model, records, step)
    final = model.state_dict()
    for record in records:  # the estimator saw the same global ids: identical state on every rank
        for name in ("task.estimator.interval", "task.estimator.last_seen", "task.estimator.step"):
            assert torch.equal(record["final"][name], final[name]), name


def test_ssl_is_the_mean_of_the_ranks_own_ssl_terms(ranks: Path) -> None:
    records = _records(ranks, "ssl")
    model, trainer = _single_process(SSL, records)
    _replay_uniform_draws(model, records, steps=1)
    batch = trainer.batch(trainer.batch_index(trainer.permutation(0), 0))
    towers, task = model.model, model.task
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
    assert abs(float(total) - distributed_loss) <= TOLERANCE, (float(total), distributed_loss)
    _assert_gradients_equal(model, records, 0)


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
    assert state["world_size"] == 1 and "rank_rng" not in state


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
