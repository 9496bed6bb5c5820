"""The Qdrant server backend: one collection per model version and real aliases, through qdrant-client.

``QdrantVectorStore`` is the one class that talks to ``qdrant_client``; its exceptions (and those of httpx and grpc
underneath) are translated here into :class:`UnavailableError` / :class:`NotFoundError` and never leave this module.
It serves a Qdrant server or cluster (``TOWER_QDRANT__URL``; collections laid out by
:class:`~tower_platform.vectors.server_collection.ServerCollectionConfig`) and qdrant-client's in-memory mode (tests).
qdrant-client's local on-disk storage is no longer a backend: without a URL, :func:`open_vector_store` opens the
embedded engine (:class:`~tower_platform.vectors.edge.EdgeVectorStore`) and refuses a ``$TOWER_HOME`` that still
holds the old local storage::

    with open_vector_store(settings) as store:
        store.search("movies", vector, limit=10)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tower_platform.errors import ConfigError, ConflictError, NotFoundError, TowerError, UnavailableError
from tower_platform.naming import DISTANCES
from tower_platform.redaction import redact, redact_url
from tower_platform.settings import env_name
from tower_platform.vectors.points import (
    CATEGORY_FIELD,
    ITEM_ID_FIELD,
    POINT_ID_NAMESPACE,
    CollectionInfo,
    SearchHit,
    StoredPoint,
    VectorPage,
    VectorStore,
    aligned_batch,
    page_of,
    point_id,
)
from tower_platform.vectors.qdrant_records import from_qdrant_distance, is_client_error, stored_point, to_qdrant_distance
from tower_platform.vectors.server_collection import ServerCollectionConfig

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.settings import Settings

__all__ = [  # the shared names, importable from here as before
    "CATEGORY_FIELD", "ITEM_ID_FIELD", "POINT_ID_NAMESPACE", "CollectionInfo", "QdrantVectorStore", "SearchHit",
    "StoredPoint", "VectorStore", "aligned_batch", "open_vector_store", "point_id",
]

_DEFERRED_INDEXING_THRESHOLD = 0  # no HNSW build while bulk loading
_DEFAULT_INDEXING_THRESHOLD = 10_000  # Qdrant's default (KB of vectors), restored after the bulk load


class QdrantVectorStore:
    """Collections per model version, the production alias and k-NN search, on a Qdrant server or in memory."""

    def __init__(
        self, client: Any, *, kind: str, where: str, collection: ServerCollectionConfig | None = None
    ) -> None:
        self._client = client
        self.kind = kind  # "remote" | "memory"
        self.where = where
        self.collection = collection or ServerCollectionConfig()

    # -- construction -----------------------------------------------------------------------------------------
    @classmethod
    def remote(
        cls,
        url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        collection: ServerCollectionConfig | None = None,
        transport: Any = None,
    ) -> QdrantVectorStore:
        """A Qdrant server or cluster; ``transport`` (an ``httpx`` transport) replaces the network, for tests."""
        from qdrant_client import QdrantClient

        extra = {"transport": transport} if transport is not None else {}
        where = redact_url(url)  # messages never carry the URL's credentials
        try:
            client = QdrantClient(url=url, api_key=api_key, timeout=int(timeout_s), check_compatibility=False, **extra)
        except Exception as exc:  # noqa: BLE001
            raise UnavailableError(
                f"Qdrant server {where} cannot be reached ({redact(str(exc), secrets=[api_key])}); check "
                "TOWER_QDRANT__URL and TOWER_QDRANT__API_KEY."
            ) from exc
        return cls(client, kind="remote", where=where, collection=collection)

    @classmethod
    def memory(cls, *, collection: ServerCollectionConfig | None = None) -> QdrantVectorStore:
        """qdrant-client's in-memory mode: the server API without a server (it ignores the collection layout)."""
        from qdrant_client import QdrantClient

        return cls(QdrantClient(location=":memory:"), kind="memory", where=":memory:", collection=collection)

    def close(self) -> None:
        try:
            if self._client is not None:
                self._client.close()
        finally:
            self._client = None

    def __enter__(self) -> QdrantVectorStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- error translation --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _translated(self, action: str, name: str | None = None) -> Iterator[None]:
        if self._client is None:
            raise UnavailableError(f"the Qdrant store at {self.where} is closed; open it again with open_vector_store.")
        try:
            yield
        except TowerError:
            raise
        except ValueError as exc:  # in-memory mode: "Collection X not found"
            if "not found" in str(exc).lower() and name is not None:
                raise NotFoundError(
                    f"Qdrant collection or alias '{name}' does not exist at {self.where}; "
                    "see `towerctl embeddings status MODEL`."
                ) from exc
            raise UnavailableError(f"Qdrant at {self.where} refused to {action}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001
            if not is_client_error(exc):
                raise
            status = getattr(exc, "status_code", None)
            if status == 404 and name is not None:
                raise NotFoundError(
                    f"Qdrant collection or alias '{name}' does not exist at {self.where}; "
                    "see `towerctl embeddings status MODEL`."
                ) from exc
            raise UnavailableError(
                f"Qdrant at {self.where} failed to {action}"
                f"{f' on {name!r}' if name else ''} ({type(exc).__name__}: {redact(str(exc))}); check that it is running."
            ) from exc

    # -- collections ----------------------------------------------------------------------------------------------
    def create_collection(self, name: str, *, dimension: int, distance: str = "cosine", bulk: bool = True) -> None:
        """Create an empty collection laid out by :attr:`collection` (shards, replicas, write consistency, on-disk
        vectors, quantisation); ``bulk`` defers HNSW indexing on a server until :meth:`finish_bulk_load`."""
        from qdrant_client import models

        if distance not in DISTANCES:
            raise ConflictError(f"distance {distance!r} for collection '{name}' is not one of {DISTANCES}.")
        optimizers = (
            models.OptimizersConfigDiff(indexing_threshold=_DEFERRED_INDEXING_THRESHOLD)
            if bulk and self.kind == "remote"
            else None
        )
        vectors = models.VectorParams(
            size=int(dimension), distance=to_qdrant_distance(distance), on_disk=True if self.collection.on_disk else None
        )
        with self._translated("create a collection", name):
            self._client.create_collection(
                collection_name=name,
                vectors_config=vectors,
                optimizers_config=optimizers,
                **self.collection.create_arguments(),
            )
            if self.kind == "remote":  # the in-memory mode has no payload indexes
                self._client.create_payload_index(
                    collection_name=name,
                    field_name=CATEGORY_FIELD,
                    field_schema=models.PayloadSchemaType.KEYWORD,
                )

    def finish_bulk_load(self, name: str) -> None:
        """Restore HNSW indexing after a bulk load (a server builds its graph in the background; memory has none)."""
        if self.kind != "remote":
            return
        from qdrant_client import models

        with self._translated("restore indexing", name):
            self._client.update_collection(
                collection_name=name,
                optimizers_config=models.OptimizersConfigDiff(indexing_threshold=_DEFAULT_INDEXING_THRESHOLD),
            )

    def collection_exists(self, name: str) -> bool:
        with self._translated("check a collection", name):
            return bool(self._client.collection_exists(collection_name=name))

    def collection_info(self, name: str) -> CollectionInfo:
        with self._translated("read a collection", name):
            info = self._client.get_collection(collection_name=name)
            count = self._client.count(collection_name=name, exact=True).count
        params = info.config.params.vectors
        if isinstance(params, Mapping):  # named vectors: this platform writes one unnamed vector
            params = next(iter(params.values()))
        return CollectionInfo(point_count=int(count), dimension=int(params.size), distance=from_qdrant_distance(params.distance))

    def delete_collection(self, name: str) -> None:
        with self._translated("delete a collection", name):
            self._client.delete_collection(collection_name=name)

    def list_collections(self) -> list[str]:
        with self._translated("list collections"):
            return sorted(c.name for c in self._client.get_collections().collections)

    # -- points -------------------------------------------------------------------------------------------------
    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[Mapping[str, Any]],
    ) -> None:
        """Write points keyed by item id (idempotent: the point id is derived from the item id)."""
        from qdrant_client import models

        vectors = aligned_batch(name, ids, vectors, payloads)  # [N, D] float32
        # model_construct: ids, vectors and payloads are built here, of the right types; pydantic's per-point
        # validation would cost as much as the upsert itself in memory.
        batch = models.Batch.model_construct(
            ids=[point_id(i) for i in ids],
            vectors=vectors.tolist(),
            payloads=[{ITEM_ID_FIELD: str(i), **dict(p)} for i, p in zip(ids, payloads, strict=True)],
        )
        with self._translated("upsert points", name):
            self._client.upsert(collection_name=name, points=batch, wait=True)

    def retrieve(self, name: str, ids: Sequence[str], *, with_vectors: bool = True) -> list[StoredPoint]:
        """The stored points of these item ids (missing ones are absent from the result), in the order asked."""
        with self._translated("retrieve points", name):
            records = self._client.retrieve(
                collection_name=name, ids=[point_id(i) for i in ids], with_payload=True, with_vectors=with_vectors
            )
        by_item = {str(r.payload.get(ITEM_ID_FIELD)): r for r in records}
        found = [by_item[str(i)] for i in ids if str(i) in by_item]
        return [stored_point(r, with_vectors=with_vectors) for r in found]

    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        """Which of these item ids already have a point in the collection."""
        return {p.item_id for p in self.retrieve(name, ids, with_vectors=False)}

    def scroll(self, name: str, *, batch_size: int = 1024, with_vectors: bool = True) -> Iterator[list[StoredPoint]]:
        """Every point of a collection, in pages of ``batch_size``."""
        offset = None
        while True:
            with self._translated("scroll points", name):
                records, offset = self._client.scroll(
                    collection_name=name,
                    limit=batch_size,
                    offset=offset,
                    with_payload=True,
                    with_vectors=with_vectors,
                )
            if records:
                yield [stored_point(r, with_vectors=with_vectors) for r in records]
            if offset is None:
                return

    def scroll_vectors(self, name: str, *, fields: Sequence[str] = (), batch_size: int = 4096) -> Iterator[VectorPage]:
        """Every point of a collection as pages of (item ids, a [P, D] float32 matrix, the payload ``fields``)."""
        for points in self.scroll(name, batch_size=batch_size, with_vectors=True):
            yield page_of(points, fields=fields, where=f"'{name}' at {self.where}")

    def check_index_recall(self, name: str) -> float | None:
        """Not measured here (None): a server builds its HNSW graph in the background after the bulk load, and the
        in-memory mode searches exactly."""
        del name
        return None

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

        Excluded items are dropped from a result over-fetched by their number, not by a ``must_not`` id filter:
        exact all the same (the top ``limit + |excluded|`` holds the top ``limit`` of the rest), and the in-memory
        mode evaluates id filters point by point in Python (~100 ms on 10k items).
        """
        from qdrant_client import models

        excluded = {str(i) for i in exclude_item_ids}
        query_filter = (
            models.Filter(must=[models.FieldCondition(key=CATEGORY_FIELD, match=models.MatchValue(value=category))])
            if category is not None
            else None
        )
        query = np.asarray(vector, dtype=np.float32).reshape(-1)  # [D]
        with self._translated("search", name_or_alias):
            response = self._client.query_points(
                collection_name=name_or_alias,
                query=query.tolist(),
                query_filter=query_filter,
                limit=int(limit) + len(excluded),
                with_payload=True,
            )
        hits = [
            SearchHit(item_id=str(p.payload.get(ITEM_ID_FIELD)), score=float(p.score), payload=dict(p.payload))
            for p in response.points
        ]
        return [h for h in hits if h.item_id not in excluded][: int(limit)]

    # -- aliases ------------------------------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        """Every alias and the collection it points to."""
        with self._translated("list aliases"):
            described = self._client.get_aliases().aliases
        return {a.alias_name: a.collection_name for a in described}

    def alias_target(self, alias: str) -> str | None:
        return self.aliases().get(alias)

    def swap_alias(self, alias: str, collection: str, *, previous: str | None) -> None:
        """Point ``alias`` at ``collection`` in ONE ``update_collection_aliases`` call (delete old + create new).

        ``previous`` is the collection the caller believes the alias points to now (None: no alias yet); when
        the alias points elsewhere, nothing changes and ConflictError is raised (someone else moved it).
        """
        from qdrant_client import models

        if not self.collection_exists(collection):
            raise NotFoundError(
                f"cannot point alias '{alias}' at collection '{collection}': it does not exist at {self.where}; "
                "write it first with `towerctl embeddings write`."
            )
        current = self.alias_target(alias)
        if current != previous:
            raise ConflictError(
                f"alias '{alias}' points to {current!r}, not {previous!r} as expected; "
                "another promotion ran meanwhile: check `towerctl models list` and retry."
            )
        operations: list[Any] = []
        if current is not None:
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        operations.append(
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=collection, alias_name=alias))
        )
        with self._translated("move an alias", alias):
            self._client.update_collection_aliases(change_aliases_operations=operations)

    def delete_alias(self, alias: str) -> None:
        from qdrant_client import models

        with self._translated("delete an alias", alias):
            self._client.update_collection_aliases(
                change_aliases_operations=[models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))]
            )


def open_vector_store(settings: Settings) -> VectorStore:
    """A Qdrant server when ``settings.qdrant.url`` is set, else the embedded engine under ``settings.edge_path``.

    Without a URL, a ``$TOWER_HOME`` that still holds qdrant-client's local storage is refused (ConfigError naming
    the folder and the fix).
    """
    if settings.qdrant.url:
        api_key = settings.qdrant.api_key.get_secret_value() if settings.qdrant.api_key else None
        return QdrantVectorStore.remote(
            settings.qdrant.url, api_key, timeout_s=settings.qdrant.timeout_s,
            collection=ServerCollectionConfig(**settings.qdrant.collection_layout()),
        )
    from tower_platform.vectors.edge import EdgeVectorStore
    from tower_platform.vectors.index import EdgeIndexConfig
    from tower_platform.vectors.retired_storage import refuse_local_storage

    refuse_local_storage(settings.qdrant_path, edge_path=settings.edge_path)
    try:
        index = EdgeIndexConfig(**settings.edge.index_settings())
    except ConflictError as exc:
        raise ConfigError(f"the {env_name('edge')}__* settings are out of range: {exc.message}") from None
    return EdgeVectorStore(settings.edge_path, index=index, lock_timeout_s=settings.edge.lock_timeout_s)
