"""Shared by every benchmark: the machine and versions, result files, the figures table.

A result file ``bench/results/<name>.json`` holds ``name``, ``date``, ``command``, ``machine``,
``versions``, ``figures`` (rows of the summary table, see :class:`Figure`) and ``details``
(whatever else the benchmark measured). ``python -m bench`` prints the figures of every result
file it wrote and rewrites the table in ``bench/README.md`` from all result files.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
OUT_DIR = BENCH_DIR / "out"
README = BENCH_DIR / "README.md"
TABLE_BEGIN = "<!-- bench-table:begin (written by python -m bench) -->"
TABLE_END = "<!-- bench-table:end -->"
_PACKAGES = ("duckdb", "pyarrow", "protobuf", "opentelemetry-proto", "numpy", "polars")


@dataclass(frozen=True)
class Figure:
    """One row of the summary table: a measured value, its unit and the target it is held to."""

    benchmark: str
    metric: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""


def machine() -> dict[str, Any]:
    """CPU count and model, RAM, kernel: what the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    ram_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(ram_bytes / 2**30, 1),
        "platform": platform.platform(),
    }


def versions() -> dict[str, str]:
    """Python and the versions of the packages the benchmarks exercise."""
    found = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "absent"
    try:
        from google.protobuf.internal import api_implementation

        found["protobuf_backend"] = api_implementation.Type()
    except ImportError:
        pass
    return found


def git_revision() -> str:
    """The checked-out commit (with ``+dirty`` when the tree has changes), or ``unknown``."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def command_line() -> str:
    """The command that is running, as a person would type it."""
    return " ".join(["python", "-m", "bench", *sys.argv[1:]])


def write_result(
    name: str, figures: list[Figure], details: dict[str, Any], command: str | None = None
) -> Path:
    """Write ``bench/results/<name>.json`` and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    document = {
        "name": name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command or command_line(),
        "git_revision": git_revision(),
        "machine": machine(),
        "versions": versions(),
        "figures": [asdict(f) for f in figures],
        "details": details,
    }
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def read_results() -> list[dict[str, Any]]:
    """Every result file that has figures, by name."""
    documents = []
    for path in sorted(RESULTS_DIR.glob("*.json")):
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(document, dict) and isinstance(document.get("figures"), list):
            documents.append(document)
    return documents


def format_value(value: float, unit: str) -> str:
    """A figure for people: thousands separators for rates and counts, 3 digits for seconds."""
    if unit in ("spans/s", "spans", "rows", "req/s"):
        return f"{value:,.0f}"
    if unit == "s":
        return f"{value:.3f}"
    if unit == "MiB":
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def markdown_table(figures: list[dict[str, Any]]) -> str:
    """The figures as a markdown table."""
    lines = [
        "| benchmark | metric | value | target | met |",
        "|---|---|---:|---|:-:|",
    ]
    for f in figures:
        met = {True: "yes", False: "**no**", None: ""}[f.get("met")]
        value = f"{format_value(f['value'], f['unit'])} {f['unit']}"
        metric = f["metric"] + (f" ({f['note']})" if f.get("note") else "")
        lines.append(f"| {f['benchmark']} | {metric} | {value} | {f.get('target', '')} | {met} |")
    return "\n".join(lines)


def plain_table(figures: list[Figure]) -> str:
    """The figures as a fixed-width table for the terminal."""
    rows = [("benchmark", "metric", "value", "target", "met")]
    for f in figures:
        met = {True: "yes", False: "NO", None: ""}[f.met]
        metric = f.metric + (f" ({f.note})" if f.note else "")
        rows.append(
            (f.benchmark, metric, f"{format_value(f.value, f.unit)} {f.unit}", f.target, met)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i != 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )


def update_readme() -> None:
    """Rewrite the figures table in bench/README.md (between its markers) from the result files."""
    if not README.exists():
        return
    text = README.read_text()
    if TABLE_BEGIN not in text or TABLE_END not in text:
        return
    documents = read_results()
    figures = [f for d in documents for f in d["figures"]]
    sources = ", ".join(
        f"`{d['name']}` {d['date'][:10]} ({d.get('git_revision', '?')})" for d in documents
    )
    machines = {
        f"{d['machine']['nproc']} × {d['machine']['cpu_model']}, {d['machine']['ram_gib']} GiB RAM"
        for d in documents
    }
    block = "\n".join(
        [
            TABLE_BEGIN,
            markdown_table(figures),
            "",
            f"Measured on {'; '.join(sorted(machines))}. Results: {sources}.",
            TABLE_END,
        ]
    )
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    README.write_text(head + block + tail)


def run_in_fresh_process(module: str, *args: str) -> Any:
    """Run ``python -m module args…`` from the repository root; return the JSON of its last
    stdout line (a measurement in a process of its own: its caches and peak RSS are its own)."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=BENCH_DIR.parent,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])
