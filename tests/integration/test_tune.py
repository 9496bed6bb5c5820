"""`towerctl tune` on a small MovieLens-format dataset with the bundled config: a tiny study through the CLI, pruning on a constructed case, and proof that
the test period is never used (the study's figures do not move when the test interactions change)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from typer.testing import CliRunner

from tower_platform.pipeline.search_space import SearchSpace
from tower_platform.pipeline.tune import ValidationStage, open_study, run_study
from towers.config import TowerConfig

runner = CliRunner()
# a tiny model on the shipped configuration (DAT + CAL, SSL, SENet), with uniform negatives instead of the full softmax
# (and so without the full softmax's category discount)
TINY = {"training.batch_size": 256, "towers.embedding_dim": 8, "towers.output_dim": 8, "towers.hidden_dims": [16],
        "training.epochs": 2, "training.patience": 2, "loss.category_discount": 0.0, "loss.negatives": "sampled",
        "loss.uniform_negatives": 16, "ssl.sample_size": 32}
SPACE = {"training.learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
         "loss.temperature": {"type": "categorical", "choices": [0.05, 0.1]}}
GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Thriller")
DAY = 86_400


def _invoke(*args: str):
    from tower_platform.cli.main import app

    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory: pytest.TempPathFactory):
    """A small MovieLens-format dataset (3,000 ratings, 120 users, 300 movies over 200 days) under the bundled
    config, ingested and applied into its own TOWER_HOME: (config path, DatasetConfig, store, training set)."""
    import numpy as np

    from tower_platform.datasets import ingest, load_dataset_config
    from tower_platform.features.store import FeastFeatureStore
    from tower_platform.features.training_set import build_training_set
    from tower_platform.paths import bundled_config, packaged_feature_repo
    from tower_platform.settings import get_settings

    root = tmp_path_factory.mktemp("tune").resolve()
    rng = np.random.default_rng(0)
    popularity = 1.0 / np.arange(1, 301) ** 0.8
    items = rng.choice(300, size=3_000, p=popularity / popularity.sum())
    users = rng.integers(0, 120, 3_000)
    times = 1_600_000_000 + np.sort(rng.integers(0, 200 * DAY, 3_000))
    pairs = {}
    for user, item, when in zip(users, items, times, strict=True):
        pairs.setdefault((int(user), int(item)), int(when))  # MovieLens rates each pair once
    data = root / "data"
    data.mkdir()
    (data / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{i},{1 + (u + i) % 5}.0,{t}\n" for (u, i), t in pairs.items()))
    (data / "movies.csv").write_text("movieId,title,genres\n" + "".join(
        f"{i},Movie {i} ({1950 + i % 60}),{GENRES[i % 6]}|{GENRES[(i * 7) % 6]}\n" for i in range(300)))
    path = root / "tiny.yaml"
    raw = yaml.safe_load(bundled_config().read_text(encoding="utf-8"))
    path.write_text(yaml.safe_dump({**raw, "name": "tiny", "source": "data"}, sort_keys=False))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOWER_HOME", str(root / "home"))
        for name in ("TOWER_DATABASE_URL", "TOWER_FEATURE_REPO"):
            patch.delenv(name, raising=False)
        get_settings.cache_clear()
        config = load_dataset_config(path)
        ingest(config, home_dir=root / "home")
        store = FeastFeatureStore(packaged_feature_repo(), home_dir=root / "home")
        store.apply()
        yield path, config, store, build_training_set(store, config)
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def stage(tiny_home):
    from tower_platform.pipeline.train import split_times

    _, _, store, training_set = tiny_home
    validation_time, _ = split_times(training_set)
    return ValidationStage.build(training_set, corpus=store.item_corpus(validation_time))


def _base(dataset) -> TowerConfig:
    from tower_platform.pipeline.config import tower_config_from

    return tower_config_from(dataset, overrides=TINY)


def _space_file(base: TowerConfig, folder: Path) -> Path:
    """SPACE as a file, the base config's temperature among the choices so that trial 0 measures it (whatever the
    shipped value)."""
    temperatures = sorted({base.loss.temperature, 0.1})
    space = folder / "space.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "loss.temperature": {"type": "categorical", "choices": temperatures}}))
    return space


def _set_args(settings: dict) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def test_a_tiny_tune_writes_a_config_that_train_accepts(tiny_home, tmp_path):
    config_path, dataset, _, _ = tiny_home
    base = _base(dataset)
    space, sets = _space_file(base, tmp_path), _set_args(TINY)
    out = tmp_path / "tuned" / "movies-tuned.yaml"
    result = _invoke("tune", "--config", str(config_path), "--trials", "2", "--space", str(space), "--study", "tiny",
                     "--out", str(out), "--json", *sets)
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert [t["state"] for t in payload["trials"]] == ["COMPLETE", "COMPLETE"]  # no pruning before 3 complete trials
    assert all(0.0 < t["value"] <= 1.0 and t["epochs"] == 2 for t in payload["trials"])
    # a new study measures the base config first: trial 0 holds its learning rate and temperature
    assert payload["trials"][0]["origin"] == "base config" and payload["trials"][1]["origin"] == "sampler"
    assert payload["trials"][0]["params"] == {"training.learning_rate": pytest.approx(base.training.learning_rate),
                                              "loss.temperature": base.loss.temperature}
    best = max(payload["trials"], key=lambda t: t["value"])
    assert payload["best"]["number"] == best["number"] and payload["out"] == str(out)

    written = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert written["training"]["training"]["learning_rate"] == pytest.approx(best["params"]["training.learning_rate"])
    assert written["training"]["loss"]["temperature"] == best["params"]["loss.temperature"]
    assert written["training"]["dat"]["enabled"] is True  # the original's training settings are kept
    original = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    assert {k: v for k, v in written.items() if k not in ("training", "source")} == {
        k: v for k, v in original.items() if k not in ("training", "source")}

    table = _invoke("tune", "--config", str(config_path), "--trials", "1", "--space", str(space), "--study", "tiny",
                    "--out", str(out), *sets)
    assert table.exit_code == 0, table.stderr  # the study resumes: a third trial, all three in the table
    assert "study tiny" in table.stdout and "val R@100" in table.stdout and table.stdout.count("complete") >= 2
    assert "(base)" in table.stdout
    import optuna

    from tower_platform.settings import get_settings

    resumed = optuna.load_study(study_name="tiny", storage=get_settings().tuning_storage_url)
    assert len(resumed.trials) == 3
    assert resumed.trials[2].params != resumed.trials[0].params  # the resumed sampler does not replay trial 0

    trained = _invoke("train", "--config", str(out), "--no-refit", "--json")
    assert trained.exit_code == 0, trained.stderr
    assert json.loads(trained.stdout)["metrics"]["validation"]["recall@100"] > 0.0


def test_a_trial_below_the_median_is_pruned_after_its_second_epoch(stage, tiny_home, tmp_path):
    import optuna

    base = _base(tiny_home[1])
    space = SearchSpace.from_mapping(SPACE, where="test")
    storage = f"sqlite:///{tmp_path / 'tuning.db'}"
    study = open_study("pruning", storage=storage, fingerprint=space.fingerprint(base), seed=0)
    distributions = {"training.learning_rate": optuna.distributions.FloatDistribution(1e-3, 3e-2, log=True),
                     "loss.temperature": optuna.distributions.CategoricalDistribution([0.05, 0.1])}
    for _ in range(3):  # three completed trials that reached an unattainable Recall@100 of 0.99 at both epochs
        study.add_trial(optuna.trial.create_trial(params={"training.learning_rate": 0.01, "loss.temperature": 0.05},
                                                  distributions=distributions, value=0.99,
                                                  intermediate_values={1: 0.99, 2: 0.99}))
    result = run_study(stage, base, space, study_name="pruning", storage=storage, trials=1)
    trial = result.trials[-1]
    # epoch 1 is the warm-up (never pruned); after epoch 2 its figure is below the median 0.99: pruned there
    assert trial["state"] == "PRUNED" and trial["epochs"] == 2 and trial["value"] < 0.99
    assert result.best["number"] < 3  # only the constructed trials completed


def test_tuning_never_uses_test_period_interactions(stage, tiny_home, tmp_path):
    _, dataset, store, training_set = tiny_home
    table = training_set.table
    assert pc.sum(pc.equal(table.column("split"), "test")).as_py() > 0
    assert set(stage.data.table.column("split").to_pylist()) == {"train", "validation"}
    assert pc.max(stage.data.table.column("event_timestamp")).as_py() < training_set.split.test_cutoff

    # Every test interaction now points at one item and one user: a study that read any test row would move.
    is_test = pc.equal(table.column("split"), "test")
    first_item = table.column("item_id")[0].as_py()
    changed = table.set_column(table.column_names.index("item_id"), "item_id",
                               pc.if_else(is_test, pa.scalar(first_item), table.column("item_id")))
    changed = changed.set_column(changed.column_names.index("user_id"), "user_id",
                                 pc.if_else(is_test, pa.scalar("someone else"), changed.column("user_id")))
    from tower_platform.pipeline.train import split_times

    validation_time, _ = split_times(training_set)
    other = ValidationStage.build(dataclasses.replace(training_set, table=changed),
                                  corpus=store.item_corpus(validation_time))
    base = _base(dataset).with_overrides({"training.epochs": 1})
    space = SearchSpace.from_mapping(SPACE, where="test")
    figures = [
        [t["value"] for t in run_study(s, base, space, study_name=name, storage=f"sqlite:///{tmp_path / name}.db",
                                       trials=1).trials]
        for name, s in (("original", stage), ("changed", other))
    ]
    assert figures[0] == figures[1] and all(v > 0 for v in figures[0])

    # and a training set whose test rows were relabelled as validation is refused, not tuned on
    relabelled = table.set_column(table.column_names.index("split"), "split",
                                  pc.if_else(is_test, pa.scalar("validation"), table.column("split")))
    from tower_platform.errors import InputError

    with pytest.raises(InputError, match="never see test rows"):
        ValidationStage.build(dataclasses.replace(training_set, table=relabelled),
                              corpus=store.item_corpus(validation_time))



def test_the_best_trial_of_a_constrained_study_is_the_best_that_meets_every_bound(tmp_path):
    import optuna

    from tower_platform.pipeline.tune import summarise

    space = SearchSpace.from_mapping(SPACE, where="test")
    study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tmp_path / 'constructed.db'}")
    distributions = {"training.learning_rate": optuna.distributions.FloatDistribution(1e-3, 3e-2, log=True),
                     "loss.temperature": optuna.distributions.CategoricalDistribution([0.05, 0.1])}
    for value, violations in ((0.9, [0.02]), (0.5, [-0.01]), (0.7, [0.0]), (0.95, None)):
        bounds = None if violations is None else {f"c{i}": v for i, v in enumerate(violations)}  # None: never measured
        study.add_trial(optuna.trial.create_trial(params={"training.learning_rate": 0.01, "loss.temperature": 0.05},
                                                  distributions=distributions, value=value, constraints=bounds))
    constrained = summarise(study, storage="s", space=space, constrained=True)
    assert constrained.best["value"] == 0.7  # 0.9 misses its bound by .02, 0.95 recorded none; a bound met exactly counts
    assert [t["feasible"] for t in constrained.trials] == [False, True, True, False]
    assert summarise(study, storage="s", space=space).best["value"] == 0.95  # unconstrained: the plain maximum


def test_constraints_parse_and_name_the_figures():
    from tower_platform.errors import ConfigError
    from tower_platform.pipeline.tune import Constraint

    floor = Constraint.parse("recall@100_tail >= 0.05")
    assert (floor.metric, floor.floor, floor.bound) == ("recall@100_tail", True, 0.05)
    assert floor.violation({"recall@100_tail": 0.07}) == pytest.approx(-0.02)
    ceiling = Constraint.parse("recall@100_head<=0.4")
    assert not ceiling.floor and ceiling.violation({"recall@100_head": 0.5}) == pytest.approx(0.1)
    assert str(floor) == "recall@100_tail>=0.05"
    with pytest.raises(ConfigError, match="'tail_recall' is not a validation figure; use one of recall@10, .*recall@100_tail"):
        Constraint.parse("tail_recall>=0.1")
    with pytest.raises(ConfigError, match="write METRIC>=VALUE or METRIC<=VALUE"):
        Constraint.parse("recall@100_tail>=lots")
    with pytest.raises(ConfigError, match="write METRIC>=VALUE"):
        Constraint.parse("recall@100_tail=0.1")


def test_a_tune_on_the_tail_with_a_recall_floor_records_both_figures_and_refuses_other_bounds(tiny_home, tmp_path):
    config_path, dataset, _, _ = tiny_home
    space, sets = _space_file(_base(dataset), tmp_path), _set_args({**TINY, "training.epochs": 1})
    out = tmp_path / "tail.yaml"
    common = ["tune", "--config", str(config_path), "--space", str(space), "--out", str(out), *sets]
    result = _invoke(*common, "--trials", "2", "--study", "tail", "--objective", "recall@100_tail",
                     "--constraint", "recall@100>=0", "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["metric"] == "validation recall@100_tail" and payload["constraints"] == ["recall@100>=0"]
    for trial in payload["trials"]:
        assert set(trial["figures"]) == {"recall@100", "recall@100_tail"} and trial["feasible"] is True
        assert trial["value"] == pytest.approx(trial["figures"]["recall@100_tail"])  # the objective is the tail
    assert payload["best"]["value"] == max(t["value"] for t in payload["trials"]) and out.exists()
    assert "subject to recall@100>=0" in out.read_text(encoding="utf-8").splitlines()[0]

    other = _invoke(*common, "--trials", "1", "--study", "tail", "--objective", "recall@100_tail",
                    "--constraint", "recall@100>=0.5")
    assert other.exit_code != 0 and "another base config, search space, objective, constraints or seeds" in other.stderr

    out.unlink()
    unmet = _invoke(*common, "--trials", "1", "--study", "unmet", "--constraint", "recall@100>=1.5")
    assert unmet.exit_code == 0, unmet.stderr
    assert "no completed trial meets recall@100>=1.5; nothing written" in unmet.stderr and not out.exists()
    assert "meets" in unmet.stdout and " no " in unmet.stdout  # the table's column says which trials met the bounds

    bad = _invoke(*common, "--trials", "1", "--objective", "hit_rate")
    assert bad.exit_code != 0 and "--objective: 'hit_rate' is not a validation figure" in bad.stderr


def test_a_trial_with_several_seeds_scores_their_mean(stage, tiny_home, tmp_path):
    from tower_platform.errors import ConfigError
    from tower_platform.pipeline.tune import Constraint

    base = _base(tiny_home[1]).with_overrides({"training.epochs": 1})
    space = SearchSpace.from_mapping(SPACE, where="test")
    storage = f"sqlite:///{tmp_path / 'seeds.db'}"
    floor = (Constraint.parse("recall@100>=0"),)
    result = run_study(stage, base, space, study_name="seeds", storage=storage, trials=1, seeds=2, constraints=floor)
    trial = result.trials[0]
    first, second = trial["seed_values"]
    assert first != second  # two trainings with different seeds
    assert trial["value"] == pytest.approx((first + second) / 2)
    assert trial["figures"]["recall@100"] == pytest.approx(trial["value"])  # the recorded figures are the means too
    import optuna

    (frozen,) = optuna.load_study(study_name="seeds", storage=storage).trials
    assert frozen.constraints == {"recall@100>=0": pytest.approx(-trial["value"])}  # what the TPE sampler reads
    alone = run_study(stage, base, space, study_name="one seed", storage=f"sqlite:///{tmp_path / 'one.db'}", trials=1)
    assert alone.trials[0]["value"] == pytest.approx(first) and alone.trials[0]["seed_values"] is None
    with pytest.raises(ConfigError, match="another base config, search space, objective, constraints or seeds"):
        run_study(stage, base, space, study_name="seeds", storage=storage, trials=1, seeds=3, constraints=floor)


def test_the_worst_category_figure_is_tuned_only_where_items_have_a_category(stage, tiny_home, tmp_path):
    import math

    from tower_platform.errors import ConfigError
    from tower_platform.pipeline.tune import Constraint

    base = _base(tiny_home[1]).with_overrides({"training.epochs": 1})
    space = SearchSpace.from_mapping(SPACE, where="test")
    floor = (Constraint.parse("worst_category_recall@100>=0"),)
    result = run_study(stage, base, space, study_name="worst", storage=f"sqlite:///{tmp_path / 'worst.db'}",
                       trials=1, objective="recall@100_tail", constraints=floor)
    worst = result.trials[0]["figures"]["worst_category_recall@100"]
    assert not math.isnan(worst) and 0.0 <= worst <= 1.0 and result.best is not None  # recorded, and the bound met

    blind = dataclasses.replace(stage, schema=dataclasses.replace(stage.schema, item_category=None))
    with pytest.raises(ConfigError, match="worst_category_recall@100 needs the items' category.*items.category"):
        run_study(blind, base, space, study_name="blind", storage=f"sqlite:///{tmp_path / 'blind.db'}", trials=1,
                  objective="worst_category_recall@100")
