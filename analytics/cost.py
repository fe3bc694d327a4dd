"""Cost: the versioned price table (``prices.toml``), how model names map to it, and spend.

Cost is computed at read time by the catalog's ``llm_calls`` view from the ``prices`` and
``price_models`` tables that :func:`install_prices` fills, so a corrected price corrects history.
A span that carries its own ``cost_usd`` keeps it (*reported* cost; its split by token type is
unknown). A call that reports tokens but whose model matches no price is *unpriced*: it is
counted and listed (:func:`unpriced_models`), never costed at zero.

Spend sums the model calls that started in the window (``scoped_llm_calls``). A *request* here
is a trace with at least one such call; a call's route, and its user and session when the call
does not carry them, come from its trace's root span (``scoped_roots``). Input tokens include
cached tokens (the OpenTelemetry convention): uncached input = input − cache read − cache write.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast, get_args

import duckdb
import polars as pl
import pyarrow as pa

from analytics.latency import check_bucket
from analytics.scope import Scope, quote_identifier, run_scoped
from store import catalog
from store.catalog import PRICE_MODELS_SCHEMA, PRICES_SCHEMA

__all__ = [
    "COST_DIMENSIONS",
    "DAYS_PER_MONTH",
    "CostDimension",
    "CostProjection",
    "CostSummary",
    "PriceFileError",
    "PriceTable",
    "cost_by_dimension",
    "cost_by_time",
    "cost_projection",
    "cost_summary",
    "install_prices",
    "load_price_table",
    "match_price_model",
    "monthly_projection",
    "most_expensive_traces",
    "normalize_model_name",
    "prices_in_use",
    "unpriced_models",
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


class PriceFileError(ValueError):
    """A price file Flywheel cannot use; the message names the file and the row."""


def _as_utc_midnight(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise PriceFileError(f"{where}: effective_from must be a TOML date, got {value!r}")


def _price(entry: dict[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = entry.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise PriceFileError(f"{where}: {key} must be a non-negative number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class _PriceFile:
    rows: dict[tuple[str, datetime], dict[str, Any]]
    aliases: dict[str, str]
    strip_prefixes: tuple[str, ...]


def _parse_price_file(text: str, source: str) -> _PriceFile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PriceFileError(f"{source}: not valid TOML: {exc}") from None
    rows: dict[tuple[str, datetime], dict[str, Any]] = {}
    for index, entry in enumerate(data.get("price", [])):
        where = f"{source}: [[price]] #{index + 1} ({entry.get('model', 'no model')})"
        if not isinstance(entry.get("model"), str) or not entry["model"]:
            raise PriceFileError(f"{where}: needs a model")
        model = normalize_model_name(entry["model"], ())
        effective = _as_utc_midnight(entry.get("effective_from"), where)
        if (model, effective) in rows:
            raise PriceFileError(f"{source}: two rows for {model} from {effective:%Y-%m-%d}")
        input_price = _price(entry, "input", where)
        rows[(model, effective)] = {
            "model": model,
            "effective_from": effective,
            "input_usd_per_mtok": input_price,
            "output_usd_per_mtok": _price(entry, "output", where),
            "cache_read_usd_per_mtok": _price(entry, "cache_read", where, input_price),
            "cache_write_usd_per_mtok": _price(entry, "cache_write", where, input_price),
        }
    strip = tuple(data.get("normalize", {}).get("strip_prefixes", ()))
    aliases = {normalize_model_name(k, ()): v for k, v in data.get("aliases", {}).items()}
    return _PriceFile(rows=rows, aliases=aliases, strip_prefixes=strip)


@cache
def _builtin_price_file() -> _PriceFile:
    text = resources.files("analytics").joinpath("prices.toml").read_text(encoding="utf-8")
    return _parse_price_file(text, "analytics/prices.toml")


@cache
def _price_table(path: str | None, mtime_ns: int) -> PriceTable:
    files = [_builtin_price_file()]
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PriceFileError(f"{path}: cannot read the price file: {exc.strerror}") from None
        files.append(_parse_price_file(text, path))
    rows: dict[tuple[str, datetime], dict[str, Any]] = {}
    aliases: dict[str, str] = {}
    strip: list[str] = []
    for price_file in files:  # a user's rows replace built-in rows of the same model and date
        rows |= price_file.rows
        aliases |= price_file.aliases
        strip += [prefix for prefix in price_file.strip_prefixes if prefix not in strip]
    known = {model for model, _ in rows}
    for alias, target in aliases.items():
        if target not in known:
            raise PriceFileError(f"price alias {alias!r} points at unknown model {target!r}")
    ordered = [rows[key] for key in sorted(rows)]
    prices = pa.Table.from_pylist(ordered, schema=PRICES_SCHEMA)
    return PriceTable(prices=prices, aliases=aliases, strip_prefixes=tuple(strip))


def load_price_table(path: Path | str | None = None) -> PriceTable:
    """The built-in ``analytics/prices.toml``, with a user's price file (same format) laid over it.

    A user's row replaces the built-in row of the same model and ``effective_from``; its other
    rows, aliases and routing prefixes are added. The file is re-read when it changes.
    """
    if path is None:
        return _price_table(None, 0)
    try:
        mtime_ns = Path(path).stat().st_mtime_ns
    except OSError as exc:
        raise PriceFileError(f"{path}: cannot read the price file: {exc.strerror}") from None
    return _price_table(str(path), mtime_ns)


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


def install_prices(
    conn: duckdb.DuckDBPyConnection, price_file: Path | str | None = None
) -> pa.Table:
    """Load the price table (and ``price_file`` over it) into the catalog; map every model name
    in the data to it.

    Returns:
        The ``price_models`` mapping that was installed (data model name → price model), every
        name in the data included: a name that matches no price model maps to null, so its
        calls have no computed cost (and store.derived knows the name was looked at).
    """
    table = load_price_table(price_file)
    cur = conn.cursor()
    try:
        names = [row[0] for row in cur.execute(DISTINCT_MODEL_NAMES_SQL).fetchall()]
    finally:
        cur.close()
    mapping: dict[str, list[str | None]] = {"model": [], "price_model": []}
    for name in names:
        mapping["model"].append(name)
        mapping["price_model"].append(match_price_model(name, table))
    price_models = pa.Table.from_pydict(mapping, schema=PRICE_MODELS_SCHEMA)
    # How names map to prices besides the price rows: what the kept per-segment work of
    # store.derived depends on (its fingerprint hashes this with the prices).
    rules = json.dumps(
        {"aliases": sorted(table.aliases.items()), "strip_prefixes": list(table.strip_prefixes)}
    )
    catalog.set_prices(conn, table.prices, price_models, mapping_rules=rules)
    return price_models


# The sums every cost grouping reports, over model calls. Each call carries its cost split
# (llm_calls_of in store/views.sql: input, cache-read, cache-write and output parts, which add
# up to total_cost_usd, or the span's own reported cost) and whether it is unpriced.
_COST_SUMS_SQL = """
    coalesce(sum(total_cost_usd), 0.0) AS cost_usd,
    count(*) AS num_llm_calls,
    count(DISTINCT trace_id) AS num_requests,
    count(*) FILTER (WHERE unpriced) AS num_unpriced_calls,
    count(*) FILTER (WHERE reported_cost_usd IS NOT NULL) AS num_reported_calls,
    CAST(coalesce(sum(input_tokens), 0) AS BIGINT) AS input_tokens,
    CAST(coalesce(sum(greatest(coalesce(input_tokens, 0) - coalesce(cache_read_tokens, 0)
        - coalesce(cache_write_tokens, 0), 0)), 0) AS BIGINT) AS uncached_input_tokens,
    CAST(coalesce(sum(cache_read_tokens), 0) AS BIGINT) AS cache_read_tokens,
    CAST(coalesce(sum(cache_write_tokens), 0) AS BIGINT) AS cache_write_tokens,
    CAST(coalesce(sum(output_tokens), 0) AS BIGINT) AS output_tokens,
    coalesce(sum(input_cost_usd), 0.0) AS input_cost_usd,
    coalesce(sum(cache_read_cost_usd), 0.0) AS cache_read_cost_usd,
    coalesce(sum(cache_write_cost_usd), 0.0) AS cache_write_cost_usd,
    coalesce(sum(output_cost_usd), 0.0) AS output_cost_usd,
    coalesce(sum(reported_cost_usd), 0.0) AS reported_cost_usd"""


@dataclass(frozen=True)
class CostSummary:
    """Spend over a scope; a statistic over no requests is ``None``, a sum 0."""

    cost_usd: float
    num_llm_calls: int
    #: Traces with at least one model call in the window.
    num_requests: int
    cost_per_request_usd: float | None
    cost_per_request_p50_usd: float | None
    cost_per_request_p95_usd: float | None
    #: Calls that report tokens but whose model matches no price (left out of the cost).
    num_unpriced_calls: int
    #: Calls whose span carries its own cost (used as is; not split by token type).
    num_reported_calls: int
    input_tokens: int
    uncached_input_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    output_tokens: int
    input_cost_usd: float
    cache_read_cost_usd: float
    cache_write_cost_usd: float
    output_cost_usd: float
    reported_cost_usd: float


COST_SUMMARY_SQL = f"""
WITH per_request AS (
    SELECT trace_id, sum(total_cost_usd) AS cost_usd
    FROM scoped_llm_calls
    GROUP BY trace_id
    HAVING count(total_cost_usd) > 0
)
SELECT
    {_COST_SUMS_SQL},
    (SELECT quantile_cont(cost_usd, [0.5, 0.95]) FROM per_request) AS per_request_qs
