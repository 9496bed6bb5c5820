"""Model and dataset names are checked once, where they enter (dataset config, CLI argument, spec.json), with one
full-match rule, before anything is written; every path the platform writes resolves under its root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tower_platform.cli.main import app
from tower_platform.datasets import load_dataset_config
from tower_platform.errors import ConfigError, InputError, UsageError
from tower_platform.paths import bundled_config
from tower_platform.settings import get_settings

runner = CliRunner()

BAD_NAMES = [
    "../../escaped",  # a path out of $TOWER_HOME/artifacts
    "/abs/path",  # an absolute path replaces the folder it is joined to
    "movies\n",  # re.match with `$` accepted a trailing newline
    "mo.vies",  # the registry refused dots only after training had written the export
    "a__v1",  # '__' separates a model from its version in collection names
    "Movies",  # case-insensitive file systems would fold it onto 'movies'
    "",
    "-movies",
    "x" * 64,
]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("TOWER_HOME", str(home))
    monkeypatch.delenv("TOWER_DATABASE_URL", raising=False)
    monkeypatch.delenv("TOWER_QDRANT__URL", raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


def _config_with(tmp_path: Path, **keys: str) -> Path:
    """The bundled config with top-level keys replaced (values written as JSON strings: newlines survive)."""
    bundled = bundled_config()
    lines = bundled.read_text(encoding="utf-8").splitlines()
    source = (bundled.parent / "../movielens-latest-small").resolve()
    out = []
    for line in lines:
        key = line.split(":", 1)[0]
        if key in keys:
            line = f"{key}: {json.dumps(keys[key])}"
        elif key == "source":
            line = f"source: {source}"
        out.append(line)
    path = tmp_path / "dataset.yaml"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("name", BAD_NAMES)
def test_the_dataset_config_refuses_a_bad_model_name_with_the_rule(tmp_path, name):
    path = _config_with(tmp_path, model=name)
    with pytest.raises(ConfigError) as caught:
        load_dataset_config(path)
    message = str(caught.value)
    assert f"{path}: key 'model'" in message
    assert "lowercase letters, digits, '-' or '_'" in message and "pattern" not in message
    assert "\n" not in message.replace(repr(name), "")


@pytest.mark.parametrize("name", ["../up", "Movie.Lens", "data\n"])
def test_the_dataset_config_refuses_a_bad_dataset_name(tmp_path, name):
    with pytest.raises(ConfigError, match="key 'name'"):
        load_dataset_config(_config_with(tmp_path, name=name))


def test_good_names_load(tmp_path):
    config = load_dataset_config(_config_with(tmp_path, model="shop-recs_2", name="retail-2024"))
    assert (config.model, config.name) == ("shop-recs_2", "retail-2024")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_the_registry_refuses_a_bad_model_name(registry_store, exported_model, tmp_path, name):
    artifacts = exported_model(tmp_path / "export")
    with pytest.raises(UsageError, match="lowercase letters"):
        registry_store.ensure_model(name)
    with pytest.raises(UsageError, match="lowercase letters"):
        registry_store.register_version(
            name, artifacts=artifacts, feature_service="movies_fs", features=[], training_config={},
            fingerprint="f", time_window=None, estimator_path=None, metrics={}, actor="t",
        )
    assert registry_store.list_models() == []


@pytest.mark.parametrize(
    "args",
    [
        ["recommend", "u1", "--model", "movies\n"],
        ["models", "show", "../../escaped"],
        ["models", "promote", "/abs/path", "1"],
        ["embeddings", "status", "mo.vies"],
        ["monitor", "history", "Movies"],
    ],
)
def test_the_cli_refuses_a_bad_model_argument_before_opening_anything(home, args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: The model name "), result.stderr
    assert "lowercase letters" in lines[0] and "Traceback" not in result.stderr
    assert not home.exists()  # no registry file, no Qdrant folder: nothing was opened


def test_register_refuses_an_export_whose_spec_names_a_bad_model(home, exported_model, tmp_path):
    export = tmp_path / "export"
    exported_model(export, model="../../escaped")
    result = runner.invoke(app, ["models", "register", str(export)])
    assert result.exit_code == 2, result.stderr
    assert "lowercase letters" in result.stderr and "Traceback" not in result.stderr
    assert not (home / "registry.db").exists()


def test_paths_the_platform_writes_stay_under_their_root(tmp_path):
    from tower_platform.paths import within

    root = tmp_path / "artifacts"
    assert within(root, "movies", "run-1") == (root / "movies" / "run-1").resolve()
    for parts in (("..", "escaped"), ("/abs/path",), ("movies", "../../x")):
        with pytest.raises(UsageError, match=f"outside {root.resolve()}"):
            within(root, *parts)
    (tmp_path / "elsewhere").mkdir()
    root.mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")  # a symlink out of the root is refused too
    with pytest.raises(UsageError, match="outside"):
        within(root, "link", "run-1")


def test_the_export_refuses_a_model_folder_outside_the_artifacts_root(tmp_path):
    from tower_platform.pipeline.export import export_version

    with pytest.raises(UsageError):
        export_version(None, None, None, model="../escaped", version=1, artifacts_dir=tmp_path / "artifacts")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_the_spec_reader_refuses_a_bad_model_name(exported_model, tmp_path):
    from tower_platform.registry.exported_model import read_exported_model

    exported_model(tmp_path / "export", model="Mo.vies")
    with pytest.raises((InputError, UsageError), match="lowercase letters"):
        read_exported_model(tmp_path / "export", model=None)
