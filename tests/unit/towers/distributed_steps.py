"""What the ranks of the data-parallel tests run (a module of its own, so spawned processes can import it).

``run_ranks(worker, world_size, out_dir)`` starts ``world_size`` processes (gloo, a file rendezvous in ``out_dir``)
that each call ``worker(data_parallel, out_dir)``; their results are files in ``out_dir``.

``record_steps`` trains a few steps on one rank through the real DDP path (``Trainer.train_step`` on the rows
``Trainer.batch_index`` gives the rank) and records, per step, the rank's row indices, its loss, every parameter's
gradient after DDP's average, its uniform draws and the random state at the entry of the SSL term.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from synthetic_interactions import ITEM_GENRES, trainable_towers
from towers.config import TowerConfig
from towers.features.schema import ITEM_KEY
from towers.losses.dat import category_alignment_loss
from towers.tasks.auxiliary import SelfSupervisedLoss
from towers.training import TrainableTowers, Trainer
from towers.training.distributed import DataParallel

WORLD = 2
TOLERANCE = 1e-5
SEED = 7
TINY = {"embedding_dim": 8, "hidden_dims": [16], "output_dim": 8, "estimator_buckets": 64, "seed": SEED,
        "learning_rate": 1e-5, "grad_clip": None, "progress": False, "device": "cpu"}


def _rank_main(rank: int, world_size: int, init_file: str, out_dir: str, worker: Callable[..., None]) -> None:
    torch.set_num_threads(1)
    with DataParallel.initialize(rank=rank, world_size=world_size, init_method=f"file://{init_file}") as dp:
        worker(dp, Path(out_dir))


def run_ranks(worker: Callable[[DataParallel, Path], None], *, world_size: int, out_dir: Path) -> None:
    """Run ``worker`` on ``world_size`` gloo ranks and wait for them (an error in a rank fails the caller)."""
    mp.start_processes(_rank_main, args=(world_size, str(out_dir / "rendezvous"), str(out_dir), worker),
                       nprocs=world_size, join=True, start_method="spawn")


def trainer_for(model: TrainableTowers, rows: dict[str, torch.Tensor], config: TowerConfig,
                distributed: DataParallel | None = None, **kwargs: Any) -> Trainer:
    """A trainer as ``fit_two_tower`` builds it, the task gathering across ranks."""
    trainer = Trainer(model, rows, config.training, distributed=distributed, **kwargs)
    if distributed is not None:
        model.task.use_gather(distributed.gather)
    return trainer


def record_steps(dp: DataParallel, config: TowerConfig, *, steps: int) -> dict[str, Any]:
    model, rows = trainable_towers(config)
    trainer = trainer_for(model, rows, config, dp)  # DDP broadcasts rank 0's weights here
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.manual_seed(config.training.seed + dp.rank)  # as fit_two_tower seeds each rank
    draws: list[tuple[int, torch.Tensor]] = []
    sample = model.task.corpus.sample

    def recording_sample(count: int):  # the real draw, remembered
        features, keys = sample(count)
        draws.append((count, keys.clone()))
        return features, keys

    model.task.corpus.sample = recording_sample
    ssl_states: list[torch.Tensor] = []
    for auxiliary in model.task.auxiliaries:
        if isinstance(auxiliary, SelfSupervisedLoss):
            terms = auxiliary.terms

            def recording_terms(*args, _terms=terms, **kwargs):  # the random state the SSL views start from
                ssl_states.append(torch.get_rng_state())
                return _terms(*args, **kwargs)

            auxiliary.terms = recording_terms
    permutation = trainer.permutation(0)
    model.train()
    records = []
    for step in range(steps):
        draws.clear()
        ssl_states.clear()
        index = trainer.batch_index(permutation, step)
        loss = trainer.train_step(trainer.batch(index))
        records.append({
            "index": index.clone(),
            "loss": float(loss),
            "grads": {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None},
            "draws": list(draws),
            "ssl_rng": list(ssl_states),
        })
    return {"initial": initial, "steps": records, "final": {k: v.detach().clone() for k, v in model.state_dict().items()}}


# --- the cases of tests/unit/towers/training/test_distributed.py ------------------------------------------------------

BATCH, UNIFORM = 12, 5  # per rank: a global batch of 24 rows and 10 uniform draws on 2 ranks
MAIN = {**TINY, "batch_size": BATCH, "uniform_negatives": UNIFORM, "queue_size": 20, "sampling_bias_correction": True,
        "remove_accidental_hits": True, "dat.enabled": True, "dat.default_rate": 0.0, "category_weight": 1.0,
        "min_category_items": 2}
SSL = {**TINY, "batch_size": BATCH, "uniform_negatives": UNIFORM, "ssl.weight": 0.5, "ssl.sample_size": 16}
RESUME = {**TINY, "batch_size": BATCH, "uniform_negatives": UNIFORM, "epochs": 2, "learning_rate": 1e-2}


def equivalence_worker(dp: DataParallel, out: Path) -> None:
    """Two recorded steps of MAIN, one of SSL, then a 2-epoch run and the same run stopped and resumed."""
    for name, overrides, steps in (("main", MAIN, 2), ("ssl", SSL, 1)):
        record = record_steps(dp, TowerConfig().with_overrides(overrides), steps=steps)
        torch.save(record, out / f"{name}-rank{dp.rank}.pt")
    config = TowerConfig().with_overrides(RESUME)
    runs = {}
    for name, epochs, checkpoint in (("uninterrupted", 2, None), ("first epoch", 1, out / "checkpoint.pt"),
                                     ("resumed", 2, out / "checkpoint.pt")):
        model, rows = trainable_towers(config)
        torch.manual_seed(config.training.seed + dp.rank)
        trainer_for(model, rows, config.with_overrides({"epochs": epochs}), dp, checkpoint_path=checkpoint).run()
        runs[name] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save(runs, out / f"resume-rank{dp.rank}.pt")


def nccl_worker(dp: DataParallel, out: Path) -> None:
    """The two MAIN steps on the ranks' GPUs (NCCL gathers)."""
    record = record_steps(dp, TowerConfig().with_overrides({**MAIN, "device": "cuda"}), steps=2)
    torch.save(record, out / f"main-rank{dp.rank}.pt")


