"""A dataset config's `training:` section mirrors TowerConfig's sections; `--set` takes dotted or unambiguous keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from tower_platform.datasets import load_dataset_config
from tower_platform.errors import ConfigError, UsageError
from tower_platform.pipeline.config import tower_config_from
from tower_platform.paths import bundled_config


def test_bundled_training_sections_parse_into_tower_config():
    small = tower_config_from(load_dataset_config(bundled_config()))
    assert (small.training.epochs, small.training.patience) == (10, 2)
    assert small.dat.enabled and small.dat.category_weight == 25.5 and small.ssl.weight == 2.25  # tune's result
    tuned = (small.training.learning_rate, small.training.weight_decay, small.loss.temperature)
    assert tuned == (0.0045, 6.37e-7, 0.0374)
    assert small.towers.senet and small.loss.negatives == "full_corpus" and small.loss.uniform_negatives == 0
    ml100k = tower_config_from(load_dataset_config(bundled_config("movielens-100k")))
    assert ml100k.dat.enabled and not ml100k.towers.senet and ml100k.loss.negatives == "full_corpus"
    assert (ml100k.training.batch_size, ml100k.encoders.min_count, ml100k.dat.item_mimic_weight) == (512, 4, 1.98)
    for config in (small, ml100k):  # a transformer over the history, item features from the corpus
        assert config.encoders.item_features == "corpus"
        (name, sequence), = config.encoders.sequences
        assert (name, sequence.pooling, sequence.layers, sequence.width) == ("recent_items", "last", 1, 32)


def test_overrides_take_dotted_keys_and_unambiguous_names():
    dataset = load_dataset_config(bundled_config())
    config = tower_config_from(dataset, overrides={"training.epochs": 1, "max_steps": 15, "hidden_dims": [32]})
    assert (config.training.epochs, config.training.max_steps, config.towers.hidden_dims) == (1, 15, (32,))
    assert config.dat.enabled  # the file's own settings stay
    # an override comes from the command line (--set): a UsageError (exit 2) naming it as typed
    with pytest.raises(UsageError, match="--set temperature=0.1: training setting 'temperature' is ambiguous; use one "
                                         "of loss.temperature, ssl.temperature"):
        tower_config_from(dataset, overrides={"temperature": 0.1}, written_as={"temperature": "temperature=0.1"})
    with pytest.raises(UsageError, match="--set epoch=1: training setting 'epoch' does not exist; the valid keys are "
                                         ".*training.epochs"):
        tower_config_from(dataset, overrides={"epoch": 1})


def test_overrides_that_only_hold_together_are_accepted_in_any_order():
    # the bundled config's category discount belongs to the full softmax: sampled negatives need it at 0 as well
    dataset = load_dataset_config(bundled_config())
    assert tower_config_from(dataset).loss.category_discount > 0
    for overrides in ({"loss.negatives": "sampled", "loss.category_discount": 0.0},
                      {"loss.category_discount": 0.0, "loss.negatives": "sampled"}):
        config = tower_config_from(dataset, overrides=overrides)
        assert (config.loss.negatives, config.loss.category_discount) == ("sampled", 0.0)
    with pytest.raises(UsageError, match="--set loss.negatives=sampled: loss.category_discount must be 0 unless "
                                         "loss.negatives is 'full_corpus'"):
        tower_config_from(dataset, overrides={"training.epochs": 2, "loss.negatives": "sampled"},
                          written_as={"loss.negatives": "loss.negatives=sampled"})


def _config_with_training(tmp_path: Path, training: str) -> Path:
    """The bundled config with its `training:` section replaced, its tables read from the bundled folder."""
    bundled = bundled_config()
    text = bundled.read_text(encoding="utf-8").split("\ntraining:")[0]
    text = text.replace("source: ../movielens-latest-small", f"source: {(bundled.parent / '../movielens-latest-small').resolve()}")
    path = tmp_path / "dataset.yaml"
    path.write_text(f"{text}\ntraining: {training}\n", encoding="utf-8")
    return path


def test_a_flat_or_mistyped_training_section_is_named_with_its_file(tmp_path: Path):
    path = _config_with_training(tmp_path, "{epochs: 3}")
    with pytest.raises(ConfigError, match=f"{path}: section 'training' is invalid: TowerConfig has no section 'epochs'"):
        tower_config_from(load_dataset_config(path))
    path = _config_with_training(tmp_path, "{loss: {temperature: -1}}")
    with pytest.raises(ConfigError, match="loss.temperature must be > 0"):
        tower_config_from(load_dataset_config(path))
