"""Output helpers shared by the commands: results to stdout (rich tables or JSON), diagnostics to stderr."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _width(stream) -> int | None:
    """A terminal sizes itself; piped output (logs, CI, files) gets room for the wide report tables."""
    if stream.isatty():
        return None
    return int(os.environ.get("COLUMNS", "200"))


out_console = Console(soft_wrap=True, width=_width(sys.stdout))
err_console = Console(stderr=True, soft_wrap=True, width=_width(sys.stderr))


def _default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    return str(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def strict_json(payload: Any) -> Any:
    """``payload`` as plain JSON data: dates, paths and numpy values converted, NaN/inf as None."""
    return _finite(json.loads(json.dumps(payload, default=_default)))


def print_json(payload: Any) -> None:
    """Print strict JSON (NaN/inf become null) on stdout."""
    text = json.dumps(strict_json(payload), indent=2, sort_keys=False)
    typer_echo(text)


def typer_echo(text: str) -> None:
    import typer

    typer.echo(text)


def format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    highlight_rows: set[int] | None = None,
) -> None:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col)
    for i, row in enumerate(rows):
        style = "bold red" if highlight_rows and i in highlight_rows else None
        table.add_row(*(format_cell(v) for v in row), style=style)
    out_console.print(table)


def print_mapping(title: str, mapping: Mapping[str, Any]) -> None:
    print_table(title, ["field", "value"], [(k, v) for k, v in mapping.items()])
