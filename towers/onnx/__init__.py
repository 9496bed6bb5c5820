"""ONNX towers: the file contract and its one metadata parser, export with a parity check, the one runtime reader."""

from towers.errors import ExportParityError, OnnxInputError
from towers.onnx.contract import (
    FORMAT_VERSION,
    OUTPUT_NAME,
    TowerFileMetadata,
    TowerInput,
    input_description,
    table_to_onnx_inputs,
)
from towers.onnx.export import ExportResult, export_tower, export_two_towers
from towers.onnx.parity import PARITY_TOLERANCE, parity_max_abs_diff, unusual_rows
from towers.onnx.reader import OnnxTower, file_sha256, load_onnx_tower

__all__ = [
    "FORMAT_VERSION",
    "OUTPUT_NAME",
    "PARITY_TOLERANCE",
    "ExportParityError",
    "ExportResult",
    "OnnxInputError",
    "OnnxTower",
    "TowerFileMetadata",
    "TowerInput",
    "export_tower",
    "export_two_towers",
    "file_sha256",
    "input_description",
    "load_onnx_tower",
    "parity_max_abs_diff",
    "table_to_onnx_inputs",
    "unusual_rows",
]
