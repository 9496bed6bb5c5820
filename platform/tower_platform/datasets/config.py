"""The dataset contract: one YAML file describes a dataset, validated here (unknown keys are refused).

A complete example and a reference of every key are in the README ("Bring a dataset"). In short::

    name: retail                      # dataset name (recorded with the sources)
    model: products                   # model name in the registry
    source: data/                     # folder the table paths are relative to (relative to this file); or --source
    interactions: {path, format, delimiter, header, columns, encoding, user_id, item_id, timestamp, rating,
                   values, weight, filter}
    items:        {path, ..., id, attributes, category, display, missing}
    users:        {path, ..., id, attributes}                     # optional
    features:     {query: {...}, item: {...}, ttl_days: {...}, kinds: {...}}
    split:        {method, validation_quantile, test_quantile}
    adapter: my_package.my_module:MyReader                        # optional: reads the raw tables itself
    feast: {...}                                                  # optional: an existing Feast repository instead

Other top-level sections (``training``, ``monitor``) belong to the code that owns them and are kept verbatim in
:attr:`DatasetConfig.extra`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tower_platform.errors import ConfigError, InputError
from tower_platform.naming import name_problem

Kind = Literal["categorical", "multi_categorical", "numeric"]
SplitMethod = Literal["global_time", "leave_last_out"]
TIME_FORMATS: tuple[str, ...] = ("epoch_s", "epoch_ms", "iso8601", "date")
PASSTHROUGH_SECTIONS: tuple[str, ...] = ("training", "monitor")
_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimestampColumn(_Strict):
    """``format``: epoch_s, epoch_ms, iso8601, date (YYYY-MM-DD) or a strptime pattern such as ``%d/%m/%Y %H:%M``."""

    column: str
    format: str = "epoch_s"
    timezone: str = "UTC"  # for values without an offset

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in TIME_FORMATS and "%" not in value:
            raise ValueError(f"must be one of {', '.join(TIME_FORMATS)} or a strptime pattern such as '%Y-%m-%d %H:%M'")
        return value


class WeightColumn(_Strict):
    column: str  # a source column of the interactions table
    divide_by: float = 1.0


class RowFilter(_Strict):
    """Keep the interactions whose ``column`` compares true with ``value`` (e.g. rating >= 4 as positives)."""

    column: str
    op: Literal[">=", ">", "<=", "<", "==", "!="] = ">="
    value: Union[float, str]


class Attribute(_Strict):
    """One item or user attribute. ``column`` defaults to the attribute's name.

    categorical: one string (with ``separator`` or ``flags``: the first value). multi_categorical: a list from a
    ``separator``-joined string or from 0/1 ``flags`` columns, padded to ``length`` at serving. numeric: a number,
    ``log1p`` optional. ``extract``: a regex whose first group is the value (e.g. a year at the end of a title).
    ``drop``: values left out (placeholders such as "(no genres listed)"). ``vocabulary``: attributes (and their
    top-values features) with the same vocabulary name share one embedding table.
    """

    column: str | None = None
    kind: Kind
    separator: str | None = None
    flags: dict[str, str] | None = None  # source column -> the value it stands for, in list order
    length: int | None = Field(default=None, ge=1)
    log1p: bool = False
    extract: str | None = None
    drop: tuple[str, ...] = ()
    vocabulary: str | None = None

    @model_validator(mode="after")
    def _fits_kind(self) -> Attribute:
        if self.kind == "multi_categorical" and self.length is None:
            raise ValueError("a multi_categorical attribute needs 'length' (its padded length at serving)")
        if self.kind == "multi_categorical" and self.separator is None and self.flags is None:
            raise ValueError("a multi_categorical attribute needs 'separator' (e.g. '|') or 'flags' (0/1 columns)")
        if self.kind == "numeric" and (self.separator or self.flags or self.drop or self.length):
            raise ValueError("a numeric attribute takes no 'separator', 'flags', 'drop' or 'length'")
        if self.kind != "numeric" and self.log1p:
            raise ValueError("'log1p' applies to numeric attributes only")
        if self.extract is not None:
            try:
                if re.compile(self.extract).groups < 1:
                    raise ValueError("'extract' needs one capturing group, e.g. '\\((\\d{4})\\)'")
            except re.error as exc:
                raise ValueError(f"'extract' is not a valid regular expression ({exc})") from exc
        return self


class TableSource(_Strict):
    """Where a table is and how to read it; ``format`` defaults from the suffix (.parquet, .tsv, else csv)."""

    path: str
    format: Literal["csv", "parquet"] | None = None
    delimiter: str | None = None  # default: tab for .tsv/.tab files, else ","
    header: bool = True
    columns: tuple[str, ...] | None = None  # names of all columns of a headerless file
    encoding: str = "utf8"
    quoting: bool = True

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"'{value}' is not a known text encoding (e.g. utf8, latin1, utf-16)") from None
        return value

    @model_validator(mode="after")
    def _headerless(self) -> TableSource:
        if not self.header and not self.columns:
            raise ValueError("a file without header needs 'columns' (the names of all its columns, in order)")
        return self


class InteractionsTable(TableSource):
    user_id: str
    item_id: str
    timestamp: TimestampColumn
    rating: str | None = None  # source column of an explicit rating (interaction column "rating"); none = implicit
    values: dict[str, str] = Field(default_factory=dict)  # more numeric interaction columns: name -> source column
    weight: Union[float, WeightColumn] = 1.0
    filter: RowFilter | None = None


class ItemsTable(TableSource):
    id: str
    attributes: dict[str, Attribute] = Field(default_factory=dict)
    category: str | None = None  # the attribute that is each item's category
    display: str | None = None  # a source column shown to people (payload, recommend); not a feature
    missing: Literal["keep", "drop", "error"] = "keep"  # items of interactions absent from this table


class UsersTable(TableSource):
    id: str
    attributes: dict[str, Attribute] = Field(default_factory=dict)


class QueryFeature(_Strict):
    """A derived point-in-time feature of the user (view ``user_history``).

    recent_items: the last ``length`` distinct items, most recent first. top_values: the ``k`` most frequent values
    of item attribute ``attribute`` over the history. count: interactions, over ``window_days`` or all time. mean:
    mean of interaction column ``column``. days_since_first / time_since_previous: elapsed time (``unit``) since
    the user's first / latest interaction before the event.
    """

    type: Literal["recent_items", "top_values", "count", "mean", "days_since_first", "time_since_previous"]
    length: int | None = Field(default=None, ge=1)
    attribute: str | None = None
    k: int | None = Field(default=None, ge=1)
    window_days: float | None = Field(default=None, gt=0)
    column: str | None = None
    unit: Literal["seconds", "hours", "days"] = "days"
    ttl_days: float | None = Field(default=None, ge=0)  # own TTL: the feature gets its own view; None = the view's

    @model_validator(mode="after")
    def _needs(self) -> QueryFeature:
        needs = {"recent_items": "length", "top_values": "attribute", "mean": "column"}
        key = needs.get(self.type)
        if key and getattr(self, key) is None:
            raise ValueError(f"a '{self.type}' feature needs '{key}'")
        if self.type == "top_values" and self.k is None:
            raise ValueError("a 'top_values' feature needs 'k'")
        return self


class ItemFeature(_Strict):
    """A derived item feature (view ``item_stats``), as of each day boundary: count (over ``window_days`` or all
    time: the trending signal), mean of interaction column ``column``, days_since_first interaction."""

    type: Literal["count", "mean", "days_since_first"]
    window_days: int | None = Field(default=None, ge=1)
    column: str | None = None
    unit: Literal["seconds", "hours", "days"] = "days"
    ttl_days: float | None = Field(default=None, ge=0)  # own TTL: the feature gets its own view; None = the view's

    @model_validator(mode="after")
    def _needs(self) -> ItemFeature:
        if self.type == "mean" and self.column is None:
            raise ValueError("a 'mean' feature needs 'column'")
        return self


class FeaturesSection(_Strict):
    query: dict[str, QueryFeature] = Field(default_factory=dict)
    item: dict[str, ItemFeature] = Field(default_factory=dict)
    ttl_days: dict[Literal["user_history", "user_profile", "item_profile", "item_stats"], float] = Field(default_factory=dict)
    kinds: dict[str, Kind] = Field(default_factory=dict)  # full feature name -> kind override

    @field_validator("ttl_days")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        if any(days < 0 for days in value.values()):
            raise ValueError("TTLs are days >= 0 (0 = rows never expire)")
        return value

    @field_validator("kinds")
    @classmethod
    def _full_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if "__" not in name:
                raise ValueError(f"'{name}' must be a full feature name, view__feature (e.g. item_profile__release_year)")
        return value

    def ttl_seconds(self, view: str) -> int:
        return int(round(float(self.ttl_days.get(view, 0)) * 86400))  # type: ignore[call-overload]


class SplitConfig(_Strict):
    method: SplitMethod = "global_time"
    validation_quantile: float = Field(default=0.8, gt=0, lt=1)
    test_quantile: float = Field(default=0.9, gt=0, lt=1)

    @model_validator(mode="after")
    def _order(self) -> SplitConfig:
        if not self.validation_quantile < self.test_quantile:
            raise ValueError("validation_quantile must be smaller than test_quantile")
        return self


class FeastRepository(_Strict):
    """An existing Feast repository to train and serve on (nothing is generated or written into it)."""

    repo: str  # folder holding feature_store.yaml, relative to the config file
    query_service: str
    item_service: str
    user_key: str = "user_id"
    item_key: str = "item_id"
    interactions: str  # parquet/csv file or folder, relative to the config file: user key, item key, timestamp
    timestamp: str = "event_timestamp"
    weight: str | None = None
    item_category: str | None = None  # full feature name (view__feature) of the items' category
    lengths: dict[str, int] = Field(default_factory=dict)  # padded length of list features (default 8)
    kinds: dict[str, Kind] = Field(default_factory=dict)


class DatasetConfig(_Strict):
    name: str  # the dataset's name (recorded with the sources); tower_platform.naming's rule
    model: str  # the model's name: a folder under $TOWER_HOME/artifacts, a collection, an alias, a registry key
    adapter: str = "tabular"
    source: str | None = None
    interactions: InteractionsTable | None = None
    items: ItemsTable | None = None
    users: UsersTable | None = None
    features: FeaturesSection = Field(default_factory=FeaturesSection)
    split: SplitConfig = Field(default_factory=SplitConfig)
    feast: FeastRepository | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    path: Path | None = None

    @field_validator("name", "model")
    @classmethod
    def _plain_name(cls, value: str, info: Any) -> str:
        problem = name_problem(value)
        if problem is not None:
            raise ValueError(f"the {'dataset' if info.field_name == 'name' else 'model'} name {problem}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DatasetConfig:
        if self.feast is not None:
            return self
        if self.interactions is None or self.items is None:
            raise ValueError("interactions: 'interactions' and 'items' are required (or a 'feast' section naming a repository)")
        attrs = self.items.attributes
        for name in (*attrs, *(self.users.attributes if self.users else {})):
            if not re.match(_NAME, name):
                raise ValueError(f"attributes.{name}: an attribute name must be a plain identifier (letters, digits, _)")
        if self.items.category is not None and self.items.category not in attrs:
            raise ValueError(
                f"items.category: '{self.items.category}' is not under items.attributes; declare it there "
                f"(declared: {', '.join(attrs) or 'none'})"
            )
        if self.items.category is not None and attrs[self.items.category].kind == "numeric":
            raise ValueError(f"items.category: '{self.items.category}' is numeric; the category must be categorical")
        numeric = {"rating"} if self.interactions.rating else set()
        numeric |= set(self.interactions.values)
        for name, feature in {**self.features.query, **self.features.item}.items():
            if not re.match(_NAME, name):
                raise ValueError(f"features.{name}: a feature name must be a plain identifier (letters, digits, _)")
            side = "query" if name in self.features.query else "item"
            if feature.type == "mean" and feature.column not in numeric:
                raise ValueError(
                    f"features.{side}.{name}.column: '{feature.column}' is not an interaction value; "
                    f"declare it as interactions.rating or under interactions.values (declared: {', '.join(sorted(numeric)) or 'none'})"
                )
            attribute = getattr(feature, "attribute", None)
            if feature.type == "top_values" and (attribute not in attrs or attrs[attribute].kind == "numeric"):
                raise ValueError(
                    f"features.{side}.{name}.attribute: '{attribute}' is not a categorical item attribute; declare it under items.attributes"
                )
        return self

    def base_dir(self, source: Path | None = None) -> Path:
        """The folder table paths are relative to: --source, else ``source`` relative to the config, else its folder."""
        if source is not None:
            return Path(source).expanduser().resolve()
        folder = self.path.parent if self.path is not None else Path.cwd()
        return (folder / self.source).resolve() if self.source is not None else folder.resolve()


def load_dataset_config(path: Path) -> DatasetConfig:
    """Read and validate a dataset config; problems raise one ConfigError naming the file, the key and the fix."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Dataset config {path} does not exist; pass an existing YAML file with --config.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        detail = " ".join(str(exc).split())  # one line: YAML messages span several
        raise ConfigError(f"Dataset config {path} is not valid YAML ({detail}); fix the file's syntax.") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"Dataset config {path} must be a mapping of keys (name, model, interactions, items, ...).")
    extra = {k: raw.pop(k) for k in PASSTHROUGH_SECTIONS if k in raw}
    try:
        return DatasetConfig(**raw, extra=extra, path=path.resolve())
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(path, exc)) from None
    except TypeError as exc:
        raise ConfigError(f"Dataset config {path}: {exc}; fix the keys.") from None


def describe_validation_error(path: Path, exc: ValidationError) -> str:
    """One sentence for the first problem: the file, the dotted key and the fix."""
    error = exc.errors()[0]
    key = ".".join(str(p) for p in error["loc"] if not str(p).startswith(("function-", "union[")) and p not in ("float", "WeightColumn"))
    if error["type"] == "extra_forbidden":
        return f"Dataset config {path}: key '{key}' is unknown; remove it or check its spelling (see the README's key reference)."
    if error["type"] == "missing":
        return f"Dataset config {path}: key '{key}' is required; add it."
    message = str(error["msg"]).removeprefix("Value error, ")
    named = re.match(r"^([\w.]+): (.*)$", message, flags=re.S)
    if named and not key:
        key, message = named.group(1), named.group(2)
    where = f"key '{key}'" if key else "the file"
    return f"Dataset config {path}: {where}: {message}; fix that key."
