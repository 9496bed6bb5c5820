"""``towerctl models show``: one version laid out for a person (its ``--json`` is the registry's record as is).

Sections: overview, serving (the vector store's alias and any problem), artifacts, collection, features (grouped by
feature view), metrics (one column per evaluation stage) and training config (one row per setting, dotted paths).
Values are written out plainly: numbers rounded, lists joined, nested mappings flattened, never a Python repr.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from tower_platform.cli.output import out_console

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.registry.entities import ModelVersion
    from tower_platform.registry.serving_state import ServingState

FEATURE_VIEW_SEPARATOR = "__"  # Feast's full feature names: <view>__<feature>


def plain(value: Any) -> str:
    """A value as a person reads it: ``-`` for none, 4 significant decimals, lists joined, mappings as ``k=v``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, Mapping):
        return ", ".join(f"{key}={plain(item)}" for key, item in flatten(value)) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(plain(item) for item in value) or "-"
    return str(value)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf value) of a nested mapping, in its order; lists are leaves."""
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten(value, prefix=f"{path}.")
        else:
            yield path, value


def _row(table: Table, *cells: Any) -> None:
    """Cells as literal text (a value with brackets is never read as rich markup)."""
    table.add_row(*(Text(c if isinstance(c, str) else plain(c)) for c in cells))


def _fields(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, title_style="bold")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in rows:
        _row(table, key, value)
    return table


def _window(version: ModelVersion) -> str:
    if version.window_start is None and version.window_end is None:
        return "-"
    return f"{plain(version.window_start)} -> {plain(version.window_end)}"


def overview(version: ModelVersion) -> Table:
    return _fields(f"{version.model} v{version.version} ({version.status})", [
        ("status", version.status),
        ("created", f"{plain(version.created_at)} by {version.created_by}"),
        ("feature service", version.feature_service),
        ("training window", _window(version)),
        ("training-set fingerprint", version.fingerprint),
        ("estimator", version.estimator_path),
    ])


def serving(version: ModelVersion, state: ServingState | None) -> Table:
    if state is None:
        return _fields("serving", [("vector store", "not checked (it could not be opened)")])
    own = version.collection.name if version.collection is not None else None
    if state.alias_target is None:
        target = "none (no alias)"
    else:
        target = state.alias_target + (" (this version)" if state.alias_target == own else "")
    rows: list[tuple[str, Any]] = [
        ("alias", f"{state.alias} -> {target}"),
        ("registry production", f"v{state.production_version}" if state.production_version is not None else "none"),
        ("state", "ok" if state.ok else f"{len(state.problems)} problem(s)"),
    ]
    rows += [(f"problem {i}", p.message) for i, p in enumerate(state.problems, start=1)]
    return _fields("serving", rows)


def artifacts(version: ModelVersion) -> Table:
    table = Table(title="artifacts", title_justify="left", title_style="bold")
    for column in ("file", "sha256", "path"):
        table.add_column(column, overflow="fold")
    for artifact in version.artifacts:
        _row(table, artifact.name, artifact.sha256, artifact.path)
    return table


def collection(version: ModelVersion, state: ServingState | None) -> Table:
    found = version.collection
    if found is None:
        return _fields("collection", [("collection", "none yet (run `towerctl embeddings write`)")])
    present = state.collections_present.get(found.name) if state is not None else None
    return _fields("collection", [
        ("name", found.name),
        ("points", f"{found.point_count:,}"),
        ("dimension", found.dimension),
        ("distance", found.distance),
        ("verified", plain(found.verified_at) if found.verified else "no"),
        ("in the vector store", "not checked" if present is None else plain(present)),
        *([("deleted", plain(found.deleted_at))] if found.deleted_at is not None else []),
    ])


def features(version: ModelVersion) -> Table:
    """Feature names grouped by feature view (``view__feature``); a feature-schema mapping as one row per key."""
    table = Table(title="features", title_justify="left", title_style="bold")
    value = version.features
    if isinstance(value, Mapping):
        table.add_column("key", style="bold")
        table.add_column("value", overflow="fold")
        for key, item in flatten(value):
            _row(table, key, plain(item))
        return table
    names = [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    groups: dict[str, list[str]] = {}
    for name in names:
        view, _, feature = name.rpartition(FEATURE_VIEW_SEPARATOR)
        groups.setdefault(view or "-", []).append(feature if view else name)
    table.add_column("feature view", style="bold")
    table.add_column(f"features ({len(names)})", overflow="fold")
    for view, members in groups.items():
        _row(table, view, ", ".join(members))
    return table


def metrics(version: ModelVersion) -> Table | None:
    """Stages (mappings of figures, e.g. validation and test) side by side; other entries in a second part."""
    if not version.metrics:
        return None
    stages = {k: v for k, v in version.metrics.items() if isinstance(v, Mapping)}
    others = [(k, v) for k, v in version.metrics.items() if k not in stages]
    table = Table(title="metrics", title_justify="left", title_style="bold")
    table.add_column("metric", style="bold")
    for stage in stages:
        table.add_column(stage, justify="right")
    if not stages:
        table.add_column("value", justify="right")
    figures = list(dict.fromkeys(key for stage in stages.values() for key, _ in flatten(stage)))
    flat = {stage: dict(flatten(values)) for stage, values in stages.items()}
    for figure in figures:
        _row(table, figure, *(plain(flat[stage].get(figure)) for stage in stages))
    for key, value in others:
        cells = [plain(value)] + [""] * (len(stages) - 1) if stages else [plain(value)]
        _row(table, key, *cells)
    return table


def training_config(version: ModelVersion) -> Table | None:
    if not version.training_config:
        return None
    return _fields("training config", [(key, plain(value)) for key, value in flatten(version.training_config)])


def print_version(version: ModelVersion, state: ServingState | None) -> None:
    for section in (
        overview(version), serving(version, state), artifacts(version), collection(version, state),
        features(version), metrics(version), training_config(version),
    ):
        if section is not None:
            out_console.print(section)
