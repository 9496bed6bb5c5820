"""The exact full-corpus softmax: numbers by hand, the positive's corpus copy, exact vs cached item gradients."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

import pytest
import torch
from synthetic_interactions import ITEM_GENRES, RECENT, feature_schema, trainable_towers
from synthetic_interactions import single_threaded_torch  # noqa: F401  (autouse fixture)

from towers.config import TowerConfig
from towers.errors import TowersConfigError
from towers.features.schema import ITEM_KEY
from towers.losses import full_corpus_softmax_loss

FULL = TowerConfig().with_overrides({"embedding_dim": 8, "hidden_dims": [16], "output_dim": 8,
                                     "loss.negatives": "full_corpus", "loss.temperature": 1.0})


def test_full_corpus_softmax_by_hand() -> None:
    # corpus items with keys 10, 11, 12 at e1, e2, -e1; query 0 = e1 with positive key 10, query 1 = e2 with positive
    # key 12 (whose corpus row is -e1). tau = 1.
    corpus = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    keys = torch.tensor([10, 11, 12])
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positives = corpus[torch.tensor([0, 2])]
    loss = full_corpus_softmax_loss(queries, positives, corpus, temperature=1.0, positive_keys=torch.tensor([10, 12]),
                                    corpus_keys=keys)
    # row 0: positive logit 1; others: key 11 -> 0, key 12 -> -1 (key 10 is its own copy, left out)
    row0 = math.log(math.e + 1.0 + math.exp(-1.0)) - 1.0
    # row 1: positive logit <e2, -e1> = 0; others: key 10 -> 0, key 11 -> 1
    row1 = math.log(1.0 + 1.0 + math.e) - 0.0
    assert loss.item() == pytest.approx((row0 + row1) / 2, abs=1e-6)


def test_full_corpus_softmax_equals_cross_entropy_over_the_corpus() -> None:
    generator = torch.Generator().manual_seed(0)
    corpus = torch.nn.functional.normalize(torch.randn(50, 4, generator=generator), dim=1)
    keys = torch.arange(50) * 3  # keys need not be row numbers
    targets = torch.randint(0, 50, (16,), generator=generator)
    queries = torch.nn.functional.normalize(torch.randn(16, 4, generator=generator), dim=1)
    loss = full_corpus_softmax_loss(queries, corpus[targets], corpus, temperature=0.1, positive_keys=keys[targets],
                                    corpus_keys=keys)
    expected = torch.nn.functional.cross_entropy(queries @ corpus.T / 0.1, targets)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_full_corpus_needs_softmax_and_no_sampled_negatives() -> None:
    with pytest.raises(TowersConfigError, match="loss.function must be 'softmax' when loss.negatives"):
        TowerConfig.from_dict({"loss": {"negatives": "full_corpus", "function": "bce"}})
    with pytest.raises(TowersConfigError, match="uniform_negatives and loss.queue_size must be 0"):
        TowerConfig.from_dict({"loss": {"negatives": "full_corpus", "uniform_negatives": 8}})
    assert FULL.needs_corpus


def _untouched_item_rows(model, batch) -> torch.Tensor:
    """Item-id table rows of corpus items neither in the batch nor in its recent-items lists (so no gradient reaches
    them through the batch itself)."""
    ids = model.model.item_tower.tables["item_id"].weight.shape[0]
    used = torch.zeros(ids, dtype=torch.bool)
    used[batch["item_id"]] = True
    used[batch[RECENT].flatten()] = True
    corpus_ids = model.task.corpus.features()["item_id"]
    rows = torch.zeros(ids, dtype=torch.bool)
    rows[corpus_ids] = True
    rows[:2] = False  # missing and out-of-vocabulary ids (corpus items unseen in training share the OOV row)
    return rows & ~used


@pytest.mark.parametrize(("refresh", "exact"), [(1, True), (4, False)])
def test_exact_mode_gives_every_corpus_item_a_gradient_and_cached_mode_only_the_batch(refresh: int, exact: bool) -> None:
    model, batch = trainable_towers(FULL.with_overrides({"loss.corpus_refresh_steps": refresh}))
    batch = {name: tensor[:32] for name, tensor in batch.items()}
    untouched = _untouched_item_rows(model, batch)
    assert untouched.sum() > 5
    loss, logs = model.loss(batch)
    assert torch.isfinite(loss) and "main" in logs
    loss.backward()
    grad = model.model.item_tower.tables["item_id"].weight.grad  # [V, E]
    moved = grad[untouched].abs().sum(dim=1) > 0
    if exact:
        assert moved.all()  # every corpus item is a negative with its own gradient
    else:
        assert not moved.any()  # stale rows push only the queries
        batch_rows = grad[batch["item_id"]].abs().sum(dim=1) > 0
        assert batch_rows.all()  # the batch's own items are fresh in the table


def test_full_corpus_training_lowers_the_loss() -> None:
    model, batch = trainable_towers(FULL.with_overrides({"loss.temperature": 0.1}))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss, _ = model.loss(batch)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert model.task.estimator.step.item() == 30  # the estimator is kept for the registry either way
    assert loss.item() < first - 0.5  # about log(300) = 5.7 at the start
    assert batch[ITEM_KEY].max() < model.task.corpus.size


def test_the_positive_is_scored_with_its_corpus_features_like_every_negative() -> None:
    # a training row's item features are as of its event, the corpus's as of the cutoff; a positive embedded from
    # its own (older) features would differ from all negatives in a way the towers learn to spot
    from synthetic_interactions import ITEM_YEAR

    model, batch = trainable_towers(FULL)
    model.eval()  # no dropout: the same inputs give the same loss
    batch = {name: tensor[:40] for name, tensor in batch.items()}
    with torch.no_grad():
        loss, _ = model.loss(batch)
        older = dict(batch, **{ITEM_YEAR: batch[ITEM_YEAR] - 30.0})  # the rows' own features changed
        assert model.loss(older)[0].item() == pytest.approx(loss.item(), abs=1e-6)
        corpus = model.model.item_tower(model.task.corpus.features())  # [C, D]
        queries = model.model.embed_queries(batch)
        rows = model.task.corpus_table.rows_of(model.task.corpus, batch[ITEM_KEY])
        expected = torch.nn.functional.cross_entropy(queries @ corpus.T / 1.0, rows)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)


def _loss_and_gradients(config: TowerConfig) -> tuple[float, dict[str, torch.Tensor], object]:
    model, batch = trainable_towers(config)
    model.eval()  # no dropout: both passes over the corpus see the same inputs
    batch = {name: tensor[:32] for name, tensor in batch.items()}
    loss, _ = model.loss(batch)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads, model


def test_truncated_backward_keeps_the_loss_and_the_query_gradients_exact() -> None:
    config = FULL.with_overrides({"loss.temperature": 0.2})
    exact_loss, exact, _ = _loss_and_gradients(config)
    loss, grads, model = _loss_and_gradients(config.with_overrides({"loss.corpus_gradient_negatives": 10}))
    assert loss == pytest.approx(exact_loss, abs=1e-6)  # every row's value is the current item tower's
    # the query tower's own layers (the embedding tables are shared with the item tower)
    query_only = [n for n in exact if n.startswith("model.query_tower") and ".tables." not in n]
    assert query_only
    for name in query_only:
        torch.testing.assert_close(grads[name], exact[name], atol=1e-6, rtol=1e-5)
    item_mlp = [n for n in exact if n.startswith("model.item_tower.mlp")]
    assert any((grads[n] - exact[n]).abs().max() > 1e-4 for n in item_mlp)  # 10 of 300 negatives: truncated
    assert 0.0 < model.task.corpus_table.covered < 1.0


def test_truncated_backward_over_the_whole_corpus_is_the_exact_gradient() -> None:
    config = FULL.with_overrides({"loss.temperature": 0.2})
    exact_loss, exact, _ = _loss_and_gradients(config)
    loss, grads, model = _loss_and_gradients(config.with_overrides({"loss.corpus_gradient_negatives": 100_000}))
    assert model.task.corpus_table.covered == pytest.approx(1.0, abs=1e-6)
    assert loss == pytest.approx(exact_loss, abs=1e-6)
    assert set(grads) == set(exact)
    for name in exact:
        torch.testing.assert_close(grads[name], exact[name], atol=1e-5, rtol=1e-4)


def test_truncated_backward_sends_item_gradients_through_at_most_k_rows_outside_the_batch() -> None:
    model, batch = trainable_towers(FULL.with_overrides({"loss.corpus_gradient_negatives": 6}))
    batch = {name: tensor[:32] for name, tensor in batch.items()}
    untouched = _untouched_item_rows(model, batch)
    loss, _ = model.loss(batch)
    loss.backward()
    moved = model.model.item_tower.tables["item_id"].weight.grad[untouched].abs().sum(dim=1) > 0
    assert 0 < int(moved.sum()) <= 6  # the K rows (3 largest, 3 drawn), some of them outside the batch


def test_the_truncated_item_gradient_is_unbiased() -> None:
    # the mean over many steps' draws of the item tower's gradient approaches the exact one; keeping the largest
    # gradients alone (no draws) stays far from it
    config = FULL.with_overrides({"loss.temperature": 0.5})
    _, exact, _ = _loss_and_gradients(config)
    model, batch = trainable_towers(config.with_overrides({"loss.corpus_gradient_negatives": 40}))
    model.eval()
    batch = {name: tensor[:32] for name, tensor in batch.items()}
    names = [n for n in exact if n.startswith("model.item_tower.mlp")]
    params = dict(model.named_parameters())
    torch.manual_seed(0)
    total = {n: torch.zeros_like(exact[n]) for n in names}
    repeats = 300
    for _ in range(repeats):
        model.zero_grad()
        model.loss(batch)[0].backward()
        for n in names:
            total[n] += params[n].grad
    deterministic_only = {}
    table = model.task.corpus_table
    table.gradient_negatives = 40 * 2  # no draws below: the same rows, K/2 = 40 largest ...
    original = table.gradient_rows

    def largest_only(gradient, positives):
        rows, weights = original(gradient, positives)
        keep = weights == 1.0  # ... minus the drawn ones (weight != 1)
        return rows[keep], weights[keep]

    table.gradient_rows = largest_only
    model.zero_grad()
    model.loss(batch)[0].backward()
    deterministic_only = {n: params[n].grad.clone() for n in names}
    for n in names:
        scale = exact[n].norm()
        sampled_error = float((total[n] / repeats - exact[n]).norm() / scale)
        truncated_error = float((deterministic_only[n] - exact[n]).norm() / scale)
        assert sampled_error < 0.1, (n, sampled_error)  # measured .03-.05
        assert truncated_error > 0.5, (n, truncated_error)  # measured 2-28: the small pushes add up coherently


def test_truncated_backward_needs_the_exact_full_corpus() -> None:
    with pytest.raises(TowersConfigError, match="loss.corpus_gradient_negatives must be 0 unless"):
        TowerConfig.from_dict({"loss": {"corpus_gradient_negatives": 64}})
    both = TowerConfig.from_dict({"loss": {"negatives": "full_corpus", "corpus_refresh_steps": 4,
                                           "corpus_gradient_negatives": 64}})  # a cached table, truncated backward
    assert (both.loss.corpus_refresh_steps, both.loss.corpus_gradient_negatives) == (4, 64)
    with pytest.raises(TowersConfigError, match="loss.corpus_gradient_negatives must be >= 0"):
        TowerConfig.from_dict({"loss": {"negatives": "full_corpus", "corpus_gradient_negatives": -1}})


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_popularity_discount_adds_beta_log_p_to_the_training_logits(beta: float) -> None:
    model, batch = trainable_towers(FULL.with_overrides({"loss.popularity_discount": beta, "loss.temperature": 0.5}))
    model.eval()
    batch = {name: tensor[:40] for name, tensor in batch.items()}
    for step in range(3):  # a few updates of the estimator, so that log p differs between items
        model.task.estimator.update(batch[ITEM_KEY][step * 10 : (step + 1) * 10].repeat(step + 1))
    with torch.no_grad():
        loss, _ = model.loss(batch)  # the forward updates the estimator once more (training mode only)
        corpus = model.model.item_tower(model.task.corpus.features())  # [C, D]
        queries = model.model.embed_queries(batch)
        rows = model.task.corpus_table.rows_of(model.task.corpus, batch[ITEM_KEY])
        log_p = model.task.estimator.log_probability(model.task.corpus.keys)  # [C]
        expected = torch.nn.functional.cross_entropy(queries @ corpus.T / 0.5 + beta * log_p, rows)
    assert log_p.std() > 0.1
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_popularity_discount_lowers_the_popular_items_scores_after_training() -> None:
    # one item is the positive of half the rows: with beta = 1 its learned score must fall below the exact softmax's
    def trained(beta: float) -> float:
        torch.manual_seed(0)
        model, batch = trainable_towers(FULL.with_overrides({"loss.popularity_discount": beta,
                                                             "loss.temperature": 0.2}))
        keys = batch[ITEM_KEY].clone()
        keys[::2] = keys[0]
        batch = dict(batch, **{ITEM_KEY: keys, "item_id": torch.where(
            torch.arange(keys.shape[0]) % 2 == 0, batch["item_id"][0], batch["item_id"])})
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(40):
            loss, _ = model.loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            corpus = model.model.item_tower(model.task.corpus.features())
            scores = model.model.embed_queries(batch) @ corpus.T  # [B, C]
            row = model.task.corpus_table.rows_of(model.task.corpus, keys[:1])
            rank = (scores > scores[:, row]).sum(dim=1).float()  # [B] items ranked above the popular one
        return float(rank.mean())

    exact, discounted = trained(0.0), trained(1.0)  # measured: 0.1 and 8.7 of 300 items above it
    assert discounted > exact + 1.0


def test_popularity_discount_needs_the_full_corpus() -> None:
    with pytest.raises(TowersConfigError, match="loss.popularity_discount must be 0 unless"):
        TowerConfig.from_dict({"loss": {"popularity_discount": 0.5}})
    with pytest.raises(TowersConfigError, match="loss.popularity_discount must be >= 0"):
        TowerConfig.from_dict({"loss": {"negatives": "full_corpus", "popularity_discount": -0.1}})


@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_category_discount_adds_gamma_log_category_share_to_the_training_logits(gamma: float) -> None:
    model, batch = trainable_towers(FULL.with_overrides({"loss.category_discount": gamma, "loss.temperature": 0.5}))
    model.eval()
    batch = {name: tensor[:40] for name, tensor in batch.items()}
    for step in range(3):  # a few estimator updates over some items only: the others are never seen and count 0
        model.task.estimator.update(batch[ITEM_KEY][step * 10 : (step + 1) * 10].repeat(step + 1))
    with torch.no_grad():
        loss, _ = model.loss(batch)
        corpus = model.model.item_tower(model.task.corpus.features())  # [C, D]
        queries = model.model.embed_queries(batch)
        rows = model.task.corpus_table.rows_of(model.task.corpus, batch[ITEM_KEY])
        estimator, keys = model.task.estimator, model.task.corpus.keys
        genres = model.task.corpus.features()[ITEM_GENRES][:, 0].tolist()  # each item's first genre
        totals: dict[int, float] = defaultdict(float)
        for genre, p, seen in zip(genres, estimator.probability(keys).tolist(), estimator.seen(keys).tolist()):
            totals[genre] += p if seen else 0.0
        prior = sum(totals.values()) / len(genres)  # one average item per category
        denominator = sum(totals.values()) + prior * (max(genres) + 2)
        log_share = torch.tensor([math.log((totals[g] + prior) / denominator) for g in genres])  # [C]
        expected = torch.nn.functional.cross_entropy(queries @ corpus.T / 0.5 + gamma * log_share, rows)
    assert len(set(genres)) > 2 and log_share.std() > 0.1
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_category_and_popularity_discounts_add_up_and_train() -> None:
    config = FULL.with_overrides({"loss.category_discount": 0.5, "loss.popularity_discount": 0.5})
    model, batch = trainable_towers(config)
    loss, _ = model.loss(batch)
    loss.backward()
    keys = model.task.corpus.keys
    both = model.task.logit_bias(keys, model.task.corpus.features()[ITEM_GENRES])
    alone = model.task.popularity_bias(keys) + model.task.category_bias(model.task.corpus.features()[ITEM_GENRES])
    assert torch.isfinite(loss) and torch.allclose(both, alone)
    assert model.model.item_tower.tables["item_id"].weight.grad.abs().sum() > 0


def test_category_discount_needs_the_full_corpus_and_an_item_category() -> None:
    with pytest.raises(TowersConfigError, match="loss.category_discount must be 0 unless"):
        TowerConfig.from_dict({"loss": {"category_discount": 0.5}})
    with pytest.raises(TowersConfigError, match="loss.category_discount must be >= 0"):
        TowerConfig.from_dict({"loss": {"negatives": "full_corpus", "category_discount": -0.1}})
    without_category = dataclasses.replace(feature_schema(), item_category=None)
    with pytest.raises(TowersConfigError, match=r"loss.category_discount=0.5 needs the item category.*items.category"):
        trainable_towers(FULL.with_overrides({"loss.category_discount": 0.5}), schema=without_category)


def test_cached_truncated_table_is_recomputed_every_n_steps_with_the_positives_and_hardest_rows_current() -> None:
    model, batch = trainable_towers(FULL.with_overrides({"loss.temperature": 0.2, "loss.corpus_refresh_steps": 4,
                                                         "loss.corpus_gradient_negatives": 6}))
    model.eval()  # no dropout: a row re-embedded with the same weights is the same row
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    corpus = model.task.corpus
    table = model.task.corpus_table
    tower = model.model.item_tower
    embedded: list[int] = []
    hook = tower.register_forward_hook(lambda _m, _i, out: embedded.append(int(out.shape[0])))
    batches = [{name: tensor[i * 16:(i + 1) * 16] for name, tensor in batch.items()} for i in range(6)]
    full_passes = []
    try:
        for step, part in enumerate(batches):
            embedded.clear()
            before = table._cached.clone() if table._cached is not None else None
            loss, _ = model.loss(part)
            full_passes.append(corpus.size in embedded)
            if step == 0:  # a fresh table: the loss is the exact full-corpus softmax's
                with torch.no_grad():
                    values = tower(corpus.features())
                    queries = model.model.embed_queries(part) / 0.2
                    rows = table.rows_of(corpus, part[ITEM_KEY])
                    exact = torch.nn.functional.cross_entropy(queries @ values.T, rows)
                assert loss.item() == pytest.approx(exact.item(), abs=1e-5)
            optimizer.zero_grad()
            loss.backward()
            moved = tower.tables["item_id"].weight.grad.abs().sum(dim=1) > 0
            assert moved.any()  # the item tower learns at every step, cached or not
            if before is not None and step % 4 != 0:
                rows = table.rows_of(corpus, part[ITEM_KEY])
                with torch.no_grad():  # the weights have not moved since this step's loss
                    current = tower({name: value[rows] for name, value in corpus.features().items()})
                torch.testing.assert_close(table._cached[rows], current, atol=1e-5, rtol=1e-5)
                changed = (table._cached != before).any(dim=1)
                assert 0 < int(changed.sum()) <= int(torch.unique(rows).numel()) + 6  # positives + K rows only
            optimizer.step()
    finally:
        hook.remove()
    assert full_passes == [True, False, False, False, True, False]  # every corpus item every N = 4 steps


@pytest.mark.parametrize("gradient_negatives", [0, 6])
def test_bfloat16_softmax_matmuls_reach_the_full_corpus_loss(gradient_negatives: int) -> None:
    config = FULL.with_overrides({"loss.temperature": 0.2, "loss.corpus_gradient_negatives": gradient_negatives})
    exact_loss, exact, _ = _loss_and_gradients(config)
    loss, grads, _ = _loss_and_gradients(config.with_overrides({"loss.softmax_matmul": "bfloat16"}))
    assert loss == pytest.approx(exact_loss, rel=1e-2) and loss != exact_loss  # rounded, not ignored
    query_only = [n for n in exact if n.startswith("model.query_tower") and ".tables." not in n]
    for name in query_only:
        assert float((grads[name] - exact[name]).norm() / exact[name].norm()) < 0.02, name
