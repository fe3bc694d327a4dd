"""The guard stage between decoding and the write-ahead log: guardrail results, redaction, and
the feedback spans carry.

``Guard.apply`` takes a batch of canonical spans and returns them redacted, with the guardrail
results they carry (the ``guardrails`` lake table) and their feedback (``feedback``):

* **Guardrail spans and events** (``ingest.guardrails``, rules in ``conventions.toml``): one
  result per evaluation.
* **Built-in detectors** on model calls (``chat``, ``text_completion``, ``generate_content``):
  PII and secrets in the input and output text, prompt-injection phrasing in the input,
  refusal phrasing in the output (``ingest.detectors``); empty output (no text, or no output
  tokens, on a call that did not fail); truncation (finish reason ``length``/``max_tokens``);
  the provider's content filter (finish reason ``content_filter``/``safety``); and, when the
  call asked for JSON (``gen_ai.output.type=json``, a ``response_format`` or a schema), whether
  the output parses (one result either way, so the format error rate has its denominator).
  A detector writes a row only when it fires; its rate is over the model calls in scope.
* **Redaction** (``ingest.redaction``): every masked or hashed finding is replaced in the input
  and output text, the status message, and every value of the span's and its events' attribute
  maps, so the original never reaches the log or the lake; the detection is still recorded.
* **Feedback** in span events and feedback spans (``ingest.span_feedback``), read from the
  redacted spans, so a comment is masked like any attribute.

Whole columns are screened with RE2 patterns in Arrow first; Python confirms and rewrites only
the texts a screen matched, so a batch without findings costs a few vectorized passes. The
column helpers are in ``ingest.guard_columns``, the result rows in ``ingest.guard_results``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.detectors import (
    DETECTORS,
    DETECTORS_BY_KIND,
    PHRASE_DETECTORS,
    SENSITIVE_SCREEN,
    SUPERSET_SCREENS,
    Finding,
    find_phrase,
    find_sensitive,
)
from ingest.guard_columns import (
    chunk,
    entry_rows,
    event_maps,
    join_binary,
    list_rows_with,
    mask_of,
    plain,
    rewrite_events,
    rewrite_map,
    rewritten,
    rows_of,
    screen,
    screen_maps,
    screen_rows,
)
from ingest.guard_results import Results, detected, json_invalid
from ingest.guardrails import GuardrailRules, load_rules
from ingest.records import gc_paused
from ingest.redaction import RedactionPolicy, SpanRedactor
from ingest.span_feedback import span_feedback
from store.schema import FEEDBACK_SCHEMA, GENERATION_OPERATIONS, GUARDRAIL_SCHEMA

TRUNCATION_REASONS: tuple[str, ...] = ("length", "max_tokens", "max_output_tokens", "token_limit")
CONTENT_FILTER_REASONS: tuple[str, ...] = (
    "content_filter", "content-filter", "safety", "prohibited_content", "blocklist", "spii"
)  # fmt: skip
#: Attributes that say a call asked for JSON output, and the values that mean JSON.
JSON_REQUEST_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "gen_ai.output.type": ("json",),
    "gen_ai.openai.request.response_format": ("json", "json_object", "json_schema"),
    "gen_ai.request.response_format": ("json", "json_object", "json_schema"),
    "flywheel.output.format": ("json",),
}
#: Attributes whose presence alone means a JSON schema was given (Vercel AI SDK generateObject).
JSON_SCHEMA_ATTRIBUTES: tuple[str, ...] = ("ai.schema", "gen_ai.request.response_schema")
_INVOCATION_PARAMETERS = "llm.invocation_parameters"
_JSON_KEYS = (*JSON_REQUEST_ATTRIBUTES, *JSON_SCHEMA_ATTRIBUTES, _INVOCATION_PARAMETERS)
_JSON_PARAMETER = re.compile(r'"response_format"\s*:\s*(\{[^}]*"type"\s*:\s*)?"json')

_PHRASE = {d.kind: d.prefilter for d in PHRASE_DETECTORS}
#: The text columns redaction rewrites (placeholders are numbered in this order, then the
#: attribute values, then the events' attribute values).
TEXT_COLUMNS: tuple[str, ...] = ("input_text", "output_text", "status_message")


@dataclass
class Guarded:
    """A guarded batch: the spans as they may be stored, their guardrail results, the feedback
    they carry, and one ``(location, reason)`` per feedback record that did not validate."""

    spans: pa.Table
    guardrails: pa.Table = field(default_factory=GUARDRAIL_SCHEMA.empty_table)
    feedback: pa.Table = field(default_factory=FEEDBACK_SCHEMA.empty_table)
    errors: list[tuple[str, str]] = field(default_factory=list)


_SPAN_FIELDS = (
    "project", "trace_id", "span_id", "service_name", "request_model", "response_model",
    "operation", "name", "start_time", "duration_ms", "status_code", "output_tokens",
)  # fmt: skip


#: The span columns a guardrail span's result is made of.
_GUARDRAIL_SPAN_COLUMNS = [
    "project", "trace_id", "span_id", "start_time", "service_name", "request_model",
    "response_model", "name", "duration_ms", "attributes",
]  # fmt: skip


#: Below this many text bytes a batch is screened in one RE2 pass over all its texts joined;
#: above it, copying the texts costs more than compiling the pattern once per column.
SCREEN_CONCAT_MAX_BYTES = 1 << 20


#: Kinds whose RE2 screen alone passes every text their pattern can match (their patterns
#: start with ASCII literals), so a policy that redacts only these may screen with them alone.
#: The other kinds' screens are trusted only together, as ``SENSITIVE_SCREEN``.
SELF_SCREENED_KINDS = frozenset({"private_key", "api_key"})
SECRET_SCREEN = "|".join(
    f"(?:{DETECTORS_BY_KIND[k].prefilter})" for k in sorted(SELF_SCREENED_KINDS)
)


@dataclass(frozen=True)
class _Screened:
    """Which texts of a batch might hold PII or a secret. A small batch's texts are joined and
    screened in one RE2 pass (each pass compiles its pattern, which costs more than scanning a
    receiver-sized batch); a large batch's columns are screened one by one, without a copy, the
    attribute maps a map at a time (``screen_maps``), and the texts only redaction reads
    (status, attribute and event values) with the narrowest screen the policy allows."""

    columns: dict[str, np.ndarray]  # per row, for each of TEXT_COLUMNS
    attributes: np.ndarray  # per entry of the attribute maps (``_plain`` order)
    events: np.ndarray  # per entry of the events' attribute maps

    @classmethod
    def of(cls, spans: pa.Table, detectors: bool, redacted: frozenset[str]) -> _Screened:
        """Screen ``spans`` for the detectors (input and output text, when on) and for the
        ``redacted`` kinds (every text)."""
        columns = [spans.column(c).combine_chunks().cast(pa.string()) for c in TEXT_COLUMNS]
        maps = [plain(spans.column("attributes").combine_chunks()), event_maps(spans)[2]]
        texts = [*columns, *(m.items for m in maps)]
        if sum(t.nbytes for t in texts) <= SCREEN_CONCAT_MAX_BYTES:
            mask = screen(pa.concat_arrays(texts), SENSITIVE_SCREEN)
            pieces = np.split(mask, np.cumsum([len(t) for t in texts])[:-1])
            return cls(dict(zip(TEXT_COLUMNS, pieces, strict=False)), pieces[-2], pieces[-1])
        narrow = SECRET_SCREEN if redacted <= SELF_SCREENED_KINDS else SENSITIVE_SCREEN
        screened = {
            name: screen(column, SENSITIVE_SCREEN if detectors and i < 2 else narrow)
            if redacted or (detectors and i < 2)
            else np.zeros(len(column), dtype=bool)
            for i, (name, column) in enumerate(zip(TEXT_COLUMNS, columns, strict=True))
        }
        entries = [
            screen_maps(m, narrow) if redacted else np.zeros(len(m.items), dtype=bool) for m in maps
        ]
        return cls(screened, *entries)


class Guard:
    """Reads guardrail results out of span batches and applies the redaction policy."""

    def __init__(
        self,
        policy: RedactionPolicy | None = None,
        rules: GuardrailRules | None = None,
        *,
        detectors: bool = True,
    ) -> None:
        self.policy = policy or RedactionPolicy()
        self.rules = rules or load_rules()
        self.detectors = detectors
        self._source_keys = frozenset(
            key.rstrip("!") for keys in self.rules.fields.values() for key in keys
        )
        self._redacted_kinds = self.policy.default.redacted_kinds.union(
            *(p.redacted_kinds for _, p in self.policy.projects)
        )

    def apply(self, spans: pa.Table) -> Guarded:
        """Guardrail results of ``spans``, and the spans with the policy's redactions made."""
        with gc_paused():  # the rows read into Python are many small acyclic objects
            return self._apply(spans)

    def _apply(self, spans: pa.Table) -> Guarded:
        n = spans.num_rows
        if n == 0:
            return Guarded(spans)
        from_spans = self._guardrail_spans(spans)
        results = Results()
        redact = self.policy.any_redaction
        screened = (
            _Screened.of(spans, self.detectors, self._redacted_kinds)
            if self.detectors or redact
            else None
        )
        findings: dict[tuple[int, str], list[Finding]] = {}
        if self.detectors and screened is not None:
            findings = self._detect(spans, screened, results)
        if redact and screened is not None:
            spans = self._redact(spans, screened, findings)
        feedback, errors = span_feedback(spans)
        guardrails = results.table()
        if from_spans.num_rows:
            guardrails = (
                pa.concat_tables([from_spans, guardrails]) if len(results.values) else from_spans
            )
        return Guarded(spans, guardrails, feedback, errors)

    # -- guardrail spans and events ----------------------------------------------------------

    def _guardrail_spans(self, spans: pa.Table) -> pa.Table:
        """The results of guardrail spans and guardrail events, in span order. Guardrail spans
        without guardrail events are read column-wise: one result per distinct (name, guardrail
        attributes), then a row per span; the few spans with events go through Python."""
        n = spans.num_rows
        is_guardrail = mask_of(pc.equal(spans.column("operation"), "guardrail"))
        events = spans.column("events")
        with_events = np.zeros(n, dtype=bool)
        names = pc.struct_field(pc.list_flatten(events), "name")
        if len(names):
            hits = mask_of(pc.is_in(names, pa.array(sorted(self.rules.events))))
            with_events[pc.list_parent_indices(events).to_numpy()[hits]] = True
        plain = np.flatnonzero(is_guardrail & ~with_events)
        fast = self._plain_guardrail_spans(spans, plain) if len(plain) else None
        indices = np.flatnonzero(with_events)
        results = Results()
        slow_rows: list[int] = []
        rows = rows_of(spans, indices, (*_SPAN_FIELDS, "attributes", "events"))
        for index, span in zip(indices, rows, strict=True):
            attrs = dict(span["attributes"] or ())
            span_events = [
                (e["time"] or span["start_time"], e["name"], dict(e["attributes"] or ()))
                for e in span["events"] or ()
            ]
            guardrail = bool(is_guardrail[index])
            for result in self.rules.results_of_span(
                is_guardrail=guardrail,
                name=span["name"],
                start_ns=span["start_time"],
                attrs=attrs,
                events=span_events,
            ):
                source = "event" if result.ordinal else "span"
                latency = span["duration_ms"] if source == "span" else None
                results.add(span, source, result, latency_ms=latency)
                slow_rows.append(int(index))
        if fast is None:
            return results.table()
        if not slow_rows:
            return fast
        order = np.argsort(np.concatenate([plain, np.asarray(slow_rows)]), kind="stable")
        return pa.concat_tables([fast, results.table()]).take(pa.array(order))

    def _plain_guardrail_spans(self, spans: pa.Table, indices: np.ndarray) -> pa.Table:
        """One ``span`` result per row of ``indices`` (guardrail spans without guardrail
        events), computed once per distinct span name and guardrail attributes."""
        taken = spans.select(_GUARDRAIL_SPAN_COLUMNS).take(pa.array(indices, pa.int64()))
        maps = plain(taken.column("attributes").combine_chunks())
        row_of_entry = entry_rows(maps)
        relevant = mask_of(pc.is_in(maps.keys, pa.array(sorted(self._source_keys))))
        keys = maps.keys.filter(pa.array(relevant))
        values = maps.items.filter(pa.array(relevant))
        # Parts joined by bytes that UTF-8 text never holds (0xFE, 0xFF; 0xFD for a null), so
        # equal signatures mean equal names and equal guardrail entries in the same order.
        entries = join_binary(keys, values, b"\xff")
        counts = np.bincount(row_of_entry[relevant], minlength=len(indices))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        per_row = pc.binary_join(
            pa.ListArray.from_arrays(pa.array(offsets), entries), pa.scalar(b"\xfe", pa.binary())
        )
        signature = join_binary(taken.column("name").combine_chunks(), per_row, b"\xfe\xfe")
        encoded = signature.dictionary_encode()
        inverse = encoded.indices.to_numpy()
        first = np.unique(inverse, return_index=True)[1]
        templates = []
        for span in rows_of(taken, first, ("name", "attributes")):
            (result,) = self.rules.results_of_span(
                is_guardrail=True,
                name=span["name"],
                start_ns=0,
                attrs=dict(span["attributes"] or ()),
                events=(),
            )
            key = f"|span|{result.guardrail}|{result.stage}|{result.category}||0"
            templates.append((result, key))
        suffixes = [templates[i][1] for i in inverse.tolist()]
        result_ids = [
            hashlib.sha256(f"{t}|{s}{suffix}".encode()).hexdigest()[:32]
            for t, s, suffix in zip(
                taken.column("trace_id").to_pylist(),
                taken.column("span_id").to_pylist(),
                suffixes,
                strict=True,
            )
        ]
        per_template = pa.array(inverse)

        def template_column(attribute: str, type_: pa.DataType) -> pa.Array:
            values = [getattr(r, attribute) for r, _ in templates]
            return pa.array(values, type_).take(per_template)

        response, request = taken.column("response_model"), taken.column("request_model")
        has_response = pc.fill_null(pc.not_equal(response, ""), False)
        columns = {
            "project": taken.column("project"),
            "result_id": pa.array(result_ids, pa.string()),
            "trace_id": taken.column("trace_id"),
            "span_id": taken.column("span_id"),
            "time": taken.column("start_time"),
            "service_name": taken.column("service_name"),
            "model": pc.if_else(has_response, response, request),
            "source": pa.array(["span"] * len(indices), pa.string()),
            "guardrail": template_column("guardrail", pa.string()),
            "stage": template_column("stage", pa.string()),
            "category": template_column("category", pa.string()),
            "action": template_column("action", pa.string()),
            "triggered": pa.array(
                [r.action not in (None, "pass") for r, _ in templates], pa.bool_()
            ).take(per_template),
            "score": template_column("score", pa.float64()),
            "latency_ms": taken.column("duration_ms"),
            "policy_id": template_column("policy_id", pa.string()),
            "reason": template_column("reason", pa.string()),
            "num_matches": pa.nulls(len(indices), pa.int64()),
        }
        return pa.Table.from_arrays(
            [chunk(columns[f.name]).cast(f.type) for f in GUARDRAIL_SCHEMA],
            schema=GUARDRAIL_SCHEMA,
        )

    # -- built-in detectors -----------------------------------------------------------------

    def _detect(
        self, spans: pa.Table, screened: _Screened, results: Results
    ) -> dict[tuple[int, str], list[Finding]]:
        n = spans.num_rows
        generation = mask_of(pc.is_in(spans.column("operation"), pa.array(GENERATION_OPERATIONS)))
        if not generation.any():
            return {}
        ok = ~mask_of(pc.equal(spans.column("status_code"), "ERROR"))
        input_text, output_text = spans.column("input_text"), spans.column("output_text")
        sensitive_in = generation & screened.columns["input_text"]
        sensitive_out = generation & screened.columns["output_text"]
        phrase_in = screen_rows(input_text, generation, _PHRASE["prompt_injection"])
        phrase_out = screen_rows(output_text, generation, _PHRASE["refusal"])
        screened_in = sensitive_in | phrase_in
        screened_out = sensitive_out | phrase_out
        empty_text = mask_of(pc.equal(pc.utf8_trim_whitespace(output_text), ""))
        no_tokens = mask_of(
            pc.and_(pc.is_null(output_text), pc.equal(spans.column("output_tokens"), 0))
        )
        empty = generation & ok & (empty_text | no_tokens)
        finish = spans.column("finish_reasons")
        truncated = generation & list_rows_with(finish, TRUNCATION_REASONS, n)
        filtered = generation & list_rows_with(finish, CONTENT_FILTER_REASONS, n)
        wants_json = generation & ok & self._wants_json(spans, generation)

        # Python patterns run only where their kind's superset screen passes (on the texts the
        # batch screens passed, and only when there are enough to repay compiling the screens).
        run_phrase = {
            "input": _narrow(input_text, phrase_in, SUPERSET_SCREENS["prompt_injection"]),
            "output": _narrow(output_text, phrase_out, SUPERSET_SCREENS["refusal"]),
        }
        sensitive_kinds = {
            "input": _kinds_of(input_text, sensitive_in),
            "output": _kinds_of(output_text, sensitive_out),
        }
        flagged = screened_in | screened_out | empty | truncated | filtered | wants_json
        indices = np.flatnonzero(flagged)
        rows = rows_of(spans, indices, (*_SPAN_FIELDS, "input_text", "output_text"))
        kept: dict[tuple[int, str], list[Finding]] = {}
        for index, span in zip(indices, rows, strict=True):
            start = span["start_time"]
            for stage, passed, text in (
                ("input", screened_in, span["input_text"]),
                ("output", screened_out, span["output_text"]),
            ):
                if not passed[index] or text is None:
                    continue
                sensitive = sensitive_in if stage == "input" else sensitive_out
                found = (
                    find_sensitive(text, sensitive_kinds[stage].get(int(index)))
                    if sensitive[index]
                    else []
                )
                kept[(int(index), f"{stage}_text")] = found
                policy = self.policy.for_project(span["project"])
                by_kind: dict[str, int] = {}
                for finding in found:
                    by_kind[finding.kind] = by_kind.get(finding.kind, 0) + 1
                for kind, count in sorted(by_kind.items()):
                    category = "secret" if kind in ("api_key", "private_key") else "pii"
                    action = "mask" if policy.mode(kind) != "off" else "warn"
                    results.add(
                        span,
                        "detector",
                        detected(category, stage, action, kind, start),
                        num_matches=count,
                    )
                phrase_kind = "prompt_injection" if stage == "input" else "refusal"
                # The keyword screen passes every text the pattern matches: skip the others.
                phrase = find_phrase(phrase_kind, text) if run_phrase[stage][index] else None
                if phrase is not None:
                    results.add(
                        span,
                        "detector",
                        detected(phrase_kind, stage, "warn", phrase[:80], start),
                        num_matches=1,
                    )
            if empty[index]:
                why = "empty output text" if span["output_text"] is not None else "0 output tokens"
                results.add(
                    span, "detector", detected("empty_output", "output", "warn", why, start)
                )
            if truncated[index]:
                results.add(
                    span,
                    "detector",
                    detected("truncation", "output", "warn", "finish reason length", start),
                )
            if filtered[index]:
                results.add(
                    span,
                    "detector",
                    detected(
                        "content_filter", "output", "block", "finish reason content filter", start
                    ),
                )
            if wants_json[index]:
                invalid = json_invalid(span["output_text"])
                verdict = "warn" if invalid is not None else "pass"
                results.add(span, "detector", detected("format", "output", verdict, invalid, start))
        return kept

    def _wants_json(self, spans: pa.Table, generation: np.ndarray) -> np.ndarray:
        """Calls that asked for JSON output: one pass over the attribute keys, then Python on
        the few entries that name a response format."""
        maps = plain(spans.column("attributes").combine_chunks())
        wants = np.zeros(spans.num_rows, dtype=bool)
        hits = np.flatnonzero(mask_of(pc.is_in(maps.keys, pa.array(_JSON_KEYS))))
        if not len(hits):
            return wants
        rows = entry_rows(maps)[hits]
        keys = maps.keys.take(pa.array(hits)).to_pylist()
        values = maps.items.take(pa.array(hits)).to_pylist()
        for row, key, value in zip(rows, keys, values, strict=True):
            if not generation[row] or value is None:
                continue
            if key in JSON_REQUEST_ATTRIBUTES:
                wants[row] |= value.lower() in JSON_REQUEST_ATTRIBUTES[key]
            elif key in JSON_SCHEMA_ATTRIBUTES:
                wants[row] = True
            else:  # llm.invocation_parameters
                wants[row] |= bool(_JSON_PARAMETER.search(value))
        return wants

    # -- redaction -------------------------------------------------------------------------

    def _redact(
        self, spans: pa.Table, screened: _Screened, findings: dict[tuple[int, str], list[Finding]]
    ) -> pa.Table:
        projects = spans.column("project")
        policies = {p: self.policy.for_project(p) for p in pc.unique(projects).to_pylist()}
        if not any(p.redacted_kinds for p in policies.values()):
            return spans
        project_of = projects.to_pylist() if len(policies) > 1 else None
        only = next(iter(policies.values()))
        redactors: dict[int, SpanRedactor] = {}

        def redactor(row: int) -> SpanRedactor:
            found = redactors.get(row)
            if found is None:
                policy = policies[project_of[row]] if project_of is not None else only
                found = redactors[row] = SpanRedactor(policy)
            return found

        def rewrite(row: int, text: str, known: list[Finding] | None = None) -> str:
            r = redactor(row)
            kinds = r.policy.redacted_kinds
            if not kinds:
                return text
            hits = (
                [f for f in known if f.kind in kinds]
                if known is not None
                else find_sensitive(text, kinds)
            )
            return r.rewrite(text, hits) if hits else text

        # Placeholders are numbered in this order: input, output, status, attributes, events.
        for column in TEXT_COLUMNS:

            def rewrite_text(row: int, text: str, column: str = column) -> str:
                return rewrite(row, text, findings.get((row, column)))

            new_texts = rewritten(spans.column(column), screened.columns[column], rewrite_text)
            if new_texts is not None:
                spans = spans.set_column(spans.schema.get_field_index(column), column, new_texts)
        maps = plain(spans.column("attributes").combine_chunks())
        rows = entry_rows(maps)
        new = rewrite_map(
            maps, screened.attributes, lambda entry, text: rewrite(int(rows[entry]), text)
        )
        if new is not None:
            spans = spans.set_column(spans.schema.get_field_index("attributes"), "attributes", new)
        return rewrite_events(spans, screened.events, rewrite)


