"""Datasets: configs, adapters (one per dataset) and the shared ingestion into Feast source tables."""

from tower_platform.datasets.base import DatasetAdapter, RawDataset
from tower_platform.datasets.config import DatasetConfig, FeatureConfig, SplitConfig, load_dataset_config
from tower_platform.datasets.ingest import IngestReport, ingest
from tower_platform.datasets.registry import ADAPTERS, get_adapter

__all__ = [
    "ADAPTERS",
    "DatasetAdapter",
    "DatasetConfig",
    "FeatureConfig",
    "IngestReport",
    "RawDataset",
    "SplitConfig",
    "get_adapter",
    "ingest",
    "load_dataset_config",
]
