"""``python -m bench [ingest|detectors|embeddings|overview|analytics|pages|receiver|phoenix|evals|cache|clickhouse|collector|all ...]``: run benchmarks, write their results.

Each benchmark module has ``NAME`` and ``run(log=...) -> (figures, details)``; this runs the
chosen ones (default: all that exist), writes ``bench/results/<NAME>.json`` for each, prints
the figures and rewrites the table in ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
import traceback

from bench.report import Figure, plain_table, update_readme, write_result

#: Benchmark name on the command line -> module.
BENCHMARKS: dict[str, str] = {
    "ingest": "bench.ingest_file",
    "detectors": "bench.detectors",
    "embeddings": "bench.embeddings",
    "overview": "bench.overview_queries",
    "analytics": "bench.analytics_queries",
    "pages": "bench.page_render",
    "receiver": "bench.receiver_load",
    "phoenix": "bench.phoenix_compare",
    "evals": "bench.eval_replay",
    "cache": "bench.cache_analysis",
    "clickhouse": "bench.clickhouse_queries",
    "collector": "bench.collector_link",
}


def _available() -> list[str]:
    return [name for name, module in BENCHMARKS.items() if importlib.util.find_spec(module)]


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks; non-zero exit if any of them failed."""
    available = _available()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    # No argparse ``choices``: with nargs="*" Python 3.11 checks the default list against them.
    parser.add_argument(
        "benchmarks",
        nargs="*",
        metavar="{" + ",".join([*BENCHMARKS, "all"]) + "}",
        help=f"default: all that exist ({', '.join(available)})",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.benchmarks if name not in [*BENCHMARKS, "all"]]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}, all")
    wanted = args.benchmarks or ["all"]
    chosen = available if "all" in wanted else list(dict.fromkeys(wanted))
    missing = [name for name in chosen if name not in available]
    if missing:
        parser.error(f"not available here: {', '.join(missing)} ({BENCHMARKS[missing[0]]})")
    figures: list[Figure] = []
    failed = []
    for name in chosen:
        module = importlib.import_module(BENCHMARKS[name])
        began = time.perf_counter()
        try:
            found, details = module.run(log=_log)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        details["bench_wall_s"] = round(time.perf_counter() - began, 1)
        path = write_result(module.NAME, found, details)
        _log(f"{name}: done in {details['bench_wall_s']} s → {path}")
        figures.extend(found)
    update_readme()
    if figures:
        print(plain_table(figures))
    if failed:
        _log(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
