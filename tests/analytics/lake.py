"""Build small span lakes for tests: rows in the canonical schema, written as Parquet segments."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from store.derived import CALL_COLUMNS_EXCLUDED
from store.schema import SPAN_SCHEMA

T0 = datetime(2025, 3, 1, tzinfo=UTC)

_ids = iter(range(1, 10**9))


def new_id(width: int = 16) -> str:
    """A fresh lower-case hex id."""
    return f"{next(_ids):0{width}x}"


def span(**fields: Any) -> dict[str, Any]:
    """One span row with every schema column; ``start_time`` + ``duration_ms`` give end_time."""
    row: dict[str, Any] = dict.fromkeys(SPAN_SCHEMA.names)
    row.update(
        project="default",
        trace_id=new_id(32),
        span_id=new_id(),
        name="span",
        kind="INTERNAL",
        service_name="api",
        start_time=T0,
        duration_ms=100.0,
        status_code="UNSET",
    )
    row.update(fields)
    if row.get("end_time") is None:
        row["end_time"] = row["start_time"] + timedelta(milliseconds=row["duration_ms"])
    return row


def stand_in_macros(conn: duckdb.DuckDBPyConnection) -> None:
    """Make the scope read the plain tables ``traces`` and ``llm_calls`` of a stand-in catalog.

    The scope builds its traces and model calls with the catalog's macros (``views.sql``); a
    stand-in replaces them with macros over tables the test fills with exactly the rows it
    needs (those of the tables that exist: create them first).
    """
    tables = {row[0] for row in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    conn.execute("CREATE MACRO trace_parts_of(src) AS TABLE SELECT 1 AS part")
    if "traces" in tables:
        conn.execute("CREATE MACRO traces_from_parts(parts) AS TABLE SELECT * FROM traces")
    if "llm_calls" in tables:
        unkept = ", ".join(f"NULL AS {name}" for name in CALL_COLUMNS_EXCLUDED)
        conn.execute(f"CREATE MACRO llm_calls_of(src) AS TABLE SELECT *, {unkept} FROM llm_calls")


def write_lake(data_dir: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows as ``<data_dir>/spans/date=YYYY-MM-DD/part-0.parquet``; return data_dir."""
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_day[row["start_time"].strftime("%Y-%m-%d")].append(row)
    for day, day_rows in by_day.items():
        folder = data_dir / "spans" / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.Table.from_pylist(day_rows, schema=SPAN_SCHEMA), folder / "part-0.parquet"
        )
    return data_dir


MODELS: tuple[tuple[str | None, str | None], ...] = (
    # (response model as the data names it, provider)
    ("gpt-4o-2024-08-06", "openai"),
    ("gpt-4o-mini-2024-07-18", "openai"),
    ("claude-3-5-sonnet-20241022", "anthropic"),
    ("text-embedding-3-small", "openai"),
    ("my-finetune-v1", "openai"),  # matches no price
    (None, "openai"),  # a model call that names no model
)


def random_traces(
    seed: int,
    num_traces: int = 60,
    start: datetime = T0,
    span_hours: float = 48.0,
    project: str = "default",
) -> list[dict[str, Any]]:
    """A seeded mix of traces: a root span, 0-3 model calls and a tool call, varied statuses."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for _ in range(num_traces):
        trace_id = new_id(32)
        root_start = start + timedelta(seconds=rng.uniform(0, span_hours * 3600))
        service = rng.choice(["api", "api", "worker"])
        user = rng.choice(["u1", "u2", "u3", "u4", None])
        session = rng.choice(["s1", "s2", None])
        root_id = new_id()
        children: list[dict[str, Any]] = []
        cursor = root_start + timedelta(milliseconds=rng.uniform(1, 20))
        for _call in range(rng.randint(0, 3)):
            model, provider = rng.choice(MODELS)
            streamed = rng.random() < 0.6
            duration = rng.lognormvariate(6.5, 0.8)  # heavy-ish tail around 700 ms
            operation = "embeddings" if model == "text-embedding-3-small" else "chat"
            children.append(
                span(
                    project=project,
                    trace_id=trace_id,
                    parent_span_id=root_id,
                    name=f"{operation} {model}",
                    kind="CLIENT",
                    service_name=service,
                    start_time=cursor,
                    duration_ms=duration,
                    status_code=rng.choice(["UNSET", "UNSET", "OK", "ERROR"]),
                    operation=operation,
                    provider=provider,
                    request_model=model.split("-20")[0] if model else None,
                    response_model=model,
                    input_tokens=rng.randint(10, 5000),
                    output_tokens=0 if operation == "embeddings" else rng.randint(1, 800),
                    cache_read_tokens=rng.choice([None, 0, 5]),
                    ttft_ms=duration * rng.uniform(0.1, 0.5) if streamed else None,
                    user_id=user,
                    session_id=session,
                )
            )
            cursor += timedelta(milliseconds=duration + rng.uniform(1, 50))
        if rng.random() < 0.5:
            children.append(
                span(
                    project=project,
                    trace_id=trace_id,
                    parent_span_id=root_id,
                    name="execute_tool search",
                    service_name=service,
                    start_time=cursor,
                    duration_ms=rng.uniform(5, 300),
                    operation="execute_tool",
                )
            )
        end = max([root_start, *(c["end_time"] for c in children)]) + timedelta(milliseconds=5)
        root = span(
            project=project,
            trace_id=trace_id,
            span_id=root_id,
            name=rng.choice(["POST /chat", "POST /search"]),
            kind="SERVER",
            service_name=service,
            start_time=root_start,
            end_time=end,
            duration_ms=(end - root_start) / timedelta(milliseconds=1),
            status_code=rng.choice(["UNSET", "OK", "OK", "ERROR"]),
            user_id=user,
            session_id=session,
        )
        rows.append(root)
        rows.extend(children)
    return rows
