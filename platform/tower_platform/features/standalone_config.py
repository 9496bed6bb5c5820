"""The feature repository's ``feature_store.yaml`` as Feast alone loads it, for a service that reads online features.

The repository's own file cannot be loaded without this platform installed: it names a custom offline store class
(``tower_platform.features.offline_store.AsofDuckDBOfflineStore``, or the Spark one) and ``${TOWER_HOME}``, which
only ``towerctl`` sets. Online reads (``get_online_features``) use the registry and the online store only, so the
standalone file:

- replaces an offline store that is not Feast's own by Feast's stock ``file`` store (Feast validates the offline store
  when it loads the file; online reads never use it);
- writes ``${TOWER_HOME}`` as the absolute home of this deployment, and relative registry and SQLite paths as absolute
  paths (Feast resolves them against the folder of the file, which is now elsewhere);
- keeps every other ``${VAR}`` for Feast to expand in the service's environment (secrets stay out of the file).

An online store that is not Feast's own cannot be replaced: ``ConfigError`` says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tower_platform.errors import ConfigError

STANDALONE_OFFLINE_STORE = {"type": "file"}  # Feast's stock store (dask, a dependency of Feast itself)
_HOME_VARIABLE = "${TOWER_HOME}"


def standalone_feature_store_yaml(repo_dir: Path, *, home_dir: Path, header: str = "") -> str:
    """The text of ``repo_dir/feature_store.yaml`` rewritten to load with Feast alone (see the module docstring)."""
    import yaml

    path = Path(repo_dir) / "feature_store.yaml"
    try:
        text = path.read_text(encoding="utf-8").replace(_HOME_VARIABLE, str(Path(home_dir).resolve()))
        config = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} cannot be read as YAML ({exc}); fix the feature repository.") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{path} does not hold a Feast configuration mapping; fix the feature repository.")
    config["offline_store"] = _offline_store(config.get("offline_store"))
    config["online_store"] = _online_store(config.get("online_store"), path=path, repo_dir=Path(repo_dir))
    config["registry"] = _registry(config.get("registry"), repo_dir=Path(repo_dir))
    body = yaml.safe_dump(config, sort_keys=False)
    lines = [f"# {line}".rstrip() for line in header.splitlines()] if header else []
    return "\n".join([*lines, body])


def _is_feast_type(kind: Any) -> bool:
    """A short type name (``sqlite``, ``duckdb``) or a class of Feast itself, both loadable with Feast alone."""
    return isinstance(kind, str) and ("." not in kind or kind.startswith("feast."))


def _offline_store(section: Any) -> Any:
    kind = section.get("type") if isinstance(section, dict) else section
    if section is None or _is_feast_type(kind):
        return section if section is not None else dict(STANDALONE_OFFLINE_STORE)
    return dict(STANDALONE_OFFLINE_STORE)


def _online_store(section: Any, *, path: Path, repo_dir: Path) -> Any:
    kind = section.get("type", "sqlite") if isinstance(section, dict) else section
    if section is not None and not _is_feast_type(kind):
        raise ConfigError(
            f"{path} names the online store {kind!r}, which is not one of Feast's own; a service needs that class "
            "installed: use a Feast online store (sqlite, redis, postgres, ...) to serve without this platform."
        )
    if isinstance(section, dict) and kind == "sqlite" and section.get("path"):
        return {**section, "path": _absolute(section["path"], repo_dir)}
    return section


def _registry(section: Any, *, repo_dir: Path) -> Any:
    if isinstance(section, str):
        return _absolute(section, repo_dir)
    if isinstance(section, dict) and isinstance(section.get("path"), str):
        return {**section, "path": _absolute(section["path"], repo_dir)}
    return section


def _absolute(value: str, repo_dir: Path) -> str:
    """A local path made absolute against the repository; URLs (``s3://``, ``postgresql://``) and ``${VAR}`` stay."""
    if "://" in value or value.startswith("$"):
        return value
    candidate = Path(value).expanduser()
    return str(candidate if candidate.is_absolute() else (repo_dir / candidate).resolve())
