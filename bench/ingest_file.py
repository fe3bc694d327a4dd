"""File ingest of OTLP protobuf into the lake: spans/s on one core and peak RSS.

Input: ``sample_data`` traces written as a length-prefixed OTLP protobuf file (uncompressed,
what ``flywheel sample-data`` writes for ``.pb``), generated once into ``bench/out/`` in one
seeded pass that also writes prefixes of it (the first ~250k and ~500k spans, and a ~40k-span
file for the profile), and reused while the generator's code and the parameters are unchanged.

Each measurement runs in a fresh process pinned to one CPU (``sched_setaffinity``; Arrow's CPU
and I/O pools at one thread; ``OMP_NUM_THREADS=1``), so its peak RSS (``ru_maxrss``) is its
own:

* ``e2e`` — ``ingest.loader.ingest_paths`` into a ``store.writer.LakeWriter`` on an empty data
  dir, then ``close()``: decode + guard (detectors, redaction; ``--guard``) + WAL (fsync) +
  Parquet segments with dedup, which is what ``flywheel ingest`` does. The writer's calls are
  timed, so the run also splits its time into decode (with the guard), WAL and lake write;
  ``guard_s`` is the part of ``decode_s`` spent in ``Guard.apply``.
* ``decode`` — ``ingest.files.iter_file`` alone: ptars parses the wire format into Arrow, the
  columns are normalized (``ingest.otlp_arrow``).
* ``decode-reference`` — the same through protobuf objects and the per-span normalizer
  (``iter_file(columnar=False)``, the path the columnar decoder is checked against), on the
  250k file.
* ``profile`` — ``decode`` under cProfile, on the small file; top functions by own time.

The lake's dedup uses pyarrow (``group_by``/``join`` with ``use_threads=False``), not DuckDB.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import OUT_DIR, Figure

NAME = "ingest_file"
NUM_TRACES = 127_000  # ~8 spans a trace: the generator's pass covers a bit more than 1M spans
DAYS = 30
SEED = 7
#: Input files: name -> spans it holds at least (whole requests, so a few more).
SIZES: dict[str, int] = {"250k": 250_000, "500k": 500_000, "1m": 1_000_000}
PROFILE_SIZE = ("profile-40k", 40_000)
TARGET_SPANS_PER_S = 100_000
_REPO = Path(__file__).resolve().parent.parent


# --- input files ------------------------------------------------------------------------------


def _generator_hash() -> str:
    """A hash of the sample-data generator's code: new code, new input files."""
    digest = hashlib.sha256()
    for path in sorted((_REPO / "sample_data").glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:10]


def input_dir(out_dir: Path) -> Path:
    """Where the input files for the current generator and parameters live."""
    return out_dir / f"ingest-input-t{NUM_TRACES}-d{DAYS}-s{SEED}-{_generator_hash()}"


