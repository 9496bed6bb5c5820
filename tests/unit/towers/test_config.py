"""TowerConfig: nested sections, strict validation, dotted and leaf overrides, the round trip a checkpoint relies on."""

from __future__ import annotations

import pytest

from towers.config import TowerConfig, leaf_keys, resolve_key
from towers.errors import TowersConfigError, TowersError


def test_nested_dict_round_trips_and_missing_keys_take_defaults() -> None:
    config = TowerConfig.from_dict({"towers": {"hidden_dims": [32, 16]}, "training": {"epochs": 3}})
    assert config.towers.hidden_dims == (32, 16) and config.training.epochs == 3
    assert config.loss == TowerConfig().loss  # untouched sections keep their defaults
    assert TowerConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["towers"]["hidden_dims"] == [32, 16]  # YAML- and JSON-friendly


def test_overrides_take_dotted_keys_and_unambiguous_leaf_names() -> None:
    config = TowerConfig().with_overrides({"training.epochs": 1, "max_steps": 15, "ssl.weight": 0.5})
    assert (config.training.epochs, config.training.max_steps, config.ssl.weight) == (1, 15, 0.5)
    assert resolve_key("epochs") == ("training", "epochs")
    assert resolve_key("loss.temperature") == ("loss", "temperature")
    # `temperature` is a key of both loss and ssl: refused, naming both
    with pytest.raises(TowersConfigError, match="'temperature' is ambiguous; use one of loss.temperature, ssl.temperature"):
        TowerConfig().with_overrides({"temperature": 0.1})
    with pytest.raises(TowersConfigError, match="'epoch' does not exist; the valid keys are .*training.epochs"):
        TowerConfig().with_overrides({"epoch": 1})
    assert len(leaf_keys()) == len(set(leaf_keys()))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"epochs": 3}, "no section 'epochs'"),  # a flat key where a section belongs
        ({"training": {"epoch": 3}}, "section 'training' has no key 'epoch'"),
        ({"training": "fast"}, "section 'training' must be a mapping"),
        ({"training": {"epochs": "3"}}, "training.epochs must be an int, got '3'"),
        ({"training": {"epochs": True}}, "training.epochs must be an int"),
        ({"dat": {"enabled": "yes"}}, "dat.enabled must be a bool"),
        ({"towers": {"hidden_dims": 256}}, "towers.hidden_dims must be a list"),
        ({"loss": {"function": "hinge"}}, "loss.function must be one of \\['softmax', 'bce'\\]"),
        ({"loss": {"temperature": -1}}, "loss.temperature must be > 0, got -1.0"),
        ({"loss": {"softmax_matmul": "float16"}}, "loss.softmax_matmul must be one of \\['auto', 'float32', 'bfloat16'\\]"),
        ({"loss": {"function": "bce", "queue_size": 8}}, "loss.queue_size must be 0 unless"),
        ({"ssl": {"value_dropout": 1.5}}, "ssl.value_dropout must be in \\[0, 1\\)"),
        ({"training": {"optimizer": "sgd"}}, "training.optimizer must be one of"),
    ],
)
def test_bad_keys_and_values_are_named(data: dict, message: str) -> None:
    with pytest.raises(TowersConfigError, match=message) as caught:
        TowerConfig.from_dict(data)
    assert isinstance(caught.value, TowersError) and isinstance(caught.value, ValueError)


def test_integers_are_accepted_for_floats_and_null_for_optional_values() -> None:
    config = TowerConfig.from_dict({"training": {"learning_rate": 1, "max_steps": None, "grad_clip": None}})
    assert config.training.learning_rate == 1.0 and isinstance(config.training.learning_rate, float)
    assert config.training.max_steps is None and config.training.grad_clip is None


def test_needs_corpus_follows_the_sections() -> None:
    assert not TowerConfig().needs_corpus
    assert TowerConfig().with_overrides({"uniform_negatives": 4}).needs_corpus
    assert TowerConfig().with_overrides({"loss.function": "bce"}).needs_corpus
    assert TowerConfig().with_overrides({"ssl.weight": 1.0}).needs_corpus  # SSL samples the corpus by default
    assert not TowerConfig().with_overrides({"ssl.weight": 1.0, "ssl.sampling": "training"}).needs_corpus


def test_item_features_from_the_corpus_replace_the_rows_own() -> None:
    import pyarrow as pa

    from towers.features.schema import FeatureSchema, FeatureSpec
    from towers.training import with_item_features

    schema = FeatureSchema(query=(), item=(FeatureSpec("count", "item", "numeric"),
                                           FeatureSpec("tags", "item", "multi_categorical", max_len=2)))
    train = pa.table({"user_id": ["u", "u", "v"], "item_id": ["a", "b", "z"], "count": [1.0, 2.0, 3.0],
                      "tags": [["x"], ["y"], ["w"]]})
    corpus = pa.table({"item_id": ["b", "a"], "count": [20.0, 10.0], "tags": [["q"], None]})
    event = with_item_features(train, corpus, schema=schema, config=TowerConfig())
    assert event.column("count").to_pylist() == [1.0, 2.0, 3.0]  # the rows' own (as of each event)
    config = TowerConfig().with_overrides({"encoders.item_features": "corpus"})
    replaced = with_item_features(train, corpus, schema=schema, config=config)
    assert replaced.column("count").to_pylist() == [10.0, 20.0, 3.0]  # "z" is not in the corpus: kept
    assert replaced.column("tags").to_pylist() == [None, ["q"], ["w"]]
    with pytest.raises(TowersConfigError, match="encoders.item_features must be one of"):
        TowerConfig.from_dict({"encoders": {"item_features": "latest"}})
