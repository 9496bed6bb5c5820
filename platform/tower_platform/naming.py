"""Names that live outside the code, built in exactly one place: Qdrant collections, the production alias and the
vector distances the registry and the vector store accept."""

from __future__ import annotations

DISTANCES = ("cosine", "dot", "euclid")


def collection_name(model: str, version: int) -> str:
    """The Qdrant collection of one model version: ``<model>__v<N>``."""
    return f"{model}__v{int(version)}"


def production_alias(model: str) -> str:
    """The Qdrant alias that serves a model's production version: ``<model>``."""
    return model


def tuning_study_name(dataset: str) -> str:
    """The default Optuna study of ``towerctl tune`` on a dataset: ``tune-<dataset>``."""
    return f"tune-{dataset}"
