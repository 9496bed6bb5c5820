"""The CLI edge turns a TowerError into one stderr line and the hierarchy's exit code."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from tower_platform.cli.main import EdgeGroup
from tower_platform.errors import ConflictError, NotFoundError, TowerError, UnavailableError

runner = CliRunner()


def _app_raising(exc: Exception) -> typer.Typer:
    app = typer.Typer(cls=EdgeGroup)

    @app.callback()
    def _root() -> None:
        pass

    @app.command()
    def boom() -> None:
        raise exc

    return app


def test_tower_error_becomes_exit_code_and_one_line_on_stderr():
    for exc, code in [
        (NotFoundError("Model 'movies' has no version 7; see `towerctl models list movies`."), 3),
        (ConflictError("Version 2 of 'movies' is not indexed; run `towerctl embeddings write movies --version 2`."), 4),
        (UnavailableError("Cannot reach the registry database; start it."), 5),
    ]:
        result = runner.invoke(_app_raising(exc), ["boom"])
        assert result.exit_code == code
        assert result.stderr.strip() == f"error: {exc.message}"
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


def test_towers_errors_are_mapped_once_at_the_edge():
    from towers.errors import ExportParityError, MissingColumnError, OnnxInputError, TowersArtifactError, TowersConfigError

    from tower_platform.errors import ConfigError, InputError, map_towers_error

    for exc, platform_cls, code in [
        (MissingColumnError("The training table lacks columns ['user_id']; add them."), InputError, 2),
        (OnnxInputError("ONNX tower query.onnx needs input 'genre' (string ['batch']); it is missing"), InputError, 2),
        (TowersConfigError("Training setting 'epoch' does not exist; the valid keys are training.epochs."), ConfigError, 6),
        (TowersArtifactError("Saved towers v1/towers.pt have format 1, expected 2; retrain or re-export it."), ConfigError, 6),
        (ExportParityError("ONNX tower query.onnx differs from the torch tower by 0.1 (> 1e-05)"), ConfigError, 6),
    ]:
        mapped = map_towers_error(exc)
        assert type(mapped) is platform_cls and mapped.message == str(exc) and mapped.__cause__ is exc
        result = runner.invoke(_app_raising(exc), ["boom"])
        assert result.exit_code == code
        assert result.stderr.strip() == f"error: {exc}"
        assert "Traceback" not in result.stderr
    assert map_towers_error(ValueError("not a towers error")) is None


def test_other_exceptions_are_not_swallowed():
    result = runner.invoke(_app_raising(RuntimeError("bug")), ["boom"])
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)


def test_exit_codes_are_distinct_per_family():
    from tower_platform import errors

    codes = {cls: cls.exit_code for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, TowerError)}
    assert codes[errors.MonitorBreachError] == 10
    assert codes[errors.SchemaOutOfDateError] == codes[errors.ConfigError] == 6
    assert len({codes[c] for c in (errors.TowerError, errors.UsageError, errors.NotFoundError, errors.ConflictError,
                                   errors.UnavailableError, errors.ConfigError, errors.MonitorBreachError)}) == 7


def test_towerctl_help_lists_the_nouns():
    from tower_platform.cli.main import app

    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for noun in ("data", "features"):
        assert noun in result.stdout