def ensure_inputs(out_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Generate the input files once (one seeded pass writes them all); return their manifest."""
    from sample_data.formats import frame
    from sample_data.generator import generate_batches

    folder = input_dir(out_dir.resolve())
    manifest_path = folder / "manifest.json"
    if manifest_path.exists():
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if all(Path(f["path"]).exists() for f in manifest["files"].values()):
            log(f"ingest: reusing input files in {folder}")
            return manifest
    for stale in out_dir.glob("ingest-input-*"):
        shutil.rmtree(stale)
    folder.mkdir(parents=True)
    wanted = dict(SIZES)
    wanted[PROFILE_SIZE[0]] = PROFILE_SIZE[1]
    log(f"ingest: generating {max(wanted.values()):,}+ spans of OTLP protobuf into {folder}")
    began = time.perf_counter()
    handles = {name: open(folder / f"spans-{name}.pb", "wb") for name in wanted}  # noqa: SIM115
    counts = {name: {"num_spans": 0, "num_requests": 0, "num_bytes": 0} for name in wanted}
    total = 0
    try:
        for batch in generate_batches(NUM_TRACES, DAYS, SEED):
            data = frame(batch.request.SerializeToString(deterministic=True))
            for name, handle in handles.items():
                if counts[name]["num_spans"] < wanted[name]:
                    handle.write(data)
                    counts[name]["num_spans"] += batch.num_spans
                    counts[name]["num_requests"] += 1
                    counts[name]["num_bytes"] += len(data)
            total += batch.num_spans
            if total >= max(wanted.values()):
                break
    finally:
        for handle in handles.values():
            handle.close()
    short = [n for n, c in counts.items() if c["num_spans"] < wanted[n]]
    if short:
        raise RuntimeError(f"the generator made too few spans for {short}; raise NUM_TRACES")
    manifest = {
        "generator": "sample_data.generator.generate_batches + formats.frame (uint32 framing)",
        "num_traces_param": NUM_TRACES,
        "days": DAYS,
        "seed": SEED,
        "generator_hash": _generator_hash(),
        "generate_s": round(time.perf_counter() - began, 1),
        "files": {
            name: {"path": str(folder / f"spans-{name}.pb"), **counts[name]} for name in wanted
        },
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"ingest: generated in {manifest['generate_s']} s")
    return manifest


# --- the measured process ---------------------------------------------------------------------


def _pin_to_one_core() -> int:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    import pyarrow as pa

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    return cpu


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Timed:
    """Wraps a bound method and adds up the seconds spent in it."""

    def __init__(self, method: Callable[..., Any]) -> None:
        self.method = method
        self.seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return self.method(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - began


def make_guard(name: str) -> Any:
    """The guard stage a run uses: ``on`` (the default: detectors, secrets masked), ``off`` (no
    detectors, nothing redacted; guardrail spans are still read), ``mask`` (PII masked too)."""
    from ingest.guard import Guard
    from ingest.redaction import parse_policy

    if name == "off":
        return Guard(parse_policy('[default]\nsecret = "off"\npii = "off"'), detectors=False)
    if name == "mask":
        return Guard(parse_policy('[default]\npii = "mask"'))
    return Guard()


def _run_e2e(path: Path, data_dir: Path, guard: str = "on") -> dict[str, Any]:
    from ingest.loader import ingest_paths
    from store.writer import LakeWriter

    shutil.rmtree(data_dir, ignore_errors=True)
    began = time.perf_counter()
    cpu_began = time.process_time()
    writer = LakeWriter(data_dir)
    # The writer calls its own flush() when its buffer fills; instance attributes shadow the
    # methods, so these wrappers see those calls too.
    flush = _Timed(writer.flush)
    writer.flush = flush  # type: ignore[method-assign]
    append = _Timed(writer.append_many)
    writer.append_many = append  # type: ignore[method-assign]
    guard_stage = make_guard(guard)
    apply = _Timed(guard_stage.apply)
    guard_stage.apply = apply
    rss_before = _current_rss_mib()
    reports = ingest_paths([path], writer, guard=guard_stage)
    close_began = time.perf_counter()
    writer.close()
    close_s = time.perf_counter() - close_began
    wall_s = time.perf_counter() - began
    cpu_s = time.process_time() - cpu_began
    num_spans = sum(r.num_spans for r in reports)
    num_rejected = sum(r.num_rejected for r in reports)
    segments = list((data_dir / "spans").glob("date=*/*.parquet"))
    lake_write_s = flush.seconds  # includes the final flush inside close()
    wal_s = append.seconds + close_s - flush.seconds
    return {
        "num_spans": num_spans,
        "num_rejected": num_rejected,
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "spans_per_s": num_spans / wall_s,
        "decode_s": wall_s - append.seconds - close_s,
        "guard_s": apply.seconds,
        "wal_s": wal_s,
        "lake_write_s": lake_write_s,
        "num_segments": len(segments),
        "lake_bytes": sum(p.stat().st_size for p in segments),
        "rss_start_mib": rss_before,
        "peak_rss_mib": _peak_rss_mib(),
    }


def _run_decode(path: Path, columnar: bool = True) -> dict[str, Any]:
    from ingest.files import iter_file

    rss_before = _current_rss_mib()
    began = time.perf_counter()
    cpu_began = time.process_time()
    num_spans = num_rejected = 0
    for decoded in iter_file(path, columnar=columnar):
        num_spans += decoded.spans.num_rows
        num_rejected += decoded.num_rejected
    wall_s = time.perf_counter() - began
    return {
        "num_spans": num_spans,
        "num_rejected": num_rejected,
        "wall_s": wall_s,
        "cpu_s": time.process_time() - cpu_began,
        "spans_per_s": num_spans / wall_s,
        "rss_start_mib": rss_before,
        "peak_rss_mib": _peak_rss_mib(),
    }


def _run_profile(path: Path, top: int = 10) -> dict[str, Any]:
    from ingest.files import iter_file

    profiler = cProfile.Profile()
    num_spans = 0
    profiler.enable()
    for decoded in iter_file(path):
        num_spans += decoded.spans.num_rows
    profiler.disable()
    stats = pstats.Stats(profiler)
    total_s = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    entries = stats.stats  # type: ignore[attr-defined]
    ranked = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:top]
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in ranked:
        where = filename
        for prefix in (str(_REPO) + "/", str(Path(sys.prefix)) + "/"):
            where = where.removeprefix(prefix)
        rows.append(
            {
                "function": f"{where}:{line}({func})" if line else func,
                "ncalls": ncalls,
                "tottime_s": round(tottime, 3),
                "cumtime_s": round(cumtime, 3),
                "share": round(tottime / total_s, 3) if total_s else 0.0,
            }
        )
    return {"num_spans": num_spans, "profiled_s": total_s, "top": rows}


def child_main(argv: list[str]) -> int:
    """Entry of the measured process: run one mode, print its result as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_file")
    parser.add_argument("mode", choices=("e2e", "decode", "decode-reference", "profile"))
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--guard", choices=("on", "off", "mask"), default="on")
    args = parser.parse_args(argv)
    cpu = _pin_to_one_core()
    if args.mode == "e2e":
        result = _run_e2e(args.input, args.data_dir, args.guard)
        shutil.rmtree(args.data_dir, ignore_errors=True)
    elif args.mode in ("decode", "decode-reference"):
        result = _run_decode(args.input, columnar=args.mode == "decode")
    else:
        result = _run_profile(args.input)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result |= {
        "mode": args.mode,
        "cpu": cpu,
        "affinity": sorted(os.sched_getaffinity(0)),
        "spans_per_cpu_s": result["num_spans"] / result["cpu_s"] if "cpu_s" in result else None,
        # Other processes on the machine slow a wall-clock figure; these show how much.
        "load_average_1m": os.getloadavg()[0],
        "involuntary_context_switches": usage.ru_nivcsw,
    }
    print(json.dumps(result))
    return 0


# --- the driver -------------------------------------------------------------------------------


def child(mode: str, path: Path, data_dir: Path | None = None, guard: str = "on") -> dict[str, Any]:
    """Run one measurement in a fresh process pinned to one core; its result."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, "-m", "bench.ingest_file", mode, "--input", str(path)]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir), "--guard", guard]
    done = subprocess.run(
        command, cwd=_REPO, env=env, stdout=subprocess.PIPE, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(out_dir: Path = OUT_DIR, log: Callable[[str], None] = print) -> tuple[list[Figure], dict]:
    """Run the ingest benchmark; return its figures and details."""
    manifest = ensure_inputs(out_dir, log)
    files = manifest["files"]
    data_dir = out_dir / "ingest-lake"
    e2e = {}
    for name in SIZES:
        log(f"ingest: end-to-end, {files[name]['num_spans']:,} spans, one core …")
        e2e[name] = child("e2e", Path(files[name]["path"]), data_dir)
        log(
            f"ingest:   {e2e[name]['spans_per_s']:,.0f} spans/s, "
            f"peak RSS {e2e[name]['peak_rss_mib']:,.0f} MiB"
        )
    largest = list(SIZES)[-1]
    log(f"ingest: decode only, {files[largest]['num_spans']:,} spans, one core …")
    decode = child("decode", Path(files[largest]["path"]))
    log(
        f"ingest:   {decode['spans_per_s']:,.0f} spans/s, peak RSS {decode['peak_rss_mib']:,.0f} MiB"
    )
    first = next(iter(SIZES))
    log(f"ingest: decode through protobuf objects, {files[first]['num_spans']:,} spans …")
    reference = child("decode-reference", Path(files[first]["path"]))
    log(f"ingest:   {reference['spans_per_s']:,.0f} spans/s")
    log(f"ingest: profiling decode on {files[PROFILE_SIZE[0]]['num_spans']:,} spans …")
    profile = child("profile", Path(files[PROFILE_SIZE[0]]["path"]))

    big = e2e[largest]
    rss = [e2e[name]["peak_rss_mib"] for name in SIZES]
    flat = max(rss) <= 1.25 * min(rss)
    figures = [
        Figure(
            "ingest .pb → lake (1 core)",
            f"end-to-end, {big['num_spans'] / 1e6:.2f}M spans",
            big["spans_per_s"],
            "spans/s",
            f"≥ {TARGET_SPANS_PER_S:,} spans/s",
            big["spans_per_s"] >= TARGET_SPANS_PER_S,
        ),
        Figure(
            "ingest .pb → lake (1 core)",
            "end-to-end, per CPU-second",
            big["spans_per_cpu_s"],
            "spans/s",
            note="CPU time: what a dedicated core would do",
        ),
        Figure(
            "ingest .pb → lake (1 core)",
            "decode only (parse + normalize + Arrow)",
            decode["spans_per_s"],
            "spans/s",
        ),
        Figure(
            "ingest .pb → lake (1 core)",
            f"decode through protobuf objects, {reference['num_spans'] / 1e6:.2f}M spans",
            reference["spans_per_s"],
            "spans/s",
            note="the reference path the columnar decoder is checked against",
        ),
        Figure(
            "ingest .pb → lake (1 core)",
            "decode only, per CPU-second",
            decode["spans_per_cpu_s"],
            "spans/s",
        ),
    ]
    for name in SIZES:
        figures.append(
            Figure(
                "ingest .pb → lake (1 core)",
                f"peak RSS, {e2e[name]['num_spans'] / 1e6:.2f}M spans",
                e2e[name]["peak_rss_mib"],
                "MiB",
                "flat as the file grows" if name == largest else "",
                flat if name == largest else None,
            )
        )
    details = {
        "inputs": manifest,
        "e2e": e2e,
        "decode": decode,
        "decode_reference": reference,
        "profile": profile,
        "pinning": "sched_setaffinity to one CPU, pa.set_cpu_count(1), "
        "pa.set_io_thread_count(1), OMP_NUM_THREADS=1",
    }
    return figures, details


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1:]))
