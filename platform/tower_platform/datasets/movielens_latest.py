"""MovieLens "latest-small" (ml-latest-small): ratings.csv and movies.csv, comma-separated UTF-8 with headers."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from tower_platform.datasets.base import (
    RawDataset,
    cast_epoch_seconds,
    cast_float64,
    drop_list_values,
    non_empty_strings,
    read_delimited,
    require_file,
)

NO_GENRES = "(no genres listed)"


class MovieLensLatestAdapter:
    """ratings.csv (userId, movieId, rating, timestamp) and movies.csv (movieId, title, genres "A|B|C").

    The release year is the "(1995)" at the end of a title, null where a title has none.
    """

    name: ClassVar[str] = "movielens-latest"
    max_rating: ClassVar[float] = 5.0

    def read(self, source: Path) -> RawDataset:
        source = Path(source)
        ratings_path = require_file(source, "ratings.csv")
        movies_path = require_file(source, "movies.csv")

        ratings = read_delimited(ratings_path, columns=["userId", "movieId", "rating", "timestamp"])
        interactions = pa.table(
            {
                "user_id": non_empty_strings(ratings, "userId", path=ratings_path),
                "item_id": non_empty_strings(ratings, "movieId", path=ratings_path),
                "event_timestamp": cast_epoch_seconds(ratings, "timestamp", path=ratings_path),
                "rating": cast_float64(ratings, "rating", path=ratings_path),
            }
        )

        movies = read_delimited(movies_path, columns=["movieId", "title", "genres"])
        titles = pc.utf8_trim_whitespace(movies.column("title").combine_chunks())
        year = pc.struct_field(pc.extract_regex(titles, r"\((?P<year>\d{4})\)\s*$"), "year")
        genres = pc.split_pattern(movies.column("genres").combine_chunks(), "|")
        genres = drop_list_values(genres, {"", NO_GENRES})
        items = pa.table(
            {
                "item_id": non_empty_strings(movies, "movieId", path=movies_path),
                "title": titles,
                "genres": genres,
                "release_year": pc.cast(year, pa.int64()),
            }
        )
        return RawDataset(
            interactions=interactions,
            items=items,
            users=None,
            files=(ratings_path, movies_path),
            interactions_file=ratings_path,
            source_columns={"user_id": "userId", "item_id": "movieId", "event_timestamp": "timestamp", "rating": "rating"},
        )

