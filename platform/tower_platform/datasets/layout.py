"""Names and paths of the generated Feast objects and source tables: built here and nowhere else.

No Feast import: the platform (features, ingestion, training sets) reads these constants without paying for
``import feast``; the Feast definitions (:mod:`tower_platform.datasets.feast_definitions`, read by the feature
repository's ``repo.py``) build their objects from the same constants. Feature names are not here: they come from
the dataset config and are listed, per view, in ``sources/schema.json``.

Layout under ``$TOWER_HOME``::

    sources/interactions.parquet    one row per interaction (the entity rows of a training set)
    sources/user_history.parquet    derived query features: snapshots per (user, distinct event timestamp)
    sources/user_profile.parquet    static user attributes, only when the config declares users
    sources/item_profile.parquet    static item attributes (and the display column), stamped before the first event
    sources/item_stats.parquet      derived item features, stamped at day boundaries
    sources/schema.json             views, fields, TTLs, list lengths, vocabularies, category, display, fingerprint
    feast/registry.db, feast/online.db
"""

from __future__ import annotations

from pathlib import Path

PROJECT = "tower"

USER_ENTITY = "user"
ITEM_ENTITY = "item"
USER_KEY = "user_id"
ITEM_KEY = "item_id"
TIMESTAMP_FIELD = "event_timestamp"
# Every view carries a copy of its row's timestamp as a feature, so a training set can prove that no feature row
# is newer than its event (the audit in tower_platform.features.training_audit).
SNAPSHOT_FIELD = "snapshot_ts"
DISPLAY_FIELD = "display"  # the item column shown to people (payload, recommend); in item_profile, never a feature

INTERACTIONS = "interactions"
USER_HISTORY = "user_history"
USER_PROFILE = "user_profile"
ITEM_PROFILE = "item_profile"
ITEM_STATS = "item_stats"

QUERY_SERVICE = "query_features"
ITEM_SERVICE = "item_features"

QUERY_VIEWS: tuple[str, ...] = (USER_HISTORY, USER_PROFILE)  # in this order; each present only when it has fields
ITEM_VIEWS: tuple[str, ...] = (ITEM_PROFILE, ITEM_STATS)
VIEW_ENTITY: dict[str, str] = {
    USER_HISTORY: USER_ENTITY,
    USER_PROFILE: USER_ENTITY,
    ITEM_PROFILE: ITEM_ENTITY,
    ITEM_STATS: ITEM_ENTITY,
}
ENTITY_KEY: dict[str, str] = {USER_ENTITY: USER_KEY, ITEM_ENTITY: ITEM_KEY}
TYPE_NAMES: tuple[str, ...] = ("string", "int64", "float64", "list<string>")
ITEM_ID_VOCAB = "item_id"  # the vocabulary of item ids (the item id feature and recent-items lists)

SCHEMA_FILE = "schema.json"
SOURCES_DIR = "sources"
FEAST_DIR = "feast"


def ttl_view(view: str, ttl_days: float | None) -> str:
    """The view of a derived feature: ``view`` itself, or ``<view>_ttl<days>d`` for a feature with its own TTL."""
    if ttl_days is None:
        return view
    return f"{view}_ttl{f'{ttl_days:g}'.replace('.', 'p')}d"


def view_entity(view: str) -> str:
    """The entity of a view, including the per-TTL views of derived features (``user_history_ttl7d``)."""
    for base, entity in VIEW_ENTITY.items():
        if view == base or view.startswith(f"{base}_ttl"):
            return entity
    raise KeyError(view)


def full_name(view: str, feature: str) -> str:
    """The column name Feast gives a feature with full feature names (``user_history__recent_items``)."""
    return f"{view}__{feature}"


def sources_dir(home_dir: Path) -> Path:
    return Path(home_dir) / SOURCES_DIR


def source_path(home_dir: Path, table: str) -> Path:
    return sources_dir(home_dir) / f"{table}.parquet"


def schema_path(home_dir: Path) -> Path:
    return sources_dir(home_dir) / SCHEMA_FILE


def feast_dir(home_dir: Path) -> Path:
    return Path(home_dir) / FEAST_DIR
