"""Business metrics from traces against counts of the generated world, imported metrics, and
the correlation of quality with business (checked against scipy on series built apart)."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from scipy import stats

from analytics.business import (
    business_metrics,
    daily_business,
    daily_quality,
    quality_business_correlation,
    retention_cohorts,
    session_stats,
    spearman_interval,
    user_activity,
)
from analytics.scope import Scope
from ingest.business import read_business_metrics
from store.catalog import open_catalog
from store.lake import BUSINESS_METRICS, Lake
from tests.analytics.feedback_world import DAYS, START, World, ingest_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, Path]:
    data_dir = tmp_path_factory.mktemp("business") / "lake"
    return ingest_world(data_dir), data_dir


def _scope() -> Scope:
    return Scope("default", START, START + timedelta(days=DAYS))


def _user_days(generated: World) -> dict[str, set[date]]:
    days: dict[str, set[date]] = defaultdict(set)
    for turn in generated.turns:
        days[turn.user_id].add(turn.start.date())
    return days


def _thumbs_down_rate_by_day(generated: World) -> dict[date, float]:
    votes: dict[date, list[int]] = defaultdict(list)
    for turn in generated.turns:
        if turn.thumbs is not None:
            votes[turn.start.date()].append(turn.thumbs)
    return {d: v.count(-1) / len(v) for d, v in votes.items()}


def test_active_and_new_users_match_the_world(world: tuple[World, Path]) -> None:
    generated, data_dir = world
    activity = user_activity(open_catalog(data_dir), _scope())
    user_days = _user_days(generated)
    first_day = {u: min(d) for u, d in user_days.items()}
    assert activity.height == DAYS
    for row in activity.iter_rows(named=True):
        day = row["day"]
        assert row["dau"] == sum(day in d for d in user_days.values())
        week = {day - timedelta(days=i) for i in range(7)}
        assert row["wau"] == sum(bool(week & d) for d in user_days.values())
        assert row["new_users"] == sum(f == day for f in first_day.values())
        assert row["returning_users"] == row["dau"] - row["new_users"]


def test_retention_cohorts_match_the_world(world: tuple[World, Path]) -> None:
    generated, data_dir = world
    cohorts = retention_cohorts(open_catalog(data_dir), _scope())
    user_days = _user_days(generated)
    first_day = {u: min(d) for u, d in user_days.items()}
    last_day = (START + timedelta(days=DAYS - 1)).date()
    for row in cohorts.iter_rows(named=True):
        cohort = [u for u, f in first_day.items() if f == row["cohort"]]
        assert row["users"] == len(cohort)
        for n in (1, 7):
            target = row["cohort"] + timedelta(days=n)
            if target > last_day:
                assert row[f"d{n}_retention"] is None
                continue
            retained = sum(target in user_days[u] for u in cohort)
            assert row[f"d{n}_retained"] == retained
            if cohort:
                assert row[f"d{n}_retention"] == pytest.approx(retained / len(cohort))


def test_session_stats_match_the_world(world: tuple[World, Path]) -> None:
    generated, data_dir = world
    stats_by_day = session_stats(open_catalog(data_dir), _scope())
    sessions: dict[str, list[object]] = defaultdict(list)
    for turn in generated.turns:
        sessions[turn.session_id].append(turn.start)
    per_day: dict[date, list[int]] = defaultdict(list)
    for starts in sessions.values():
        per_day[min(starts).date()].append(len(starts))  # type: ignore[type-var]
    for row in stats_by_day.iter_rows(named=True):
        turns = per_day.get(row["day"], [])
        assert row["sessions"] == len(turns)
        if turns:
            assert row["mean_session_turns"] == pytest.approx(sum(turns) / len(turns))
            assert row["mean_session_s"] > 0


def _write_metrics(path: Path, generated: World, seed: int = 3) -> None:
    """revenue moves against the thumbs-down rate 7 days before; noise moves with nothing."""
    rng = random.Random(seed)
    rate = _thumbs_down_rate_by_day(generated)
    lines = ["date,metric,value"]
    for i in range(DAYS):
        day = (START + timedelta(days=i)).date()
        before = rate.get(day - timedelta(days=7))
        if before is not None:
            lines.append(f"{day},revenue,{5000 - 8000 * before + rng.gauss(0, 60):.2f}")
        lines.append(f"{day},noise,{rng.gauss(100, 10):.3f}")
    path.write_text("\n".join(lines) + "\n")


def test_quality_moves_with_next_weeks_revenue_and_not_with_noise(
    world: tuple[World, Path], tmp_path: Path
) -> None:
    generated, data_dir = world
    source = tmp_path / "metrics.csv"
    _write_metrics(source, generated)
    imported = read_business_metrics(source, "default")
    assert not imported.errors
    Lake(data_dir).write(BUSINESS_METRICS.name, imported.table)
    conn = open_catalog(data_dir)
    correlation = quality_business_correlation(conn, _scope(), lags=(0, 7))
    rows = {
        (r["quality"], r["business"], r["lag_days"]): r for r in correlation.iter_rows(named=True)
    }
    revenue = rows[("thumbs_down_rate", "revenue", 7)]
    # the same correlation from series built from the world, with scipy
    rate = _thumbs_down_rate_by_day(generated)
    metrics = business_metrics(conn, _scope())
    revenue_by_day = {
        d: v for d, m, v in metrics.select("day", "metric", "value").iter_rows() if m == "revenue"
    }
    days = [d for d in rate if d + timedelta(days=7) in revenue_by_day]
    expected = stats.spearmanr(
        [rate[d] for d in days], [revenue_by_day[d + timedelta(days=7)] for d in days]
    )
    assert revenue["days"] == len(days)
    assert revenue["rho"] == pytest.approx(expected.statistic, abs=1e-9)
    assert revenue["p_value"] == pytest.approx(expected.pvalue, rel=1e-6)
    assert revenue["rho"] < -0.5 and revenue["high"] < 0 and revenue["supported"]
    noise = rows[("thumbs_down_rate", "noise", 7)]
    assert noise["low"] < 0 < noise["high"] and not noise["supported"]


def test_daily_quality_has_every_day(world: tuple[World, Path]) -> None:
    generated, data_dir = world
    quality = daily_quality(open_catalog(data_dir), _scope())
    assert quality.height == DAYS
    rate = _thumbs_down_rate_by_day(generated)
    for row in quality.iter_rows(named=True):
        assert row["thumbs_down_rate"] == pytest.approx(rate[row["day"]])
        assert 0 <= row["regeneration_rate"] <= 1 and row["error_rate"] == 0


def test_reimporting_adds_nothing_and_a_changed_value_replaces_the_old(tmp_path: Path) -> None:
    data_dir = tmp_path / "lake"
    lake = Lake(data_dir)
    first = tmp_path / "a.csv"
    first.write_text("date,metric,value\n2026-10-01,revenue,100\n2026-10-02,revenue,110\n")
    assert (
        lake.write(BUSINESS_METRICS.name, read_business_metrics(first, "default").table).num_written
        == 2
    )
    assert (
        lake.write(BUSINESS_METRICS.name, read_business_metrics(first, "default").table).num_written
        == 0
    )
    fixed = tmp_path / "b.csv"
    fixed.write_text("date,metric,value\n2026-10-02,revenue,120\n")
    lake.write(BUSINESS_METRICS.name, read_business_metrics(fixed, "default").table)
    metrics = business_metrics(open_catalog(data_dir), _scope())
    assert dict(zip(metrics["day"], metrics["value"], strict=True)) == {
        date(2026, 10, 1): 100.0,
        date(2026, 10, 2): 120.0,
    }


def test_bad_rows_say_where_and_why_and_the_rest_land(tmp_path: Path) -> None:
    source = tmp_path / "m.csv"
    source.write_text(
        "date,metric,value\n2026-10-01,revenue,100\nyesterday,revenue,5\n2026-10-02,,5\n"
        "2026-10-03,revenue,lots\n2026-10-04T23:30:00-02:00,signups,7\n2026-10-05,revenue,\n"
    )
    imported = read_business_metrics(source, "default")
    assert [e.split(": ", 1)[1] for e in imported.errors] == [
        "line 3: date 'yesterday' is not a date like 2026-11-24",
        "line 4: metric is empty",
        "line 5: value 'lots' is not a number",
    ]
    rows = imported.table.to_pylist()
    assert [(r["time"].date(), r["metric"], r["value"]) for r in rows] == [
        (date(2026, 10, 1), "revenue", 100.0),
        (date(2026, 10, 5), "signups", 7.0),  # 23:30 at UTC-2 is the 5th in UTC
        (date(2026, 10, 5), "revenue", None),
    ]
    wrong = tmp_path / "w.csv"
    wrong.write_text("day,name,amount\n")
    with pytest.raises(ValueError, match="missing column"):
        read_business_metrics(wrong, "default")


def test_spearman_interval_against_a_direct_computation() -> None:
    low, high = spearman_interval(0.5, 30)
    se = ((1 + 0.125) / 27) ** 0.5
    assert low == pytest.approx(
        float(__import__("math").tanh(0.5493061443 - 1.959964 * se)), abs=1e-6
    )
    assert high > 0.5 > low
    assert spearman_interval(0.2, 3) == (-1.0, 1.0)


def test_an_imported_metric_named_like_a_computed_one_keeps_both(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "lake"
    ingest_world(data_dir, num_sessions=200)
    source = tmp_path / "dau.csv"
    source.write_text("date,metric,value\n2026-10-02,dau,12345\n")
    Lake(data_dir).write(BUSINESS_METRICS.name, read_business_metrics(source, "default").table)
    frame = daily_business(open_catalog(data_dir), _scope())
    row = frame.filter(pl.col("day") == date(2026, 10, 2)).row(0, named=True)
    assert row["dau (imported)"] == 12345.0
    assert (
        row["dau"]
        == user_activity(open_catalog(data_dir), _scope())
        .filter(pl.col("day") == date(2026, 10, 2))["dau"]
        .item()
    )
