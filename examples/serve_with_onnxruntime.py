"""Serve a Tower Platform model version from another service, with onnxruntime, Feast, Qdrant and numpy only.

    towerctl models serving-bundle movies --out bundle/            # on the platform side
    python examples/serve_with_onnxruntime.py bundle/ 414 68 [-k 10] [--json] [--edge-open copy|in-place]

This file imports nothing of Tower Platform: it reads the bundle's ``manifest.json`` and follows it.

1. The bundle's files are checked against the sha256 values of the manifest.
2. ``query.onnx`` runs in onnxruntime; its ``model_name`` / ``model_version`` must be the manifest's.
3. A user's query features come from the Feast online store: the manifest's feature service, called with
   ``full_feature_names=True`` (the tower's inputs are ``<view>__<feature>``; with short names no input would match
   and the tower would see only missing values). Missing values are passed as the manifest says: "" for strings,
   NaN for numbers, lists cut to their padded length and padded with "". Features served as the epoch seconds of a
   past event become ``(now - value) / unit``.
4. The vector is searched on the model's alias, on a Qdrant server (qdrant-client) or in the embedded engine
   (qdrant-edge: the alias is a pointer file naming the collection folder).
5. The user's recent items (the exclusion feature) are dropped: k + len(recent) hits are asked, the recent ones
   removed, the first k kept.
6. Every hit's payload names the model version that wrote it. A hit of another version means the alias has moved
   to another version's vectors, which this query tower must not be paired with: the request is refused.

A shard of the embedded engine admits one opener at a time (its write-ahead log is locked). By default
(``--edge-open copy``) the collection the alias names is copied into a private folder and the copy is opened, so
``towerctl`` keeps working beside the service; ``--edge-open in-place`` opens the platform's own folder, and then
neither this process nor a ``towerctl`` command can open that collection while the other holds it.

Exit codes: 0 served; 2 the bundle is unusable (missing or altered file, unknown format); 4 refused: vectors of
another version; 5 the vectors or the feature store cannot be reached (or the shard is held by another process).

In a long-lived service, build one :class:`Recommender` and call :meth:`Recommender.recommend` per request.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

MANIFEST_FORMAT = 1


class ServingError(Exception):
    """A request or a bundle this service refuses; ``exit_code`` as documented above."""

    exit_code = 1


class BundleError(ServingError):
    exit_code = 2


class VersionMismatch(ServingError):
    exit_code = 4


class Unavailable(ServingError):
    exit_code = 5


# -- the bundle -------------------------------------------------------------------------------------------------------
def load_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a bundle folder, after checking every file against its sha256."""
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path} cannot be read ({exc}); write the bundle again with towerctl models serving-bundle.")
    if manifest.get("format_version") != MANIFEST_FORMAT:
        raise BundleError(f"{path} has format {manifest.get('format_version')!r}, this service reads {MANIFEST_FORMAT}.")
    for name, entry in manifest["files"].items():
        try:
            digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        except OSError as exc:
            raise BundleError(f"{folder / name} cannot be read ({exc}); write the bundle again.")
        if digest != entry["sha256"]:
            raise BundleError(f"{folder / name} has sha256 {digest[:12]}…, not the {entry['sha256'][:12]}… of "
                              f"{path}; the file was changed: write the bundle again.")
    return manifest


class QueryTower:
    """``query.onnx`` in onnxruntime, fed as the manifest says."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        spec = manifest["query_tower"]
        self.session = ort.InferenceSession(str(folder / spec["file"]), providers=["CPUExecutionProvider"])
        props = self.session.get_modelmeta().custom_metadata_map
        found = (props.get("model_name"), props.get("model_version"))
        if found != (manifest["model"], str(manifest["version"])):
            raise BundleError(f"{folder / spec['file']} is {found}, not the manifest's "
                              f"({manifest['model']!r}, {manifest['version']}); write the bundle again.")
        self.inputs = spec["inputs"]
        self.output = spec["output"]

    def feeds(self, row: dict[str, Any]) -> dict[str, np.ndarray]:
        """One user's feature values -> the [1, ...] input tensors."""
        feeds: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            value = row.get(spec["name"])
            if spec["kind"] == "numeric":
                feeds[spec["name"]] = np.array([np.nan if value is None else float(value)], dtype=np.float32)
            elif spec["kind"] == "categorical":
                feeds[spec["name"]] = np.array(["" if value is None else str(value)], dtype=object)
            else:
                length = spec["padded_length"]
                values = ["" if v is None else str(v) for v in (value or [])][:length]
                feeds[spec["name"]] = np.array([values + [spec["pad_value"]] * (length - len(values))], dtype=object)
        return feeds

    def embed(self, row: dict[str, Any]) -> np.ndarray:
        (vector,) = self.session.run([self.output], self.feeds(row))
        return np.asarray(vector[0], dtype=np.float32)  # [D]


