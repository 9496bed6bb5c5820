"""``towerctl recommend USER_ID``: top-k items for a user from the production version of a model.

Online features (Feast) -> the production version's ``query.onnx`` (sha256 checked against the registry) -> Qdrant
search on the production alias, without the user's recent items, optionally within one category. The command
passes clients (registry, vector store, feature store); ``tower_platform.pipeline.recommend`` does the rest.
"""

from __future__ import annotations

from typing import Any

import typer

from tower_platform.cli import context
from tower_platform.cli.context import open_registry, open_vectors
from tower_platform.cli.output import err_console, print_json, print_table
from tower_platform.errors import UsageError
from tower_platform.settings import get_settings


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
    model: str | None = typer.Option(None, "--model", help="Model name (default: the only registered model)."),
    category: str | None = typer.Option(None, "--category", help="Only items of this category."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Top-k items for USER_ID from the production version (recent items excluded)."""
    from tower_platform.pipeline.recommend import recommend

    settings = get_settings()
    with open_registry(write=True, settings=settings) as registry, open_vectors(settings) as vectors:
        name = model or _only_model(registry)
        result = recommend(
            registry,
            vectors,
            context.feature_store(settings),  # Feast is imported when the features are first read
            model=name,
            user_id=user_id,
            k=k,
            category=category,
        )
    timings = vars(result.timings)
    if as_json:
        print_json(
            {
                "user_id": result.user_id,
                "model": result.model,
                "version": result.version,
                "items": [
                    {"rank": rank, "item_id": hit.item_id, "score": hit.score, **_payload_fields(hit.payload)}
                    for rank, hit in enumerate(result.items, start=1)
                ],
                "timings_ms": timings,
            }
        )
        return
    print_table(
        f"{result.model} v{result.version}: top {k} for user {user_id}" + (f" in {category}" if category else ""),
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
