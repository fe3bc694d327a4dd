"""``python -m sample_data``: write a sample dataset (the same as ``flywheel sample-data``)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from sample_data.formats import FILE_NAMES, write_dataset


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, write the dataset, print what was written."""
    parser = argparse.ArgumentParser(prog="python -m sample_data", description=__doc__)
    parser.add_argument("--traces", type=int, default=3000, help="number of traces (default 3000)")
    parser.add_argument("--days", type=int, default=14, help="days before the end (default 14)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--out", default="sample_data/data", help="output folder")
    parser.add_argument(
        "--formats",
        default=",".join(FILE_NAMES),
        help=f"comma-separated, from {', '.join(FILE_NAMES)}",
    )
    parser.add_argument("--no-gzip", action="store_true", help="write plain files")
    parser.add_argument(
        "--framing",
        choices=("uint32", "varint"),
        default="uint32",
        help="length prefix of the .pb frames (uint32 = Collector file exporter)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = write_dataset(
        args.out,
        args.traces,
        args.days,
        args.seed,
        [f for f in args.formats.split(",") if f],
        compress=not args.no_gzip,
        framing=args.framing,
    )
    seconds = time.perf_counter() - started
    for path in result.paths.values():
        print(f"{path}  {path.stat().st_size:,} bytes")
    print(
        f"{result.num_traces:,} traces, {result.num_spans:,} spans, "
        f"{result.num_feedback:,} feedback records in {seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
