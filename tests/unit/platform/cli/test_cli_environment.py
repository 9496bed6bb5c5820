"""Bad settings from the environment and bad `--set` values: one sentence on stderr, a documented exit code, no
traceback, nothing written (README "Exit codes")."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tower_platform.cli.main import app
from tower_platform.settings import get_settings

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("TOWER_HOME", str(home))
    for name in ("TOWER_DATABASE_URL", "TOWER_QDRANT__URL", "TOWER_QDRANT__TIMEOUT_S", "TOWER_QDRANT__API_KEY"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


def _one_sentence(args: list[str], code: int) -> str:
    get_settings.cache_clear()
    result = runner.invoke(app, args)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and lines[0].endswith(".")
    return lines[0]


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("TOWER_QDRANT__TIMEOUT_S", "abc", "a valid number"),
        ("TOWER_QDRANT__TIMEOUT_S", "-1", "greater than 0"),
        ("TOWER_QDRANT", "{not json", "JSON"),
    ],
)
def test_an_invalid_setting_in_the_environment_exits_6_naming_the_variable(home, monkeypatch, variable, value, problem):
    monkeypatch.setenv(variable, value)
    message = _one_sentence(["models", "list"], 6)
    assert variable in message and problem in message and "fix or unset it" in message
    assert not home.exists()


@pytest.mark.parametrize(
    "url",
    ["not a url", "postgresql://tower:s3cret@db.internal:notaport/registry", "mysql://tower:s3cret@db/registry"],
)
def test_an_unusable_database_url_exits_6_without_echoing_it(home, monkeypatch, url):
    monkeypatch.setenv("TOWER_DATABASE_URL", url)
    for args in (["models", "list"], ["db", "upgrade"]):
        message = _one_sentence(args, 6)
        assert "TOWER_DATABASE_URL" in message and "s3cret" not in message
    assert not home.exists()


@pytest.mark.parametrize("kind", ["dev-null", "file"])
def test_a_home_that_is_not_a_folder_exits_6(tmp_path, home, monkeypatch, kind):
    target = Path("/dev/null") if kind == "dev-null" else tmp_path / "a-file"
    if kind == "file":
        target.write_text("not a folder")
    monkeypatch.setenv("TOWER_HOME", str(target))
    for args in (["models", "list"], ["db", "upgrade"], ["data", "ingest"]):
        message = _one_sentence(args, 6)
        assert f"TOWER_HOME={target}" in message and "not a folder" in message
    if kind == "file":
        assert target.read_text() == "not a folder"


def test_a_home_that_cannot_be_created_exits_6(home, monkeypatch):
    target = Path("/proc/tower-home")  # nobody, root included, can create a folder in /proc
    monkeypatch.setenv("TOWER_HOME", str(target))
    message = _one_sentence(["db", "upgrade"], 6)
    assert f"TOWER_HOME={target}" in message and "cannot be written" in message
    assert not target.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_home_exits_6(home):
    home.mkdir()
    home.chmod(0o500)
    try:
        message = _one_sentence(["db", "upgrade"], 6)
        assert "cannot be written" in message
    finally:
        home.chmod(0o700)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("epochs=abc", "--set epochs=abc: training.epochs must be an int"),
        ("epochs=0", "--set epochs=0: training.epochs must be >= 1, got 0"),
        ("output_dim=0", "--set output_dim=0: towers.output_dim must be >= 1, got 0"),
        ("hidden_dims=[", "--set hidden_dims=[: the value is not valid YAML"),
        ("learning_rate=.inf", "--set learning_rate=.inf: training.learning_rate must be a finite number"),
        ("device=gpu", "--set device=gpu: training.device must be"),
        ("seed=-1", "--set seed=-1: training.seed must be >= 0"),
        ("output_dim=100000", "--set output_dim=100000: towers.output_dim must be <= 65536"),
        ("epoch=3", "--set epoch=3: training setting 'epoch' does not exist"),
    ],
)
def test_invalid_training_settings_are_refused_before_any_work(home, setting, expected):
    for command in (["train"], ["run", "--config", str(_bundled())]):
        message = _one_sentence([*command, "--set", setting], 2)
        assert message.startswith(f"error: {expected}"), message
    assert not home.exists()  # nothing ingested, no feature store, no registry, no artifacts


def _bundled() -> Path:
    from tower_platform.paths import bundled_config

    return bundled_config()
