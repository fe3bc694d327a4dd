"""A vectorized generator of canonical span rows, for a 10M-span lake in about a minute.

The protobuf path (``sample_data`` → OTLP → ``ingest``) makes ~25k spans/s, far too slow for
10M spans, so this builds rows with the canonical schema (``store.schema.SPAN_SCHEMA``) straight
from numpy. The shape follows the sample RAG chat product: every trace has 8 spans —

    0 ``POST /chat`` (SERVER root, parent NULL, user, session)
    1 ``invoke_agent rag-chat``       2 input guardrail      3 embeddings
    4 retrieval                       5 chat (the answer)
    6 a second chat (35%) or a tool call (65%)               7 output guardrail

— with several models and providers (read-time priced), log-normal durations and token counts,
TTFT on streamed calls, ~2% failed traces, a diurnal load curve, ~60k users and ~400k sessions.
Texts come from small pools (so the lake is smaller than real text would make it; the
Overview reads no text column). Attribute maps are small (model calls: operation and model;
guardrail spans: an OTel GenAI verdict, 3% intervened); events and links are NULL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from store.schema import SPAN_SCHEMA, TIMESTAMP

SPANS_PER_TRACE = 8
_NS_PER_MS = 1_000_000
_NS_PER_DAY = 86_400 * 10**9

#: (provider, request model, response model, weight, median TTFT ms, median duration ms)
MODELS: tuple[tuple[str, str, str, float, float, float], ...] = (
    ("openai", "gpt-4o", "gpt-4o-2024-08-06", 0.24, 450.0, 3200.0),
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 0.26, 300.0, 1900.0),
    ("anthropic", "claude-3-5-sonnet", "claude-3-5-sonnet-20241022", 0.24, 650.0, 4200.0),
    ("anthropic", "claude-3-5-haiku", "claude-3-5-haiku-20241022", 0.08, 350.0, 2100.0),
    ("gcp.vertex_ai", "gemini-1.5-flash", "gemini-1.5-flash-002", 0.14, 280.0, 1700.0),
    ("openai", "gpt-4o", "gpt-4o-2024-11-20", 0.04, 500.0, 3400.0),
)
TOOLS = ("search_changelog", "check_service_status", "lookup_invoice", "get_account")
SERVICES = ("rag-chat", "support-bot")
PROMPT_HASHES = ("sha256:1f0c9a", "sha256:7b2e44", "sha256:c91d08")
ERROR_MESSAGES = ("429 rate limited", "529 overloaded", "timeout after 30s")
_WORDS = (
    *("account", "billing", "invoice", "refund", "plan", "upgrade", "password", "login"),
    *("error", "timeout", "api", "key", "limit", "quota", "export", "report", "dashboard"),
    *("team", "member", "role", "permission", "webhook", "token", "model", "latency"),
    *("region", "outage", "status", "cancel", "trial", "discount", "integration", "sso"),
)
# Relative load per UTC hour: a working-day curve.
_DIURNAL = np.array(
    [3, 2, 2, 2, 2, 3, 5, 8, 11, 13, 14, 14, 13, 14, 14, 13, 12, 10, 8, 7, 6, 5, 4, 3], float
)


@dataclass(frozen=True)
class SynthSpec:
    """What to generate: trace count, days before ``end``, seed and users/sessions."""

    num_traces: int = 1_250_000
    days: int = 30
    seed: int = 20_261_127
    end: datetime = datetime(2026, 11, 27, tzinfo=UTC)
    num_users: int = 60_000
    num_sessions: int = 400_000
    project: str = "default"

    @property
    def start(self) -> datetime:
        """The window's first instant."""
        return self.end - timedelta(days=self.days)

    @property
    def num_spans(self) -> int:
        """Spans generated (every trace has the same 8 slots)."""
        return self.num_traces * SPANS_PER_TRACE


