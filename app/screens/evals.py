"""Evals: a candidate run compared with a baseline (per evaluator, then case by case), the runs,
and the datasets (with a form that makes one from a Traces-page filter)."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import streamlit as st

from analytics.cost import load_price_table
from analytics.scope import Scope
from app import components as ui
from app.eval_dataset_cmd import filter_from_text, span_conversation
from app.trace_links import trace_url
from evals.compare import Comparison, compare_runs, output_diff
from evals.datasets import cases_from_traces, list_datasets, read_dataset, write_dataset
from evals.replay import (
    EVAL_PROJECT_SUFFIX,
    eval_project,
    list_runs,
    read_results,
    read_run,
    target_label,
)

TABS = {"Compare": "compare", "Runs": "runs", "Datasets": "datasets"}
VERDICT_ICONS = {
    "better": "🟢 better",
    "worse": "🔴 worse",
    "no significant change": "⚪ no change",
}


def _base_project(project: str) -> str:
    """Runs and datasets belong to the production project, also when its eval project is picked."""
    return project.removesuffix(EVAL_PROJECT_SUFFIX)


def _run_label(row: dict[str, Any]) -> str:
    what = target_label(row["target"])
    name = f"{row['name']} · " if row.get("name") else ""
    return f"{name}{what} · {row['dataset']}@{row['version']} · {row['time']:%m-%d %H:%M}"


@st.cache_data(ttl=30, show_spinner="Comparing runs…")
def _comparison(
    data_dir: str, price_file: str | None, project: str, run_id: str, baseline_id: str, done: int
) -> Comparison:
    """The comparison of two runs (``done``, the results so far, keys the cache)."""
    del done
    conn = ui.catalog()
    run = read_run(conn, project, run_id)
    base = read_run(conn, project, baseline_id)
    dataset = read_dataset(conn, project, run.dataset, run.version)
    results = read_results(conn, project, [run_id, baseline_id])
    return compare_runs(
        results.filter(pl.col("run_id") == run_id),
        results.filter(pl.col("run_id") == baseline_id),
        dataset.cases,
        candidate_name=run.name or run_id,
        baseline_name=base.name or baseline_id,
        prices=load_price_table(price_file),
    )


def _evaluator_table(comparison: Comparison) -> None:
    rows = [
        {
            "evaluator": e.evaluator,
            "verdict": VERDICT_ICONS[e.verdict],
            "candidate": e.mean_candidate,
            "baseline": e.mean_baseline,
            "difference": e.mean_difference,
            "low": e.interval[0],
            "high": e.interval[1],
            "wlt": f"{e.num_wins} / {e.num_losses} / {e.num_ties}",
            "p_value": e.p_value,
            "pairs": e.num_pairs,
        }
        for e in comparison.evaluators
    ]
    st.dataframe(
        pl.DataFrame(rows),
        hide_index=True,
        column_config={
            "evaluator": "Evaluator", "verdict": "Verdict",
            "candidate": st.column_config.NumberColumn("Candidate", format="%.3f"),
            "baseline": st.column_config.NumberColumn("Baseline", format="%.3f"),
            "difference": st.column_config.NumberColumn("Difference", format="%+.3f"),
            "low": st.column_config.NumberColumn("95% low", format="%+.3f"),
            "high": st.column_config.NumberColumn("95% high", format="%+.3f"),
            "wlt": st.column_config.TextColumn("Wins / losses / ties"),
            "p_value": st.column_config.NumberColumn("p", format="%.3g"),
            "pairs": st.column_config.NumberColumn("Cases", format="%d"),
        },
    )  # fmt: skip
    st.caption(
        f"Scores are in [0, 1], 1 best; difference = candidate − baseline over the cases both "
        f"runs scored, with a paired bootstrap 95% interval. p: a paired sign-flip permutation test of the mean; a verdict "
        f"needs p < {comparison.alpha}. `answered`: the target answered (1) or failed (0)."
    )


def _performance(comparison: Comparison) -> None:
    perf = comparison.performance
    tiles = st.columns(4)

    def delta(pair: tuple[float | None, float | None], fmt: Any) -> str | None:
        a, b = pair
        return None if a is None or b is None else f"{fmt(a - b)} vs baseline"

    tiles[0].metric(
        "Median latency",
        ui.format_ms(perf.median_latency_ms[0]),
        delta(perf.median_latency_ms, ui.format_ms),
        delta_color="inverse",
        help=f"Baseline {ui.format_ms(perf.median_latency_ms[1])}, over the "
        f"{perf.num_pairs:,} cases both runs answered.",
    )
    tiles[1].metric(
        "p95 latency",
        ui.format_ms(perf.p95_latency_ms[0]),
        delta(perf.p95_latency_ms, ui.format_ms),
        delta_color="inverse",
        help=f"Baseline {ui.format_ms(perf.p95_latency_ms[1])}.",
    )
    tiles[2].metric(
        "Mean cost per case",
        ui.format_usd(perf.mean_cost_usd[0]),
        delta(perf.mean_cost_usd, ui.format_usd),
        delta_color="inverse",
        help=f"Baseline {ui.format_usd(perf.mean_cost_usd[1])}; from tokens and the price "
        "table (— when a model has no price).",
    )
    tiles[3].metric("Regressed evaluators", len(comparison.regressions) or "none",
                    help=", ".join(comparison.regressions) or None)  # fmt: skip


def _case_detail(row: dict[str, Any], project: str) -> None:
    st.subheader(f"Case {row['case_id']}")
    st.markdown("**Input**")
    st.text(row["input"] or "(no user message)")
    if row["reference"] is not None:
        with st.expander("Reference"):
            st.text(row["reference"])
    left, right = st.columns(2)
    for column, side, title in ((left, "candidate", "Candidate"), (right, "baseline", "Baseline")):
        with column:
            st.markdown(f"**{title}** · {row[side + '_scores'] or 'no scores'}")
            if row[side + "_error"]:
                st.error(row[side + "_error"])
            else:
                st.text(row[side + "_output"] or "(empty)")
            if row[side + "_trace_id"]:
                link = trace_url(
                    row[side + "_trace_id"], row[side + "_time"], project=eval_project(project)
                )
                st.markdown(f"[Replay trace →]({link})")
    diff = output_diff(row["baseline_output"], row["candidate_output"])
    st.markdown("**Diff** (baseline → candidate)")
    st.code(diff or "(the outputs are the same)", language="diff")
    if row["source_trace_id"]:
        link = trace_url(row["source_trace_id"], row["source_time"], project=project)
        st.markdown(f"[Production trace this case came from →]({link})")


def _compare_tab(conn: Any, project: str) -> None:
    runs = list_runs(conn, project)
    if runs.height < 2:
        st.info(
            "A comparison needs two runs. Score what production answered, then replay a "
            "candidate:\n\n"
            "`flywheel eval run --dataset NAME --recorded reference -e judge --judge-model M`\n\n"
            "`flywheel eval run --dataset NAME --base-url URL --model CANDIDATE -e judge …`"
        )
        return
    labels = {row["run_id"]: _run_label(row) for row in runs.to_dicts()}
    ids = list(labels)
    run_id = ui.url_choice(st.selectbox, "Candidate run", ids, "run", format_func=labels.get)
    same = runs.filter(pl.col("run_id") == run_id).to_dicts()[0]
    others = [i for i in ids if i != run_id]
    # Default baseline: the newest other run of the same dataset.
    same_dataset = runs.filter(
        (pl.col("dataset") == same["dataset"]) & (pl.col("run_id") != run_id)
    )["run_id"].to_list()
    ordered = same_dataset + [i for i in others if i not in same_dataset]
    baseline_id = ui.url_choice(
        st.selectbox, "Baseline run", ordered, "baseline", format_func=labels.get
    )
    done = int(runs.filter(pl.col("run_id").is_in([run_id, baseline_id]))["num_done"].sum())
    comparison = _comparison(*ui.cache_key(), project, run_id, baseline_id, done)
    if not comparison.evaluators:
        st.warning("These runs share no scored case: were they made on the same dataset?")
        return
    _performance(comparison)
    _evaluator_table(comparison)
    cases = comparison.cases
    st.subheader("Cases, regressed first")
    st.caption(
        f"{cases.height:,} cases both runs have; score difference = the sum over evaluators "
        "of candidate − baseline. Select a row to read both outputs side by side."
    )
    shown = ["case_id", "score_difference", "input", "candidate_output", "baseline_output"]
    if cases["candidate_error"].is_not_null().any():
        shown.append("candidate_error")
    event = st.dataframe(
        cases.select(shown),
        hide_index=True, on_select="rerun", selection_mode="single-row", key="cases",
        column_config={
            "case_id": "Case",
            "score_difference": st.column_config.NumberColumn("Score difference", format="%+.2f"),
            "input": st.column_config.TextColumn("Input", width="medium"),
            "candidate_output": st.column_config.TextColumn("Candidate", width="medium"),
            "baseline_output": st.column_config.TextColumn("Baseline", width="medium"),
            "candidate_error": "Candidate error",
        },
    )  # fmt: skip
    picked = event.selection.rows if event is not None else []
    _case_detail(cases.row(picked[0] if picked else 0, named=True), project)


def _runs_tab(conn: Any, project: str) -> None:
    runs = list_runs(conn, project)
    if runs.is_empty():
        st.info("No eval runs yet: `flywheel eval run --dataset NAME …` (see the README).")
        return
    table = runs.with_columns(
        pl.col("target").map_elements(target_label, return_dtype=pl.String),
        (pl.col("dataset") + "@" + pl.col("version").cast(pl.String)).alias("dataset"),
        pl.col("evaluators").map_elements(lambda e: ", ".join(json.loads(e)), return_dtype=pl.String),
        pl.col("split").fill_null("all"),
    ).select(
        "run_id", "name", "dataset", "target", "num_done", "num_cases", "num_errors",
        "median_latency_ms", "evaluators", "split", "time",
    )  # fmt: skip
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "run_id": "Run", "name": "Name", "time": st.column_config.DatetimeColumn(
                "Started (UTC)", format="YYYY-MM-DD HH:mm"),
            "dataset": "Dataset", "split": "Split", "target": "Target",
            "evaluators": "Evaluators",
            "num_done": st.column_config.NumberColumn("Done", format="%d"),
            "num_cases": st.column_config.NumberColumn("Cases", format="%d"),
            "num_errors": st.column_config.NumberColumn("Failed", format="%d"),
            "median_latency_ms": st.column_config.NumberColumn("Median latency (ms)", format="%.0f"),
        },
    )  # fmt: skip
    st.caption(
        "A run with fewer cases done than it has was interrupted: "
        "`flywheel eval run --resume RUN` finishes it without calling the finished cases again. "
        f"Each replayed call is a trace in project `{eval_project(project)}`."
    )


def _create_form(conn: Any, scope: Scope, project: str) -> None:
    with st.form("create_dataset"):
        st.markdown("**New dataset from traces**")
        name = st.text_input("Name", placeholder="support-refunds")
        text = st.text_input(
            "Traces filter",
            value=st.query_params.get("filter", ""),
            help="Filter the Traces page, then paste its URL (or just its query, e.g. "
            "`status=ok&q=refund`). The sidebar's range, services, models and routes apply.",
        )
        limit = st.number_input("Newest requests", 1, 100_000, 500)
        holdout = st.slider("Held-out share", 0.0, 0.5, 0.2, 0.05)
        append = st.checkbox("Keep the previous version's cases")
        if not st.form_submit_button("Create dataset"):
            return
    try:
        filters, _ = filter_from_text(text)
        built = cases_from_traces(
            conn, scope, filters, span_conversation, limit=int(limit), holdout=holdout
        )
        if not built.cases:
            st.warning(f"No cases: {built.num_traces:,} requests matched, none with input.")
            return
        dataset = write_dataset(conn, ui.tables(), project, name, built.cases, append=append)
    except ValueError as exc:
        st.error(str(exc))
        return
    st.success(
        f"Wrote {dataset.name}@{dataset.version}: {len(dataset.cases):,} cases from "
        f"{built.num_traces:,} requests ({built.num_duplicates:,} repeated inputs left out)."
    )


def _datasets_tab(conn: Any, scope: Scope, project: str) -> None:
    datasets = list_datasets(conn, project)
    left, right = st.columns([3, 2])
    with right:
        _create_form(conn, scope, project)
    with left:
        if datasets.is_empty():
            st.info(
                "No datasets yet: make one here from a Traces filter, or "
                "`flywheel eval dataset create NAME --filter …` / `… import NAME file.jsonl`."
            )
            return
        st.dataframe(
            datasets, hide_index=True,
            column_config={
                "dataset": "Dataset", "version": st.column_config.NumberColumn("Version", format="%d"),
                "time": st.column_config.DatetimeColumn("Created (UTC)", format="YYYY-MM-DD HH:mm"),
                "num_cases": "Cases", "num_holdout": "Held out",
                "num_with_reference": "With reference", "num_from_traces": "From traces",
            },
        )  # fmt: skip
        refs = [f"{r['dataset']}@{r['version']}" for r in datasets.to_dicts()]
        ref = st.selectbox("Read the cases of", refs)
        name, _, version = ref.partition("@")
        dataset = read_dataset(conn, project, name, int(version))
        rows = [
            {
                "case_id": c.case_id, "split": c.split, "input": c.user_input,
                "reference": c.reference, "model": c.metadata.get("model"),
                "route": c.metadata.get("route"), "feedback": c.metadata.get("feedback"),
                "trace": trace_url(c.source_trace_id, c.source_time, project=project)
                if c.source_trace_id else None,
            }
            for c in dataset.cases[:500]
        ]  # fmt: skip
        st.dataframe(
            pl.DataFrame(rows), hide_index=True,
            column_config={
                "case_id": "Case", "split": "Split",
                "input": st.column_config.TextColumn("Input (last user message)", width="large"),
                "reference": st.column_config.TextColumn("Reference", width="medium"),
                "model": "Model", "route": "Route", "feedback": "Vote",
                "trace": st.column_config.LinkColumn("Trace", display_text="open"),
            },
        )  # fmt: skip
        if len(dataset.cases) > 500:
            st.caption(f"The first 500 of {len(dataset.cases):,} cases.")


def render(scope: Scope) -> None:
    """Draw the Evals page for the sidebar's project."""
    conn = ui.catalog()
    project = _base_project(scope.project)
    tabs = st.tabs(list(TABS), key="tab", bind="query-params")
    for index, (tab, draw) in enumerate(zip(tabs, TABS.values(), strict=True)):
        opened = tab.open is not False if index == 0 else tab.open
        with tab:
            if not opened:
                continue
            if draw == "compare":
                _compare_tab(conn, project)
            elif draw == "runs":
                _runs_tab(conn, project)
            else:
                _datasets_tab(conn, scope, project)


st.title("Evals")
st.caption(
    "Runs and datasets of the sidebar's project, whatever their time: the time range and "
    "filters choose the requests the dataset form takes."
)
_scope = ui.sidebar_filters(ui.catalog())
if _scope is None:
    ui.show_empty_lake()
else:
    render(_scope)
