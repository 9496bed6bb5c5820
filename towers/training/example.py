"""Training examples from an Arrow table: item features joined from the corpus, item keys, reward weights, tensors.

The training table has one row per interaction: the id columns, the query features, and the item features (taken from
the corpus by item id when the training table does not carry them); an optional ``weight`` column holds the reward
r_i of each example.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from towers.config import TowerConfig
from towers.errors import MissingColumnError
from towers.features.encoder import input_specs
from towers.features.schema import FeatureSchema

WEIGHT_COLUMN = "weight"


def require_columns(table: pa.Table, names: list[str], *, what: str) -> None:
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise MissingColumnError(
            f"The {what} table lacks columns {missing}; add them (names follow the FeatureSchema)."
        )


def with_item_features(train: pa.Table, corpus: pa.Table, *, schema: FeatureSchema, config: TowerConfig) -> pa.Table:
    """``train`` plus every item-tower input it lacks, looked up in ``corpus`` by item id (vectorised). With
    ``encoders.item_features="corpus"`` the item inputs it has are replaced by the corpus's too (rows whose item is
    not in the corpus keep their own)."""
    names = [s.name for s in input_specs(schema, config)["item"] if s.name != schema.item_id]
    from_corpus = config.encoders.item_features == "corpus"
    wanted = [n for n in names if n not in train.column_names or (from_corpus and n in corpus.column_names)]
    if not wanted:
        return train
    require_columns(corpus, [schema.item_id, *wanted], what="corpus")
    index = pc.index_in(pc.cast(train.column(schema.item_id), pa.string()), pc.cast(corpus.column(schema.item_id), pa.string()))
    for name in wanted:
        values = corpus.column(name).combine_chunks().take(index)
        if name in train.column_names:
            own = train.column(name).combine_chunks()
            values = pc.if_else(pc.is_valid(index), values, own.cast(values.type))
            train = train.set_column(train.column_names.index(name), name, values)
        else:
            train = train.append_column(name, values)
    return train


def item_key_space(train: pa.Table, corpus: pa.Table, *, item_id: str) -> pa.Array:
    """Distinct item ids of the corpus and the training set: the key space of accidental hits and the estimator."""
    ids = pa.concat_arrays(
        [pc.cast(t.column(item_id), pa.string()).combine_chunks() for t in (corpus, train)]
    )
    return pc.unique(ids)


def item_keys(table: pa.Table, key_space: pa.Array, *, item_id: str) -> np.ndarray:
    """int64 [N]: each row's item id as its index in ``key_space`` (-1 when absent)."""
    index = pc.index_in(pc.cast(table.column(item_id), pa.string()), value_set=key_space)
    return pc.fill_null(index, -1).to_numpy(zero_copy_only=False).astype(np.int64)  # [N]


def example_weights(table: pa.Table) -> np.ndarray | None:
    """float32 [N] reward weights from the ``weight`` column (null or non-finite -> 1), or None without one."""
    if WEIGHT_COLUMN not in table.column_names:
        return None
    weights = pc.fill_null(pc.cast(table.column(WEIGHT_COLUMN), pa.float64()), 1.0).to_numpy(zero_copy_only=False)
    return np.where(np.isfinite(weights), weights, 1.0).astype(np.float32)  # [N]


def as_tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()}
