"""Feature encoders derived from the FeatureSchema: Arrow columns in, int64 ids and float32 values out.

Id layout of every vocabulary (shared by the ONNX preprocessing graph, see ``towers/onnx/graph.py``):

    0                              missing: None or "" (and the padding of multi_categorical lists)
    1 .. oov_buckets               out of vocabulary (one id, or MurmurHash3(token) % oov_buckets + 1 when hashed)
    oov_buckets + 1 + k            tokens[k], tokens sorted by training count (descending), then by token

Features that share a ``vocab_group`` share one Vocabulary (and one embedding table in the towers). Numeric features
are carried as raw float32 with NaN for missing; their training mean/std travel with the encoders and the towers
standardise inside the model (so the ONNX graph and the training path run the same arithmetic). All conversion is
column-wise (pyarrow.compute and numpy); nothing loops over rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from towers.config import TowerConfig
from towers.errors import MissingColumnError, TowersArtifactError
from towers.features.schema import FeatureSchema, FeatureSpec

MISSING_ID = 0
ITEM_ID_GROUP = "item_id"
USER_ID_GROUP = "user_id"
ENCODERS_FORMAT = 1


def group_of(spec: FeatureSpec) -> str:
    """The vocabulary group of a string feature (its own name when it declares none)."""
    return spec.vocab_group or spec.name


def _column(table: pa.Table, name: str) -> pa.Array:
    if name not in table.column_names:
        raise MissingColumnError(f"column {name!r} is missing from the table (columns: {table.column_names})")
    column = table.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def as_strings(values: pa.Array) -> pa.Array:
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return values
    if pa.types.is_dictionary(values.type):
        return as_strings(values.dictionary_decode())
    return pc.cast(values, pa.string())


# --- MurmurHash3 (x86, 32 bit), the hash of onnxruntime's com.microsoft.MurmurHash3 over UTF-8 bytes ---------------

_C1, _C2, _MASK = np.uint64(0xCC9E2D51), np.uint64(0x1B873593), np.uint64(0xFFFFFFFF)


def _rotl32(x: np.ndarray, r: int) -> np.ndarray:
    return ((x << np.uint64(r)) | (x >> np.uint64(32 - r))) & _MASK


def murmurhash3_32(values: pa.Array, *, seed: int = 0) -> np.ndarray:
    """MurmurHash3_x86_32 of each string's UTF-8 bytes, as uint32 [N]; vectorised over rows (loops over 4-byte blocks)."""
    values = pc.fill_null(as_strings(values), "")
    values = pc.cast(values, pa.large_binary())
    n = len(values)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[values.offset : values.offset + n + 1]
    data = values.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)  # [N]
    width = int(-(-max(int(lengths.max(initial=0)), 1) // 4) * 4)
    padded = np.zeros((n, width), dtype=np.uint8)  # [N, W] bytes, zero padded
    rows = np.repeat(np.arange(n), lengths)
    cols = np.arange(int(lengths.sum())) - np.repeat(offsets[:-1] - offsets[0], lengths)
    padded[rows, cols] = raw[offsets[0] : offsets[-1]]
    blocks = padded.view("<u4").astype(np.uint64)  # [N, W/4]
    n_full = lengths // 4
    has_tail = (lengths % 4) != 0
    h = np.full(n, seed, dtype=np.uint64)
    for k in range(blocks.shape[1]):
        k1 = (blocks[:, k] * _C1) & _MASK
        k1 = (_rotl32(k1, 15) * _C2) & _MASK
        full = k < n_full
        mixed = _rotl32(h ^ k1, 13)
        mixed = (mixed * np.uint64(5) + np.uint64(0xE6546B64)) & _MASK
        tail = (k == n_full) & has_tail
        h = np.where(full, mixed, np.where(tail, h ^ k1, h))
    h ^= lengths.astype(np.uint64)
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & _MASK
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & _MASK
    h ^= h >> np.uint64(16)
    return h.astype(np.uint32)


# --- vocabularies ---------------------------------------------------------------------------------------------------


@dataclass
class Vocabulary:
    """String -> id for one vocabulary group (see the id layout in the module docstring)."""

    group: str
    tokens: list[str]
    oov_buckets: int = 1
    _token_array: pa.Array | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def fit(
        cls, values: pa.Array, *, group: str, min_count: int = 1, max_size: int | None = None, oov_buckets: int = 1
    ) -> Vocabulary:
        """Tokens seen at least ``min_count`` times in ``values`` (a flat string array), most frequent first."""
        values = as_strings(values)
        values = values.filter(pc.and_(pc.is_valid(values), pc.not_equal(values, "")))
        counts = pc.value_counts(values)  # struct<values, counts>
        tokens = counts.field("values").to_numpy(zero_copy_only=False).astype(object)
        freq = counts.field("counts").to_numpy()
        keep = freq >= min_count
        tokens, freq = tokens[keep], freq[keep]
        order = np.lexsort((tokens.astype(str), -freq))  # count desc, then token asc
        tokens = tokens[order]
        if max_size is not None:
            tokens = tokens[:max_size]
        return cls(group=group, tokens=[str(t) for t in tokens], oov_buckets=oov_buckets)

    @property
    def first_token_id(self) -> int:
        return 1 + self.oov_buckets

    @property
    def size(self) -> int:
        """Rows of the embedding table: missing + OOV buckets + tokens."""
        return self.first_token_id + len(self.tokens)

    @property
    def token_array(self) -> pa.Array:
        if self._token_array is None:
            self._token_array = pa.array(self.tokens, type=pa.string())
        return self._token_array

    def lookup(self, values: pa.Array) -> np.ndarray:
        """ids int64 [N] for a flat string array: missing -> 0, unknown -> OOV, known -> its id."""
        values = as_strings(values)
        index = pc.index_in(values, value_set=self.token_array)
        index = pc.fill_null(index, -1).to_numpy(zero_copy_only=False).astype(np.int64)  # [N]
        if self.oov_buckets > 1:
            oov = 1 + (murmurhash3_32(values).astype(np.int64) % self.oov_buckets)
        else:
            oov = np.ones(len(values), dtype=np.int64)
        ids = np.where(index >= 0, index + self.first_token_id, oov)
        missing = pc.fill_null(pc.equal(values, ""), True).to_numpy(zero_copy_only=False)
        ids[missing] = MISSING_ID
        return ids

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "tokens": list(self.tokens), "oov_buckets": self.oov_buckets}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocabulary:
        return cls(group=data["group"], tokens=list(data["tokens"]), oov_buckets=int(data["oov_buckets"]))


@dataclass(frozen=True)
class NumericStats:
    """Training mean and standard deviation of one numeric feature (finite values only)."""

    mean: float
    std: float

    @classmethod
    def fit(cls, values: np.ndarray) -> NumericStats:
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return cls(mean=0.0, std=1.0)
        std = float(finite.astype(np.float64).std())
        return cls(mean=float(finite.astype(np.float64).mean()), std=std if std > 1e-12 else 1.0)


def numeric_values(column: pa.Array) -> np.ndarray:
    """float32 [N] with NaN where the value is None (NaN and inf pass through; the towers treat them as missing)."""
    values = pc.cast(column, pa.float64()) if not pa.types.is_floating(column.type) else column
    return pc.fill_null(values, np.nan).to_numpy(zero_copy_only=False).astype(np.float32)


def padded_list_values(column: pa.Array, *, max_len: int) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Where each list element goes in a [N, max_len] matrix.

    Returns (rows [M], cols [M], values [M]) for the first ``max_len`` elements of each list; None lists count as empty.
    """
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False).astype(np.int64)  # [N]
    flat = pc.list_flatten(column)  # [sum(lengths)], skips null lists
    rows = np.repeat(np.arange(len(column)), lengths)
    starts = np.cumsum(lengths) - lengths
    cols = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
    keep = cols < max_len
    return rows[keep], cols[keep], flat.filter(pa.array(keep)) if not keep.all() else flat


# --- all encoders of a schema -------------------------------------------------------------------------------------


def input_specs(schema: FeatureSchema, config: TowerConfig) -> dict[str, tuple[FeatureSpec, ...]]:
    """The inputs of each tower: the schema's features plus the id columns the config asks for (DAT needs both ids:
    their augmented vectors are looked up inside the towers). An id the schema lists as a feature itself (the
    platform's schema carries the item id) is dropped when ``encoders.use_item_id`` / ``use_user_id`` is false and
    DAT does not need it; with DAT it stays an input and the tower does not embed it (``towers/nn/tower.py``)."""
    query, item = list(schema.query), list(schema.item)
    if not config.dat.enabled:
        if not config.encoders.use_user_id:
            query = [f for f in query if f.name != schema.user_id]
        if not config.encoders.use_item_id:
            item = [f for f in item if f.name != schema.item_id]
    if (config.encoders.use_user_id or config.dat.enabled) and schema.user_id not in {f.name for f in query}:
        query.insert(0, FeatureSpec(name=schema.user_id, side="query", kind="categorical", vocab_group=USER_ID_GROUP))
    if (config.encoders.use_item_id or config.dat.enabled) and schema.item_id not in {f.name for f in item}:
        item.insert(0, FeatureSpec(name=schema.item_id, side="item", kind="categorical", vocab_group=ITEM_ID_GROUP))
    return {"query": tuple(query), "item": tuple(item)}


@dataclass
class FeatureEncoders:
    """Vocabularies and numeric statistics for every input of both towers, fitted on a training table."""

    schema: FeatureSchema
    specs: dict[str, tuple[FeatureSpec, ...]]  # side -> input specs
    vocabularies: dict[str, Vocabulary]  # group -> vocabulary
    numeric: dict[str, NumericStats]  # feature name -> stats

    @classmethod
    def fit(cls, table: pa.Table, *, schema: FeatureSchema, config: TowerConfig) -> FeatureEncoders:
        specs = input_specs(schema, config)
        by_group: dict[str, list[pa.Array]] = {}
        numeric: dict[str, NumericStats] = {}
        for spec in specs["query"] + specs["item"]:
            column = _column(table, spec.name)
            if spec.kind == "numeric":
                numeric[spec.name] = NumericStats.fit(numeric_values(column))
            elif spec.kind == "categorical":
                by_group.setdefault(group_of(spec), []).append(as_strings(column))
            else:
                by_group.setdefault(group_of(spec), []).append(as_strings(pc.list_flatten(column)))
        vocabularies = {
            group: Vocabulary.fit(
                pa.concat_arrays(arrays),
                group=group,
                min_count=config.encoders.min_count,
                max_size=config.encoders.max_vocab_size,
                oov_buckets=config.encoders.oov_buckets,
            )
            for group, arrays in by_group.items()
        }
        return cls(schema=schema, specs=specs, vocabularies=vocabularies, numeric=numeric)

    def vocabulary(self, spec: FeatureSpec) -> Vocabulary:
        return self.vocabularies[group_of(spec)]

    def encode_feature(self, column: pa.Array, spec: FeatureSpec) -> np.ndarray:
        """categorical -> int64 [N]; multi_categorical -> int64 [N, max_len] (0 = padding); numeric -> float32 [N]."""
        if spec.kind == "numeric":
            return numeric_values(column)
        vocab = self.vocabulary(spec)
        if spec.kind == "categorical":
            return vocab.lookup(column)
        assert spec.max_len is not None
        rows, cols, values = padded_list_values(column, max_len=spec.max_len)
        ids = np.zeros((len(column), spec.max_len), dtype=np.int64)  # [N, L]
        ids[rows, cols] = vocab.lookup(values)
        return ids

    def encode(self, table: pa.Table, side: str) -> dict[str, np.ndarray]:
        """One array per input of ``side``'s tower, keyed by feature name."""
        return {spec.name: self.encode_feature(_column(table, spec.name), spec) for spec in self.specs[side]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ENCODERS_FORMAT,
            "schema": self.schema.to_dict(),
            "specs": {side: [_spec_dict(s) for s in specs] for side, specs in self.specs.items()},
            "vocabularies": {g: v.to_dict() for g, v in self.vocabularies.items()},
            "numeric": {n: {"mean": s.mean, "std": s.std} for n, s in self.numeric.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureEncoders:
        if data.get("format") != ENCODERS_FORMAT:
            raise TowersArtifactError(f"encoders format {data.get('format')!r} is not {ENCODERS_FORMAT}; retrain the model")
        return cls(
            schema=FeatureSchema.from_dict(data["schema"]),
            specs={side: tuple(FeatureSpec(**s) for s in specs) for side, specs in data["specs"].items()},
            vocabularies={g: Vocabulary.from_dict(v) for g, v in data["vocabularies"].items()},
            numeric={n: NumericStats(mean=float(s["mean"]), std=float(s["std"])) for n, s in data["numeric"].items()},
        )


def _spec_dict(spec: FeatureSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "side": spec.side,
        "kind": spec.kind,
        "vocab_group": spec.vocab_group,
        "max_len": spec.max_len,
    }