def _hex_ids(rng: np.random.Generator, n: int, num_bytes: int) -> pa.Array:
    """``n`` random lower-case hex ids of ``num_bytes`` bytes, as an Arrow string array."""
    raw = rng.integers(0, 256, size=(n, num_bytes), dtype=np.uint8)
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    chars = np.empty((n, num_bytes * 2), dtype=np.uint8)
    chars[:, 0::2] = digits[raw >> 4]
    chars[:, 1::2] = digits[raw & 0x0F]
    offsets = np.arange(0, (n + 1) * num_bytes * 2, num_bytes * 2, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def _lognormal(rng: np.random.Generator, median: np.ndarray | float, sigma: float, n: int):
    return np.asarray(median) * np.exp(rng.normal(0.0, sigma, n))


def _pool(rng: np.random.Generator, size: int, num_words: int, prefix: str) -> pa.Array:
    texts = [
        prefix + " ".join(rng.choice(_WORDS, num_words + int(rng.integers(0, num_words))))
        for _ in range(size)
    ]
    return pa.array(texts, pa.string())


def _take(pool: pa.Array | list[str | None], index: np.ndarray, mask=None) -> pa.Array:
    values = pool if isinstance(pool, pa.Array) else pa.array(pool, pa.string())
    return values.take(pa.array(index.astype(np.int32), mask=mask))


def _string_map(num_entries: np.ndarray, keys: pa.Array, values: pa.Array) -> pa.Array:
    offsets = np.zeros(len(num_entries) + 1, dtype=np.int32)
    np.cumsum(num_entries, out=offsets[1:])
    return pa.MapArray.from_arrays(pa.array(offsets), keys, values)


class _Traces:
    """Per-trace draws for the whole data set (small: a few arrays of num_traces)."""

    def __init__(self, spec: SynthSpec) -> None:
        rng = np.random.default_rng(spec.seed)
        n = spec.num_traces
        start_ns = int(spec.start.timestamp()) * 10**9
        day = rng.integers(0, spec.days, n)
        hour = rng.choice(24, n, p=_DIURNAL / _DIURNAL.sum())
        within = rng.integers(0, 3600 * 10**9, n)
        self.start_ns = np.sort(start_ns + day * _NS_PER_DAY + hour * 3600 * 10**9 + within)
        self.service = (rng.random(n) < 0.05).astype(np.int32)
        self.user = rng.zipf(1.3, n) % spec.num_users
        self.session = rng.integers(0, spec.num_sessions, n)
        self.error = rng.random(n) < 0.02
        weights = np.array([m[3] for m in MODELS])
        self.model = rng.choice(len(MODELS), n, p=weights / weights.sum())
        self.second_chat = rng.random(n) < 0.35
        self.model2 = rng.choice(len(MODELS), n, p=weights / weights.sum())
        self.tool = rng.integers(0, len(TOOLS), n)


def generate_tables(spec: SynthSpec, chunk_traces: int = 6_250) -> Iterator[pa.Table]:
    """Canonical span tables of ``chunk_traces`` traces each, oldest first."""
    traces = _Traces(spec)
    rng = np.random.default_rng(spec.seed + 1)
    questions = _pool(rng, 3_000, 14, "How do I ")
    answers = _pool(rng, 3_000, 50, "To do that, ")
    users = _hex_ids(rng, spec.num_users, 6)
    sessions = _hex_ids(rng, spec.num_sessions, 8)
    for first in range(0, spec.num_traces, chunk_traces):
        last = min(first + chunk_traces, spec.num_traces)
        yield _chunk(spec, traces, slice(first, last), rng, questions, answers, users, sessions)


def _chunk(
    spec: SynthSpec,
    traces: _Traces,
    part: slice,
    rng: np.random.Generator,
    questions: pa.Array,
    answers: pa.Array,
    users: pa.Array,
    sessions: pa.Array,
) -> pa.Table:
    n = part.stop - part.start
    k = SPANS_PER_TRACE
    rows = n * k
    trace_of = np.repeat(np.arange(n), k)
    slot = np.tile(np.arange(k), n)
    t0 = traces.start_ns[part]
    error = traces.error[part]
    second = traces.second_chat[part]
    model_idx = np.stack([traces.model[part], traces.model2[part]])  # (2, n)

    # Timings (ms) of the pipeline, in order; the root spans them all.
    guard_in = _lognormal(rng, 30.0, 0.5, n)
    embed = _lognormal(rng, 25.0, 0.4, n)
    retrieve = _lognormal(rng, 70.0, 0.5, n)
    chat_median = np.array([m[5] for m in MODELS])
    ttft_median = np.array([m[4] for m in MODELS])
    chat1 = _lognormal(rng, chat_median[model_idx[0]], 0.55, n)
    chat2 = _lognormal(rng, chat_median[model_idx[1]], 0.55, n)
    tool = _lognormal(rng, 80.0, 0.6, n)
    slot6 = np.where(second, chat2, tool)
    guard_out = _lognormal(rng, 45.0, 0.5, n)
    chat1 = np.where(error, chat1 * 0.3, chat1)
    step = [1.0, guard_in, embed, retrieve, chat1, slot6, guard_out]
    offsets = np.cumsum(np.stack([np.broadcast_to(s, n) for s in step]), axis=0)  # (7, n)
    total = offsets[-1] + 2.0
    # Start and duration per slot, shape (k, n), in ms relative to the trace start.
    starts = np.stack([np.zeros(n), np.full(n, 0.5), *(offsets[i] for i in range(6))])
    durations = np.stack([total, total - 1.0, guard_in, embed, retrieve, chat1, slot6, guard_out])
    start_ns = (t0[None, :] + (starts * _NS_PER_MS).astype(np.int64)).T.reshape(-1)
    dur_ns = (durations * _NS_PER_MS).astype(np.int64).T.reshape(-1)
    end_ns = start_ns + dur_ns

    is_chat = (slot == 5) | ((slot == 6) & second[trace_of])
    is_tool = (slot == 6) & ~second[trace_of]
    chat_model = np.where(slot == 5, model_idx[0][trace_of], model_idx[1][trace_of])
    is_root = slot == 0
    failed = error[trace_of] & ((slot == 0) | (slot == 5))

    trace_ids = _hex_ids(rng, n, 16).take(pa.array(trace_of))
    span_ids = _hex_ids(rng, rows, 8)
    parent_index = np.where(slot == 1, trace_of * k, trace_of * k + 1)
    parent_ids = span_ids.take(pa.array(parent_index, mask=is_root))

    names = ["POST /chat", "invoke_agent rag-chat", "apply_guardrail input-check"]
    names += ["embeddings text-embedding-3-small", "retrieval kb-docs"]
    names += ["apply_guardrail groundedness-check"]
    names += [f"chat {m[1]}" for m in MODELS] + [f"execute_tool {t}" for t in TOOLS]
    name_idx = np.array([0, 1, 2, 3, 4, 0, 0, 5])[slot]
    name_idx = np.where(is_chat, 6 + chat_model, name_idx)
    name_idx = np.where(is_tool, 6 + len(MODELS) + traces.tool[part][trace_of], name_idx)

    kinds = ["SERVER", "INTERNAL", "CLIENT"]
    kind_idx = np.array([0, 1, 2, 2, 2, 2, 1, 2])[slot]
    kind_idx = np.where(is_chat, 2, kind_idx)
    operations = ["invoke_agent", "guardrail", "embeddings", "retrieval", "chat", "execute_tool"]
    op_idx = np.array([0, 0, 1, 2, 3, 4, 4, 1])[slot]
    op_idx = np.where(is_tool, 5, op_idx)
    scopes = ["opentelemetry.instrumentation.fastapi", "rag_chat"]
    scopes += ["opentelemetry.instrumentation.openai_v2", "opentelemetry.instrumentation.anthropic"]
    scopes += ["opentelemetry.instrumentation.vertexai"]
    provider_names = sorted({m[0] for m in MODELS})
    scope_of_provider = {"openai": 2, "anthropic": 3, "gcp.vertex_ai": 4}
    model_provider = np.array([provider_names.index(m[0]) for m in MODELS])
    model_scope = np.array([scope_of_provider[m[0]] for m in MODELS])
    scope_idx = np.where(is_root, 0, 1)
    scope_idx = np.where(is_chat, model_scope[chat_model], scope_idx)
    scope_idx = np.where(slot == 3, 2, scope_idx)
    status_idx = np.where(failed, 1, 0)

    llm = is_chat | (slot == 3)
    provider_idx = np.where(slot == 3, provider_names.index("openai"), model_provider[chat_model])
    request_models = [m[1] for m in MODELS] + ["text-embedding-3-small"]
    response_models = [m[2] for m in MODELS] + ["text-embedding-3-small"]
    model_col = np.where(slot == 3, len(MODELS), chat_model)

    input_tokens = np.where(
        slot == 3,
        _lognormal(rng, 14.0, 0.4, rows),
        _lognormal(rng, 1500.0, 0.6, rows),
    ).astype(np.int64)
    output_tokens = _lognormal(rng, 170.0, 0.7, rows).astype(np.int64) + 1
    output_tokens = np.where(failed, 0, output_tokens)
    cached = is_chat & (rng.random(rows) < 0.25)
    cache_read = (input_tokens * rng.uniform(0.2, 0.8, rows)).astype(np.int64)
    streamed = is_chat & (rng.random(rows) < 0.7) & ~failed
    ttft = _lognormal(rng, ttft_median[chat_model], 0.5, rows)
    ttft = np.minimum(ttft, dur_ns / _NS_PER_MS)
    finish_lengths = np.where(is_chat & ~failed, 1, 0).astype(np.int32)
    finish_values = np.where(rng.random(int(finish_lengths.sum())) < 0.97, 0, 1)
    finish_offsets = np.zeros(rows + 1, dtype=np.int32)
    np.cumsum(finish_lengths, out=finish_offsets[1:])
    finish_reasons = pa.ListArray.from_arrays(
        pa.array(finish_offsets),
        _take(["stop", "length"], finish_values),
        mask=pa.array(finish_lengths == 0),
    )

    services = traces.service[part][trace_of]
    with_user = is_root | is_chat
    user_idx = traces.user[part][trace_of]
    session_idx = traces.session[part][trace_of]
    text_idx = rng.integers(0, len(questions), rows)

    res_keys = ["service.name", "deployment.environment", "telemetry.sdk.language"]
    res_counts = np.full(rows, 3, dtype=np.int32)
    res_key_idx = np.tile(np.arange(3), rows)
    res_values = pa.array([*SERVICES, "production", "python"], pa.string())
    res_value_idx = np.stack([services, np.full(rows, 2), np.full(rows, 3)], axis=1).reshape(-1)
    # Model calls carry their operation and model; guardrail spans an OTel GenAI verdict
    # (Bedrock's: 3% GUARDRAIL_INTERVENED), so ingest's guard stage has results to read.
    is_guard = (slot == 2) | (slot == 7)
    intervened = is_guard & (rng.random(rows) < 0.03)
    attr_key_names = ["gen_ai.operation.name", "gen_ai.request.model"]
    attr_key_names += ["gen_ai.guardrail.result.type", "gen_ai.guardrail.result.value"]
    attr_value_names = ["chat", *request_models, "apply_guardrail", "action", "NONE"]
    attr_value_names += ["GUARDRAIL_INTERVENED"]
    apply_idx = 1 + len(request_models)
    attr_counts = np.where(is_chat, 2, np.where(is_guard, 3, 0)).astype(np.int32)
    key_matrix = np.where(is_chat[:, None], [0, 1, -1], [0, 2, 3])
    value_matrix = np.stack(
        [
            np.where(is_chat, 0, apply_idx),
            np.where(is_chat, 1 + chat_model, apply_idx + 1),
            np.where(intervened, apply_idx + 3, apply_idx + 2),
        ],
        axis=1,
    )
    present = np.arange(3)[None, :] < attr_counts[:, None]  # row-major: each row's entries
    attr_keys = key_matrix[present]
    attr_values = pa.array(attr_value_names, pa.string())
    attr_value_idx = value_matrix[present]

    columns = {
        "project": _take([spec.project], np.zeros(rows, dtype=np.int32)),
        "trace_id": trace_ids,
        "span_id": span_ids,
        "parent_span_id": parent_ids,
        "name": _take(names, name_idx),
        "kind": _take(kinds, kind_idx),
        "service_name": _take(list(SERVICES), services),
        "scope_name": _take(scopes, scope_idx),
        "start_time": pa.array(start_ns, pa.int64()).cast(TIMESTAMP),
        "end_time": pa.array(end_ns, pa.int64()).cast(TIMESTAMP),
        "duration_ms": pa.array(dur_ns / _NS_PER_MS),
        "status_code": _take(["UNSET", "ERROR"], status_idx),
        "status_message": _take(
            list(ERROR_MESSAGES), rng.integers(0, len(ERROR_MESSAGES), rows), mask=~failed
        ),
        "operation": _take(operations, op_idx, mask=is_root),
        "provider": _take(provider_names, provider_idx, mask=~llm),
        "request_model": _take(request_models, model_col, mask=~llm),
        "response_model": _take(response_models, model_col, mask=~llm),
        "input_tokens": pa.array(input_tokens, mask=~llm),
        "output_tokens": pa.array(output_tokens, mask=~is_chat),
        "cache_read_tokens": pa.array(cache_read, mask=~cached),
        "ttft_ms": pa.array(ttft, mask=~streamed),
        "finish_reasons": finish_reasons,
        "session_id": sessions.take(pa.array(session_idx, mask=~(with_user | (slot == 1)))),
        "user_id": users.take(pa.array(user_idx, mask=~with_user)),
        "input_text": questions.take(pa.array(text_idx, mask=~is_chat)),
        "output_text": answers.take(pa.array(text_idx, mask=~(is_chat & ~failed))),
        "system_prompt_hash": _take(
            list(PROMPT_HASHES), rng.integers(0, len(PROMPT_HASHES), rows), mask=~is_chat
        ),
        "resource_attributes": _string_map(
            res_counts, _take(res_keys, res_key_idx), res_values.take(pa.array(res_value_idx))
        ),
        "attributes": _string_map(
            attr_counts,
            _take(attr_key_names, attr_keys),
            attr_values.take(pa.array(attr_value_idx)),
        ),
    }
    arrays = [
        columns[field.name] if field.name in columns else pa.nulls(rows, field.type)
        for field in SPAN_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=SPAN_SCHEMA)
