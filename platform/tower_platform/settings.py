"""Settings: the only place that reads the environment (prefix ``TOWER_``, nested with ``__``).

Only the CLI and ``migrations/env.py`` call :func:`get_settings`; everything else receives values as parameters.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from tower_platform.errors import ConfigError

ENV_PREFIX = "TOWER_"
ENV_NESTED_DELIMITER = "__"


class QdrantSettings(BaseModel):
    """A Qdrant server or cluster (``TOWER_QDRANT__URL``, ``TOWER_QDRANT__API_KEY``) and how its collections are laid
    out; without a URL the embedded engine serves (:class:`EdgeSettings`). None leaves the server's default."""

    url: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    shard_number: int | None = None  # shards per collection
    replication_factor: int | None = None  # copies of each shard
    write_consistency_factor: int | None = None  # copies that acknowledge a write
    on_disk: bool = False  # original vectors memory-mapped from disk
    quantization: str = "none"  # "none" | "int8" (scalar quantisation for search)
    quantile: float | None = None  # int8: share of values that sets the range, e.g. 0.99
    quantization_always_ram: bool = True  # int8: quantised vectors stay in RAM
    path: Path | None = None  # retired: qdrant-client local storage (default $TOWER_HOME/qdrant), refused when found

    def collection_layout(self) -> dict[str, Any]:
        """The fields of ``vectors.server_collection.ServerCollectionConfig``."""
        return self.model_dump(include={"shard_number", "replication_factor", "write_consistency_factor", "on_disk",
                                        "quantization", "quantile", "quantization_always_ram"})


class EdgeSettings(BaseModel):
    """The embedded engine (qdrant-edge), the default when no Qdrant URL is set (``TOWER_EDGE__...``).

    None leaves the default of ``vectors.index.EdgeIndexConfig`` (listed in the README's settings table).
    """

    path: Path | None = None  # one shard folder per collection and the alias pointers; default $TOWER_HOME/vectors
    exact_below: int | None = None  # collections with fewer points are searched exactly, without a graph
    m: int | None = None  # HNSW edges per node (collections written afterwards)
    ef_construct: int | None = None  # HNSW candidates while building (collections written afterwards)
    ef: int | None = None  # HNSW candidates while searching (takes effect at once)
    recall_floor: float | None = None  # a version is not marked indexed below this recall@K against exact search
    recall_queries: int | None = None  # stored vectors sampled as queries for the recall check
    recall_k: int | None = None  # K of the recall check
    lock_timeout_s: float = Field(default=30.0, gt=0)  # wait this long for a shard another process holds open

    def index_settings(self) -> dict[str, Any]:
        """The fields set here of ``vectors.index.EdgeIndexConfig``."""
        return self.model_dump(exclude_none=True, exclude={"path", "lock_timeout_s"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED_DELIMITER, extra="ignore")

    home: Path = Field(default=Path("./.tower"))
    database_url: SecretStr | None = None  # default: sqlite:///$TOWER_HOME/registry.db
    feature_repo: Path | None = None  # default: the feature_repo/ shipped with the package
    qdrant: QdrantSettings = Field(default_factory=QdrantSettings)
    edge: EdgeSettings = Field(default_factory=EdgeSettings)
    monitor_config: Path | None = None

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def registry_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.home_dir / 'registry.db'}"

    @property
    def qdrant_path(self) -> Path:
        """Where qdrant-client's local storage lived (retired as a backend; only checked for leftovers)."""
        return (self.qdrant.path or self.home_dir / "qdrant").expanduser().resolve()

    @property
    def edge_path(self) -> Path:
        """The embedded vector store: one qdrant-edge shard folder per collection, and the alias pointers."""
        return (self.edge.path or self.home_dir / "vectors").expanduser().resolve()

    @property
    def artifacts_dir(self) -> Path:
        return self.home_dir / "artifacts"

    @property
    def tuning_storage_url(self) -> str:
        """The Optuna storage of ``towerctl tune`` studies."""
        return f"sqlite:///{self.home_dir / 'tuning.db'}"

    @property
    def tuning_dir(self) -> Path:
        """Where ``towerctl tune`` writes tuned dataset configs by default."""
        return self.home_dir / "tuning"

    @property
    def sources_dir(self) -> Path:
        return self.home_dir / "sources"

    @property
    def feature_repo_dir(self) -> Path:
        if self.feature_repo is not None:
            return self.feature_repo.expanduser().resolve()
        from tower_platform.paths import packaged_feature_repo

        return packaged_feature_repo()

    def export_environment(self) -> None:
        """Feast expands ``${TOWER_HOME}`` in feature_store.yaml: make it absolute for this process."""
        os.environ["TOWER_HOME"] = str(self.home_dir)


def env_name(*keys: str | int) -> str:
    """The environment variable of a (nested) setting: ("qdrant", "timeout_s") -> ``TOWER_QDRANT__TIMEOUT_S``."""
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(k) for k in keys).upper()


_SECRET_SETTINGS = {("database_url",), ("qdrant", "api_key")}


def describe_settings_error(exc: ValidationError | SettingsError) -> str:
    """One sentence naming the environment variable, its value (never a secret's) and the fix."""
    if isinstance(exc, SettingsError):
        field = str(exc).split('"')[1] if str(exc).count('"') >= 2 else ""
        name = env_name(field) if field else f"a {ENV_PREFIX}* variable"
        return (f"Environment variable {name} is invalid (not valid JSON for a nested setting); fix or unset it, "
                f"or set its parts one by one ({name}{ENV_NESTED_DELIMITER}KEY).")
    error = exc.errors()[0]
    keys = tuple(str(k) for k in error["loc"])
    name = env_name(*keys)
    shown = name if keys in _SECRET_SETTINGS else f"{name}={error.get('input')!r}"
    return f"Environment variable {shown} is invalid ({error['msg']}); fix or unset it."


def home_problem(home: Path) -> str | None:
    """Why ``home`` cannot be $TOWER_HOME (one clause), or None: it must be a folder, or not exist yet."""
    if home.exists() and not home.is_dir():
        return "is not a folder"
    return None


def load_settings(**values: Any) -> Settings:
    """Settings from the environment; an invalid variable or home is a ConfigError naming it."""
    try:
        settings = Settings(**values)
    except (ValidationError, SettingsError) as exc:
        raise ConfigError(describe_settings_error(exc)) from None
    problem = home_problem(settings.home_dir)
    if problem is not None:
        raise ConfigError(
            f"TOWER_HOME={settings.home_dir} {problem}; point TOWER_HOME at a folder (it is created when missing)."
        )
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
