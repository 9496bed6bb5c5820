"""Settings: the only place that reads the environment (prefix ``TOWER_``, nested with ``__``).

Only the CLI and ``migrations/env.py`` call :func:`get_settings`; everything else receives values as parameters.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class QdrantSettings(BaseModel):
    """Qdrant: local storage under ``$TOWER_HOME/qdrant`` unless ``url`` is set (``TOWER_QDRANT__URL``)."""

    url: str | None = None
    api_key: SecretStr | None = None
    path: Path | None = None  # default: $TOWER_HOME/qdrant
    timeout_s: float = 30.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOWER_", env_nested_delimiter="__", extra="ignore")

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
