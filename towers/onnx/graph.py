"""Building a tower file: the tower's numeric core exported with the dynamo exporter, string inputs in front.

The tower's numeric core (int64 ids and raw floats in; standardisation and the missing indicator are inside the
core) is exported with ``torch.onnx.export(..., dynamo=True)``; then each string input gets an
``ai.onnx.ml.LabelEncoder`` node in front (keys "" -> 0, tokens -> their ids, default -> the OOV id; with hashed OOV
buckets, ``com.microsoft.MurmurHash3`` picks the bucket).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from towers.errors import ExportParityError
from towers.features.encoder import FeatureEncoders, Vocabulary
from towers.onnx.contract import OUTPUT_NAME

if TYPE_CHECKING:
    import onnx

    from towers.features.schema import FeatureSpec
    from towers.nn.tower import Tower

CORE_OUTPUT_NAME = "tower_output"  # the exporter may name an internal value "embedding" (nn.Embedding); renamed later
ML_OPSET = 3
ONNX_OPSET = 18
MAX_IR_VERSION = 10


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
