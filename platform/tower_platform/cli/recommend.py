"""``towerctl recommend USER_ID``: top-k items for a user from the production version of a model.

Online features (Feast) -> the production version's ``query.onnx`` (sha256 checked against the registry) -> Qdrant
search on the production alias, without the user's recent items, optionally within one category. The command
passes clients (registry, vector store, feature store); ``tower_platform.pipeline.recommend`` does the rest.

A user without online features (unknown, empty id, or features not materialized or expired) gets the cold-start
answer: the tower run on missing inputs. It is made visible, never silent: a ``notice:`` line on stderr and
``"cold_start": true`` in ``--json``; ``--require-known-user`` refuses it instead (exit 3). A ``--category`` that no
item of the production version has is refused (exit 3) with the valid ones; the check runs only when the search
came back empty, so it costs nothing on the normal path.
"""

from __future__ import annotations

from typing import Any

import typer

from tower_platform.cli import context, serving_check
from tower_platform.cli.arguments import model_option
from tower_platform.cli.context import open_registry, open_vectors
from tower_platform.cli.output import err_console, print_json, print_table
from tower_platform.errors import NotFoundError, UsageError
from tower_platform.settings import get_settings


class KnownUserCheck:
    """A query feature source that records whether the user had any online feature (``cold_start`` when none) and,
    with ``require_known``, refuses a user without any (NotFoundError, exit 3) before the tower runs."""

    def __init__(self, source: Any, *, user_key: str, require_known: bool) -> None:
        self.source = source
        self.user_key = user_key
        self.require_known = require_known
        self.cold_start = False

    def query_features(self, user_id: str) -> Any:
        row = self.source.query_features(user_id)
        self.cold_start = all(_missing(value) for name, value in row.items() if name != self.user_key)
        if self.cold_start and self.require_known:
            raise NotFoundError(
                f"User {user_id!r} has no online features in the feature store; check the id, run "
                "`towerctl features materialize`, or drop --require-known-user to get the cold-start list."
            )
        return row


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, (list, tuple)) and len(value) == 0)


def check_category(vectors: Any, collection: str, *, category: str, label: str) -> None:
    """NotFoundError (exit 3) when no item of ``collection`` has ``category``, naming a few valid ones (closest
    first) and their count. Reads the payloads page by page (no vectors): call it only when a search came back empty."""
    import difflib

    counts: dict[str, int] = {}
    for page in vectors.scroll(collection, batch_size=4096, with_vectors=False):
        for point in page:
            value = point.payload.get("category")
            for name in value if isinstance(value, (list, tuple)) else [value]:
                if name not in (None, ""):
                    counts[str(name)] = counts.get(str(name), 0) + 1
    if category in counts:
        return
    closest = difflib.get_close_matches(category, list(counts), n=3, cutoff=0.6)
    common = [name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if name not in closest]
    shown = [*closest, *common][:5]
    more = ", ..." if len(counts) > len(shown) else ""
    raise NotFoundError(
        f"Category {category!r} is not a category of the items of {label}; the {len(counts)} categories include "
        f"{', '.join(shown) or 'none'}{more} (`towerctl recommend USER --category NAME` takes one of them)."
    )


def _only_model(registry: Any) -> str:
    names = [m.name for m in registry.list_models()]
    if len(names) != 1:
        raise UsageError(
            f"{len(names)} models are registered ({', '.join(names) or 'none'}); name one with --model."
        )
    return names[0]


def recommend_command(
    user_id: str = typer.Argument(..., help="The user to recommend for."),
    k: int = typer.Option(10, "-k", "--k", min=1, max=1000, help="How many items."),
    model: str | None = model_option("Model name (default: the only registered model)."),
    category: str | None = typer.Option(None, "--category", help="Only items of this category."),
    require_known_user: bool = typer.Option(
        False, "--require-known-user", help="Exit 3 for a user without online features instead of the cold-start list."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Top-k items for USER_ID from the production version (recent items excluded; cold start for unknown users)."""
    from tower_platform.naming import collection_name
    from tower_platform.pipeline.recommend import recommend

    settings = get_settings()
    checks: list[KnownUserCheck] = []

    def features(source: Any, user_key: str) -> KnownUserCheck:
        checks.append(KnownUserCheck(source, user_key=user_key, require_known=require_known_user))
        return checks[-1]

    with open_registry(write=True, settings=settings) as registry, open_vectors(settings) as vectors:
        name = model or _only_model(registry)
        serving_check.warn(serving_check.check(registry, vectors, name))
        result = recommend(
            registry,
            vectors,
            context.feature_store(settings),  # Feast is imported when the features are first read
            model=name,
            user_id=user_id,
            k=k,
            category=category,
            wrap_features=features,
        )
        if category is not None and not result.items:
            check_category(vectors, collection_name(result.model, result.version), category=category,
                           label=f"{result.model} v{result.version}")
    cold_start = any(check.cold_start for check in checks)
    if cold_start:
        err_console.print(
            f"notice: user {user_id!r} has no online features (an unknown user, or features not materialized or "
            "expired); these are the cold-start recommendations.", markup=False, highlight=False,
        )
    timings = vars(result.timings)
    if as_json:
        print_json(
            {
                "user_id": result.user_id,
                "model": result.model,
                "version": result.version,
                "cold_start": cold_start,
                "items": [
                    {"rank": rank, "item_id": hit.item_id, "score": hit.score, **_payload_fields(hit.payload)}
                    for rank, hit in enumerate(result.items, start=1)
                ],
                "timings_ms": timings,
            }
        )
        return
    print_table(
        f"{result.model} v{result.version}: top {k} for user {user_id}" + (f" in {category}" if category else "")
        + (" (cold start)" if cold_start else ""),
        ["rank", "item_id", "display", "score", "category", "popularity"],
        [
            (rank, hit.item_id, hit.payload.get("display"), hit.score, hit.payload.get("category"), hit.payload.get("popularity"))
            for rank, hit in enumerate(result.items, start=1)
        ],
    )
    err_console.print(
        "features {features_ms:.1f} ms, query tower {query_tower_ms:.1f} ms, search {search_ms:.1f} ms, "
        "total {total_ms:.1f} ms".format(**timings),
        highlight=False,
    )


def _payload_fields(payload: dict[str, Any]) -> dict[str, Any]:
    return {key: payload.get(key) for key in ("display", "category", "popularity")}
