"""ONNX towers: the file contract and its one metadata parser, the serving contract, export with a parity check, the one
runtime reader.

Names are loaded on first use (PEP 562): reading a tower file (``towers.onnx.reader``, ``towers.onnx.contract``)
never imports torch, which only the export needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ExportParityError": "towers.errors",
    "OnnxInputError": "towers.errors",
    "FORMAT_VERSION": "towers.onnx.contract",
    "OUTPUT_NAME": "towers.onnx.contract",
    "TowerFileMetadata": "towers.onnx.contract",
    "TowerInput": "towers.onnx.contract",
    "input_description": "towers.onnx.contract",
    "table_to_onnx_inputs": "towers.onnx.contract",
    "values_to_onnx_inputs": "towers.onnx.contract",
    "ExportResult": "towers.onnx.export",
    "export_tower": "towers.onnx.export",
    "export_two_towers": "towers.onnx.export",
    "PARITY_TOLERANCE": "towers.onnx.parity",
    "parity_max_abs_diff": "towers.onnx.parity",
    "unusual_rows": "towers.onnx.parity",
    "OnnxTower": "towers.onnx.reader",
    "file_sha256": "towers.onnx.reader",
    "load_onnx_tower": "towers.onnx.reader",
    "PAYLOAD_ITEM_FIELD": "towers.onnx.serving",
    "PAYLOAD_VERSION_FIELD": "towers.onnx.serving",
    "SERVING_KEY": "towers.onnx.serving",
    "ServingContract": "towers.onnx.serving",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'towers.onnx' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
