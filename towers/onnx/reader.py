"""The one onnxruntime reader of tower files (onnxruntime is imported lazily, when a file is opened).

    tower = load_onnx_tower(path)              # checks the file's format and metadata
    vectors = tower.embed_table(rows)          # Arrow rows as the feature store serves them -> float32 [B, D]
    vectors = tower.run(feeds)                 # checked ONNX inputs -> float32 [B, D]

``sha256`` (when given, e.g. the digest recorded at export) is verified against the file's bytes before the session
is created; a mismatch raises ``ArtifactDigestError``, a missing file ``ArtifactMissingError`` (both
``TowersArtifactError``). ``threads`` caps onnxruntime's intra-op threads and turns off their busy-waiting between
runs (idle spinning threads take the cores a process needs for other work).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from towers.errors import ArtifactDigestError, ArtifactMissingError, OnnxInputError, TowersArtifactError
from towers.onnx.contract import OUTPUT_NAME, TowerFileMetadata, table_to_onnx_inputs


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OnnxTower:
    """An exported tower in onnxruntime that checks its inputs before running."""

    def __init__(self, path: Path, session: Any, info: TowerFileMetadata) -> None:
        self.path = path
        self.session = session
        self.info = info
        self.metadata = info.raw  # the raw metadata_props
        self.dimension = info.dimension

    def _check(self, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        name = self.path.name
        expected = {i.name: i for i in self.info.inputs}
        unexpected = sorted(set(feeds) - set(expected))
        if unexpected:
            raise OnnxInputError(f"ONNX tower {name} has no inputs {unexpected}; its inputs are {sorted(expected)}")
        checked: dict[str, np.ndarray] = {}
        for input_name, spec in expected.items():
            shape = list(spec.shape)
            want = f"{spec.dtype} {shape}"
            if input_name not in feeds:
                raise OnnxInputError(f"ONNX tower {name} needs input {input_name!r} ({want}); it is missing")
            value = np.asarray(feeds[input_name])
            if spec.dtype == "string":
                if value.dtype.kind == "U":
                    value = value.astype(object)
                if value.dtype != object or not all(isinstance(v, str) for v in value.flat[:16]):
                    raise OnnxInputError(
                        f"ONNX tower {name} input {input_name!r} must be {want} (numpy str/object), got {value.dtype}"
                    )
            elif value.dtype != np.float32:
                raise OnnxInputError(f"ONNX tower {name} input {input_name!r} must be {want}, got {value.dtype}")
            if value.ndim != len(shape) or (spec.max_len is not None and value.shape[1] != spec.max_len):
                raise OnnxInputError(
                    f"ONNX tower {name} input {input_name!r} must have shape {shape}, got {list(value.shape)}"
                )
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
        """Arrow rows (one column per input) -> float32 [B, D]."""
        return self.run(table_to_onnx_inputs(table, self.info.specs()))


def load_onnx_tower(
    path: Path, *, providers: list[str] | None = None, sha256: str | None = None, threads: int | None = None
) -> OnnxTower:
    """Open an exported tower (verifying ``sha256`` when given); ``OnnxTower.run`` names any missing input or wrong
    dtype/shape. Raises TowersArtifactError when the file is missing, altered, unreadable or of another format."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactMissingError(f"ONNX tower {path} does not exist; export the model first.")
    if sha256 is not None:
        actual = file_sha256(path)
        if actual != sha256.lower():
            raise ArtifactDigestError(
                f"ONNX tower {path} (sha256 {actual[:12]}…) does not match its recorded sha256 {sha256[:12]}…; "
                "restore the file or re-export the model.",
                path=str(path), actual=actual, expected=sha256.lower(),
            )
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / RuntimeException types
        raise TowersArtifactError(f"ONNX tower {path} cannot be loaded ({exc}); re-export the model.") from exc
    info = TowerFileMetadata.parse(dict(session.get_modelmeta().custom_metadata_map), source=str(path))
    return OnnxTower(path, session, info)
