"""Child processes for the crash and concurrency tests: ``python -m tests.store.workers ...``.

* ``writer DATA`` appends batch after batch (50 spans each, trace id = batch id) and prints each
  batch id once ``append`` returned, until it is killed.
* ``reader DATA STOP`` prints ``SELECT count(*) FROM spans`` over and over until the file STOP
  exists, then prints one last count and exits; any query error ends it with a traceback.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

from store.catalog import open_catalog, query
from store.writer import LakeWriter
from tests.store.conftest import T0, span_row, spans_table

SPANS_PER_BATCH = 50


def batch(batch_id: int) -> list[dict[str, object]]:
    """The rows of one numbered batch (a day's worth of batches per partition, two partitions)."""
    start = T0 + timedelta(hours=batch_id % 48)
    return [
        span_row(
            trace_id=f"{batch_id:032x}",
            span_id=f"{j:016x}",
            start_time=start + timedelta(milliseconds=j),
            input_text="x" * 2000,
        )
        for j in range(SPANS_PER_BATCH)
    ]


def run_writer(data_dir: Path) -> None:
    with LakeWriter(data_dir, max_buffer_rows=6 * SPANS_PER_BATCH) as writer:
        batch_id = 0
        while True:
            writer.append("spans", spans_table(batch(batch_id)))
            print(batch_id, flush=True)
            batch_id += 1


def run_reader(data_dir: Path, stop: Path) -> None:
    conn = open_catalog(data_dir)
    while True:
        last = stop.exists()
        count = query(conn, "SELECT count(*) AS n FROM spans")["n"][0].as_py()
        print(count, flush=True)
        if last:
            return


if __name__ == "__main__":
    if sys.argv[1] == "writer":
        run_writer(Path(sys.argv[2]))
    else:
        run_reader(Path(sys.argv[2]), Path(sys.argv[3]))
