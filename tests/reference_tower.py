"""A small but real ONNX tower of the platform's tower contract (vocabulary lookup, embedding tables, sum, L2
normalisation), to check the writer, the retriever and the monitor end to end without a trained model.

Importable from every test (``tests/`` is on sys.path) and from the benchmarks in ``ops/bench``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from towers.onnx.contract import FORMAT_VERSION, OUTPUT_NAME


@dataclass(frozen=True)
class ReferenceFeature:
    """One input of a reference tower: its vocabulary (categorical kinds) or nothing (numeric)."""

    name: str
    kind: str
    vocabulary: tuple[str, ...] = ()
    max_len: int | None = None


def build_reference_tower(
    path: str | Path,
    *,
    features: Sequence[ReferenceFeature],
    dimension: int,
    model_name: str,
    model_version: int,
    feature_service: str = "",
    schema: Mapping[str, Any] | None = None,
    temperature: float = 0.05,
    seed: int = 0,
    tables: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write a real ONNX tower of the contract: per feature a lookup into an embedding table, summed, L2-normalised.

    categorical: LabelEncoder(string -> index, unknown/"" -> 0) -> Gather(table [V+1, D]) -> [B, D]
    multi_categorical: the same on [B, L] -> [B, L, D] -> ReduceSum over L -> [B, D] (row 0 of a table is zero)
    numeric: NaN -> 0, [B] -> [B, 1] * weight [1, D] -> [B, D]
    ``tables`` overrides the random table of a feature ([V+1, D], row 0 = unknown).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes: list[Any] = []
    inits: list[Any] = []
    graph_inputs: list[Any] = []
    declared: list[dict[str, Any]] = []
    summands: list[str] = []
    for idx, feat in enumerate(features):
        prefix = f"f{idx}"
        if feat.kind == "numeric":
            graph_inputs.append(helper.make_tensor_value_info(feat.name, TensorProto.FLOAT, ["B"]))
            weight = rng.normal(size=(1, dimension)).astype(np.float32)  # [1, D]
            inits += [
                numpy_helper.from_array(weight, f"{prefix}_w"),
                numpy_helper.from_array(np.array([0.0], dtype=np.float32), f"{prefix}_zero"),
                numpy_helper.from_array(np.array([1], dtype=np.int64), f"{prefix}_axis"),
            ]
            nodes += [
                helper.make_node("IsNaN", [feat.name], [f"{prefix}_nan"]),
                helper.make_node("Where", [f"{prefix}_nan", f"{prefix}_zero", feat.name], [f"{prefix}_x"]),  # [B]
                helper.make_node("Unsqueeze", [f"{prefix}_x", f"{prefix}_axis"], [f"{prefix}_col"]),  # [B, 1]
                helper.make_node("Mul", [f"{prefix}_col", f"{prefix}_w"], [f"{prefix}_out"]),  # [B, D]
            ]
            declared.append({"name": feat.name, "dtype": "float32", "shape": ["B"], "kind": "numeric", "max_len": None})
        else:
            vocab = list(feat.vocabulary)
            table = (tables or {}).get(feat.name)
            if table is None:
                table = rng.normal(size=(len(vocab) + 1, dimension)).astype(np.float32)  # [V+1, D]
                table[0] = 0.0
            shape: list[Any] = ["B"] if feat.kind == "categorical" else ["B", int(feat.max_len or 1)]
            graph_inputs.append(helper.make_tensor_value_info(feat.name, TensorProto.STRING, shape))
            inits.append(numpy_helper.from_array(np.asarray(table, dtype=np.float32), f"{prefix}_table"))
            nodes += [
                helper.make_node(
                    "LabelEncoder",
                    [feat.name],
                    [f"{prefix}_idx"],
                    domain="ai.onnx.ml",
                    keys_strings=vocab or ["\x00"],
                    values_int64s=list(range(1, len(vocab) + 1)) or [0],
                    default_int64=0,
                ),
                helper.make_node("Gather", [f"{prefix}_table", f"{prefix}_idx"], [f"{prefix}_emb"]),
            ]
            if feat.kind == "multi_categorical":
                inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), f"{prefix}_axis"))
                nodes.append(
                    helper.make_node("ReduceSum", [f"{prefix}_emb", f"{prefix}_axis"], [f"{prefix}_out"], keepdims=0)
                )  # [B, L, D] -> [B, D]
            else:
                nodes.append(helper.make_node("Identity", [f"{prefix}_emb"], [f"{prefix}_out"]))  # [B, D]
            declared.append(
                {"name": feat.name, "dtype": "string", "shape": shape, "kind": feat.kind, "max_len": feat.max_len}
            )
        summands.append(f"{prefix}_out")
    bias = rng.normal(scale=0.1, size=(dimension,)).astype(np.float32)  # keeps an all-unknown row away from zero
    inits.append(numpy_helper.from_array(bias, "bias"))
    nodes.append(helper.make_node("Sum", [*summands, "bias"], ["summed"]))  # [B, D]
    nodes.append(helper.make_node("LpNormalization", ["summed"], [OUTPUT_NAME], axis=1, p=2))  # [B, D]
    graph = helper.make_graph(
        nodes,
        f"{model_name}_reference_tower",
        graph_inputs,
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["B", dimension])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 3)], ir_version=9
    )
    metadata = {
        "format_version": FORMAT_VERSION,
        "model_name": model_name,
        "model_version": str(int(model_version)),
        "feature_service": feature_service,
        "inputs": json.dumps(declared),
        "dimension": str(int(dimension)),
        "temperature": str(float(temperature)),
        "schema": json.dumps(dict(schema or {}), sort_keys=True),
    }
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, target)
    return target
