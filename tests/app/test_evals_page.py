"""The Evals page on the sample data's eval dataset and its two runs (``flywheel demo`` makes
them): the comparison shows what ``compare_runs`` computes, the runs and datasets are listed,
and the dataset form writes a dataset from a Traces filter."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analytics.scope import Scope
from analytics.traces import TraceFilter, count_traces
from app.sample_evals import SAMPLE_DATASET, load_sample_evals
from app.settings import Settings
from evals.compare import compare_runs
from evals.datasets import list_datasets, read_dataset
from evals.replay import list_runs, read_results
from store.catalog import open_catalog
from tests.analytics.guardrails_lake import ingest_sample

PAGE = str(Path(__file__).resolve().parents[2] / "app" / "screens" / "evals.py")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = ingest_sample(tmp_path_factory.mktemp("evals-page") / "lake")
    settings = Settings.from_args(argparse.Namespace(data_dir=str(data_dir), project="default"))
    assert load_sample_evals(settings) == SAMPLE_DATASET
    return data_dir


def _run(data_dir: Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(data_dir))
    monkeypatch.delenv("FLYWHEEL_PROJECT", raising=False)
    app = AppTest.from_file(PAGE, default_timeout=120)
    for key, value in params.items():
        app.query_params[key] = value
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_compare_tab_shows_the_comparison_of_the_newest_run_with_its_baseline(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = open_catalog(lake)
    runs = list_runs(conn, "default")
    candidate, baseline = runs["run_id"].to_list()  # newest first: the simulated candidate
    dataset = read_dataset(conn, "default", SAMPLE_DATASET)
    results = read_results(conn, "default", [candidate, baseline])
    expected = compare_runs(
        results.filter(results["run_id"] == candidate),
        results.filter(results["run_id"] == baseline),
        dataset.cases,
    )
    assert expected.regressions == ["normalized"]  # shorter answers no longer match production

    app = _run(lake, monkeypatch)
    tiles = {m.label: m.value for m in app.metric}
    assert tiles["Regressed evaluators"] == "1"
    table = app.dataframe[0].value.set_index("evaluator")
    for item in expected.evaluators:
        assert table.loc[item.evaluator, "candidate"] == pytest.approx(item.mean_candidate)
        assert table.loc[item.evaluator, "baseline"] == pytest.approx(item.mean_baseline)
        assert table.loc[item.evaluator, "p_value"] == pytest.approx(item.p_value)
    assert table.loc["normalized", "verdict"].endswith("worse")
    assert table.loc["max_chars:300", "verdict"].endswith("better")
    cases = app.dataframe[1].value
    assert len(cases) == len(dataset.cases)
    assert list(cases["score_difference"]) == sorted(cases["score_difference"])  # regressed first
    # the first case is drawn: its diff, and a link to the production trace it came from
    assert any(f"Case {cases['case_id'].iloc[0]}" in h.value for h in app.subheader)
    assert app.code[0].value.startswith("--- baseline")
    links = " ".join(m.value for m in app.markdown)
    assert f"trace={dataset.cases[0].source_trace_id}" in links or "trace=" in links


def test_runs_and_datasets_tabs_list_them(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _run(lake, monkeypatch, tab="Runs").dataframe[0].value
    assert set(runs["name"]) == {"production", "two-sentence answers (simulated)"}
    assert list(runs["num_done"]) == list(runs["num_cases"])
    datasets = _run(lake, monkeypatch, tab="Datasets")
    listed = datasets.dataframe[0].value
    assert list(listed["dataset"]) == [SAMPLE_DATASET]
    assert len(datasets.dataframe[1].value) == int(listed["num_cases"].iloc[0])


def test_dataset_form_writes_a_dataset_from_a_traces_filter(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _run(lake, monkeypatch, tab="Datasets", filter="status=ok&q=export")
    assert app.text_input[1].value == "status=ok&q=export"  # prefilled from the Traces link
    app.text_input[0].input("exports")
    app.button[0].click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert any("Wrote exports@1" in s.value for s in app.success)
    conn = open_catalog(lake)
    made = read_dataset(conn, "default", "exports")
    ids = tuple(c.source_trace_id for c in made.cases if c.source_trace_id)
    assert len(ids) == len(made.cases) > 0
    # every case's request matches the filter: checked by the Traces list itself
    everything = Scope(
        "default", datetime(2020, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)
    )
    matching = TraceFilter(status="ok", search="export", trace_ids=ids)
    assert count_traces(conn, everything, matching) == len(ids)
    assert count_traces(conn, everything, TraceFilter(status="error", trace_ids=ids)) == 0
    assert "exports" in set(list_datasets(conn, "default")["dataset"])
