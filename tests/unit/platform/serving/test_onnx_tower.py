"""The platform's ONNX reader wraps towers' one reader: sha256 checked on load, towers' errors translated once."""

from __future__ import annotations

import numpy as np
import pytest

from reference_tower import ReferenceFeature, build_reference_tower
from tower_platform.errors import ConfigError, IntegrityError, NotFoundError
from tower_platform.registry.artifact import file_sha256
from tower_platform.serving.onnx_tower import OnnxTower

RECENT = "user_history__recent_items"


def _query_tower(path):
    return build_reference_tower(
        path,
        features=[ReferenceFeature(RECENT, "multi_categorical", ("a", "b", "c"), max_len=3),
                  ReferenceFeature("user_history__n_interactions", "numeric")],
        dimension=4, model_name="movies", model_version=3, feature_service="query_features+item_features",
        schema={"user_id": "user_id", "query": [{"name": RECENT, "vocab_group": "item_id"}]},
    )


def test_metadata_and_the_derived_serving_contract_of_an_older_export(tmp_path):
    tower = OnnxTower(_query_tower(tmp_path / "query.onnx"))
    meta = tower.metadata
    assert (meta.model_name, meta.model_version, meta.dimension) == ("movies", 3, 4)
    assert [(i.name, i.kind, i.max_len) for i in meta.inputs] == [
        (RECENT, "multi_categorical", 3), ("user_history__n_interactions", "numeric", None)]
    # no `serving` key in this file: the service to call is the first part of the label, not the label
    assert meta.serving.query_feature_service == "query_features" and meta.serving.exclude_feature == RECENT
    vectors = tower.embed({RECENT: [["a", "b", "c", "d"], None], "user_history__n_interactions": [2, None]})
    assert vectors.shape == (2, 4) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_missing_file_is_not_found(tmp_path):
    with pytest.raises(NotFoundError, match="nothing.onnx does not exist") as caught:
        OnnxTower(tmp_path / "nothing.onnx")
    assert caught.value.exit_code == 3


def test_an_altered_file_is_refused_before_onnxruntime_opens_it(tmp_path):
    path = _query_tower(tmp_path / "query.onnx")
    recorded = file_sha256(path)
    assert OnnxTower(path, expected_sha256=recorded).metadata.model_version == 3
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match=f"has sha256 {file_sha256(path)[:12]}… but the registry recorded "
                                             f"{recorded[:12]}…") as caught:
        OnnxTower(path, expected_sha256=recorded)
    assert caught.value.exit_code == 4


def test_a_file_without_the_tower_format_is_a_config_error(tmp_path):
    import onnx

    model = onnx.load(str(_query_tower(tmp_path / "query.onnx")))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != "format_version"]  # a file of another format
    del model.metadata_props[:]
    for key, value in kept:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(tmp_path / "old.onnx"))
    with pytest.raises(ConfigError, match="old.onnx has tower format None, expected 1; re-export"):
        OnnxTower(tmp_path / "old.onnx")
