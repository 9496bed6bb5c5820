"""The one exception hierarchy of Tower Platform.

Every error a user can cause or meet carries an exit code; the CLI converts them once, at its edge.

    TowerError (1)
    ├── UsageError (2)                 bad arguments or options
    ├── InputError (2)                 a data file, column or value that cannot be used
    │   └── TrainingSetAuditError (2)  a training set failed its point-in-time audit
    ├── NotFoundError (3)              unknown model, version, user, file or collection
    ├── ConflictError (4)              not ready (not indexed/verified), nothing to roll back to, tampered artifact
    │   └── IntegrityError (4)         an artifact's sha256 or a collection's content does not match the registry
    ├── UnavailableError (5)           the database, Qdrant or the feature store cannot be reached
    ├── ConfigError (6)                configuration invalid or schema out of date
    │   └── SchemaOutOfDateError (6)   registry schema not at Alembic head
    └── MonitorBreachError (10)        a monitor check breached its threshold

A message is one sentence that names the object (file, column, model, version) and the fix.
"""

from __future__ import annotations


class TowerError(Exception):
    """Base class: generic failure."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(TowerError):
    exit_code = 2


class InputError(TowerError):
    """A data file, column or value cannot be used (missing, wrong dtype, unparsable, duplicated, empty)."""

    exit_code = 2


class TrainingSetAuditError(InputError):
    """A training set broke row parity, point-in-time order or leaked its target."""


class NotFoundError(TowerError):
    exit_code = 3


class ConflictError(TowerError):
    exit_code = 4


class IntegrityError(ConflictError):
    """An artifact or collection no longer matches what the registry recorded."""


class UnavailableError(TowerError):
    exit_code = 5


class ConfigError(TowerError):
    exit_code = 6


class SchemaOutOfDateError(ConfigError):
    pass


class MonitorBreachError(TowerError):
    exit_code = 10


EXIT_CODES: dict[str, int] = {
    cls.__name__: cls.exit_code
    for cls in (
        TowerError,
        UsageError,
        InputError,
        NotFoundError,
        ConflictError,
        UnavailableError,
        ConfigError,
        MonitorBreachError,
    )
}
