"""The Traces page's URL: which view it shows, its list filters, and links into it.

The page owns these query parameters (the sidebar owns project, range, service, model, route):

* views: ``trace`` (or ``trace_id``) with ``t`` (the trace's start, ISO 8601: a hint that
  keeps opening a trace from scanning the whole lake) and ``span``; ``session`` (with ``t``);
  ``user``; ``sample`` (the seed of a random sample);
* list filters: ``q`` (text search), ``status`` (``error``/``ok``), ``op`` (operations),
  ``guardrail`` (``triggered``/``clean``), ``gr``/``gr_stage``/``gr_category`` (a triggered
  result of that guardrail, stage, category: the Guardrails page's links), ``feedback`` (signals),
  ``prompt`` (a system-prompt hash: the Feedback page's links), ``label``, ``missed_slo``
  (an SLO name or ``any``), ranges ``lat_min``/``lat_max`` (ms), ``ttft_min``/``ttft_max``
  (ms), ``cost_min``/``cost_max`` (USD), ``tok_min``/``tok_max``; ``from``/``to`` (an exact
  UTC window that overrides ``range``); ``sort`` (``start``, ``duration``, ``ttft``, ``cost``,
  ``tokens``), ``order`` (``asc``/``desc``) and ``page``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import urlencode

from analytics.traces import FEEDBACK_SIGNALS, Range, TraceFilter

TRACES_PATH = "/traces"

#: URL ``sort`` value → list column.
SORTS: dict[str, str] = {
    "start": "start_time",
    "duration": "duration_ms",
    "ttft": "ttft_ms",
    "cost": "total_cost_usd",
    "tokens": "total_tokens",
}
SORT_LABELS: dict[str, str] = {
    "start": "Newest first",
    "duration": "Slowest first",
    "ttft": "Slowest first token",
    "cost": "Most expensive",
    "tokens": "Most tokens",
}
#: URL range parameters → (list column, unit label).
RANGES: dict[str, tuple[str, str]] = {
    "lat": ("duration_ms", "Latency (ms)"),
    "ttft": ("ttft_ms", "TTFT (ms)"),
    "cost": ("total_cost_usd", "Cost (USD)"),
    "tok": ("total_tokens", "Tokens (in + out)"),
}
VIEW_PARAMS = ("trace", "trace_id", "t", "span", "session", "sample")
LIST_PARAMS = (
    "q",
    "status",
    "op",
    "guardrail",
    "gr",
    "gr_stage",
    "gr_category",
    "feedback",
    "prompt",
    "label",
    "missed_slo",
    "user",
    *(f"{name}_{side}" for name in RANGES for side in ("min", "max")),
    "sort",
    "order",
    "page",
)


def iso_time(moment: datetime) -> str:
    """A UTC instant for a URL, to the microsecond: ``2026-11-22T10:00:00.123456Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime | None:
    """An ISO 8601 instant from a URL (``Z`` or an offset; naive means UTC); None if bad."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace(" ", "+"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _number(text: str | None) -> float | None:
    try:
        return None if text in (None, "") else float(str(text))
    except ValueError:
        return None


def filter_from_params(params: Mapping[str, Sequence[str]]) -> TraceFilter:
    """The list filter a URL asks for (unknown or malformed values are ignored)."""

    def one(key: str) -> str | None:
        values = params.get(key) or []
        return values[0] if values else None

    ranges = []
    for name, (column, _) in RANGES.items():
        low, high = _number(one(f"{name}_min")), _number(one(f"{name}_max"))
        if low is not None or high is not None:
            ranges.append(Range(column, low, high))
    status = one("status")
    guardrail = {"triggered": True, "clean": False}.get(one("guardrail") or "")
    return TraceFilter(
        status=status if status in ("error", "ok") else "any",
        operations=tuple(params.get("op") or ()),
        ranges=tuple(ranges),
        user_id=one("user") or None,
        guardrail=guardrail,
        guardrail_name=one("gr") or None,
        guardrail_stage=one("gr_stage") or None,
        guardrail_category=one("gr_category") or None,
        feedback=tuple(s for s in params.get("feedback") or () if s in FEEDBACK_SIGNALS),
        system_prompt=one("prompt") or None,
        label=one("label") or None,
        search=(one("q") or "").strip() or None,
    )


def trace_url(
    trace_id: str, start: datetime | None = None, span_id: str | None = None, **keep: str
) -> str:
    """A link that opens a trace (``keep``: other parameters, e.g. the project)."""
    params: dict[str, str] = {**keep, "trace": trace_id}
    if start is not None:
        params["t"] = iso_time(start)
    if span_id:
        params["span"] = span_id
    return f"{TRACES_PATH}?{urlencode(params)}"


def session_url(session_id: str, around: datetime | None = None, **keep: str) -> str:
    """A link that opens a session's conversation."""
    params: dict[str, str] = {**keep, "session": session_id}
    if around is not None:
        params["t"] = iso_time(around)
    return f"{TRACES_PATH}?{urlencode(params)}"


def user_url(user_id: str, **keep: str) -> str:
    """A link to a user's sessions and traces."""
    return f"{TRACES_PATH}?{urlencode({**keep, 'user': user_id})}"
