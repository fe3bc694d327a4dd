"""Eval datasets: cases taken from production traces or imported from JSONL, versioned in the lake.

A dataset is named; each create or import writes a new **version**, a whole snapshot of its
cases (``--append`` carries the previous version's cases over), so a run names exactly what it
replayed (``name@version``). Cases are de-duplicated by :func:`evals.cases.case_id_of` (the
same system prompt and messages are one case; the first seen is kept: the newest request, for
cases from traces). Each case falls in the ``holdout`` split with probability ``holdout``, by a
hash of its id, so a case keeps its split in every version of its dataset.

A case from a trace is the request's answer (its last generation call, see
:func:`analytics.trace_detail.answer_spans`): its input messages are the case, what production
answered is the reference, and its model, route, user, tokens, latency, cost and votes are the
case's metadata. Reading messages out of a span is the caller's (``messages_of``): the
dashboard and the CLI pass the one the trace view draws with.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import duckdb
import polars as pl
import pyarrow as pa

from analytics.feedback import thumbs_votes
from analytics.scope import Scope
from analytics.trace_detail import SpanDetail, answer_spans
from analytics.traces import TraceFilter, list_traces
from evals.cases import Case, Message, case_id_of, check_messages, messages_to_json
from store.catalog import query
from store.lake import EVAL_CASES, Lake, as_lake
from store.schema import EVAL_CASE_SCHEMA

__all__ = [
    "SPLITS",
    "BuildReport",
    "Dataset",
    "ImportReport",
    "cases_from_traces",
    "check_dataset_name",
    "list_datasets",
    "parse_dataset_ref",
    "read_dataset",
    "read_jsonl_cases",
    "split_of",
    "write_dataset",
]

SPLITS = ("test", "holdout")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: The lock (a file in the lake) that makes choosing a version and writing it one step.
DATASETS_LOCK = ".eval-datasets.lock"
#: Traces read per page while building a dataset.
_PAGE = 500

#: ``messages_of(span)``: the chat input a span's model received and what it answered.
MessagesOf = Callable[[SpanDetail], tuple[Sequence[Message], str | None]]


def check_dataset_name(name: str) -> str:
    """A dataset name: 1–64 letters, digits, ``_ . -``, starting with a letter or digit."""
    if not _NAME.match(name):
        raise ValueError(
            f"dataset name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def parse_dataset_ref(ref: str) -> tuple[str, int | None]:
    """``name`` or ``name@version`` → (name, version or None for the latest).

    >>> parse_dataset_ref("support@3")
    ('support', 3)
    """
    name, at, version = ref.partition("@")
    check_dataset_name(name)
    if not at:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise ValueError(f"dataset version in {ref!r} must be a positive integer")
    return name, int(version)


def split_of(case_id: str, holdout: float) -> str:
    """``holdout`` for a share ``holdout`` of case ids (by hash, stable), ``test`` for the rest.

    >>> split_of("c-b03d228fdf33e7c8", 0.0), split_of("c-b03d228fdf33e7c8", 1.0)
    ('test', 'holdout')
    """
    if not 0.0 <= holdout <= 1.0:
        raise ValueError(f"holdout share must be in [0, 1], got {holdout}")
    digest = hashlib.sha256(("split:" + case_id).encode()).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64
    return "holdout" if unit < holdout else "test"


@dataclass(frozen=True)
class BuildReport:
    """Cases made from traces, and what was left out and why."""

    cases: list[Case]
    num_traces: int
    num_without_answer: int = 0
    num_without_input: int = 0
    num_duplicates: int = 0


def _metadata(span: SpanDetail, route: str | None, votes: dict[str, str]) -> dict[str, str]:
    found: dict[str, Any] = {
        "model": span.model,
        "provider": span.provider,
        "route": route,
        "service": span.service_name,
        "user_id": span.user_id,
        "session_id": span.session_id,
        "system_prompt_hash": span.system_prompt_hash,
        "input_tokens": span.input_tokens,
        "output_tokens": span.output_tokens,
        "latency_ms": span.duration_ms,
        "ttft_ms": span.ttft_ms,
        "cost_usd": span.cost_usd,
        "status": span.status_code,
        "feedback": votes.get(span.span_id),
    }
    return {key: str(value) for key, value in found.items() if value is not None}


def cases_from_traces(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    filters: TraceFilter | None,
    messages_of: MessagesOf,
    *,
    limit: int = 1000,
    holdout: float = 0.2,
) -> BuildReport:
    """Cases from the newest ``limit`` requests of ``scope`` that match ``filters`` (the Traces
    page's list filters): each request's answer, its input as the case, its output as the
    reference. Requests without a generation call or without input messages are counted and
    left out; a repeated input is kept once (the newest)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    rows: list[dict[str, Any]] = []
    while len(rows) < limit:
        page = list_traces(
            conn, scope, filters, limit=min(_PAGE, limit - len(rows)), offset=len(rows), count=False
        )
        rows.extend(page.rows.select("trace_id", "name", "start_time").to_dicts())
        if page.rows.height < page.limit:
            break
    answers = answer_spans(conn, scope, [row["trace_id"] for row in rows])
    votes = _votes(conn, scope, answers)
    cases: list[Case] = []
    seen: set[str] = set()
    num_without_input = num_duplicates = 0
    for row in rows:
        span = answers.get(row["trace_id"])
        if span is None:
            continue
        messages, reference = messages_of(span)
        if not messages or not any(m["role"] == "user" for m in messages):
            num_without_input += 1
            continue
        case_id = case_id_of(messages)
        if case_id in seen:
            num_duplicates += 1
            continue
        seen.add(case_id)
        cases.append(
            Case(
                case_id=case_id,
                messages=tuple(messages),
                reference=reference,
                split=split_of(case_id, holdout),
                metadata=_metadata(span, row["name"], votes),
                source_trace_id=row["trace_id"],
                source_span_id=span.span_id,
                source_time=span.start_time,
            )
        )
    return BuildReport(
        cases,
        num_traces=len(rows),
        num_without_answer=len(rows) - len(answers),
        num_without_input=num_without_input,
        num_duplicates=num_duplicates,
    )


def _votes(
    conn: duckdb.DuckDBPyConnection, scope: Scope, answers: dict[str, SpanDetail]
) -> dict[str, str]:
    """``up``/``down`` per answer span id (a user's latest vote on the request counts; any down
    vote makes it down)."""
    if not answers:
        return {}
    frame = thumbs_votes(conn, scope).filter(pl.col("trace_id").is_in(list(answers)))
    by_trace = frame.group_by("trace_id").agg(pl.col("down").any())
    return {
        answers[row["trace_id"]].span_id: "down" if row["down"] else "up"
        for row in by_trace.to_dicts()
    }


@dataclass(frozen=True)
class ImportReport:
    """Cases read from a JSONL file, and the lines rejected (``file:line: why``)."""

    cases: list[Case]
    errors: list[str] = field(default_factory=list)
    num_duplicates: int = 0


def _case_from_json(item: Any, where: str, holdout: float) -> Case:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected a JSON object")
    if "messages" in item:
        messages = list(check_messages(item["messages"], f"{where}: messages"))
    elif isinstance(item.get("input"), str):
        messages = [{"role": "user", "content": item["input"]}]
    else:
        raise ValueError(f"{where}: needs 'messages' (a chat list) or 'input' (text)")
    system = item.get("system")
    if system is not None:
        if not isinstance(system, str):
            raise ValueError(f"{where}: system: expected text")
        messages = [m for m in messages if m["role"] not in ("system", "developer")]
        messages.insert(0, {"role": "system", "content": system})
    reference = next((item[k] for k in ("reference", "expected", "output") if k in item), None)
    if reference is not None and not isinstance(reference, str):
        reference = json.dumps(reference, ensure_ascii=False)
    # Only a missing or null metadata means none: [] or "" is a mistake, not an empty object.
    metadata = item.get("metadata")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise ValueError(f"{where}: metadata: expected an object")
    split = item.get("split")
    if split is not None and split not in SPLITS:
        raise ValueError(f"{where}: split: expected one of {SPLITS}, got {split!r}")
    case_id = case_id_of(messages)
    return Case(
        case_id=case_id,
        messages=tuple(messages),
        reference=reference,
        split=split or split_of(case_id, holdout),
        metadata={str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()},
        source_trace_id=item.get("trace_id") if isinstance(item.get("trace_id"), str) else None,
    )


def read_jsonl_cases(path: Path | str, *, holdout: float = 0.2) -> ImportReport:
    """Cases from a JSONL file, one object per line: ``messages`` (OpenAI chat messages) or
    ``input`` (the user's text), optionally ``system``, ``reference`` (or ``expected`` /
    ``output``), ``metadata``, ``split`` and ``trace_id``. A bad line is reported with its
    number and skipped; a repeated input is kept once (the first)."""
    if not 0.0 <= holdout <= 1.0:  # not per line: it is no fault of the file's
        raise ValueError(f"holdout share must be in [0, 1], got {holdout}")
    path = Path(path)
    cases: list[Case] = []
    errors: list[str] = []
    seen: set[str] = set()
    num_duplicates = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                errors.append(f"{where}: not UTF-8 (byte {exc.start + 1} of the line)")
                continue
            if not line.strip():
                continue
            try:
                case = _case_from_json(json.loads(line), where, holdout)
            except json.JSONDecodeError as exc:
                errors.append(f"{where}: not JSON ({exc.msg} at column {exc.colno})")
                continue
            except ValueError as exc:
                errors.append(str(exc))
                continue
            if case.case_id in seen:
                num_duplicates += 1
                continue
            seen.add(case.case_id)
            cases.append(case)
    return ImportReport(cases, errors, num_duplicates)


@dataclass(frozen=True)
class Dataset:
    """One version of a dataset, read back (``cases`` in the order they were written)."""

    name: str
    version: int
    time: datetime
    cases: list[Case]

    def split(self, split: str | None) -> list[Case]:
        """The cases of one split (None: all)."""
        return [c for c in self.cases if split is None or c.split == split]


LATEST_VERSION_SQL = """
SELECT max(version) FROM eval_cases WHERE project = $project AND dataset = $dataset
"""


def _latest_version(conn: duckdb.DuckDBPyConnection, project: str, name: str) -> int | None:
    rows = query(conn.cursor(), LATEST_VERSION_SQL, {"project": project, "dataset": name})
    value = rows.column(0)[0].as_py() if rows.num_rows else None
    return cast(int | None, value)


def write_dataset(
    conn: duckdb.DuckDBPyConnection,
    where: Lake | Path | str,
    project: str,
    name: str,
    cases: Sequence[Case],
    *,
    append: bool = False,
    now: datetime | None = None,
) -> Dataset:
    """Write ``cases`` as the next version of dataset ``name`` (with ``append``, after the
    previous version's cases, a repeated input kept once); returns the version written.

    ``conn`` reads the store that ``where`` (a data directory, or a ``store.lake.Lake`` such as
    ClickHouse's tables) writes."""
    check_dataset_name(name)
    lake = as_lake(where)
    # Choosing the version and writing it is one step: two writers (the page's form and the
    # CLI) would otherwise both write version n + 1 and merge their snapshots.
    with lake.locked(DATASETS_LOCK):
        latest = _latest_version(conn, project, name)
        version = (latest or 0) + 1
        merged: list[Case] = []
        if append and latest is not None:
            merged.extend(read_dataset(conn, project, name, latest).cases)
        seen = {c.case_id for c in merged}
        for case in cases:
            if case.case_id not in seen:
                seen.add(case.case_id)
                merged.append(case)
        if not merged:
            raise ValueError(f"dataset {name!r}: no cases to write")
        moment = now or datetime.now(UTC)
        lake.write(EVAL_CASES.name, _cases_table(project, name, version, moment, merged))
    return Dataset(name, version, moment, merged)


def _cases_table(
    project: str, name: str, version: int, moment: datetime, cases: Iterable[Case]
) -> pa.Table:
    rows = [
        {
            "project": project,
            "dataset": name,
            "version": version,
            "case_id": c.case_id,
            # Rows of one version keep their order through the lake: a microsecond apart.
            "time": moment.replace(microsecond=0) + timedelta(microseconds=i),
            "split": c.split,
            "messages": messages_to_json(c.messages),
            "reference": c.reference,
            "source_trace_id": c.source_trace_id,
            "source_span_id": c.source_span_id,
            "source_time": c.source_time,
            "metadata": list(c.metadata.items()),
        }
        for i, c in enumerate(cases)
    ]
    return pa.Table.from_pylist(rows, schema=EVAL_CASE_SCHEMA)


READ_DATASET_SQL = """
SELECT * FROM eval_cases
WHERE project = $project AND dataset = $dataset AND version = $version
ORDER BY time, case_id
"""


def read_dataset(
    conn: duckdb.DuckDBPyConnection, project: str, name: str, version: int | None = None
) -> Dataset:
    """A version of a dataset (None: the latest); LookupError if there is none."""
    if version is None:
        version = _latest_version(conn, project, name)
        if version is None:
            raise LookupError(f"no dataset named {name!r} in project {project!r}")
    params = {"project": project, "dataset": name, "version": version}
    rows = query(conn.cursor(), READ_DATASET_SQL, params).to_pylist()
    if not rows:
        raise LookupError(f"dataset {name!r} has no version {version}")
    cases = [
        Case(
            case_id=row["case_id"],
            messages=check_messages(json.loads(row["messages"])),
            reference=row["reference"],
            split=row["split"],
            metadata=dict(row["metadata"] or []),
            source_trace_id=row["source_trace_id"],
            source_span_id=row["source_span_id"],
            source_time=row["source_time"],
        )
        for row in rows
    ]
    return Dataset(name, version, rows[0]["time"], cases)


LIST_DATASETS_SQL = """
SELECT
    dataset,
    version,
    min(time) AS time,
    count(*) AS num_cases,
    count(*) FILTER (WHERE split = 'holdout') AS num_holdout,
    count(*) FILTER (WHERE reference IS NOT NULL) AS num_with_reference,
    count(*) FILTER (WHERE source_trace_id IS NOT NULL) AS num_from_traces
FROM eval_cases
WHERE project = $project
GROUP BY dataset, version
ORDER BY dataset, version DESC
"""


def list_datasets(conn: duckdb.DuckDBPyConnection, project: str) -> pl.DataFrame:
    """Every version of every dataset of a project: ``dataset``, ``version``, ``time``,
    ``num_cases``, ``num_holdout``, ``num_with_reference``, ``num_from_traces``."""
    frame = pl.from_arrow(query(conn.cursor(), LIST_DATASETS_SQL, {"project": project}))
    assert isinstance(frame, pl.DataFrame)
    return frame