#: Below this many candidate texts Python runs every pattern on them: compiling the per-kind
#: RE2 screens would cost more than it saves.
NARROW_MIN_TEXTS = 32


def _narrow(texts: pa.ChunkedArray, candidates: np.ndarray, pattern: str) -> np.ndarray:
    """``candidates`` less the rows whose text ``pattern`` does not match."""
    indices = np.flatnonzero(candidates)
    if len(indices) < NARROW_MIN_TEXTS:
        return candidates
    narrowed = np.zeros_like(candidates)
    narrowed[indices[screen(texts.take(pa.array(indices)), pattern)]] = True
    return narrowed


def _kinds_of(texts: pa.ChunkedArray, candidates: np.ndarray) -> dict[int, frozenset[str]]:
    """For each candidate row (when there are enough), the detector kinds its text can hold."""
    indices = np.flatnonzero(candidates)
    if len(indices) < NARROW_MIN_TEXTS:
        return {}
    taken = texts.take(pa.array(indices))
    kinds: dict[int, set[str]] = {int(i): set() for i in indices}
    for detector in DETECTORS:
        for i in indices[screen(taken, SUPERSET_SCREENS[detector.kind])]:
            kinds[int(i)].add(detector.kind)
    return {i: frozenset(k) for i, k in kinds.items()}
