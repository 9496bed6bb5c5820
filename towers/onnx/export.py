"""Self-contained ONNX towers: ``query.onnx`` and ``item.onnx`` take feature values exactly as the feature store
serves them and return L2-normalised float32 embeddings.

Inputs (one per feature, named as in the FeatureSchema; dynamic batch axis B):
    categorical        tensor(string) [B]            "" = missing
    multi_categorical  tensor(string) [B, max_len]   padded with ""
    numeric            tensor(float)  [B]            NaN = missing
Output: ``embedding`` float32 [B, D].

How a file is built: the tower's numeric core (int64 ids and raw floats in; standardisation and the missing
indicator are inside the core) is exported with ``torch.onnx.export(..., dynamo=True)``; then each string input gets
an ``ai.onnx.ml.LabelEncoder`` node in front (keys "" -> 0, tokens -> their ids, default -> the OOV id; with hashed
OOV buckets, ``com.microsoft.MurmurHash3`` picks the bucket). A parity check (torch vs onnxruntime, max abs diff
<= 1e-5) runs on the caller's rows plus synthetic rows with unknown ids, missing values, empty and long lists, and
raises ``ExportParityError`` when it does not hold. Files are written to a temporary name, then renamed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from towers.encoders import FeatureEncoders, Vocabulary, _as_strings, numeric_values, padded_list_values

if TYPE_CHECKING:
    import onnx

    from towers.model import Tower, TwoTowerModel
    from towers.schema import FeatureSpec

FORMAT_VERSION = "1"
OUTPUT_NAME = "embedding"
CORE_OUTPUT_NAME = "tower_output"  # the exporter may name an internal value "embedding" (nn.Embedding); renamed later
PARITY_TOLERANCE = 1e-5
ML_OPSET = 3
ONNX_OPSET = 18
MAX_IR_VERSION = 10


class ExportParityError(Exception):
    """The exported ONNX tower does not reproduce the torch tower within tolerance."""


class OnnxInputError(ValueError):
    """Inputs given to an ONNX tower do not match what the file declares."""


@dataclass(frozen=True)
class ExportResult:
    query_path: Path
    item_path: Path
    sha256s: dict[str, str]  # file name -> sha256 hex digest
    dimension: int
    max_abs_diff: float


# --- Arrow -> ONNX inputs -------------------------------------------------------------------------------------------


def _string_values(values: pa.Array) -> np.ndarray:
    return pc.fill_null(_as_strings(values), "").to_numpy(zero_copy_only=False).astype(object)


def table_to_onnx_inputs(table: pa.Table, specs: tuple[FeatureSpec, ...] | list[FeatureSpec]) -> dict[str, np.ndarray]:
    """An Arrow table as the feature store serves it -> the ONNX input dict (lists padded with "" or truncated to
    max_len; None -> "" for strings and NaN for numbers)."""
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.name not in table.column_names:
            raise OnnxInputError(f"column {spec.name!r} is missing from the table; the ONNX tower needs it as an input")
        column = table.column(spec.name).combine_chunks()
        if spec.kind == "numeric":
            feeds[spec.name] = numeric_values(column)  # [N] float32
        elif spec.kind == "categorical":
            feeds[spec.name] = _string_values(column)  # [N] object (str)
        else:
            assert spec.max_len is not None
            rows, cols, values = padded_list_values(column, max_len=spec.max_len)
            padded = np.full((len(column), spec.max_len), "", dtype=object)  # [N, L]
            padded[rows, cols] = _string_values(values)
            feeds[spec.name] = padded
    return feeds


def input_description(spec: FeatureSpec) -> dict[str, Any]:
    if spec.kind == "numeric":
        return {"name": spec.name, "dtype": "float32", "shape": ["batch"], "kind": spec.kind, "max_len": None}
    shape: list[Any] = ["batch"] if spec.kind == "categorical" else ["batch", spec.max_len]
    return {"name": spec.name, "dtype": "string", "shape": shape, "kind": spec.kind, "max_len": spec.max_len}


# --- the numeric core -----------------------------------------------------------------------------------------------


class _PositionalTower(nn.Module):
    """A tower with positional inputs (what the exporter traces)."""

    def __init__(self, tower: Tower, names: list[str]) -> None:
        super().__init__()
        self.tower, self.names = tower, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.tower(dict(zip(self.names, inputs, strict=True)))  # [B, D]


def _core_input_name(spec: FeatureSpec) -> str:
    return spec.name if spec.kind == "numeric" else f"{spec.name}__ids"


def _example_inputs(specs: tuple[FeatureSpec, ...], *, batch: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    tensors: list[torch.Tensor] = []
    for spec in specs:
        if spec.kind == "numeric":
            tensors.append(torch.randn(batch, generator=generator))  # [B]
        elif spec.kind == "categorical":
            tensors.append(torch.randint(0, 2, (batch,), generator=generator))  # [B]
        else:
            tensors.append(torch.randint(0, 2, (batch, int(spec.max_len or 1)), generator=generator))  # [B, L]
    return tuple(tensors)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's notes about optional packages (torchvision) and deprecations."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(level)


def export_core(tower: Tower, specs: tuple[FeatureSpec, ...]) -> onnx.ModelProto:
    """The tower from int64 ids / float32 values to ``embedding``, exported with the dynamo exporter."""
    wrapper = _PositionalTower(tower, [s.name for s in specs]).eval()
    batch_size = max([int(s.max_len or 1) for s in specs] + [2]) + 3  # distinct from every list length
    batch = torch.export.Dim("batch", min=1)
    dynamic_shapes = (tuple({0: batch} for _ in specs),)  # one entry: the *inputs of forward
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            wrapper,
            _example_inputs(specs, batch=batch_size),
            input_names=[_core_input_name(s) for s in specs],
            output_names=[CORE_OUTPUT_NAME],
            dynamic_shapes=dynamic_shapes,
            opset_version=ONNX_OPSET,
            dynamo=True,
            verbose=False,
        )
    if program is None:
        raise ExportParityError("the ONNX exporter returned no program for the tower")
    return program.model_proto


# --- string preprocessing in front of the core ----------------------------------------------------------------------


def _lookup_nodes(spec: FeatureSpec, vocab: Vocabulary, *, output: str) -> list[onnx.NodeProto]:
    """Nodes mapping string input ``spec.name`` to int64 ids ``output`` with the encoders' id layout."""
    from onnx import TensorProto, helper

    keys = [""] + list(vocab.tokens)
    values = [0] + list(range(vocab.first_token_id, vocab.first_token_id + len(vocab.tokens)))
    if vocab.oov_buckets == 1:
        return [
            helper.make_node(
                "LabelEncoder",
                [spec.name],
                [output],
                domain="ai.onnx.ml",
                keys_strings=keys,
                values_int64s=values,
                default_int64=1,
                name=f"lookup_{spec.name}",
            )
        ]
    p = f"{spec.name}__oov"
    return [
        helper.make_node(
            "LabelEncoder", [spec.name], [f"{p}_known"], domain="ai.onnx.ml",
            keys_strings=keys, values_int64s=values, default_int64=-1, name=f"lookup_{spec.name}",
        ),
        helper.make_node("MurmurHash3", [spec.name], [f"{p}_hash"], domain="com.microsoft", positive=1, seed=0),
        helper.make_node("Cast", [f"{p}_hash"], [f"{p}_hash64"], to=TensorProto.INT64),
        helper.make_node("Constant", [], [f"{p}_buckets"], value=helper.make_tensor("", TensorProto.INT64, [], [vocab.oov_buckets])),
        helper.make_node("Constant", [], [f"{p}_one"], value=helper.make_tensor("", TensorProto.INT64, [], [1])),
        helper.make_node("Constant", [], [f"{p}_unknown"], value=helper.make_tensor("", TensorProto.INT64, [], [-1])),
        helper.make_node("Mod", [f"{p}_hash64", f"{p}_buckets"], [f"{p}_mod"]),
        helper.make_node("Add", [f"{p}_mod", f"{p}_one"], [f"{p}_bucket"]),
        helper.make_node("Equal", [f"{p}_known", f"{p}_unknown"], [f"{p}_is_oov"]),
        helper.make_node("Where", [f"{p}_is_oov", f"{p}_bucket", f"{p}_known"], [output]),
    ]


