"""Session fixtures for the feature pipeline on the bundled MovieLens latest-small dataset.

Each step runs once per test session and the next fixture builds on the previous one:

    tower_home        a temporary $TOWER_HOME; TOWER_HOME is set in the environment and get_settings()'s cache is
                      cleared for the session, so CLI commands and settings see it too
    bundled_dataset   the bundled DatasetConfig (movielens-latest-small)
    ingested          the IngestReport after `ingest` into tower_home/sources
    feature_store     a FeastFeatureStore on the packaged feature repo, applied and materialized (read-only use!)
    training_set      the audited TrainingSet of the bundled dataset

Tests that change sources or Feast state must make their own home (see ``make_feature_home``), never touch these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tower_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary TOWER_HOME for the whole session (exported, settings cache cleared before and after)."""
    from tower_platform.settings import get_settings

    home = tmp_path_factory.mktemp("tower_home").resolve()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOWER_HOME", str(home))
        get_settings.cache_clear()
        yield home
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def bundled_dataset():
    from tower_platform.datasets import load_dataset_config
    from tower_platform.paths import bundled_config

    return load_dataset_config(bundled_config())


@pytest.fixture(scope="session")
def ingested(tower_home: Path, bundled_dataset):
    """The bundled dataset ingested into tower_home (IngestReport)."""
    from tower_platform.datasets import ingest

    return ingest(bundled_dataset, home_dir=tower_home)


@pytest.fixture(scope="session")
def feature_store(tower_home: Path, ingested):
    """FeastFeatureStore on the packaged repo over tower_home: applied, and materialized over all data."""
    from tower_platform.features.materialization import apply_and_materialize
    from tower_platform.paths import packaged_feature_repo

    store, _, _ = apply_and_materialize(repo_dir=packaged_feature_repo(), home_dir=tower_home)
    return store


@pytest.fixture(scope="session")
def training_set(feature_store, bundled_dataset):
    """The audited training set of the bundled dataset (built once)."""
    from tower_platform.features.training_set import build_training_set

    return build_training_set(feature_store, bundled_dataset)


def tiny_movielens_config(config_extra: str = "") -> str:
    """The bundled latest-small config as a dataset 'tiny' with source data/, top-level sections merged from YAML."""
    import yaml

    from tower_platform.paths import bundled_config

    config = yaml.safe_load(bundled_config().read_text(encoding="utf-8"))
    config.update(name="tiny", source="data")
    for key, value in (yaml.safe_load(config_extra) or {}).items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return yaml.safe_dump(config, sort_keys=False)


@pytest.fixture
def make_feature_home(tmp_path: Path) -> Callable[..., tuple[Path, object]]:
    """Factory: write a tiny MovieLens-format dataset and its config, ingest it into a fresh home and apply.

    make_feature_home(ratings=[(user, item, rating, unix_seconds), ...], movies=[(item, title, "A|B"), ...],
                      config_extra="features: {ttl_days: {user_history: 1}}")  ->  (home_dir, FeastFeatureStore)
    """
    from tower_platform.datasets import ingest, load_dataset_config
    from tower_platform.features.store import FeastFeatureStore
    from tower_platform.paths import packaged_feature_repo

    def _make(*, ratings, movies, config_extra: str = "", repo_dir: Path | None = None):
        data = tmp_path / "data"
        data.mkdir(exist_ok=True)
        (data / "ratings.csv").write_text(
            "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ratings)
        )
        (data / "movies.csv").write_text("movieId,title,genres\n" + "".join(f"{i},{t},{g}\n" for i, t, g in movies))
        config_path = tmp_path / "tiny.yaml"
        config_path.write_text(tiny_movielens_config(config_extra))
        config = load_dataset_config(config_path)
        home = tmp_path / "home"
        ingest(config, home_dir=home)
        store = FeastFeatureStore(repo_dir or packaged_feature_repo(), home_dir=home)
        store.apply()
        return config, store

    return _make

