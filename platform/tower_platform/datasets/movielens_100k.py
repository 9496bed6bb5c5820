"""MovieLens 100K (ml-100k): u.data (tab-separated), u.item and u.user (pipe-separated, Latin-1), no headers."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tower_platform.datasets.base import (
    RawDataset,
    cast_epoch_seconds,
    cast_float64,
    cast_int64,
    lists_from_parents,
    non_empty_strings,
    read_delimited,
    require_file,
)

# u.genre, in flag order; "unknown" marks a movie without genres and is not kept as a genre.
GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_ITEM_COLUMNS = ["movie_id", "title", "release_date", "video_release_date", "imdb_url", *(f"g{i}" for i in range(19))]
_USER_COLUMNS = ["user_id", "age", "gender", "occupation", "zip_code"]
ZIP_PREFIX_LEN = 3  # the first three digits of a US ZIP code: its sectional centre


class MovieLens100kAdapter:
    """u.data (user, item, rating, timestamp), u.item (19 genre flags), u.user (age, gender, occupation, zip).

    Users get a profile (age int64, gender, occupation, zip_prefix strings); the release year is the year of
    u.item's release date ("01-Jan-1995"), null where the date is empty.
    """

    name: ClassVar[str] = "movielens-100k"
    max_rating: ClassVar[float] = 5.0

    def read(self, source: Path) -> RawDataset:
        source = Path(source)
        data_path = require_file(source, "u.data")
        item_path = require_file(source, "u.item")
        user_path = require_file(source, "u.user")

        data = read_delimited(
            data_path, columns=["user_id", "item_id", "rating", "timestamp"], header=False, delimiter="\t"
        )
        interactions = pa.table(
            {
                "user_id": non_empty_strings(data, "user_id", path=data_path),
                "item_id": non_empty_strings(data, "item_id", path=data_path),
                "event_timestamp": cast_epoch_seconds(data, "timestamp", path=data_path),
                "rating": cast_float64(data, "rating", path=data_path),
            }
        )

        raw_items = read_delimited(
            item_path, columns=_ITEM_COLUMNS, header=False, delimiter="|", encoding="latin1", quoting=False
        )
        flags = np.stack(
            [cast_int64(raw_items, f"g{i}", path=item_path).to_numpy() for i in range(1, len(GENRES))], axis=1
        )  # (n_items, 18): genre flags without "unknown"
        rows, cols = np.nonzero(flags > 0)  # row-major: genres of one item in u.genre order
        genres = lists_from_parents(
            pa.array(np.asarray(GENRES[1:], dtype=object)[cols], pa.string()), rows, length=raw_items.num_rows
        )
        year = pc.struct_field(pc.extract_regex(raw_items.column("release_date"), r"(?P<year>\d{4})\s*$"), "year")
        items = pa.table(
            {
                "item_id": non_empty_strings(raw_items, "movie_id", path=item_path),
                "title": pc.utf8_trim_whitespace(raw_items.column("title")),
                "genres": genres,
                "release_year": pc.cast(year, pa.int64()),
            }
        )

        raw_users = read_delimited(user_path, columns=_USER_COLUMNS, header=False, delimiter="|", encoding="latin1")
        users = pa.table(
            {
                "user_id": non_empty_strings(raw_users, "user_id", path=user_path),
                "age": cast_int64(raw_users, "age", path=user_path),
                "gender": pc.utf8_trim_whitespace(raw_users.column("gender")),
                "occupation": pc.utf8_trim_whitespace(raw_users.column("occupation")),
                "zip_prefix": pc.utf8_slice_codeunits(
                    pc.utf8_trim_whitespace(raw_users.column("zip_code")), 0, ZIP_PREFIX_LEN
                ),
            }
        )
        return RawDataset(
            interactions=interactions,
            items=items,
            users=users,
            files=(data_path, item_path, user_path),
            interactions_file=data_path,
            source_columns={"user_id": "user_id", "item_id": "item_id", "event_timestamp": "timestamp", "rating": "rating"},
        )
