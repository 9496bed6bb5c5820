"""A serving bundle: the files a service needs to serve one model version without this platform installed.

    <out>/query.onnx           the version's query tower (its sha256 checked against the registry)
    <out>/feature_store.yaml   the feature repository's configuration as Feast alone loads it
                               (:mod:`tower_platform.features.standalone_config`)
    <out>/manifest.json        the serving contract, every fact spelled out (:mod:`tower_platform.serving.manifest`)

Only a version whose item vectors are written and verified gets a bundle (status indexed, production or rolled back,
its collection present in the vector store), and only on a backend another process can reach: a Qdrant server or
the embedded qdrant-edge folders (qdrant-client's local storage and memory mode admit no second process).

The folder is built under a temporary name beside ``out`` (``.<name>.tmp-*``), then renamed into place; an existing
non-empty ``out`` is replaced only with ``force`` (the old folder is moved aside, ``.<name>.old-*``, and removed after
the rename). Leftovers of a killed run are removed by the next run for the same ``out``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from tower_platform.errors import ConfigError, ConflictError, NotFoundError, UsageError
from tower_platform.naming import collection_name, production_alias
from tower_platform.serving.manifest import (
    FEATURE_STORE_FILE,
    MANIFEST_FILE,
    QUERY_TOWER_FILE,
    build_manifest,
    EDGE_OPEN_RULE,
)

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.features.store import FeastFeatureStore
    from tower_platform.registry.entities import ModelVersion
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.serving.onnx_tower import TowerMetadata

SERVABLE_STATUSES = ("indexed", "production", "rolled_back")
API_KEY_VARIABLE = "QDRANT_API_KEY"  # the variable a service reads a Qdrant server's API key from
_TEMP_MARK, _OLD_MARK = ".tmp-", ".old-"


@dataclass(frozen=True)
class ServingBundle:
    folder: Path
    manifest: dict[str, Any]
    dry_run: bool = False


def write_serving_bundle(
    registry: SqlRegistryStore,
    vectors: Any,
    feature_store: FeastFeatureStore,
    *,
    model: str,
    version: int | None = None,
    out: Path,
    force: bool = False,
    dry_run: bool = False,
) -> ServingBundle:
    """Write the serving bundle of ``model`` ``version`` (default: the production version) to ``out``."""
    from tower_platform.features.standalone_config import standalone_feature_store_yaml
    from tower_platform.serving.onnx_tower import OnnxTower

    out = Path(out).expanduser().absolute()
    _check_target(out, force=force)
    chosen = _servable_version(registry, model, version)
    collection = collection_name(model, chosen.version)
    if not vectors.collection_exists(collection):
        raise NotFoundError(
            f"Collection '{collection}' of '{model}' version {chosen.version} is missing from the vector store at "
            f"{_public_url(str(vectors.where))}; write it again with `towerctl embeddings write {model} --version "
            f"{chosen.version}`."
        )
    backend = vectors_section(vectors, alias=production_alias(model))
    artifact = chosen.artifact(QUERY_TOWER_FILE)
    tower = OnnxTower(artifact.path, expected_sha256=artifact.sha256)
    meta = tower.metadata
    if (meta.model_name, meta.model_version) != (model, chosen.version):
        raise ConflictError(
            f"{artifact.path} is model '{meta.model_name}' version {meta.model_version}, not '{model}' version "
            f"{chosen.version}; the registry points at another export: register the version again."
        )
    if not meta.serving.query_feature_service:
        raise ConflictError(f"{artifact.path} names no query feature service; export version {chosen.version} again.")
    feature_names = _feature_names(feature_store, meta, path=artifact.path)
    tower_bytes = Path(artifact.path).read_bytes()
    if hashlib.sha256(tower_bytes).hexdigest() != artifact.sha256:
        raise ConflictError(f"{artifact.path} changed while the bundle was being written; run the command again.")
    external = feature_store.external
    repo_dir = Path(external["repo"]) if external else feature_store.repo_dir
    yaml_text = standalone_feature_store_yaml(
        repo_dir, home_dir=feature_store.home_dir,
        header=f"Feast configuration of the serving bundle of '{model}' version {chosen.version}, loadable by Feast "
               f"alone (from {repo_dir / 'feature_store.yaml'}; online reads only: the offline store is Feast's own).",
    )
    elapsed = meta.serving.elapsed_features if meta.serving.declared else _elapsed(feature_store, meta)
    manifest = build_manifest(
        model=model,
        version=chosen.version,
        metadata=meta,
        sha256={QUERY_TOWER_FILE: artifact.sha256,
                FEATURE_STORE_FILE: hashlib.sha256(yaml_text.encode("utf-8")).hexdigest()},
        feature_names=feature_names,
        elapsed_features=elapsed,
        project=_project(yaml_text),
        vectors=backend,
        alias=production_alias(model),
        collection=collection,
        distance=chosen.collection.distance if chosen.collection else "cosine",
    )
    if dry_run:
        return ServingBundle(folder=out, manifest=manifest, dry_run=True)
    files = {
        QUERY_TOWER_FILE: tower_bytes,
        FEATURE_STORE_FILE: yaml_text.encode("utf-8"),
        MANIFEST_FILE: (json.dumps(manifest, indent=2) + "\n").encode("utf-8"),
    }
    _write_folder(out, files)
    return ServingBundle(folder=out, manifest=manifest)


def _servable_version(registry: SqlRegistryStore, model: str, version: int | None) -> ModelVersion:
    if version is None:
        chosen = registry.production_version(model)
        if chosen is None:
            raise ConflictError(f"Model '{model}' has no production version; pass --version N to bundle another one.")
    else:
        chosen = registry.get_version(model, version)
    verified = chosen.collection is not None and chosen.collection.verified
    if chosen.status not in SERVABLE_STATUSES or not verified:
        raise ConflictError(
            f"Version {chosen.version} of model '{model}' is {chosen.status}"
            f"{'' if verified else ' without verified item vectors'}: only an indexed version can be served; write "
            f"and verify its vectors with `towerctl embeddings write {model} --version {chosen.version}`."
        )
    return chosen


def vectors_section(vectors: Any, *, alias: str) -> dict[str, Any]:
    """How another process reaches the vectors: a Qdrant server (URL without credentials) or the edge folders."""
    from tower_platform.vectors.alias_file import ALIAS_FOLDER

    kind = getattr(vectors, "kind", None)
    if kind == "edge":
        root = Path(vectors.root)
        index = vectors.index
        return {"kind": "qdrant-edge", "edge": {
            "root": str(root),
            "alias_file": str(root / ALIAS_FOLDER / alias),
            "collection_folder": "<root>/<the collection named in alias_file>",
            "open": EDGE_OPEN_RULE,
            "search": {"exact_below": int(index.exact_below), "hnsw_ef": int(index.ef),
                       "rule": "exact search below exact_below points, else HNSW with ef = max(hnsw_ef, limit)"},
        }}
    if kind == "remote":
        return {"kind": "qdrant-server", "server": {
            "url": _public_url(str(vectors.where)),
            "api_key_env": API_KEY_VARIABLE,
            "search": "query_points(collection_name=<alias>, query=<vector>, limit=<k + excluded>, with_payload=True)",
        }}
    raise ConfigError(
        f"The vector store is {kind!r} ({vectors.where}), which no other process can open; serve from a Qdrant "
        "server (TOWER_QDRANT__URL) or the embedded qdrant-edge store."
    )


def _feature_names(feature_store: FeastFeatureStore, meta: TowerMetadata, *, path: str) -> list[str]:
    """The full feature names the tower reads from the feature service (checked against the service itself)."""
    wanted = [i.name for i in meta.inputs if i.name != meta.serving.user_id_input]
    served = {f.name for f in feature_store.feature_schema().query}
    missing = [name for name in wanted if name not in served]
    if missing:
        raise ConfigError(
            f"Feature service '{meta.serving.query_feature_service}' does not serve {missing}, which {path} takes; "
            "apply the feature repository the version was trained on (`towerctl features apply`)."
        )
    return wanted


def _elapsed(feature_store: FeastFeatureStore, meta: TowerMetadata) -> dict[str, float]:
    inputs = {i.name for i in meta.inputs}
    return {name: unit for name, unit in feature_store.elapsed_features().items() if name in inputs}


def _project(yaml_text: str) -> str | None:
    import yaml

    return (yaml.safe_load(yaml_text) or {}).get("project")


def _public_url(url: str) -> str:
    """A URL without user, password or query string (an ``api-key`` parameter stays out of files and messages)."""
    parts = urlsplit(url)
    if not parts.scheme:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _check_target(out: Path, *, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder; choose a folder for the bundle.")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"--out {out} exists and is not empty; pass --force to replace it or choose another folder.")


def _write_folder(out: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into a temporary folder beside ``out``, then rename it to ``out`` (moving an old one aside)."""
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    marks = (f".{out.name}{_TEMP_MARK}", f".{out.name}{_OLD_MARK}")
    for leftover in parent.iterdir():  # the folders of a killed run for the same --out
        if leftover.name.startswith(marks) and leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
    staging = parent / f"{marks[0]}{uuid.uuid4().hex}"
    old = parent / f"{marks[1]}{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        for name, data in files.items():
            with open(staging / name, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        if out.exists():
            out.rename(old)
        staging.rename(out)
    except BaseException:
        if old.exists() and not out.exists():
            old.rename(out)  # the previous bundle stays in place
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    _sync_folder(parent)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
