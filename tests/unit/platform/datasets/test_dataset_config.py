"""Dataset configs: the bundled files load, unknown keys are refused, problems name the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tower_platform.datasets import load_dataset_config
from tower_platform.errors import ConfigError, InputError
from tower_platform.paths import bundled_config

MINIMAL = """name: d
model: m
source: data
interactions: {path: events.csv, user_id: u, item_id: i, timestamp: {column: t}}
items:
  path: items.csv
  id: i
  attributes: {shelf: {kind: categorical}}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dataset.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_bundled_latest_small_points_at_the_bundled_files():
    config = load_dataset_config(bundled_config())
    assert config.name == "movielens-latest-small"
    assert config.adapter == "tabular"
    assert (config.base_dir() / config.interactions.path).is_file()
    assert config.items.category == "category" and config.items.display == "title"
    assert config.split.method == "global_time"
    assert (config.split.validation_quantile, config.split.test_quantile) == (0.8, 0.9)


def test_bundled_100k_needs_a_source_on_the_command_line(tmp_path):
    config = load_dataset_config(bundled_config("movielens-100k"))
    assert config.source is None
    assert config.base_dir(tmp_path) == tmp_path.resolve()
    assert set(config.users.attributes) == {"age", "gender", "occupation", "zip_prefix"}


def test_minimal_config_is_implicit_with_unit_weights_and_keeps_owned_sections(tmp_path):
    path = _write(tmp_path, MINIMAL + "training: {epochs: 3}\nmonitor: {threshold: 0.1}\nsplit: {method: leave_last_out}\n"
                  "features: {ttl_days: {user_history: 2}, kinds: {item_profile__shelf: categorical}}\n")
    config = load_dataset_config(path)
    assert config.extra == {"training": {"epochs": 3}, "monitor": {"threshold": 0.1}}
    assert config.base_dir() == (tmp_path / "data").resolve()
    assert config.interactions.rating is None and config.interactions.weight == 1.0
    assert config.interactions.timestamp.format == "epoch_s"
    assert config.features.ttl_seconds("user_history") == 2 * 86400
    assert config.features.ttl_seconds("item_profile") == 0
    assert config.split.method == "leave_last_out"


@pytest.mark.parametrize(
    ("body", "key", "words"),
    [
        ("model: m\n", "name", "required"),
        (MINIMAL + "colour: red\n", "colour", "unknown"),
        (MINIMAL.replace("kind: categorical", "kind: categorical, colour: red"), "items.attributes.shelf.colour", "unknown"),
        (MINIMAL.replace("kind: categorical", "kind: text"), "items.attributes.shelf.kind", "categorical"),
        (MINIMAL.replace("kind: categorical", "kind: multi_categorical, separator: '|'"), "items.attributes.shelf", "length"),
        (MINIMAL.replace("kind: categorical", "kind: numeric, separator: '|'"), "items.attributes.shelf", "separator"),
        (MINIMAL + "  category: brand\n", "items.category", "brand"),
        (MINIMAL.replace("{column: t}", "{column: t, format: fortnightly}"), "interactions.timestamp.format", "strptime"),
        (MINIMAL + "features: {query: {m: {type: mean, column: price}}}\n", "features.query.m.column", "price"),
        (MINIMAL + "features: {query: {r: {type: recent_items}}}\n", "features.query.r", "length"),
        (MINIMAL + "features: {ttl_days: {user_history: -1}}\n", "features.ttl_days", "days >= 0"),
        (MINIMAL + "features: {kinds: {age: numeric}}\n", "features.kinds", "view__feature"),
        (MINIMAL + "split: {method: random}\n", "split.method", "global_time"),
        (MINIMAL + "split: {validation_quantile: 0.95}\n", "split", "smaller"),
        (MINIMAL.replace("path: events.csv,", "path: events.csv, header: false,"), "interactions", "columns"),
    ],
)
def test_bad_keys_name_the_file_and_the_key(tmp_path, body, key, words):
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        load_dataset_config(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"'{key}'" in message
    assert words in message
    assert caught.value.exit_code == 6


def test_missing_file_and_broken_yaml(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_dataset_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_dataset_config(_write(tmp_path, "name: [unclosed\n"))