def _rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if v == old else v for v in node.input]
        node.output[:] = [new if v == old else v for v in node.output]
    for value in list(graph.output) + list(graph.value_info) + list(graph.input):
        if value.name == old:
            value.name = new


def with_string_inputs(core: onnx.ModelProto, specs: tuple[FeatureSpec, ...], encoders: FeatureEncoders) -> onnx.ModelProto:
    """Replace the core's id inputs by string inputs followed by vocabulary lookup nodes."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.ModelProto()
    model.CopyFrom(core)
    graph = model.graph
    _rename_value(graph, OUTPUT_NAME, f"{OUTPUT_NAME}__internal")
    _rename_value(graph, CORE_OUTPUT_NAME, OUTPUT_NAME)
    by_name = {i.name: i for i in graph.input}
    new_inputs: list[onnx.ValueInfoProto] = []
    lookup: list[onnx.NodeProto] = []
    hashed = False
    for spec in specs:
        core_input = by_name[_core_input_name(spec)]
        batch_dim = core_input.type.tensor_type.shape.dim[0].dim_param or "batch"
        if spec.kind == "numeric":
            new_inputs.append(helper.make_tensor_value_info(spec.name, TensorProto.FLOAT, [batch_dim]))
            continue
        shape: list[Any] = [batch_dim] if spec.kind == "categorical" else [batch_dim, spec.max_len]
        new_inputs.append(helper.make_tensor_value_info(spec.name, TensorProto.STRING, shape))
        vocab = encoders.vocabulary(spec)
        hashed = hashed or vocab.oov_buckets > 1
        lookup += _lookup_nodes(spec, vocab, output=core_input.name)
    del graph.input[:]
    graph.input.extend(new_inputs)
    nodes = lookup + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    domains = {o.domain for o in model.opset_import}
    if "ai.onnx.ml" not in domains:
        model.opset_import.append(helper.make_opsetid("ai.onnx.ml", ML_OPSET))
    if hashed and "com.microsoft" not in domains:
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    return model


def _set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def _write_atomically(model: onnx.ModelProto, path: Path) -> str:
    data = model.SerializeToString()
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


# --- parity ---------------------------------------------------------------------------------------------------------


def unusual_rows(specs: tuple[FeatureSpec, ...], encoders: FeatureEncoders) -> pa.Table:
    """Six rows of valid but unusual values: unknown ids, missing values, empty, null and over-long lists, NaN/inf."""
    columns: dict[str, pa.Array] = {}
    for spec in specs:
        if spec.kind == "numeric":
            columns[spec.name] = pa.array([np.nan, None, np.inf, -np.inf, 1e30, 0.5], type=pa.float64())
            continue
        tokens = encoders.vocabulary(spec).tokens or ["token"]
        known = tokens[0]
        if spec.kind == "categorical":
            columns[spec.name] = pa.array(["\u00a7unknown\u00a7", None, "", known, tokens[-1], "x" * 300])
        else:
            long = [tokens[i % len(tokens)] for i in range(3 * int(spec.max_len or 1))] + ["\u00a7unknown\u00a7"]
            columns[spec.name] = pa.array(
                [["\u00a7unknown\u00a7"], None, [], long, [known, "", None, "\u00a7other\u00a7"], [known]],
                type=pa.list_(pa.string()),
            )
    return pa.table(columns)


def _torch_embeddings(tower: Tower, specs: tuple[FeatureSpec, ...], encoders: FeatureEncoders, table: pa.Table) -> np.ndarray:
    arrays = {s.name: encoders.encode_feature(table.column(s.name).combine_chunks(), s) for s in specs}
    with torch.no_grad():
        out = tower({n: torch.from_numpy(np.ascontiguousarray(a)) for n, a in arrays.items()})  # [N, D]
    return out.float().numpy()


def parity_max_abs_diff(
    tower: Tower, specs: tuple[FeatureSpec, ...], encoders: FeatureEncoders, model: onnx.ModelProto, table: pa.Table
) -> float:
    """Largest |torch - onnxruntime| over the rows of ``table``; raises ExportParityError on non-unit or non-finite
    outputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (ort_out,) = session.run([OUTPUT_NAME], table_to_onnx_inputs(table, specs))  # [N, D]
    torch_out = _torch_embeddings(tower, specs, encoders, table)  # [N, D]
    if not (np.isfinite(ort_out).all() and np.isfinite(torch_out).all()):
        raise ExportParityError("the tower produced non-finite embeddings on the parity rows; check the inputs' handling")
    norms = np.linalg.norm(ort_out, axis=1)
    if np.abs(norms - 1.0).max(initial=0.0) > 1e-4:
        raise ExportParityError(f"ONNX embeddings are not unit-norm (norms {norms.min():.6f}..{norms.max():.6f})")
    return float(np.abs(ort_out - torch_out).max(initial=0.0))


