"""The embedded vector store on qdrant-edge: one shard folder per collection, aliases as pointer files.

``EdgeVectorStore`` speaks the same methods and types as :class:`~tower_platform.vectors.store.QdrantVectorStore`
(collections named ``<model>__v<N>``, item ids in, :class:`SearchHit` out) on Qdrant's in-process engine::

    <root>/<collection>/     one EdgeShard (segments, write-ahead log, edge_config.json)
    <root>/aliases/<alias>   the collection an alias points to (see :mod:`tower_platform.vectors.alias_file`)

Below ``EdgeIndexConfig.exact_below`` points a collection is searched exactly; above it :meth:`finish_bulk_load`
builds an HNSW graph (``m``, ``ef_construct``) and searches use ``ef``; :mod:`tower_platform.vectors.index` holds
those settings and the recall check that compares the graph with exact search.

A shard opened by a process holds the lock of its write-ahead log: the store keeps each opened shard until
:meth:`close`, and a second process opening the same shard gets :class:`UnavailableError`. qdrant-edge raises plain
``Exception``; :mod:`tower_platform.vectors.shard` maps its messages to this platform's errors in one table.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tower_platform.errors import ConflictError, NotFoundError, UnavailableError
from tower_platform.naming import DISTANCES
from tower_platform.vectors.alias_file import AliasPointers, check_name
from tower_platform.vectors.index import EdgeIndexConfig
from tower_platform.vectors.points import (
    CATEGORY_FIELD,
    ITEM_ID_FIELD,
    CollectionInfo,
    SearchHit,
    StoredPoint,
    VectorPage,
    aligned_batch,
    page_of,
)
from tower_platform.vectors.qdrant_records import stored_point
from tower_platform.vectors.shard import (
    SHARD_CONFIG_FILE,
    DELETING_PREFIX,
    create_shard,
    fast_point_id,
    open_shard,
    remove_leftovers,
    translated,
)

_UPSERT_BATCH = 4096


class EdgeVectorStore:
    """Collections, aliases and k-NN search on qdrant-edge shards under one root folder."""

    kind = "edge"

    def __init__(
        self, root: str | Path, *, index: EdgeIndexConfig | None = None, lock_timeout_s: float = 30.0
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        self.where = str(self.root)
        self.index = index or EdgeIndexConfig()
        self.lock_timeout_s = lock_timeout_s
        self._aliases = AliasPointers(self.root)
        self._shards: dict[str, Any] = {}
        self._counts: dict[str, int] = {}
        self._open = True
        self.root.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.root)  # half-created or half-deleted shards of killed processes

    def close(self) -> None:
        shards, self._shards = self._shards, {}
        self._open = False
        for shard in shards.values():
            with contextlib.suppress(Exception):
                shard.close()

    def __enter__(self) -> EdgeVectorStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- shards -------------------------------------------------------------------------------------------------
    def _folder(self, name: str) -> Path:
        return self.root / check_name(name, kind="collection")

    def _edge(self, action: str, folder: Path) -> contextlib.AbstractContextManager[None]:
        return translated(action, folder)

    def _shard(self, name: str) -> Any:
        """The opened shard of a collection (opened once, kept until close); NotFoundError when absent."""
        if not self._open:
            raise UnavailableError(f"the vector store at {self.where} is closed; open it again.")
        shard = self._shards.get(name)
        if shard is not None:
            return shard
        folder = self._folder(name)
        if not (folder / SHARD_CONFIG_FILE).is_file():
            raise self._missing(name)
        shard = self._load(folder)
        self._shards[name] = shard
        return shard

    def _load(self, folder: Path) -> Any:
        return open_shard(folder, lock_timeout_s=self.lock_timeout_s)

    def _missing(self, name: str, *, kind: str = "collection") -> NotFoundError:
        return NotFoundError(
            f"vector {kind} '{name}' does not exist at {self.where}; see `towerctl embeddings status MODEL`."
        )

    def _resolve(self, name_or_alias: str) -> str:
        if (self._folder(name_or_alias) / SHARD_CONFIG_FILE).is_file():
            return name_or_alias
        target = self._aliases.target(name_or_alias)
        if target is None:
            raise self._missing(name_or_alias, kind="collection or alias")
        return target

    def _shard_config(self, name: str) -> dict[str, Any]:
        folder = self._folder(name)
        try:
            return json.loads((folder / SHARD_CONFIG_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise self._missing(name) from None

    # -- collections ----------------------------------------------------------------------------------------------
    def create_collection(self, name: str, *, dimension: int, distance: str = "cosine", bulk: bool = True) -> None:
        """Create an empty shard with a keyword index on the category; built in a temporary folder, then renamed."""
        del bulk  # the engine builds its graph only in finish_bulk_load (optimize), never during writes
        if distance not in DISTANCES:
            raise ConflictError(f"distance {distance!r} for collection '{name}' is not one of {DISTANCES}.")
        folder = self._folder(name)
        if folder.exists():
            raise ConflictError(
                f"vector collection '{name}' already exists at {self.where}; delete it first or write a new version."
            )
        create_shard(folder, dimension=int(dimension), distance=distance, index=self.index)
        self._counts[name] = 0

    def finish_bulk_load(self, name: str) -> None:
        """Flush, and build the HNSW graph when the collection holds ``exact_below`` points or more."""
        shard = self._shard(name)
        folder = self._folder(name)
        with self._edge("build its index", folder):
            shard.flush()
            if self._count(name) >= self.index.exact_below:
                shard.optimize()
                shard.flush()

    def collection_exists(self, name: str) -> bool:
        return (self._folder(name) / SHARD_CONFIG_FILE).is_file()

    def collection_info(self, name: str) -> CollectionInfo:
        config = self._shard_config(name)
        params = config["vectors"][""]
        return CollectionInfo(
            point_count=self._count(name), dimension=int(params["size"]), distance=str(params["distance"]).lower()
        )

    def delete_collection(self, name: str) -> None:
        """Close the shard, drop the aliases pointing to it, rename its folder away, then remove it."""
        folder = self._folder(name)
        if not folder.exists():
            raise self._missing(name)
        shard = self._shards.pop(name, None)
        self._counts.pop(name, None)
        if shard is not None:
            with contextlib.suppress(Exception):
                shard.close()
        else:  # refuse to delete a shard another process holds open
            self._load(folder).close()
        self._aliases.drop_targets(name)
        doomed = self.root / f"{DELETING_PREFIX}{name}-{uuid.uuid4().hex}"
        folder.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def list_collections(self) -> list[str]:
        return sorted(
            p.name
            for p in self.root.iterdir()
            if not p.name.startswith(".") and p.is_dir() and (p / SHARD_CONFIG_FILE).is_file()
        )

    # -- points -------------------------------------------------------------------------------------------------
    def _count(self, name: str) -> int:
        if name not in self._counts:
            from qdrant_edge import CountRequest

            shard = self._shard(name)
            with self._edge("count points", self._folder(name)):
                self._counts[name] = int(shard.count(CountRequest(exact=True)))
        return self._counts[name]

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[Mapping[str, Any]],
    ) -> None:
        """Write points keyed by item id (idempotent: the point id is derived from the item id)."""
        import qdrant_edge as qe

        vectors = aligned_batch(name, ids, vectors, payloads)  # [N, D] float32
        shard = self._shard(name)
        with self._edge("upsert points", self._folder(name)):
            for start in range(0, len(ids), _UPSERT_BATCH):
                rows = vectors[start : start + _UPSERT_BATCH].tolist()  # [B, D] as lists: one conversion per batch
                points = [
                    qe.Point(fast_point_id(i), row, {ITEM_ID_FIELD: str(i), **dict(p)})
                    for i, row, p in zip(
                        ids[start : start + _UPSERT_BATCH], rows, payloads[start : start + _UPSERT_BATCH], strict=True
                    )
                ]
                shard.update(qe.UpdateOperation.upsert_points(points))
        self._counts.pop(name, None)  # recounted on demand: an upsert may overwrite as well as add

    def retrieve(self, name: str, ids: Sequence[str], *, with_vectors: bool = True) -> list[StoredPoint]:
        """The stored points of these item ids (missing ones are absent from the result), in the order asked."""
        shard = self._shard(name)
        with self._edge("retrieve points", self._folder(name)):
            records = shard.retrieve([fast_point_id(i) for i in ids], with_payload=True, with_vector=with_vectors)
        by_item = {str((r.payload or {}).get(ITEM_ID_FIELD)): r for r in records}
        return [stored_point(by_item[str(i)], with_vectors=with_vectors) for i in ids if str(i) in by_item]

    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        """Which of these item ids already have a point in the collection."""
        return {p.item_id for p in self.retrieve(name, ids, with_vectors=False)}

    def scroll(self, name: str, *, batch_size: int = 1024, with_vectors: bool = True) -> Iterator[list[StoredPoint]]:
        """Every point of a collection, in pages of ``batch_size`` (point-id order)."""
        from qdrant_edge import ScrollRequest

        shard = self._shard(name)
        offset = None
        while True:
            with self._edge("scroll points", self._folder(name)):
                records, offset = shard.scroll(
                    ScrollRequest(offset=offset, limit=batch_size, with_payload=True, with_vector=with_vectors)
                )
            if records:
                yield [stored_point(r, with_vectors=with_vectors) for r in records]
            if offset is None:
                return

    def scroll_vectors(self, name: str, *, fields: Sequence[str] = (), batch_size: int = 4096) -> Iterator[VectorPage]:
        """Every point of a collection as pages of (item ids, a [P, D] float32 matrix, the payload ``fields``)."""
        from qdrant_edge import ScrollRequest

        shard = self._shard(name)
        offset = None
        while True:
            with self._edge("scroll points", self._folder(name)):
                records, offset = shard.scroll(
                    ScrollRequest(offset=offset, limit=batch_size, with_payload=True, with_vector=True)
                )
            if records:
                yield page_of(records, fields=fields, where=f"'{name}' at {self.where}")
            if offset is None:
                return

    def check_index_recall(self, name: str) -> float | None:
        """Recall@K of the graph against exact search, refused below the floor (see :func:`index.check_index`)."""
        from tower_platform.vectors.index import check_index

        return check_index(self, name)

    def search(
        self,
        name_or_alias: str,
        vector: np.ndarray,
        *,
        limit: int,
        exclude_item_ids: Sequence[str] = (),
        category: str | None = None,
    ) -> list[SearchHit]:
        """Top-``limit`` items by similarity to ``vector`` [D], without the excluded items, optionally one category.

        The category (keyword payload index) and the excluded ids (``must_not`` has-id) filter inside the engine.
        """
        return self.search_many(
            name_or_alias, np.asarray(vector, dtype=np.float32).reshape(1, -1), limit=limit,
            exclude_item_ids=exclude_item_ids, category=category,
        )[0]

    def search_many(
        self,
        name_or_alias: str,
        vectors: np.ndarray,
        *,
        limit: int,
        exclude_item_ids: Sequence[str] = (),
        category: str | None = None,
        exact: bool | None = None,
    ) -> list[list[SearchHit]]:
        """One top-``limit`` list per row of ``vectors`` [Q, D], run as one batch.

        ``exact`` None searches exactly below ``exact_below`` points and with the graph at ``ef`` above it;
        True or False forces one or the other (recall measurement).
        """
        import qdrant_edge as qe

        name = self._resolve(name_or_alias)
        shard = self._shard(name)
        if exact is None:
            exact = self._count(name) < self.index.exact_below
        params = qe.SearchParams(exact=True) if exact else qe.SearchParams(hnsw_ef=max(self.index.ef, int(limit)))
        must = [qe.FieldCondition(key=CATEGORY_FIELD, match=qe.MatchValue(category))] if category is not None else None
        must_not = [qe.HasIdCondition({fast_point_id(i) for i in exclude_item_ids})] if exclude_item_ids else None
        query_filter = qe.Filter(must=must, must_not=must_not) if (must or must_not) else None
        queries = np.asarray(vectors, dtype=np.float32)  # [Q, D]
        requests = [
            qe.QueryRequest(
                limit=int(limit), query=qe.Query.Nearest(row), filter=query_filter, params=params, with_payload=True
            )
            for row in queries.tolist()
        ]
        with self._edge("search", self._folder(name)):
            if len(requests) == 1:
                results = [shard.query(requests[0])]
            else:
                results = shard.query_batch(qe.QueryBatchRequest(requests)) if requests else []
        return [[_hit(p) for p in points] for points in results]

    def sample_vectors(self, name: str, count: int, *, seed: int = 0) -> np.ndarray:
        """``count`` stored vectors [count, D] drawn at random (a scroll of point ids only, then one retrieve)."""
        from qdrant_edge import ScrollRequest

        shard = self._shard(name)
        ids: list[Any] = []
        offset = None
        with self._edge("sample points", self._folder(name)):
            while True:
                records, offset = shard.scroll(ScrollRequest(offset=offset, limit=65_536, with_payload=False))
                ids.extend(r.id for r in records)
                if offset is None:
                    break
            picked = np.random.default_rng(seed).choice(len(ids), size=min(count, len(ids)), replace=False)
            records = shard.retrieve([ids[i] for i in picked], with_payload=False, with_vector=True)
        return np.asarray([_raw_vector(r.vector) for r in records], dtype=np.float32).reshape(len(records), -1)

    def graph_settings(self, name: str) -> tuple[int, int]:
        """(m, ef_construct) the collection was created with."""
        hnsw = self._shard_config(name).get("hnsw_config") or {}
        return int(hnsw.get("m", self.index.m)), int(hnsw.get("ef_construct", self.index.ef_construct))

    def indexed_count(self, name: str) -> int:
        """Points covered by the HNSW graph (0 while the collection is searched exactly)."""
        shard = self._shard(name)
        with self._edge("read the shard", self._folder(name)):
            return int(shard.info().indexed_vectors_count)

    # -- aliases ------------------------------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        """Every alias and the collection it points to."""
        return self._aliases.read()

    def alias_target(self, alias: str) -> str | None:
        return self._aliases.target(alias)

    def swap_alias(self, alias: str, collection: str, *, previous: str | None) -> None:
        """Point ``alias`` at ``collection`` by one atomic rename of its pointer file.

        ``previous`` is the collection the caller believes the alias points to now (None: no alias yet); when
        the alias points elsewhere, nothing changes and ConflictError is raised (someone else moved it).
        """
        if not self.collection_exists(collection):
            raise NotFoundError(
                f"cannot point alias '{alias}' at collection '{collection}': it does not exist at {self.where}; "
                "write it first with `towerctl embeddings write`."
            )
        self._aliases.swap(alias, collection, previous=previous)

    def delete_alias(self, alias: str) -> None:
        self._aliases.delete(alias)


def _raw_vector(raw: Any) -> Any:
    return next(iter(raw.values())) if isinstance(raw, Mapping) else raw


def _hit(point: Any) -> SearchHit:
    payload = dict(point.payload or {})
    return SearchHit(item_id=str(payload.get(ITEM_ID_FIELD)), score=float(point.score), payload=payload)
