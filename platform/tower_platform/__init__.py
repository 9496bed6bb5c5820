"""Tower Platform: everything around the towers (settings, errors, datasets, Feast, registry, Qdrant, CLI)."""

__version__ = "0.1.0"
