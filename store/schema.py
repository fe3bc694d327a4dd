"""The canonical span schema: the lake's public contract.

Users read the lake with their own DuckDB, Polars or Spark, so these names and types are an
interface. Attribute maps hold every source attribute as text (strings as-is, numbers in
decimal, booleans ``true``/``false``, arrays and key-value lists as JSON, bytes as base64), the
same rule the OpenTelemetry Collector's ClickHouse exporter uses, so both backends read alike.
"""

from __future__ import annotations

import pyarrow as pa

TIMESTAMP = pa.timestamp("ns", tz="UTC")
ATTRIBUTE_MAP = pa.map_(pa.string(), pa.string())

EVENT = pa.struct(
    [
        pa.field("time", TIMESTAMP),
        pa.field("name", pa.string()),
        pa.field("attributes", ATTRIBUTE_MAP),
    ]
)
LINK = pa.struct(
    [
        pa.field("trace_id", pa.string()),
        pa.field("span_id", pa.string()),
        pa.field("attributes", ATTRIBUTE_MAP),
    ]
)

SPAN_SCHEMA = pa.schema(
    [
        pa.field("project", pa.string(), nullable=False),
        pa.field("trace_id", pa.string(), nullable=False),
        pa.field("span_id", pa.string(), nullable=False),
        pa.field("parent_span_id", pa.string()),
        pa.field("name", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("service_name", pa.string()),
        pa.field("scope_name", pa.string()),
        pa.field("start_time", TIMESTAMP, nullable=False),
        pa.field("end_time", TIMESTAMP, nullable=False),
        pa.field("duration_ms", pa.float64()),
        pa.field("status_code", pa.string()),
        pa.field("status_message", pa.string()),
        pa.field("operation", pa.string()),
        pa.field("provider", pa.string()),
        pa.field("request_model", pa.string()),
        pa.field("response_model", pa.string()),
        pa.field("input_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("cache_read_tokens", pa.int64()),
        pa.field("cache_write_tokens", pa.int64()),
        pa.field("reasoning_tokens", pa.int64()),
        pa.field("ttft_ms", pa.float64()),
        pa.field("finish_reasons", pa.list_(pa.string())),
        pa.field("session_id", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("input_text", pa.string()),
        pa.field("output_text", pa.string()),
        pa.field("system_prompt_hash", pa.string()),
        pa.field("cost_usd", pa.float64()),
        pa.field("resource_attributes", ATTRIBUTE_MAP),
        pa.field("attributes", ATTRIBUTE_MAP),
        pa.field("events", pa.list_(EVENT)),
        pa.field("links", pa.list_(LINK)),
    ]
)

SPAN_COLUMNS: tuple[str, ...] = tuple(SPAN_SCHEMA.names)

#: Explicit user feedback (``POST /v1/feedback``, JSONL ``"type": "feedback"``), keyed by trace
#: and optionally span. ``kind`` is one of FEEDBACK_KINDS; ``value`` is +1/-1 for thumbs, the
#: rating for ratings, 1 for events (copy, share, report); ``text`` is a comment or edited text.
FEEDBACK_SCHEMA = pa.schema(
    [
        pa.field("project", pa.string(), nullable=False),
        pa.field("feedback_id", pa.string(), nullable=False),
        pa.field("trace_id", pa.string(), nullable=False),
        pa.field("span_id", pa.string()),
        pa.field("time", TIMESTAMP, nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("text", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("attributes", ATTRIBUTE_MAP),
    ]
)
FEEDBACK_KINDS: frozenset[str] = frozenset(
    {"thumbs", "rating", "comment", "edit", "copy", "share", "report"}
)

#: Reviewer annotations of a trace or one of its spans (written by the dashboard): a ``label``
#: (required), an optional ``score`` and ``comment``, and who wrote it (``author``). The lake is
#: append-only, so editing an annotation means writing a new one; readers show them all.
ANNOTATION_SCHEMA = pa.schema(
    [
        pa.field("project", pa.string(), nullable=False),
        pa.field("annotation_id", pa.string(), nullable=False),
        pa.field("trace_id", pa.string(), nullable=False),
        pa.field("span_id", pa.string()),
        pa.field("time", TIMESTAMP, nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("score", pa.float64()),
        pa.field("comment", pa.string()),
        pa.field("author", pa.string()),
        pa.field("attributes", ATTRIBUTE_MAP),
    ]
)

#: Guardrail results: one row per guardrail evaluation read from a guardrail span or a
#: guardrail span event, and one per built-in detector finding on a model call (ingest.guard).
#: ``source`` is span | event | detector; ``stage`` input | output; ``action`` one of
#: GUARDRAIL_ACTIONS or null (a verdict Flywheel cannot read); ``triggered`` is action <> pass.
#: ``model`` and ``service_name`` are those of the span checked; ``latency_ms`` the guardrail
#: span's duration (null for events and detectors); ``num_matches`` how many findings a
#: detector made (null otherwise). ``result_id`` is a hash of where the result came from, so
#: the same span sent twice adds no second result.
GUARDRAIL_SCHEMA = pa.schema(
    [
        pa.field("project", pa.string(), nullable=False),
        pa.field("result_id", pa.string(), nullable=False),
        pa.field("trace_id", pa.string(), nullable=False),
        pa.field("span_id", pa.string(), nullable=False),
        pa.field("time", TIMESTAMP, nullable=False),
        pa.field("service_name", pa.string()),
        pa.field("model", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("guardrail", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("category", pa.string()),
        pa.field("action", pa.string()),
        pa.field("triggered", pa.bool_(), nullable=False),
        pa.field("score", pa.float64()),
        pa.field("latency_ms", pa.float64()),
        pa.field("policy_id", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("num_matches", pa.int64()),
    ]
)
GUARDRAIL_ACTIONS: tuple[str, ...] = (
    "pass", "block", "mask", "warn", "retry", "fallback", "human_handoff"
)  # fmt: skip

#: Fired alerts, recorded by ``flywheel alerts check`` (analytics.alerts): which rule, when it
#: was evaluated (``time``, the end of its window ``[window_start, time)``), its value against
#: its threshold, and the evidence behind the value as JSON text.
ALERT_SCHEMA = pa.schema(
    [
        pa.field("project", pa.string(), nullable=False),
        pa.field("alert_id", pa.string(), nullable=False),
        pa.field("time", TIMESTAMP, nullable=False),
        pa.field("rule", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("threshold", pa.float64()),
        pa.field("direction", pa.string()),
        pa.field("window_start", TIMESTAMP),
        pa.field("evidence", pa.string()),
    ]
)

#: Text embeddings, cached so each text is embedded once per model (analytics.embeddings):
#: ``text_hash`` is the first 32 hex characters of sha256 of the text, ``time`` when it was
#: embedded, ``vector`` the embedding.
EMBEDDING_SCHEMA = pa.schema(
    [
        pa.field("model", pa.string(), nullable=False),
        pa.field("text_hash", pa.string(), nullable=False),
        pa.field("time", TIMESTAMP, nullable=False),
        pa.field("vector", pa.list_(pa.float32()), nullable=False),
    ]
)

#: The product's own daily metrics (revenue, sign-ups, …), imported by ``flywheel
#: import-metrics``: one row per import of a (metric, day) value; ``metric_id`` hashes all of
#: it, so importing the same file twice adds nothing, and a corrected value (a later
#: ``imported_at``) replaces the earlier one when read (analytics.business).
BUSINESS_METRIC_SCHEMA = pa.schema(
    [
        pa.field("project", pa.string(), nullable=False),
        pa.field("metric_id", pa.string(), nullable=False),
        pa.field("time", TIMESTAMP, nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("imported_at", TIMESTAMP, nullable=False),
        pa.field("source", pa.string()),
    ]
)

#: Span kinds as stored (OTLP enum value -> name).
SPAN_KINDS: dict[int, str] = {
    0: "UNSPECIFIED",
    1: "INTERNAL",
    2: "SERVER",
    3: "CLIENT",
    4: "PRODUCER",
    5: "CONSUMER",
}
#: Status codes as stored (OTLP enum value -> name).
STATUS_CODES: dict[int, str] = {0: "UNSET", 1: "OK", 2: "ERROR"}

DEFAULT_PROJECT = "default"


#: Operations whose spans are model calls (the ``llm_calls`` view).
LLM_OPERATIONS: tuple[str, ...] = ("chat", "text_completion", "generate_content", "embeddings")
#: Model calls that generate text (every model call but embeddings): what detectors check.
GENERATION_OPERATIONS: tuple[str, ...] = ("chat", "text_completion", "generate_content")


def empty_spans() -> pa.Table:
    """An empty table with the canonical span schema."""
    return SPAN_SCHEMA.empty_table()


#: Eval dataset cases (evals.datasets): one row per case of one version of a named dataset.
#: A version is a whole snapshot (creating or importing into a dataset writes version n + 1
#: with every case it holds). ``case_id`` hashes the system prompt and the messages, so one
#: version holds each input once. ``messages`` is the chat input as JSON (``[{"role",
#: "content"}]``); ``reference`` the expected output (for a case from production, what
#: production answered); ``split`` ``test`` or ``holdout``; ``source_*`` the production span
#: it came from; ``metadata`` model, route, user, tokens, latency, feedback of that call.
EVAL_CASE_SCHEMA = pa.schema(
    [
        pa.field("project", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("case_id", pa.string(), nullable=False),
        pa.field("time", TIMESTAMP, nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("messages", pa.string(), nullable=False),
        pa.field("reference", pa.string()),
        pa.field("source_trace_id", pa.string()),
        pa.field("source_span_id", pa.string()),
        pa.field("source_time", TIMESTAMP),
        pa.field("metadata", ATTRIBUTE_MAP),
    ]
)

#: Eval runs (evals.replay): one row per run, written when it starts. ``target`` and
#: ``evaluators`` describe what was called and how it was scored (JSON text).
EVAL_RUN_SCHEMA = pa.schema(
    [
        pa.field("project", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("time", TIMESTAMP, nullable=False),
        pa.field("name", pa.string()),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("split", pa.string()),
        pa.field("target", pa.string(), nullable=False),
        pa.field("evaluators", pa.string(), nullable=False),
        pa.field("num_cases", pa.int64(), nullable=False),
    ]
)

#: Eval results: one row per attempt at a case of a run (a resumed run that calls a failed
#: case again adds a row; readers take the latest per case). ``error`` is set when the target
#: failed after its retries (``output`` is then null); ``scores`` maps evaluator name to a
#: score in [0, 1] (missing: the evaluator could not score it), ``score_details`` to why.
#: ``trace_id`` is the replay's own trace (in the run's eval project).
EVAL_RESULT_SCHEMA = pa.schema(
    [
        pa.field("project", pa.string(), nullable=False),
        pa.field("result_id", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("case_id", pa.string(), nullable=False),
        pa.field("time", TIMESTAMP, nullable=False),
        pa.field("output", pa.string()),
        pa.field("error", pa.string()),
        pa.field("num_attempts", pa.int64()),
        pa.field("latency_ms", pa.float64()),
        pa.field("model", pa.string()),
        pa.field("input_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("trace_id", pa.string()),
        pa.field("scores", pa.map_(pa.string(), pa.float64())),
        pa.field("score_details", ATTRIBUTE_MAP),
    ]
)
