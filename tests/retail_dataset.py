"""A synthetic retail purchase log with its dataset config: implicit feedback, thousands of categories, baskets.

    write_retail_dataset(folder, interactions=4_000, users=300, items=2_000, categories=1_500)

writes ``purchases.csv.gz`` (customer id, article, purchased at in ISO 8601 with offsets, price paid), ``articles.csv``
(article, description, sub class, colours "a/b", list price), ``customers.tsv`` (customer id, age band, area) and
``retail.yaml``, and returns the config's path. Ids hold spaces and non-ASCII characters; one basket is 2-20 distinct
articles bought at one timestamp; about a tenth of the articles are never bought; each sub class groups articles
whose popularity follows a power law. Vectorised (numpy, pyarrow): a million purchases take seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

START = np.datetime64("2024-01-01T00:00:00", "s")
DAYS = 120
COLOURS = ("rouge", "blau", "grün", "black", "white", "ecru", "navy", "olive")

CONFIG = """# A synthetic retail purchase log: implicit feedback (no rating), baskets, {categories} sub classes.
name: retail
model: products
source: .
interactions:
  path: purchases.csv.gz
  user_id: customer id
  item_id: article
  timestamp: {{column: purchased at, format: iso8601}}
  values: {{price: price paid}}
items:
  path: articles.csv
  id: article
  display: description
  category: sub_class
  missing: keep
  attributes:
    sub_class: {{column: sub class, kind: categorical}}
    colours: {{kind: multi_categorical, separator: "/", length: 3}}
    price: {{column: list price, kind: numeric, log1p: true}}
users:
  path: customers.tsv
  id: customer id
  attributes:
    age_band: {{column: age band, kind: categorical}}
    area: {{kind: categorical}}
features:
  query:
    recent_items: {{type: recent_items, length: 10}}
    top_sub_classes: {{type: top_values, attribute: sub_class, k: 3}}
    n_purchases: {{type: count}}
    n_purchases_7d: {{type: count, window_days: 7}}
    n_purchases_30d: {{type: count, window_days: 30}}
    mean_price: {{type: mean, column: price}}
    hours_since_previous: {{type: time_since_previous, unit: hours}}
  item:
    interaction_count: {{type: count}}
    trending_7d: {{type: count, window_days: 7}}
    mean_price: {{type: mean, column: price}}
    days_on_sale: {{type: days_since_first}}
split: {{method: global_time, validation_quantile: 0.8, test_quantile: 0.9}}
{training}"""


def write_retail_dataset(
    folder: Path,
    *,
    interactions: int = 4_000,
    users: int = 300,
    items: int = 2_000,
    categories: int = 1_500,
    seed: int = 0,
    training: str = "",
) -> Path:
    """Write the tables and ``retail.yaml`` into ``folder``; returns the config's path."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    article_ids = pa.array([f"art {i:06d}" + ("-é" if i % 7 == 0 else "") for i in range(items)])
    customer_ids = pa.array([f"kunde {i} ü" if i % 5 == 0 else f"customer {i}" for i in range(users)])
    category = np.minimum((rng.pareto(1.2, items) * categories / 20).astype(np.int64), categories - 1)  # (I,) skewed
    category[:categories] = rng.permutation(categories)[: min(categories, items)]  # every sub class has an article
    price = np.round(rng.lognormal(2.5, 0.8, items), 2)  # (I,)
    sold = items - items // 10  # the last tenth is never bought
    popularity = 1.0 / np.arange(1, sold + 1) ** 0.8
    popularity /= popularity.sum()

    sizes = rng.integers(2, 21, size=interactions // 8 + 10)  # baskets of 2-20 articles
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), interactions)) + 1]
    n = int(sizes.sum())
    basket = np.repeat(np.arange(len(sizes)), sizes)  # (n,)
    basket_user = rng.integers(0, users, len(sizes))  # (B,)
    basket_time = START + rng.integers(0, DAYS * 86_400, len(sizes)).astype("timedelta64[s]")  # (B,)
    article = rng.choice(sold, size=n, p=popularity)  # (n,)
    key = basket * items + article
    _, first = np.unique(key, return_index=True)  # distinct articles within a basket
    first = np.sort(first)
    basket, article = basket[first], article[first]
    stamps = basket_time[basket].astype("datetime64[s]").astype(str)  # (n,) "2024-01-05T10:00:00"
    offsets = np.where(basket_user[basket] % 2 == 0, "+00:00", "+01:00")
    purchases = pa.table(
        {
            "customer id": customer_ids.take(pa.array(basket_user[basket])),
            "article": article_ids.take(pa.array(article)),
            "purchased at": pc.binary_join_element_wise(pa.array(stamps), pa.array(offsets), ""),
            "price paid": pa.array(np.round(price[article] * rng.uniform(0.7, 1.0, len(article)), 2)),
        }
    )
    with pa.CompressedOutputStream(str(folder / "purchases.csv.gz"), "gzip") as sink:
        pacsv.write_csv(purchases, sink)
    colour = np.asarray(COLOURS)
    pacsv.write_csv(
        pa.table(
            {
                "article": article_ids,
                "description": pa.array([f"Artikel {i} «{colour[i % len(colour)]}»" for i in range(items)]),
                "sub class": pa.array([f"sub class {c:04d}" for c in category]),
                "colours": pa.array([f"{colour[i % 8]}/{colour[(i * 3) % 8]}" for i in range(items)]),
                "list price": pa.array(price),
            }
        ),
        folder / "articles.csv",
    )
    bands = np.asarray(["16-24", "25-34", "35-49", "50-64", "65+"])
    pacsv.write_csv(
        pa.table(
            {
                "customer id": customer_ids,
                "age band": pa.array(bands[rng.integers(0, len(bands), users)]),
                "area": pa.array([f"area {a:03d}" for a in rng.integers(0, 40, users)]),
            }
        ),
        folder / "customers.tsv",
        write_options=pacsv.WriteOptions(delimiter="\t"),
    )
    path = folder / "retail.yaml"
    path.write_text(CONFIG.format(categories=categories, training=training), encoding="utf-8")
    return path
