"""`towerctl tune` without training: the search space, its checks, the study's identity, the tuned config file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tower_platform.errors import ConfigError
from tower_platform.pipeline.search_space import SearchSpace, default_space
from tower_platform.pipeline.tune import Constraint, epoch_score, open_study, tuned_config_text, write_tuned_config
from towers.config import TowerConfig

runner = CliRunner()


def test_a_bad_space_key_is_refused_naming_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError) as caught:
        SearchSpace.from_mapping({"training.learning_rat": {"type": "float", "low": 1e-4, "high": 1e-2}},
                                 where="Search space s.yaml")
    message = caught.value.message
    assert "Search space s.yaml" in message and "'training.learning_rat'" in message
    assert "training.learning_rate" in message and "loss.temperature" in message  # the valid keys are named


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"type": "float", "low": 0.1, "high": 0.01}, "must be smaller than high"),
        ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "needs low > 0"),
        ({"type": "categorical", "choices": []}, "choices"),
        ({"type": "uniform", "low": 0, "high": 1}, "type"),
        ({"type": "int", "low": 1, "high": 4, "steps": 2}, "steps"),
    ],
)
def test_a_bad_parameter_is_refused_naming_its_key(spec, fragment):
    with pytest.raises(ConfigError, match="'epochs'") as caught:
        SearchSpace.from_mapping({"epochs": spec}, where="Search space s.yaml")
    assert fragment in caught.value.message


def test_bounds_must_be_valid_values_of_the_key():
    space = SearchSpace.from_mapping({"training.epochs": {"type": "int", "low": 0, "high": 3}}, where="s")
    with pytest.raises(ConfigError, match=r"'training.epochs' value 0 is not valid.*training.epochs must be >= 1"):
        space.check_against(TowerConfig(), where="Search space s.yaml")


def test_keys_resolve_to_dotted_names_and_a_space_section_is_accepted():
    space = SearchSpace.from_mapping({"space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                                                "towers.output_dim": {"type": "categorical", "choices": [16, 32]}}},
                                     where="s")
    assert list(space.parameters) == ["training.learning_rate", "towers.output_dim"]
    with pytest.raises(ConfigError, match="a second time"):
        SearchSpace.from_mapping({"epochs": {"type": "int", "low": 1, "high": 3},
                                  "training.epochs": {"type": "int", "low": 1, "high": 3}}, where="s")


def test_the_default_space_searches_the_components_the_config_switches_on():
    plain = default_space(TowerConfig())
    assert {"training.learning_rate", "loss.temperature", "towers.embedding_dim", "towers.output_dim",
            "training.weight_decay", "training.epochs", "loss.uniform_negatives"} == set(plain.parameters)
    shipped = default_space(TowerConfig().with_overrides({"ssl.weight": 1.0, "dat.enabled": True,
                                                          "dat.category_weight": 100.0}))
    assert {"ssl.weight", "dat.query_mimic_weight", "dat.item_mimic_weight", "dat.category_weight"} <= set(shipped.parameters)
    shipped.check_against(TowerConfig(), where="default")  # every bound is a valid value
    full = TowerConfig().with_overrides({"loss.negatives": "full_corpus"})
    full_space = default_space(full)
    assert "loss.uniform_negatives" not in full_space.parameters  # every item is already a candidate
    full_space.check_against(full, where="default")


def test_the_base_point_holds_the_base_values_that_lie_inside_the_space():
    base = TowerConfig().with_overrides({"training.learning_rate": 0.003, "training.epochs": 10,
                                         "towers.output_dim": 64, "loss.temperature": 0.05})
    space = SearchSpace.from_mapping({
        "training.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "training.epochs": {"type": "int", "low": 2, "high": 8},  # 10 lies outside: the sampler draws it
        "towers.output_dim": {"type": "categorical", "choices": [32, 64]},
        "loss.temperature": {"type": "categorical", "choices": [0.1, 0.2]},  # 0.05 is no choice: drawn
        "towers.embedding_dim": {"type": "int", "low": 16, "high": 128, "step": 32},  # 16, 48, 80, 112: 32 is off-step
    }, where="test")
    assert space.base_point(base.with_overrides({"towers.embedding_dim": 32})) == {
        "training.learning_rate": 0.003, "towers.output_dim": 64}
    assert space.base_point(base.with_overrides({"towers.embedding_dim": 48}))["towers.embedding_dim"] == 48


def test_a_study_resumes_only_with_the_same_config_and_space(tmp_path):
    storage = f"sqlite:///{tmp_path / 'tuning.db'}"
    base = TowerConfig()
    space = default_space(base)
    first = open_study("s", storage=storage, fingerprint=space.fingerprint(base), seed=0)
    again = open_study("s", storage=storage, fingerprint=space.fingerprint(base), seed=0)
    assert first.study_name == again.study_name == "s"
    other = base.with_overrides({"training.batch_size": 256})
    with pytest.raises(ConfigError, match="another base config, search space, objective, constraints or seeds"):
        open_study("s", storage=storage, fingerprint=space.fingerprint(other), seed=0)


def _dataset(folder: Path):
    from tower_platform.datasets.config import load_dataset_config
    from tower_platform.paths import bundled_config

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "movies.yaml"
    raw = yaml.safe_load(bundled_config().read_text(encoding="utf-8"))
    raw["source"] = "data"
    (folder / "data").mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_dataset_config(path), raw


def test_the_tuned_config_keeps_every_other_section_and_reads_the_same_data(tmp_path):
    from tower_platform.datasets.config import load_dataset_config
    from tower_platform.pipeline.config import tower_config_from

    dataset, raw = _dataset(tmp_path / "original")
    out = tmp_path / "elsewhere" / "tuned.yaml"
    write_tuned_config(dataset, settings={"training.learning_rate": 0.004, "towers.output_dim": 32, "epochs": 3},
                       out=out, header="tuned\nby a test")
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# tuned\n# by a test\n")
    written = yaml.safe_load(text)
    assert written["training"]["training"] == {**raw["training"]["training"], "learning_rate": 0.004, "epochs": 3}
    assert written["training"]["towers"] == {**raw["training"]["towers"], "output_dim": 32}
    assert written["training"]["dat"] == raw["training"]["dat"]
    for section in ("name", "model", "interactions", "items", "features", "split"):
        assert written[section] == raw[section]
    tuned = load_dataset_config(out)
    assert tuned.base_dir() == dataset.base_dir()  # the relative source now points at the same folder
    config = tower_config_from(tuned)
    assert (config.training.learning_rate, config.towers.output_dim, config.training.epochs) == (0.004, 32, 3)
    assert not list(out.parent.glob(".*tmp*"))  # written by a temp file and a rename
    # beside the original, relative paths stay relative
    assert yaml.safe_load(tuned_config_text(dataset, settings={}, out=tmp_path / "original" / "t.yaml",
                                            header="h"))["source"] == "data"


def test_cli_dry_run_prints_the_space_and_refuses_a_bad_key(tmp_path, monkeypatch):
    from tower_platform.cli.main import app
    from tower_platform.settings import get_settings

    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        space = tmp_path / "space.yaml"
        space.write_text("training.learning_rate: {type: float, low: 0.001, high: 0.01, log: true}\n")
        result = runner.invoke(app, ["tune", "--space", str(space), "--dry-run", "--json"])
        assert result.exit_code == 0, result.stderr
        assert '"training.learning_rate"' in result.stdout and "tune-movielens-latest-small" in result.stdout
        space.write_text("towers.hidden: {type: categorical, choices: [[64]]}\n")
        bad = runner.invoke(app, ["tune", "--space", str(space), "--dry-run"])
        assert bad.exit_code == 6
        assert "'towers.hidden'" in bad.stderr and "towers.hidden_dims" in bad.stderr
        assert not (tmp_path / "home" / "tuning.db").exists()  # a dry run writes nothing
    finally:
        get_settings.cache_clear()


def test_the_pruner_takes_its_median_over_the_trials_that_met_every_bound(tmp_path):
    import optuna

    from tower_platform.pipeline.pruning import FeasibleMedianPruner

    def study_with(pruner):
        study = optuna.create_study(direction="maximize", pruner=pruner)
        distribution = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
        for value, violation in ((0.50, -0.1), (0.52, -0.1), (0.48, -0.1), (0.99, 0.2), (0.98, 0.2), (0.97, 0.2)):
            study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=distribution, value=value,
                                                      intermediate_values={1: value, 2: value},
                                                      constraints={"recall@100>=0.6": violation}))
        trial = study.ask({"x": distribution["x"]})
        trial.report(0.6, 2)  # above the feasible trials' median .50, below the median of all six (.735)
        return trial.should_prune()

    assert study_with(optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2))  # the infeasible count
    assert not study_with(FeasibleMedianPruner(n_startup_trials=3, n_warmup_steps=2))
    below = optuna.create_study(direction="maximize", pruner=FeasibleMedianPruner(n_startup_trials=3, n_warmup_steps=2))
    for value in (0.5, 0.52, 0.48):  # a study without bounds: every completed trial counts
        below.add_trial(optuna.trial.create_trial(value=value, intermediate_values={2: value}))
    running = below.ask()
    running.report(0.4, 2)
    assert running.should_prune()


def test_a_constrained_trial_keeps_the_best_epoch_that_meets_its_bounds():
    # a worst-category objective peaks at epoch 2, before Recall@100 clears its floor at epoch 4
    epochs = [{"worst_category_recall@100": w, "recall@100": r}
              for w, r in [(0.30, 0.55), (0.34, 0.58), (0.31, 0.60), (0.32, 0.62), (0.29, 0.63)]]
    floor = (Constraint.parse("recall@100>=0.61"),)
    scores = [epoch_score(f, "worst_category_recall@100", floor) for f in epochs]
    assert max(range(5), key=scores.__getitem__) == 3  # epoch 4: the best objective among the epochs above the floor
    assert scores[0] < scores[1] < scores[2] < 0 <= scores[4] < scores[3] == 0.32  # nearing the floor is progress
    unconstrained = [epoch_score(f, "worst_category_recall@100") for f in epochs]
    assert max(range(5), key=unconstrained.__getitem__) == 1 and unconstrained[1] == 0.34
