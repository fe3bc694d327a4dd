"""The route filter: a request's route is its root span's name, and calls and spans follow it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from analytics.overview import overview_summary
from analytics.scope import Scope, list_routes, run_scoped
from store.catalog import open_catalog
from tests.analytics.lake import T0, span, write_lake


def _request(route: str, minutes: int, user: str | None = None) -> list[dict[str, object]]:
    root = span(project="r", name=route, start_time=T0 + timedelta(minutes=minutes), user_id=user)
    call = span(
        project="r",
        trace_id=root["trace_id"],
        parent_span_id=root["span_id"],
        start_time=root["start_time"] + timedelta(milliseconds=5),
        operation="chat",
        response_model="gpt-4o",
        input_tokens=10,
    )
    return [root, call]


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    rows = [
        *_request("POST /chat", 1, user="u1"),
        *_request("POST /chat", 2),
        *_request("GET /health", 3),
        *_request("query", 4),
    ]
    # A call whose root has not arrived: no route.
    rows.append(
        span(
            project="r",
            parent_span_id="ffffffffffffffff",
            operation="chat",
            start_time=T0 + timedelta(minutes=5),
        )
    )
    # A root that starts before the window, with a call inside it (found within the margin).
    early = _request("POST /chat", -30)
    early[1]["start_time"] = T0 + timedelta(minutes=6)
    early[1]["end_time"] = early[1]["start_time"] + timedelta(milliseconds=100)
    rows += early
    return open_catalog(write_lake(tmp_path_factory.mktemp("routes"), rows))


SCOPE = Scope("r", T0, T0 + timedelta(hours=1))


def _count(conn, scope: Scope, relation: str) -> int:  # type: ignore[no-untyped-def]
    return int(run_scoped(conn, scope, f"SELECT count(*) AS n FROM {relation}").to_pylist()[0]["n"])


def test_list_routes(conn) -> None:  # type: ignore[no-untyped-def]
    assert list_routes(conn, "r") == ["GET /health", "POST /chat", "query"]
    assert list_routes(conn, "nobody") == []


@pytest.mark.parametrize(
    ("routes", "traces", "calls", "spans"),
    [
        ((), 5, 6, 10),  # the orphan call is a trace of its own (root not arrived)
        (("POST /chat",), 2, 3, 5),  # the early root's call counts; its root is before the window
        (("POST /chat", "query"), 3, 4, 7),
        (("nowhere",), 0, 0, 0),
    ],
)
def test_the_route_filter_applies_to_every_relation(  # type: ignore[no-untyped-def]
    conn, routes: tuple[str, ...], traces: int, calls: int, spans: int
) -> None:
    scope = Scope("r", SCOPE.start, SCOPE.end, routes=routes)
    assert _count(conn, scope, "scoped_traces") == traces
    assert _count(conn, scope, "scoped_llm_calls") == calls
    assert _count(conn, scope, "scoped_spans") == spans


def test_scoped_roots_is_a_lookup_of_root_fields(conn) -> None:  # type: ignore[no-untyped-def]
    rows = run_scoped(
        conn, SCOPE, "SELECT route, user_id FROM scoped_roots ORDER BY route"
    ).to_pylist()
    assert [r["route"] for r in rows] == [
        "GET /health",
        "POST /chat",
        "POST /chat",
        "POST /chat",
        "query",
    ]
    assert {r["user_id"] for r in rows} == {None, "u1"}


def test_routes_are_part_of_the_scope_identity() -> None:
    a = Scope("r", SCOPE.start, SCOPE.end, routes=("b", "a", "a"))
    assert a.routes == ("a", "b") and a == Scope("r", SCOPE.start, SCOPE.end, routes=("a", "b"))


def test_overview_follows_the_route_filter(conn) -> None:  # type: ignore[no-untyped-def]
    summary = overview_summary(conn, Scope("r", SCOPE.start, SCOPE.end, routes=("GET /health",)))
    assert (summary.num_requests, summary.num_llm_calls) == (1, 1)


def test_route_parameter_name_is_reserved(conn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="reserved"):
        run_scoped(conn, SCOPE, "SELECT 1", {"routes": ["x"]})