FROM scoped_llm_calls
"""


def cost_summary(conn: duckdb.DuckDBPyConnection, scope: Scope) -> CostSummary:
    """Total spend, cost per request, and tokens and cost split by input, cached and output.

    ``cost_usd`` = ``input_cost_usd`` + ``cache_read_cost_usd`` + ``cache_write_cost_usd`` +
    ``output_cost_usd`` + ``reported_cost_usd``; the per-request percentiles are over requests
    with some priced call (linear interpolation).
    """
    row = run_scoped(conn, scope, COST_SUMMARY_SQL).to_pylist()[0]
    qs = row.pop("per_request_qs") or [None, None]
    num_requests = int(row["num_requests"])
    return CostSummary(
        cost_per_request_usd=row["cost_usd"] / num_requests if num_requests else None,
        cost_per_request_p50_usd=qs[0],
        cost_per_request_p95_usd=qs[1],
        **row,
    )


#: What spend can be grouped by.
CostDimension = Literal[
    "model", "provider", "service", "route", "operation", "user", "session", "day"
]
COST_DIMENSIONS: tuple[str, ...] = get_args(CostDimension)
_COST_KEYS = {
    "model": "c.model",
    "provider": "c.provider",
    "service": "c.service_name",
    "operation": "c.operation",
    "day": "CAST(c.start_time AS DATE)",
    "route": "r.route",
    "user": "coalesce(c.user_id, r.user_id)",
    "session": "coalesce(c.session_id, r.session_id)",
}
_NEEDS_ROOTS = ("route", "user", "session")


def _cost_key(by: str) -> tuple[str, str]:
    """The key expression for a dimension, and the join that it needs."""
    if by not in _COST_KEYS:
        raise ValueError(f"unknown dimension {by!r}; use one of {', '.join(COST_DIMENSIONS)}")
    join = "LEFT JOIN scoped_roots AS r USING (trace_id)" if by in _NEEDS_ROOTS else ""
    return _COST_KEYS[by], join


COST_BY_DIMENSION_SQL = """
WITH grouped AS (
    SELECT {key} AS key, {sums}
    FROM scoped_llm_calls AS c {join}
    GROUP BY key
)
SELECT
    key AS {by},
    grouped.* EXCLUDE (key),
    cost_usd / nullif(sum(cost_usd) OVER (), 0) AS cost_share,
    cost_usd / num_requests AS cost_per_request_usd
