"""Command-line parameters shared by several nouns, checked while the command line is parsed (before anything is
opened or written): model names follow :mod:`tower_platform.naming`'s one rule."""

from __future__ import annotations

import typer

from tower_platform.naming import check_model_name


def checked_model_name(value: str | None) -> str | None:
    """A typer callback: the model name unchanged, or UsageError (exit 2) naming the rule."""
    return None if value is None else check_model_name(value)


MODEL_ARGUMENT = typer.Argument(..., help="Model name, e.g. movies.", callback=checked_model_name)


def model_option(help: str) -> typer.models.OptionInfo:
    """``--model NAME``, checked like :data:`MODEL_ARGUMENT`."""
    return typer.Option(None, "--model", help=help, callback=checked_model_name)