# --- the single process the ranks are compared with --------------------------------------------------------------------

def single_process(overrides: dict, records: list[dict]):
    """The towers of ``overrides`` with the global batch size and W * B' uniform negatives, from the ranks' weights."""
    config = TowerConfig().with_overrides(
        {**overrides, "batch_size": WORLD * BATCH, "uniform_negatives": WORLD * UNIFORM}
    )
    model, rows = trainable_towers(config)
    model.load_state_dict(records[0]["initial"])
    model.train()
    return model, trainer_for(model, rows, config)


def replay_uniform_draws(model, records: list[dict], *, steps: int) -> None:
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
        index = torch.tensor([position[key] for key in per_step.pop(0).tolist()], device=corpus.keys.device)
        return {name: column[index] for name, column in columns.items()}, corpus.keys[index]

    corpus.sample = replay


def assert_gradients_equal(model, records: list[dict], step: int, *, tolerance: float = TOLERANCE) -> None:
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    for rank, record in enumerate(records):
        ranked = record["steps"][step]["grads"]
        assert set(ranked) == set(grads), f"rank {rank}: parameters with a gradient differ"
        for name, grad in grads.items():
            difference = float((ranked[name] - grad).abs().max())
            assert difference <= tolerance, f"step {step}, rank {rank}, {name}: max |diff| {difference:.2e}"
    assert any(float(g.abs().max()) > 1e-3 for g in grads.values())  # gradients that are not all zero


def check_main_equivalence(records: list[dict], overrides: dict, *, tolerance: float = TOLERANCE) -> None:
    """One process on the concatenated batches of the ranks' two recorded MAIN steps: same loss and gradients."""
    model, trainer = single_process(overrides, records)
    replay_uniform_draws(model, records, steps=2)
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
        assert abs(loss - distributed_loss) <= tolerance, (loss, distributed_loss)
        assert_gradients_equal(model, records, step, tolerance=tolerance)
    final = model.state_dict()
    for record in records:  # the estimator saw the same global ids: identical state on every rank
        for name in ("task.estimator.interval", "task.estimator.last_seen", "task.estimator.step"):
            assert torch.equal(record["final"][name], final[name]), name