class OnlineFeatures:
    """A user's query features from the Feast online store of the bundle's ``feature_store.yaml``."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        from feast import FeatureStore

        spec = manifest["features"]
        try:
            self.store = FeatureStore(repo_path=str(folder))
            self.service = self.store.get_feature_service(spec["feature_service"])
        except Exception as exc:  # Feast raises many types; all mean the feature store is not usable here
            raise Unavailable(f"the Feast repository of {folder / spec['feature_store_yaml']} cannot serve "
                              f"'{spec['feature_service']}' ({type(exc).__name__}: {exc}).")
        self.entity_key = spec["entity_key"]
        self.user_id_input = spec["user_id_input"]
        self.elapsed = {name: rule["unit_seconds"] for name, rule in spec["elapsed_features"].items()}

    def row(self, user_id: str) -> dict[str, Any]:
        response = self.store.get_online_features(
            features=self.service, entity_rows=[{self.entity_key: user_id}], full_feature_names=True
        ).to_dict()
        row = {name: values[0] for name, values in response.items()}
        now = time.time()
        for name, unit in self.elapsed.items():
            if row.get(name) is not None:
                row[name] = (now - float(row[name])) / unit
        if self.user_id_input:
            row[self.user_id_input] = user_id
        return row


# -- the vectors ------------------------------------------------------------------------------------------------------
class ServerVectors:
    """The alias on a Qdrant server (qdrant-client); the server resolves the alias on every search."""

    def __init__(self, client: Any, alias: str) -> None:
        self.client, self.alias = client, alias

    @classmethod
    def connect(cls, spec: dict[str, Any]) -> ServerVectors:
        from qdrant_client import QdrantClient

        server = spec["server"]
        return cls(QdrantClient(url=server["url"], api_key=os.environ.get(server["api_key_env"])), spec["alias"])

    def search(self, vector: np.ndarray, limit: int) -> list[tuple[float, dict[str, Any]]]:
        try:
            points = self.client.query_points(
                collection_name=self.alias, query=vector.tolist(), limit=limit, with_payload=True
            ).points
        except Exception as exc:  # httpx / grpc / qdrant errors
            raise Unavailable(f"search on alias '{self.alias}' failed ({type(exc).__name__}: {exc}).")
        return [(float(p.score), dict(p.payload or {})) for p in points]

    def target(self) -> str | None:
        """The collection the alias points to now."""
        try:
            aliases = {a.alias_name: a.collection_name for a in self.client.get_aliases().aliases}
        except Exception as exc:  # httpx / grpc / qdrant errors
            raise Unavailable(f"the Qdrant server cannot list its aliases ({type(exc).__name__}: {exc}).")
        return aliases.get(self.alias)

    def open(self) -> None:
        if self.target() is None:
            raise Unavailable(f"the Qdrant server has no alias '{self.alias}'; the model has no production version.")

    def close(self) -> None:
        self.client.close()


class EdgeVectors:
    """The alias of the embedded engine: a pointer file naming the collection folder, read on every search."""

    def __init__(self, spec: dict[str, Any], *, mode: str = "copy") -> None:
        edge = spec["edge"]
        self.root, self.alias_file, self.mode = Path(edge["root"]), Path(edge["alias_file"]), mode
        self.exact_below, self.hnsw_ef = edge["search"]["exact_below"], edge["search"]["hnsw_ef"]
        self.private = Path(tempfile.mkdtemp(prefix="serve-edge-")) if mode == "copy" else None
        self.shards: dict[str, tuple[Any, int]] = {}  # collection -> (opened shard, point count)

    def target(self) -> str:
        """The collection the alias points to now."""
        try:
            return self.alias_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise Unavailable(f"alias file {self.alias_file} cannot be read ({exc}); the model has no production "
                              "version there.")

    def open(self) -> None:
        self._shard(self.target())

    def _shard(self, name: str) -> tuple[Any, int]:
        import qdrant_edge as qe

        if name not in self.shards:
            folder = self.root / name
            if self.private is not None:
                copy = self.private / name
                _copy_tree(folder, copy)  # while the platform holds the shard: only the copy's lock is ours
                folder = copy
            try:
                shard = qe.EdgeShard.load(str(folder))
            except Exception as exc:  # qdrant-edge raises plain Exception
                held = "WouldBlock" in str(exc)
                raise Unavailable(
                    f"shard {folder} is held by another process (its write-ahead log is locked); stop that process "
                    "or run with --edge-open copy." if held else f"shard {folder} cannot be opened ({exc})."
                )
            self.shards[name] = (shard, int(shard.count(qe.CountRequest(exact=True))))
        return self.shards[name]

    def search(self, vector: np.ndarray, limit: int) -> list[tuple[float, dict[str, Any]]]:
        import qdrant_edge as qe

        name = self.target()
        shard, count = self._shard(name)
        params = qe.SearchParams(exact=True) if count < self.exact_below else qe.SearchParams(
            hnsw_ef=max(self.hnsw_ef, limit))
        points = shard.query(qe.QueryRequest(limit=limit, query=qe.Query.Nearest(vector.tolist()), params=params,
                                             with_payload=True))
        return [(float(p.score), dict(p.payload or {})) for p in points]

    def close(self) -> None:
        for shard, _ in self.shards.values():
            shard.close()
        self.shards = {}
        if self.private is not None:
            shutil.rmtree(self.private, ignore_errors=True)


def _copy_tree(source: Path, target: Path) -> None:
    """Copy a shard folder keeping its files sparse (write-ahead-log and storage files are mostly holes)."""
    for folder, _, files in os.walk(source):
        destination = target / Path(folder).relative_to(source)
        destination.mkdir(parents=True, exist_ok=True)
        for name in files:
            _copy_sparse(Path(folder) / name, destination / name)


def _copy_sparse(source: Path, target: Path) -> None:
    if not hasattr(os, "SEEK_DATA"):
        shutil.copyfile(source, target)
        return
    with open(source, "rb") as src, open(target, "wb") as dst:
        size = os.fstat(src.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError:  # no data after offset: the rest is a hole
                break
            end = os.lseek(src.fileno(), start, os.SEEK_HOLE)
            src.seek(start)
            dst.seek(start)
            while start < end:
                chunk = src.read(min(end - start, 1 << 20))
                dst.write(chunk)
                start += len(chunk)
            offset = end
        dst.truncate(size)


# -- the service --------------------------------------------------------------------------------------------------------
class Recommender:
    """Top-k items for a user, from one bundle; refuses vectors of another version than its query tower's."""

    def __init__(self, manifest: dict[str, Any], tower: QueryTower, features: Any, vectors: Any) -> None:
        self.manifest, self.tower, self.features, self.vectors = manifest, tower, features, vectors
        self.version = int(manifest["version"])
        self.version_field = manifest["version_check"]["payload_field"]
        self.item_field = manifest["payload_fields"]["item_id"]
        self.exclude_feature = manifest["exclusion"]["feature"]

    @classmethod
    def from_bundle(cls, folder: str | Path, *, edge_open: str = "copy") -> Recommender:
        folder = Path(folder)
        manifest = load_manifest(folder)
        spec = manifest["vectors"]
        if spec["kind"] not in ("qdrant-server", "qdrant-edge"):
            raise BundleError(f"{folder / 'manifest.json'} names vector backend {spec['kind']!r}; this service "
                              "reads qdrant-server and qdrant-edge.")
        vectors = ServerVectors.connect(spec) if spec["kind"] == "qdrant-server" else EdgeVectors(spec, mode=edge_open)
        try:
            vectors.open()  # first, so that a backend that cannot be reached fails before Feast starts
            return cls(manifest, QueryTower(folder, manifest), OnlineFeatures(folder, manifest), vectors)
        except BaseException:
            vectors.close()
            raise

    def recommend(self, user_id: str, *, k: int = 10) -> list[dict[str, Any]]:
        row = self.features.row(str(user_id))
        vector = self.tower.embed(row)
        recent = row.get(self.exclude_feature) if self.exclude_feature else None
        excluded = {str(v) for v in (recent or []) if v not in (None, "")}
        hits = self.vectors.search(vector, k + len(excluded))
        for _, payload in hits:
            if payload.get(self.version_field) != self.version:
                raise VersionMismatch(
                    f"alias '{self.manifest['vectors']['alias']}' (now collection {self.vectors.target()!r}) serves "
                    f"vectors with {self.version_field} {payload.get(self.version_field)!r}, but this query tower is "
                    f"version {self.version}; refusing to pair them: fetch the serving bundle of the production "
                    "version."
                )
        kept = [(score, payload) for score, payload in hits if str(payload.get(self.item_field)) not in excluded]
        return [{"rank": rank, "item_id": str(payload.get(self.item_field)), "score": score,
                 **{k_: payload.get(k_) for k_ in ("display", "category", "popularity")}}
                for rank, (score, payload) in enumerate(kept[:k], start=1)]

    def close(self) -> None:
        self.vectors.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, help="the folder towerctl models serving-bundle wrote")
    parser.add_argument("users", nargs="+", help="user ids")
    parser.add_argument("-k", type=int, default=10, help="items per user (default 10)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--edge-open", choices=("copy", "in-place"), default="copy",
                        help="embedded engine: open a private copy of the shard (default) or the shard itself")
    args = parser.parse_args(argv)
    recommender = None
    try:
        recommender = Recommender.from_bundle(args.bundle, edge_open=args.edge_open)
        results = [{"user_id": user, "items": recommender.recommend(user, k=args.k)} for user in args.users]
    except ServingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        if recommender is not None:
            recommender.close()
    manifest = recommender.manifest
    if args.json:
        print(json.dumps({"model": manifest["model"], "version": manifest["version"], "results": results}))
    else:
        for result in results:
            print(f"{manifest['model']} v{manifest['version']}: top {args.k} for user {result['user_id']}")
            for item in result["items"]:
                print(f"  {item['rank']:>3}  {item['item_id']:<12} {item['score']:.4f}  {item.get('display') or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
