"""Names that live outside the code, built and checked in exactly one place: model and dataset names, Qdrant
collections, the production alias, the vector distances the registry and the vector store accept, and the payload
field that names a vector's version.

A model or dataset name becomes a folder under ``$TOWER_HOME`` (``artifacts/<model>/``), a Qdrant collection
(``<model>__v<N>``) and alias, and a registry key, so it is checked once, where it enters (the dataset config, a CLI
argument, an export's ``spec.json``), with one rule: 1 to 63 characters, lowercase letters, digits, ``-`` and ``_``,
the first a letter or digit, never ``__`` (the separator of collection names). The whole string must match
(``fullmatch``: a trailing newline is refused, as are ``..``, ``/`` and absolute paths).
"""

from __future__ import annotations

import re

from tower_platform.errors import UsageError

DISTANCES = ("cosine", "dot", "euclid")
PAYLOAD_VERSION_FIELD = "model_version"  # every item vector's payload: the model version that wrote it

NAME_MAX_LENGTH = 63
NAME_RULE = (
    f"1 to {NAME_MAX_LENGTH} lowercase letters, digits, '-' or '_', starting with a letter or digit, without '__'"
)
_NAME = re.compile(rf"[a-z0-9][a-z0-9_-]{{0,{NAME_MAX_LENGTH - 1}}}")
_COLLECTION_SEPARATOR = "__"


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a model or dataset name (one clause), or None when it can."""
    if not isinstance(name, str):
        return f"must be a string, not {type(name).__name__}"
    if _NAME.fullmatch(name) is None or _COLLECTION_SEPARATOR in name:
        return f"{name!r} is not allowed: use {NAME_RULE} (e.g. movies)"
    return None


def check_name(name: object, *, kind: str = "model") -> str:
    """``name`` when it is a valid model or dataset name, else UsageError naming the rule."""
    problem = name_problem(name)
    if problem is not None:
        raise UsageError(f"The {kind} name {problem}.")
    return str(name)


def check_model_name(name: object) -> str:
    return check_name(name, kind="model")


def collection_name(model: str, version: int) -> str:
    """The Qdrant collection of one model version: ``<model>__v<N>``."""
    return f"{model}__v{int(version)}"


def production_alias(model: str) -> str:
    """The Qdrant alias that serves a model's production version: ``<model>``."""
    return model


def tuning_study_name(dataset: str) -> str:
    """The default Optuna study of ``towerctl tune`` on a dataset: ``tune-<dataset>``."""
    return f"tune-{dataset}"
