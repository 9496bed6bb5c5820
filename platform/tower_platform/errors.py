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


# --- towers' errors, mapped once at the platform edge (like httpx's ``map_httpcore_exceptions``) -----------------------

# Most specific first; names of the classes of ``towers/errors.py`` (matched along the exception's MRO, so this module
# never imports towers).
TOWERS_ERROR_MAP: tuple[tuple[str, type[TowerError]], ...] = (
    ("OnnxInputError", InputError),  # rows that do not match an ONNX tower's declared inputs
    ("MissingColumnError", InputError),  # a table lacks a column the feature schema names
    ("TowersInputError", InputError),  # any other unusable table, column or argument
    ("TowersConfigError", ConfigError),  # an unknown, ambiguous or out-of-range training setting
    ("ArtifactMissingError", NotFoundError),  # a saved model or ONNX file does not exist
    ("ArtifactDigestError", IntegrityError),  # a file's sha256 is not the one recorded when it was written
    ("TowersArtifactError", ConfigError),  # a saved model, checkpoint or ONNX file of an old format, missing or invalid
    ("ExportParityError", ConfigError),  # the exported ONNX tower does not reproduce the torch tower
    ("TowersError", TowerError),
)


def map_towers_error(exc: BaseException) -> TowerError | None:
    """The platform error for an error raised by ``towers`` (its message kept, the original as ``__cause__``), or
    None when ``exc`` is not one of towers' errors."""
    names = {cls.__name__ for cls in type(exc).__mro__ if cls.__module__ == "towers.errors"}
    for name, platform_cls in TOWERS_ERROR_MAP:
        if name in names:
            mapped = platform_cls(str(exc))
            mapped.__cause__ = exc
            return mapped
    return None
