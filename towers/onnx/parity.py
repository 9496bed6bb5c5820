"""The parity check of an export: torch vs onnxruntime on the caller's rows and on unusual ones (max abs diff)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import torch

from towers.errors import ExportParityError
from towers.features.encoder import FeatureEncoders
from towers.onnx.contract import OUTPUT_NAME, table_to_onnx_inputs

if TYPE_CHECKING:
    import onnx

    from towers.features.schema import FeatureSpec
    from towers.nn.tower import Tower

PARITY_TOLERANCE = 1e-5


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
