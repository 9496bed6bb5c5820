"""Names and paths of the Feast repository: built here and nowhere else.

No Feast import: the platform (tower_platform.features, the dataset ingestion, the registry) reads these constants
without paying for ``import feast``. The definitions in this folder build their objects from the same constants.

Layout under ``$TOWER_HOME``::

    sources/interactions.parquet    one row per interaction (the entity rows of a training set)
    sources/user_history.parquet    point-in-time snapshots per (user, distinct event timestamp)
    sources/user_profile.parquet    demographics, only when the dataset has them
    sources/item_profile.parquet    static item attributes, stamped before the first event
    sources/item_stats.parquet      daily item statistics, stamped at the day boundary
    sources/schema.json             which optional views exist, their columns, TTLs, list lengths, fingerprint
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
# is newer than its event (the audit in tower_platform.training_audit).
SNAPSHOT_FIELD = "snapshot_ts"

INTERACTIONS = "interactions"
USER_HISTORY = "user_history"
USER_PROFILE = "user_profile"
ITEM_PROFILE = "item_profile"
ITEM_STATS = "item_stats"

QUERY_SERVICE = "query_features"
ITEM_SERVICE = "item_features"

QUERY_VIEWS: tuple[str, ...] = (USER_HISTORY, USER_PROFILE)  # in this order; user_profile is optional
ITEM_VIEWS: tuple[str, ...] = (ITEM_PROFILE, ITEM_STATS)
OPTIONAL_VIEWS: tuple[str, ...] = (USER_PROFILE,)
VIEW_ENTITY: dict[str, str] = {
    USER_HISTORY: USER_ENTITY,
    USER_PROFILE: USER_ENTITY,
    ITEM_PROFILE: ITEM_ENTITY,
    ITEM_STATS: ITEM_ENTITY,
}
ENTITY_KEY: dict[str, str] = {USER_ENTITY: USER_KEY, ITEM_ENTITY: ITEM_KEY}

# Feature columns of the fixed views, with their type in the sources ("string", "int64", "float64",
# "list<string>"); the optional views' columns are listed in schema.json by the dataset adapter.
FIXED_VIEW_FIELDS: dict[str, dict[str, str]] = {
    USER_HISTORY: {
        "recent_items": "list<string>",
        "top_genres": "list<string>",
        "n_interactions": "int64",
        "n_interactions_30d": "int64",
        "mean_rating": "float64",
        "days_since_first": "float64",
    },
    ITEM_PROFILE: {
        "genres": "list<string>",
        "category": "string",
        "release_year": "int64",
    },
    ITEM_STATS: {
        "interaction_count": "int64",
        "mean_rating": "float64",
    },
}
TYPE_NAMES: tuple[str, ...] = ("string", "int64", "float64", "list<string>")

RECENT_ITEMS = "recent_items"  # the user_history feature whose values are item ids (shares the item id vocabulary)
TOP_GENRES = "top_genres"
ITEM_CATEGORY = "category"  # the item_profile feature holding an item's category (its first genre)

SCHEMA_FILE = "schema.json"
SOURCES_DIR = "sources"
FEAST_DIR = "feast"


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