FROM grouped
ORDER BY cost_usd DESC, num_llm_calls DESC, key NULLS LAST
LIMIT $limit
"""


def cost_by_dimension(
    conn: duckdb.DuckDBPyConnection, scope: Scope, by: CostDimension, limit: int = 1000
) -> pl.DataFrame:
    """Spend per model, provider, service, route, operation, user, session or day, costliest first
    (days in order).

    Returns:
        Columns ``<by>`` (a date for ``day``; null for calls without one), ``cost_usd``,
        ``num_llm_calls``, ``num_requests``, ``num_unpriced_calls``, ``num_reported_calls``,
        ``input_tokens``, ``uncached_input_tokens``, ``cache_read_tokens``,
        ``cache_write_tokens``, ``output_tokens``, ``input_cost_usd``, ``cache_read_cost_usd``,
        ``cache_write_cost_usd``, ``output_cost_usd``, ``reported_cost_usd``, ``cost_share``
        (of the scope's cost) and ``cost_per_request_usd``.
    """
    key, join = _cost_key(by)
    sql = COST_BY_DIMENSION_SQL.format(
        key=key,
        sums=_COST_SUMS_SQL.strip(),
        join=join,
        by=quote_identifier(by),
    )
    table = run_scoped(conn, scope, sql, {"limit": limit})
    frame = cast(pl.DataFrame, pl.from_arrow(table))
    return frame.sort("day") if by == "day" else frame


COST_BY_TIME_SQL = """
WITH buckets AS (
    SELECT unnest(range(
        time_bucket($bucket, $start::TIMESTAMPTZ, 'UTC'), $end::TIMESTAMPTZ, $bucket
    )) AS bucket_start
), grouped AS (
    SELECT
        time_bucket($bucket, c.start_time, 'UTC') AS bucket_start,
        {key} AS key,
        coalesce(sum(c.total_cost_usd), 0.0) AS cost_usd,
        count(*) AS num_llm_calls
    FROM scoped_llm_calls AS c {join}
    GROUP BY ALL
)
SELECT buckets.bucket_start, {key_column} coalesce(cost_usd, 0.0) AS cost_usd,
    coalesce(num_llm_calls, 0) AS num_llm_calls
FROM buckets {outer} grouped USING (bucket_start)
ORDER BY buckets.bucket_start, cost_usd DESC, key NULLS LAST
"""


def cost_by_time(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    bucket: timedelta,
    by: CostDimension | None = None,
) -> pl.DataFrame:
    """Spend per time bucket, optionally split by a dimension (for a stacked chart).

    Returns:
        Columns ``bucket_start``, ``<by>`` when split, ``cost_usd`` and ``num_llm_calls``.
        Without ``by`` every bucket is present (0 when empty); with it, the (bucket, group)
        pairs that have calls.
    """
    check_bucket(scope, bucket)
    key, join = ("NULL", "") if by is None else _cost_key(by)
    sql = COST_BY_TIME_SQL.format(
        key=key,
        join=join,
        key_column="" if by is None else f"key AS {quote_identifier(by)},",
        outer="LEFT JOIN" if by is None else "JOIN",
    )
    table = run_scoped(conn, scope, sql, {"bucket": bucket})
    return cast(pl.DataFrame, pl.from_arrow(table))


MOST_EXPENSIVE_TRACES_SQL = """
WITH top AS (
    -- Rank every request by its cost alone, then describe only the few kept: one sum per
    -- request is cheap, a dozen aggregates (lists, arg_min) for all of them is not.
    SELECT trace_id, sum(total_cost_usd) AS cost_usd
    FROM scoped_llm_calls
    GROUP BY trace_id
    HAVING sum(total_cost_usd) IS NOT NULL
    ORDER BY cost_usd DESC, trace_id
    LIMIT $limit
), per_trace AS (
    SELECT
        trace_id,
        min(start_time) AS start_time,
        count(*) AS num_llm_calls,
        CAST(coalesce(sum(input_tokens), 0) AS BIGINT) AS input_tokens,
        CAST(coalesce(sum(output_tokens), 0) AS BIGINT) AS output_tokens,
        CAST(coalesce(sum(cache_read_tokens), 0) AS BIGINT) AS cache_read_tokens,
        count(*) FILTER (WHERE unpriced) AS num_unpriced_calls,
        list_sort(list_distinct(list(model) FILTER (WHERE model IS NOT NULL))) AS models,
        arg_min(user_id, start_time) FILTER (WHERE user_id IS NOT NULL) AS call_user_id,
        arg_min(session_id, start_time) FILTER (WHERE session_id IS NOT NULL) AS call_session_id
    FROM scoped_llm_calls
    WHERE trace_id IN (SELECT trace_id FROM top)
    GROUP BY trace_id
)
SELECT
    t.trace_id,
    t.start_time,
    r.route,
    coalesce(t.call_user_id, r.user_id) AS user_id,
    coalesce(t.call_session_id, r.session_id) AS session_id,
    top.cost_usd,
    t.num_llm_calls,
    t.input_tokens,
    t.output_tokens,
    t.cache_read_tokens,
    t.num_unpriced_calls,
    coalesce(t.models, []::VARCHAR[]) AS models
FROM top
JOIN per_trace AS t USING (trace_id)
LEFT JOIN (
    SELECT * FROM scoped_roots WHERE trace_id IN (SELECT trace_id FROM top)
) AS r USING (trace_id)
ORDER BY top.cost_usd DESC, t.trace_id
"""


def most_expensive_traces(
    conn: duckdb.DuckDBPyConnection, scope: Scope, limit: int = 20
) -> pl.DataFrame:
    """The traces whose model calls in the window cost the most.

    Returns:
        Columns ``trace_id``, ``start_time`` (first call), ``route``, ``user_id``,
        ``session_id``, ``cost_usd``, ``num_llm_calls``, ``input_tokens``, ``output_tokens``,
        ``cache_read_tokens``, ``num_unpriced_calls`` and ``models``; costliest first.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    table = run_scoped(conn, scope, MOST_EXPENSIVE_TRACES_SQL, {"limit": limit})
    return cast(pl.DataFrame, pl.from_arrow(table))


UNPRICED_MODELS_SQL = """
SELECT
    model,
    provider,
    count(*) AS num_calls,
    CAST(coalesce(sum(input_tokens), 0) AS BIGINT) AS input_tokens,
    CAST(coalesce(sum(output_tokens), 0) AS BIGINT) AS output_tokens,
    min(start_time) AS first_seen,
    max(start_time) AS last_seen
FROM scoped_llm_calls
WHERE unpriced
GROUP BY model, provider
ORDER BY num_calls DESC, model NULLS LAST, provider NULLS LAST
"""


def unpriced_models(conn: duckdb.DuckDBPyConnection, scope: Scope) -> pl.DataFrame:
    """Models whose calls report tokens but match no price (or no price yet at the call's date).

    Returns:
        Columns ``model`` (null when the call names none), ``provider``, ``num_calls``,
        ``input_tokens``, ``output_tokens``, ``first_seen`` and ``last_seen``; most calls first.
    """
    table = run_scoped(conn, scope, UNPRICED_MODELS_SQL)
    return cast(pl.DataFrame, pl.from_arrow(table))


#: A month, for projections: 30 days.
DAYS_PER_MONTH = 30.0


def monthly_projection(cost_usd: float, days: float) -> float | None:
    """Spend over ``days`` extended to a 30-day month at the same daily rate.

    >>> monthly_projection(70.0, 7.0)  # $10 a day
    300.0
    >>> monthly_projection(5.0, 0.0) is None
    True
    """
    return cost_usd / days * DAYS_PER_MONTH if days > 0 else None


@dataclass(frozen=True)
class CostProjection:
    """A 30-day projection from the spend rate over the most recent days of the window."""

    recent_start: datetime
    recent_end: datetime
    recent_days: float
    recent_cost_usd: float
    daily_cost_usd: float | None
    projected_monthly_usd: float | None
    #: Unpriced calls in the recent window: the projection leaves them out too.
    num_unpriced_calls: int


COST_PROJECTION_SQL = """
SELECT
    coalesce(sum(total_cost_usd), 0.0) AS cost_usd,
    count(*) FILTER (WHERE unpriced) AS num_unpriced_calls
FROM scoped_llm_calls
"""


def cost_projection(
    conn: duckdb.DuckDBPyConnection, scope: Scope, recent: timedelta = timedelta(days=7)
) -> CostProjection:
    """Project a month's spend from the last ``recent`` of the window (all of it when shorter)."""
    if recent <= timedelta(0):
        raise ValueError(f"recent must be positive, got {recent}")
    start = max(scope.start, scope.end - recent)
    row = run_scoped(conn, replace(scope, start=start), COST_PROJECTION_SQL)
    values = row.to_pylist()[0]
    days = (scope.end - start) / timedelta(days=1)
    cost = float(values["cost_usd"])
    return CostProjection(
        recent_start=start,
        recent_end=scope.end,
        recent_days=days,
        recent_cost_usd=cost,
        daily_cost_usd=cost / days if days > 0 else None,
        projected_monthly_usd=monthly_projection(cost, days),
        num_unpriced_calls=int(values["num_unpriced_calls"]),
    )


PRICES_IN_USE_SQL = """
WITH used AS (
    SELECT model, price_model, min(start_time) AS first_call, max(start_time) AS last_call,
        count(*) AS num_llm_calls
    FROM scoped_llm_calls
    WHERE model IS NOT NULL
    GROUP BY model, price_model
), ranged AS (
    SELECT
        *,
        lead(effective_from) OVER (PARTITION BY model ORDER BY effective_from) AS effective_until
    FROM prices
)
SELECT
    used.model,
    used.price_model,
    used.num_llm_calls,
    p.effective_from,
    p.input_usd_per_mtok,
    p.cache_read_usd_per_mtok,
    p.cache_write_usd_per_mtok,
    p.output_usd_per_mtok
FROM used
LEFT JOIN ranged AS p
    ON p.model = used.price_model
    AND p.effective_from <= used.last_call
    AND (p.effective_until IS NULL OR p.effective_until > used.first_call)
ORDER BY used.num_llm_calls DESC, used.model, p.effective_from
"""


def prices_in_use(conn: duckdb.DuckDBPyConnection, scope: Scope) -> pl.DataFrame:
    """The price rows behind the scope's calls: per model seen, each price in force while it
    was called.

    Returns:
        Columns ``model``, ``price_model`` (null: unpriced), ``num_llm_calls``,
        ``effective_from`` and the USD-per-million-token prices ``input_usd_per_mtok``,
        ``cache_read_usd_per_mtok``, ``cache_write_usd_per_mtok``, ``output_usd_per_mtok``;
        a model with a price change has a row per price.
    """
    table = run_scoped(conn, scope, PRICES_IN_USE_SQL)
    return cast(pl.DataFrame, pl.from_arrow(table))
