"""Dataset configs: the bundled files load, unknown sections are kept, bad keys are named with their file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tower_platform.datasets import load_dataset_config
from tower_platform.errors import ConfigError, InputError
from tower_platform.paths import bundled_config


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dataset.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_bundled_latest_small_points_at_the_bundled_files():
    config = load_dataset_config(bundled_config())
    assert config.name == "movielens-latest-small"
    assert config.adapter == "movielens-latest"
    assert (config.source / "ratings.csv").is_file()
    assert config.split.method == "global_time"
    assert (config.split.validation_quantile, config.split.test_quantile) == (0.8, 0.9)


def test_bundled_100k_needs_a_source_on_the_command_line():
    config = load_dataset_config(bundled_config("movielens-100k"))
    assert config.source is None
    assert config.adapter == "movielens-100k"


def test_unknown_sections_are_kept_raw_and_source_resolves_next_to_the_file(tmp_path):
    path = _write(
        tmp_path,
        "name: d\nadapter: movielens-latest\nmodel: m\nsource: data\n"
        "training: {epochs: 3}\nmonitor: {threshold: 0.1}\n"
        "features: {recent_items: 5, ttl_days: {user_history: 2}, kinds: {item_profile__release_year: categorical}}\n"
        "split: {method: leave_last_out}\n",
    )
    config = load_dataset_config(path)
    assert config.extra == {"training": {"epochs": 3}, "monitor": {"threshold": 0.1}}
    assert config.source == (tmp_path / "data").resolve()
    assert config.features.recent_items == 5
    assert config.features.ttl_seconds("user_history") == 2 * 86400
    assert config.features.ttl_seconds("item_profile") == 0
    assert config.features.kinds == {"item_profile__release_year": "categorical"}
    assert config.split.method == "leave_last_out"


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("adapter: a\nmodel: m\n", "name"),
        ("name: d\nadapter: a\nmodel: m\nfeatures: {recent_itemz: 3}\n", "features.recent_itemz"),
        ("name: d\nadapter: a\nmodel: m\nfeatures: {recent_items: 0}\n", "features.recent_items"),
        ("name: d\nadapter: a\nmodel: m\nfeatures: {ttl_days: {user_history: -1}}\n", "features.ttl_days.user_history"),
        ("name: d\nadapter: a\nmodel: m\nfeatures: {kinds: {age: numeric}}\n", "features.kinds.age"),
        ("name: d\nadapter: a\nmodel: m\nsplit: {method: random}\n", "split.method"),
        ("name: d\nadapter: a\nmodel: m\nsplit: {validation_quantile: 0.95}\n", "split.validation_quantile"),
        ("name: d\nadapter: a\nmodel: m\nweight: clicks\n", "weight"),
    ],
)
def test_bad_keys_name_the_file_and_the_key(tmp_path, body, key):
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        load_dataset_config(path)
    assert str(path) in str(caught.value)
    assert f"'{key}'" in str(caught.value)


def test_missing_file_and_broken_yaml(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_dataset_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_dataset_config(_write(tmp_path, "name: [unclosed\n"))
