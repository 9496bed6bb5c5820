"""Export a trained version: ONNX towers (parity-checked, carrying the serving contract of
:mod:`tower_platform.serving.contract`), estimator state, checkpoint, monitor inputs and the ``spec.json`` that
``towerctl models register`` reads back (:mod:`tower_platform.registry.exported_model`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from tower_platform.errors import ConfigError
from tower_platform.naming import check_model_name
from tower_platform.paths import within
from tower_platform.staging import staged_folder
from tower_platform.pipeline.train import TrainedVersion, period_rows

if TYPE_CHECKING:  # pragma: no cover - heavy imports stay inside the functions
    from tower_platform.features.training_set import TrainingSet

ESTIMATOR_FILE = "frequency_estimator.npz"
SPEC_FILE = "spec.json"
CHECKPOINT_FILE = "towers.pt"
SPEC_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ExportedVersion:
    folder: Path
    version: int
    sha256: dict[str, str]
    max_abs_diff: float


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def export_version(
    trained: TrainedVersion,
    training_set: TrainingSet,
    corpus: pa.Table,
    *,
    model: str,
    version: int,
    artifacts_dir: Path,
    folder_name: str | None = None,
) -> ExportedVersion:
    """Write query.onnx, item.onnx (parity-checked), the estimator state, a checkpoint and spec.json to
    ``artifacts_dir/<model>/<folder_name or v<version>>/``; the folder appears only when complete. ``corpus`` is the
    item corpus the version will serve (its first rows are the item side of the parity check)."""
    final = within(artifacts_dir, check_model_name(model), folder_name or f"v{version}")
    import numpy as np

    from towers.onnx import ExportParityError

    if final.exists():
        raise ConfigError(f"Artifact folder {final} already exists; remove it or register that export instead.")
    table = training_set.table
    sample = table.slice(0, 0)
    for period in ("test", "validation", "train"):  # real rows of every period, latest first
        sample = pa.concat_tables([sample, period_rows(table, (period,)).slice(0, 256)])
    from tower_platform.serving.contract import serving_contract

    # staged under .<folder>.tmp-<token> beside it (tower_platform.staging): the folder appears only when complete,
    # and the leftovers of killed or failed exports of this model are removed first
    with staged_folder(final.parent, final.name, replace=False) as staging:
        try:
            result = trained.towers.export(
                staging,
                model_name=model,
                model_version=version,
                feature_service=feature_service_label(training_set),
                sample=sample,
                item_sample=corpus.slice(0, 512),
                extra_metadata=serving_contract(training_set.schema).to_metadata(),
            )
        except ExportParityError as exc:
            raise ConfigError(f"Export of {model} v{version} failed its ONNX parity check: {exc}") from exc
        monitor_inputs(training_set).write(staging)  # test queries for `towerctl monitor` and the promotion gates
        np.savez(staging / ESTIMATOR_FILE, **trained.towers.estimator_state())
        trained.towers.save(staging / CHECKPOINT_FILE)
        spec = version_spec(trained, training_set, model=model, version=version, sha256=result.sha256s)
        _write_atomically(staging / SPEC_FILE, json.dumps(spec, indent=2, default=str))
    return ExportedVersion(folder=final, version=version, sha256=result.sha256s, max_abs_diff=result.max_abs_diff)


def version_spec(
    trained: TrainedVersion, training_set: TrainingSet, *, model: str, version: int, sha256: dict[str, str]
) -> dict[str, Any]:
    """The ``spec.json`` of an export: what the registry records for the version."""
    return {
        "format_version": SPEC_FORMAT_VERSION,
        "model": model,
        "version": version,
        "feature_service": feature_service_label(training_set),
        "feature_services": list(training_set.feature_services),
        "features": training_set.schema.to_dict(),
        "training_config": trained.config.to_dict(),
        "fingerprint": training_set.fingerprint,
        "time_window": _time_window(training_set),
        "split": training_set.split.to_dict(),
        "estimator_path": ESTIMATOR_FILE,
        "metrics": trained.metrics(),
        "sha256": sha256,
    }


def monitor_inputs(training_set: TrainingSet) -> Any:
    """The test queries (query features only) and interaction log the alignment monitor measures a version on."""
    from tower_platform.monitor.inputs import MonitorInputs

    schema = training_set.schema
    return MonitorInputs.from_training_set(training_set.table, user_id=schema.user_id, item_id=schema.item_id,
                                           query_columns=tuple(f.name for f in schema.query))


def feature_service_label(training_set: TrainingSet) -> str:
    """The feature services a version names, as one label: ``query_features+item_features``."""
    return "+".join(training_set.feature_services)


def _time_window(training_set: TrainingSet) -> dict[str, str | None]:
    times = training_set.table.column("event_timestamp")
    start, end = pc.min(times).as_py(), pc.max(times).as_py()
    return {"start": start.isoformat() if start else None, "end": end.isoformat() if end else None}
