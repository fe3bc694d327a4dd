"""``flywheel report latency|goodput|cost``: the same numbers as the analytics, as table/JSON/CSV."""

from __future__ import annotations

import argparse
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from analytics.cost import cost_by_dimension, cost_summary, install_prices
from analytics.goodput import goodput_summary
from analytics.latency import latency_by_dimension, latency_percentiles
from analytics.scope import Scope
from analytics.slos import load_slo_config
from app.report import REPORTS, add_report_parser, main, parse_moment, parse_since
from store.catalog import open_catalog
from tests.analytics.lake import T0, random_traces, write_lake

SINCE, UNTIL = T0, T0 + timedelta(days=2)
WINDOW = ["--since", SINCE.isoformat(), "--until", UNTIL.isoformat()]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_lake(tmp_path_factory.mktemp("report"), random_traces(seed=9, num_traces=120))


@pytest.fixture(scope="module")
def conn(lake: Path):  # type: ignore[no-untyped-def]
    catalog = open_catalog(lake)
    install_prices(catalog)
    return catalog


def _json(lake: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main([*args, "--data-dir", str(lake), "--format", "json", *WINDOW]) == 0
    body: dict[str, Any] = json.loads(capsys.readouterr().out)
    return body


def test_latency_json_matches_the_analytics(lake, conn, capsys) -> None:  # type: ignore[no-untyped-def]
    body = _json(lake, capsys, "latency")
    scope = Scope("default", SINCE, UNTIL)
    assert body["scope"]["since"] == "2025-03-01T00:00:00Z"
    row = body["latency"][0]
    request = latency_percentiles(conn, scope, "duration_ms", "scoped_traces")
    ttft = latency_percentiles(conn, scope, "ttft_ms", "scoped_llm_calls")
    assert row["num_requests"] == request.n
    assert row["latency_p95_ms"] == pytest.approx(request.p95)
    assert row["num_streamed_calls"] == ttft.n
    assert row["ttft_p95_ms"] == pytest.approx(ttft.p95)
    # every key names its unit or is a count
    assert all(k.endswith("_ms") or k.startswith("num_") for k in row)


def test_latency_by_model_csv(lake, conn, capsys) -> None:  # type: ignore[no-untyped-def]
    assert (
        main(["latency", "--data-dir", str(lake), "--by", "model", "--format", "csv", *WINDOW]) == 0
    )
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    expected = latency_by_dimension(conn, Scope("default", SINCE, UNTIL), "ttft", "model")
    got = {r["model"]: r for r in rows}
    for want in expected.to_dicts():
        assert float(got[want["model"] or ""]["ttft_p95_ms"]) == pytest.approx(want["p95_ms"])
        assert int(got[want["model"] or ""]["num_streamed_calls"]) == want["n"]


def test_goodput_with_a_user_slo_file(lake, conn, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    slo_file = tmp_path / "slos.toml"
    slo_file.write_text(
        'target = 0.9\n[[slo]]\nname = "fast"\nmetric = "latency_ms"\nmax_ms = 900\n'
    )
    body = _json(lake, capsys, "goodput", "--slo-file", str(slo_file))
    summary = goodput_summary(conn, Scope("default", SINCE, UNTIL), load_slo_config(slo_file))
    assert body["goodput"][0]["num_good"] == summary.num_good
    assert body["goodput"][0]["good_fraction"] == pytest.approx(summary.good_fraction)
    assert body["goodput"][0]["slo_file"] == str(slo_file)
    assert [s["slo"] for s in body["slos"]] == ["fast"]


def test_goodput_by_route_with_filters(lake, capsys) -> None:  # type: ignore[no-untyped-def]
    body = _json(
        lake, capsys, "goodput", "--by", "route", "--route", "POST /chat", "--service", "api"
    )
    assert body["scope"]["routes"] == ["POST /chat"] and body["scope"]["services"] == ["api"]
    assert [row["route"] for row in body["goodput_by_route"]] == ["POST /chat"]


def test_cost_json_and_by_user(lake, conn, capsys) -> None:  # type: ignore[no-untyped-def]
    scope = Scope("default", SINCE, UNTIL)
    body = _json(lake, capsys, "cost")
    summary = cost_summary(conn, scope)
    assert body["cost"][0]["cost_usd"] == pytest.approx(summary.cost_usd)
    assert body["cost"][0]["num_unpriced_calls"] == summary.num_unpriced_calls
    assert "my-finetune-v1" in [m["model"] for m in body["unpriced_models"]]
    assert (
        body["most_expensive_traces"][0]["cost_usd"]
        >= body["most_expensive_traces"][-1]["cost_usd"]
    )
    body = _json(lake, capsys, "cost", "--by", "user")
    expected = cost_by_dimension(conn, scope, "user")
    assert [r["cost_usd"] for r in body["cost_by_user"]] == pytest.approx(
        expected["cost_usd"].to_list()
    )


def test_table_output_is_readable(lake, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["cost", "--data-dir", str(lake), *WINDOW]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cost · default · 2025-03-01T00:00:00Z → 2025-03-03T00:00:00Z")
    assert "## cost\ncost_usd" in out and "## unpriced_models" in out


def test_the_window_defaults_to_the_last_seven_days_of_data(lake, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["latency", "--data-dir", str(lake), "--format", "json"]) == 0
    scope = json.loads(capsys.readouterr().out)["scope"]
    until = datetime.fromisoformat(scope["until"])
    assert until.second == 0 and until - datetime.fromisoformat(scope["since"]) == timedelta(days=7)


def test_errors_are_reported_not_raised(lake, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert main(["cost", "--data-dir", str(tmp_path / "empty")]) == 1
    assert "no spans" in capsys.readouterr().err
    assert main(["cost", "--data-dir", str(lake), "--since", "yesterday-ish"]) == 2
    assert "not a date" in capsys.readouterr().err
    assert (
        main(["latency", "--data-dir", str(lake), "--since", "2021-01-01", "--until", "2020-01-01"])
        == 2
    )
    assert "not before" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("target = 2\n")
    assert main(["goodput", "--data-dir", str(lake), "--slo-file", str(bad)]) == 2
    assert "target" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["goodput", "--data-dir", str(lake), "--by", "provider"])  # not a goodput dimension


def test_time_options() -> None:
    until = datetime(2026, 11, 27, tzinfo=UTC)
    assert parse_since("90m", until) == until - timedelta(minutes=90)
    assert parse_since("2w", until) == until - timedelta(weeks=2)
    assert parse_since("2026-11-20", until) == datetime(2026, 11, 20, tzinfo=UTC)
    assert parse_moment("2026-11-20T10:00:00+02:00") == datetime(2026, 11, 20, 8, tzinfo=UTC)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_moment("soon")


def test_the_parser_can_be_wired_into_flywheel() -> None:
    parser = argparse.ArgumentParser(prog="flywheel")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir")
    common.add_argument("--project")
    add_report_parser(parser.add_subparsers(dest="command"), common)
    for kind, dimensions in REPORTS.items():
        args = parser.parse_args(["report", kind, "--by", dimensions[-1], "--project", "p"])
        assert (args.report, args.by, args.project) == (kind, dimensions[-1], "p")
        assert callable(args.func)


def test_guardrails_json_on_the_injection_day(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from analytics.guardrails import guardrail_rate_by_guardrail
    from analytics.quality import quality_rates
    from tests.analytics.guardrails_lake import ingest_sample

    sample = ingest_sample(tmp_path_factory.mktemp("report-guardrails"))
    day = ["--since", "2026-11-19", "--until", "2026-11-20"]
    assert main(["guardrails", "--data-dir", str(sample), "--format", "json", *day]) == 0
    body = json.loads(capsys.readouterr().out)
    scope = Scope("default", datetime(2026, 11, 19, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC))
    conn = open_catalog(sample)
    expected = guardrail_rate_by_guardrail(conn, scope)
    assert [r["num_triggered"] for r in body["guardrails"]] == expected["num_triggered"].to_list()
    assert [r["num_flagged"] for r in body["quality"]] == quality_rates(conn, scope)[
        "num_flagged"
    ].to_list()
    spikes = {(r["guardrail"], r["category"]) for r in body["spikes"] if r["is_spike"]}
    assert ("Amazon Bedrock Guardrails", "prompt_injection") in spikes
    assert body["blocks_followed_by_pass"][0]["num_blocked"] >= 80
    assert (
        main(["guardrails", "--data-dir", str(sample), "--by", "route", "--format", "csv", *day])
        == 0
    )
    assert capsys.readouterr().out.startswith("route,guardrail,stage,source,num_checks")
