"""How a collection is laid out on a Qdrant server or cluster: shards, replicas, write consistency, disk, quantisation.

The writer creates one collection per model version; on a server :class:`ServerCollectionConfig` decides its layout
(``create_collection`` receives every field set here; None leaves the server's default). On a 3-node cluster, e.g.::

    ServerCollectionConfig(shard_number=6, replication_factor=2, write_consistency_factor=1, on_disk=True,
                           quantization="int8")

spreads 6 shards over the nodes with two copies of each, acknowledges a write once one copy has it, keeps the
float32 vectors on disk (memory-mapped) and a 4x smaller int8 copy in RAM for the graph search (Qdrant rescores the
candidates with the original vectors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tower_platform.errors import ConfigError

QUANTIZATIONS = ("none", "int8")


@dataclass(frozen=True)
class ServerCollectionConfig:
    shard_number: int | None = None  # shards per collection (server default 1; on a cluster: a multiple of the nodes)
    replication_factor: int | None = None  # copies of each shard (server default 1)
    write_consistency_factor: int | None = None  # copies that acknowledge a write (server default 1)
    on_disk: bool = False  # original vectors memory-mapped from disk instead of held in RAM
    quantization: str = "none"  # "int8": scalar quantisation of the vectors for search
    quantile: float | None = None  # int8: the share of values that sets the range (server default 1.0, e.g. 0.99)
    quantization_always_ram: bool = True  # int8: keep the quantised vectors in RAM even when on_disk

    def __post_init__(self) -> None:
        for field, value in (("shard_number", self.shard_number), ("replication_factor", self.replication_factor),
                             ("write_consistency_factor", self.write_consistency_factor)):
            if value is not None and int(value) < 1:
                raise ConfigError(f"Qdrant collection setting {field}={value} must be at least 1.")
        if (self.write_consistency_factor or 1) > (self.replication_factor or 1):
            raise ConfigError(
                f"Qdrant collection setting write_consistency_factor={self.write_consistency_factor} exceeds "
                f"replication_factor={self.replication_factor or 1}: a write cannot wait for more copies than exist; "
                "lower it or raise the replication factor."
            )
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(
                f"Qdrant collection setting quantization={self.quantization!r} is not one of {QUANTIZATIONS}."
            )
        if self.quantile is not None and not 0.5 <= self.quantile <= 1.0:
            raise ConfigError(f"Qdrant collection setting quantile={self.quantile} must lie between 0.5 and 1.0.")

    def create_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``QdrantClient.create_collection`` besides name and vectors (None: the server's
        default)."""
        from qdrant_client import models

        quantization = None
        if self.quantization == "int8":
            quantization = models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(
                    type=models.ScalarType.INT8, quantile=self.quantile, always_ram=self.quantization_always_ram
                )
            )
        return {
            "shard_number": self.shard_number,
            "replication_factor": self.replication_factor,
            "write_consistency_factor": self.write_consistency_factor,
            "quantization_config": quantization,
        }
