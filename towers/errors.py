"""The errors ``towers`` raises on bad input, drawn as a tree (like httpx's ``_exceptions.py``).

    TowersError
    ├── TowersConfigError       a TowerConfig key or value is unknown or out of range
    ├── TowersInputError        a table, column, array or argument given to towers is unusable
    │   ├── MissingColumnError  a table lacks a column the schema names (also a KeyError)
    │   └── OnnxInputError      inputs given to an ONNX tower do not match what the file declares
    ├── TowersArtifactError     a saved model, checkpoint or ONNX file is missing, of an old format or invalid
    │   ├── ArtifactMissingError  the file does not exist
    │   └── ArtifactDigestError   the file's sha256 is not the one recorded when it was written
    └── ExportParityError       the exported ONNX tower does not reproduce the torch tower within tolerance

Every message is one sentence naming the object and the fix. The config, input and artifact errors are also
``ValueError`` (missing columns also ``KeyError``) so callers that caught those keep working. The platform maps this
tree once, at its edge (``tower_platform.errors.map_towers_error``).
"""

from __future__ import annotations


class TowersError(Exception):
    """Base of every error raised by ``towers`` on bad input."""


class TowersConfigError(TowersError, ValueError):
    """A TowerConfig key is unknown or ambiguous, or a value has the wrong type or is out of range."""


class TowersInputError(TowersError, ValueError):
    """A table, column, array or argument given to towers is unusable."""


class MissingColumnError(TowersInputError, KeyError):
    """A table lacks a column the feature schema names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OnnxInputError(TowersInputError):
    """Inputs given to an ONNX tower do not match what the file declares."""


class TowersArtifactError(TowersError, ValueError):
    """A saved model, checkpoint or ONNX file is missing, of an old format or invalid."""


class ArtifactMissingError(TowersArtifactError):
    """A saved model, checkpoint or ONNX file does not exist."""


class ArtifactDigestError(TowersArtifactError):
    """A file's sha256 differs from the digest recorded when it was written (``actual`` and ``expected``, hex)."""

    def __init__(self, message: str, *, path: str, actual: str, expected: str) -> None:
        super().__init__(message)
        self.path, self.actual, self.expected = path, actual, expected


class ExportParityError(TowersError):
    """The exported ONNX tower does not reproduce the torch tower within tolerance."""


__all__ = [
    "ArtifactDigestError",
    "ArtifactMissingError",
    "ExportParityError",
    "MissingColumnError",
    "OnnxInputError",
    "TowersArtifactError",
    "TowersConfigError",
    "TowersError",
    "TowersInputError",
]
