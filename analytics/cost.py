"""Model prices: the versioned price table (``prices.toml``) and how data model names map to it.

Cost is computed at read time by the catalog's ``llm_calls`` view from the ``prices`` and
``price_models`` tables that :func:`install_prices` fills, so a corrected price corrects history.
A span that carries its own ``cost_usd`` keeps it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from importlib import resources
from typing import Any

import duckdb
import pyarrow as pa

from store import catalog
from store.catalog import PRICE_MODELS_SCHEMA, PRICES_SCHEMA

__all__ = [
    "PriceTable",
    "install_prices",
    "load_price_table",
    "match_price_model",
    "normalize_model_name",
]


@dataclass(frozen=True)
class PriceTable:
    """The parsed price file: price rows, name aliases and routing prefixes to strip."""

    prices: pa.Table
    aliases: dict[str, str]
    strip_prefixes: tuple[str, ...]

    @property
    def price_models(self) -> frozenset[str]:
        """The canonical price model names."""
        return frozenset(self.prices.column("model").to_pylist())


def _as_utc_midnight(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise ValueError(f"effective_from must be a TOML date, got {value!r}")


@cache
def load_price_table() -> PriceTable:
    """Parse ``analytics/prices.toml`` (loaded with importlib.resources)."""
    text = resources.files("analytics").joinpath("prices.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    rows: dict[str, list[Any]] = {name: [] for name in PRICES_SCHEMA.names}
    seen: set[tuple[str, datetime]] = set()
    for entry in data["price"]:
        model = normalize_model_name(entry["model"], ())
        effective = _as_utc_midnight(entry["effective_from"])
        if (model, effective) in seen:
            raise ValueError(f"prices.toml: two rows for {model} from {effective:%Y-%m-%d}")
        seen.add((model, effective))
        input_price = float(entry["input"])
        rows["model"].append(model)
        rows["effective_from"].append(effective)
        rows["input_usd_per_mtok"].append(input_price)
        rows["output_usd_per_mtok"].append(float(entry["output"]))
        rows["cache_read_usd_per_mtok"].append(float(entry.get("cache_read", input_price)))
        rows["cache_write_usd_per_mtok"].append(float(entry.get("cache_write", input_price)))
    prices = pa.Table.from_pydict(rows, schema=PRICES_SCHEMA)
    strip = tuple(data.get("normalize", {}).get("strip_prefixes", ()))
    aliases = {normalize_model_name(k, ()): v for k, v in data.get("aliases", {}).items()}
    known = set(rows["model"])
    for alias, target in aliases.items():
        if target not in known:
            raise ValueError(f"prices.toml: alias {alias!r} points at unknown model {target!r}")
    return PriceTable(prices=prices, aliases=aliases, strip_prefixes=strip)


def normalize_model_name(name: str, strip_prefixes: tuple[str, ...]) -> str:
    """Lower-case ``name``, drop any ``provider/`` path and the given routing prefixes.

    >>> normalize_model_name("OpenAI/GPT-4o-2024-08-06", ())
    'gpt-4o-2024-08-06'
    >>> normalize_model_name("us.anthropic.claude-3-5-haiku-20241022-v1:0", ("us.", "anthropic."))
    'claude-3-5-haiku-20241022-v1:0'
    """
    normal = name.strip().lower().rsplit("/", 1)[-1]
    stripped = True
    while stripped:
        stripped = False
        for prefix in strip_prefixes:
            if normal.startswith(prefix) and len(normal) > len(prefix):
                normal = normal[len(prefix) :]
                stripped = True
    return normal


def _is_prefix_at_boundary(prefix: str, name: str) -> bool:
    # "gpt-4o" prices "gpt-4o-2024-08-06" and "gpt-4o@x" but not "gpt-4omni"; a "." is not a
    # boundary either, so "gpt-4" never prices "gpt-4.1".
    if not name.startswith(prefix):
        return False
    rest = name[len(prefix) :]
    return rest == "" or not (rest[0].isalnum() or rest[0] == ".")


def match_price_model(name: str, table: PriceTable | None = None) -> str | None:
    """The price model for a data model name: the longest matching prefix, after normalising.

    >>> match_price_model("gpt-4o-2024-08-06")
    'gpt-4o'
    >>> match_price_model("openai/gpt-4o-mini-2024-07-18")
    'gpt-4o-mini'
    >>> match_price_model("my-finetune") is None
    True
    """
    table = table or load_price_table()
    normal = normalize_model_name(name, table.strip_prefixes)
    candidates = {model: model for model in table.price_models}
    candidates.update(table.aliases)
    best: str | None = None
    for prefix in candidates:
        if _is_prefix_at_boundary(prefix, normal) and (best is None or len(prefix) > len(best)):
            best = prefix
    return None if best is None else candidates[best]


DISTINCT_MODEL_NAMES_SQL = """
SELECT DISTINCT name FROM (
    SELECT request_model AS name FROM spans
    UNION ALL
    SELECT response_model AS name FROM spans
)
WHERE name IS NOT NULL
ORDER BY name
"""


def install_prices(conn: duckdb.DuckDBPyConnection) -> pa.Table:
    """Load the price table into the catalog and map every model name in the data to it.

    Returns:
        The ``price_models`` mapping that was installed (data model name → price model);
        names that match no price model are left out, so their calls have no computed cost.
    """
    table = load_price_table()
    cur = conn.cursor()
    try:
        names = [row[0] for row in cur.execute(DISTINCT_MODEL_NAMES_SQL).fetchall()]
    finally:
        cur.close()
    mapping: dict[str, list[str]] = {"model": [], "price_model": []}
    for name in names:
        price_model = match_price_model(name, table)
        if price_model is not None:
            mapping["model"].append(name)
            mapping["price_model"].append(price_model)
    price_models = pa.Table.from_pydict(mapping, schema=PRICE_MODELS_SCHEMA)
    catalog.set_prices(conn, table.prices, price_models)
    return price_models