# --- export ---------------------------------------------------------------------------------------------------------


def export_tower(
    tower: Tower,
    *,
    specs: tuple[FeatureSpec, ...],
    encoders: FeatureEncoders,
    path: Path,
    metadata: dict[str, str],
    sample: pa.Table,
    tolerance: float = PARITY_TOLERANCE,
) -> tuple[str, float]:
    """Export one tower to ``path`` after the parity check; returns (sha256, max abs diff)."""
    import onnx

    missing = [s.name for s in specs if s.name not in sample.column_names]
    if missing:
        raise ValueError(f"the parity sample lacks columns {missing}; pass rows that carry every input of the tower")
    tower = tower.cpu().eval()
    model = with_string_inputs(export_core(tower, specs), specs, encoders)
    inputs = [input_description(s) for s in specs]
    _set_metadata(model, {**metadata, "inputs": json.dumps(inputs), "output": OUTPUT_NAME})
    onnx.checker.check_model(model)
    sample = sample.select([s.name for s in specs])
    diff = max(
        parity_max_abs_diff(tower, specs, encoders, model, sample),
        parity_max_abs_diff(tower, specs, encoders, model, unusual_rows(specs, encoders)),
    )
    if not diff <= tolerance:
        raise ExportParityError(
            f"ONNX tower {path.name} differs from the torch tower by {diff:.3g} (> {tolerance:g}); the file was not written"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return _write_atomically(model, path), diff


def export_two_towers(
    model: TwoTowerModel,
    encoders: FeatureEncoders,
    out_dir: Path,
    *,
    model_name: str,
    model_version: str,
    feature_service: str,
    temperature: float,
    query_sample: pa.Table,
    item_sample: pa.Table,
) -> ExportResult:
    """``out_dir/query.onnx`` and ``out_dir/item.onnx`` with metadata and parity checks."""
    was_training = model.training
    device = next(model.parameters()).device
    model.cpu().eval()
    dimension = int(model.config.output_dim)
    common = {
        "format_version": FORMAT_VERSION,
        "model_name": model_name,
        "model_version": str(model_version),
        "feature_service": feature_service,
        "dimension": str(dimension),
        "temperature": repr(float(temperature)),
        "schema": encoders.schema.to_json(),
    }
    paths = {"query": out_dir / "query.onnx", "item": out_dir / "item.onnx"}
    towers = {"query": model.query_tower, "item": model.item_tower}
    samples = {"query": query_sample, "item": item_sample}
    sha256s: dict[str, str] = {}
    worst = 0.0
    try:
        for side in ("query", "item"):
            digest, diff = export_tower(
                towers[side],
                specs=encoders.specs[side],
                encoders=encoders,
                path=paths[side],
                metadata={**common, "tower": side},
                sample=samples[side],
            )
            sha256s[paths[side].name] = digest
            worst = max(worst, diff)
    finally:
        model.to(device).train(was_training)
    return ExportResult(
        query_path=paths["query"], item_path=paths["item"], sha256s=sha256s, dimension=dimension, max_abs_diff=worst
    )


# --- loading --------------------------------------------------------------------------------------------------------


class OnnxTower:
    """An exported tower in onnxruntime that checks its inputs before running."""

    def __init__(self, path: Path, session: Any, metadata: dict[str, str]) -> None:
        self.path = path
        self.session = session
        self.metadata = metadata
        self.inputs: list[dict[str, Any]] = json.loads(metadata.get("inputs", "[]"))
        self.dimension = int(metadata["dimension"]) if "dimension" in metadata else None

    def _check(self, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        name = self.path.name
        expected = {i["name"]: i for i in self.inputs}
        unexpected = sorted(set(feeds) - set(expected))
        if unexpected:
            raise OnnxInputError(f"ONNX tower {name} has no inputs {unexpected}; its inputs are {sorted(expected)}")
        checked: dict[str, np.ndarray] = {}
        for input_name, info in expected.items():
            want = f"{info['dtype']} {info['shape']}"
            if input_name not in feeds:
                raise OnnxInputError(f"ONNX tower {name} needs input {input_name!r} ({want}); it is missing")
            value = np.asarray(feeds[input_name])
            if info["dtype"] == "string":
                if value.dtype.kind == "U":
                    value = value.astype(object)
                if value.dtype != object or not all(isinstance(v, str) for v in value.flat[:16]):
                    raise OnnxInputError(
                        f"ONNX tower {name} input {input_name!r} must be {want} (numpy str/object), got {value.dtype}"
                    )
            elif value.dtype != np.float32:
                raise OnnxInputError(f"ONNX tower {name} input {input_name!r} must be {want}, got {value.dtype}")
            if value.ndim != len(info["shape"]) or (info["max_len"] is not None and value.shape[1] != info["max_len"]):
                raise OnnxInputError(f"ONNX tower {name} input {input_name!r} must have shape {info['shape']}, got {list(value.shape)}")
            checked[input_name] = value
        batch_sizes = {v.shape[0] for v in checked.values()}
        if len(batch_sizes) > 1:
            raise OnnxInputError(f"ONNX tower {name} inputs disagree on the batch size: {sorted(batch_sizes)}")
        return checked

    def run(self, feeds: dict[str, Any]) -> np.ndarray:
        """Checked inputs -> ``embedding`` float32 [B, D]."""
        (out,) = self.session.run([OUTPUT_NAME], self._check(feeds))
        return out

    def embed_table(self, table: pa.Table) -> np.ndarray:
        from towers.schema import FeatureSpec

        side: Literal["query", "item"] = "item" if self.metadata.get("tower") == "item" else "query"
        specs = [
            FeatureSpec(name=i["name"], side=side, kind=i["kind"], max_len=i["max_len"])
            for i in self.inputs
        ]
        return self.run(table_to_onnx_inputs(table, specs))


def load_onnx_tower(path: Path, *, providers: list[str] | None = None) -> OnnxTower:
    """Open an exported tower; ``OnnxTower.run`` names any missing input or wrong dtype/shape."""
    import onnxruntime as ort

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"ONNX tower {path} does not exist; export the model first")
    session = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    if metadata.get("format_version") != FORMAT_VERSION:
        raise OnnxInputError(f"{path} has tower format {metadata.get('format_version')!r}, expected {FORMAT_VERSION}")
    return OnnxTower(path, session, metadata)
