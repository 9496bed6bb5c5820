"""Datasets: the declarative dataset config, the generic tabular adapter and the ingestion into Feast source tables."""

from tower_platform.datasets.config import DatasetConfig, SplitConfig, load_dataset_config
from tower_platform.datasets.ingest import IngestReport, ingest

__all__ = ["DatasetConfig", "IngestReport", "SplitConfig", "ingest", "load_dataset_config"]
