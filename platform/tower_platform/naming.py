"""Names that live outside the code, built in exactly one place: Qdrant collections, the production alias, the
vector distances the registry and the vector store accept, and the payload field that names a vector's version."""

from __future__ import annotations

DISTANCES = ("cosine", "dot", "euclid")
PAYLOAD_VERSION_FIELD = "model_version"  # every item vector's payload: the model version that wrote it


def collection_name(model: str, version: int) -> str:
    """The Qdrant collection of one model version: ``<model>__v<N>``."""
    return f"{model}__v{int(version)}"


def production_alias(model: str) -> str:
    """The Qdrant alias that serves a model's production version: ``<model>``."""
    return model
