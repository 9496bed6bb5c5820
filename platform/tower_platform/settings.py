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
    """Qdrant: local storage under ``$TOWER_HOME/qdrant`` unless ``url`` is set (``TOWER_QDRANT__URL``)."""

    url: str | None = None
    api_key: SecretStr | None = None
    path: Path | None = None  # default: $TOWER_HOME/qdrant
    timeout_s: float = Field(default=30.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED_DELIMITER, extra="ignore")

    home: Path = Field(default=Path("./.tower"))
    database_url: SecretStr | None = None  # default: sqlite:///$TOWER_HOME/registry.db
    feature_repo: Path | None = None  # default: the feature_repo/ shipped with the package
    qdrant: QdrantSettings = Field(default_factory=QdrantSettings)
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
        return (self.qdrant.path or self.home_dir / "qdrant").expanduser().resolve()

    @property
    def artifacts_dir(self) -> Path:
        return self.home_dir / "artifacts"

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
