"""Kill -9 under load: every acknowledged span survives exactly once; re-sending adds no duplicates."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.ingest.receiver_process import (
    batch_keys,
    make_request,
    span_keys,
    start_receiver,
)

SPANS_PER_BATCH = 40
PROTOBUF = {"content-type": "application/x-protobuf"}


def _send(url: str, batch: int, client: httpx.Client) -> bool:
    body = make_request(batch, SPANS_PER_BATCH).SerializeToString()
    try:
        return client.post(f"{url}/v1/traces", content=body, headers=PROTOBUF).status_code == 200
    except httpx.HTTPError:
        return False


def test_sigkill_under_load_loses_no_acknowledged_span(tmp_path: Path) -> None:
    data = tmp_path / "lake"
    # Flushes by size only: at the kill some acknowledged rows are in Parquet, the rest only in
    # the WAL.
    receiver = start_receiver(data, flush_rows=1000, flush_max_age_s=60, decode_workers=2)
    acked: set[int] = set()
    attempted: set[int] = set()
    lock = threading.Lock()
    next_batch = iter(range(100_000))
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                with lock:
                    batch = next(next_batch)
                    attempted.add(batch)
                if not _send(receiver.url, batch, client):
                    return  # the server is gone
                with lock:
                    acked.add(batch)

    senders = [threading.Thread(target=load) for _ in range(4)]
    for thread in senders:
        thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        len(acked) < 60 or not list(data.glob("spans/*/*.parquet"))
    ):
        time.sleep(0.02)
    receiver.kill()  # mid-load: some requests are in flight, some rows only in the WAL
    assert list(data.glob("spans/*/*.parquet")), "no flush happened before the kill"
    assert any(p.stat().st_size for p in (data / "wal").glob("*.wal")), "nothing only in the WAL"
    for thread in senders:
        thread.join(15)
    stop.set()
    assert not receiver.reap(), "decoder workers outlived the killed server"
    assert len(acked) >= 60, receiver.log()
    in_flight = attempted - acked
    print(f"acknowledged {len(acked)} batches, {len(in_flight)} in flight at the kill")

    restarted = start_receiver(data, flush_max_age_s=0.5, decode_workers=0)
    try:
        # Opening the writer replayed the dead server's WAL into the lake.
        after_crash = Counter(span_keys(data))
        assert max(after_crash.values()) == 1, "a span is stored twice after recovery"
        for batch in acked:
            assert batch_keys(batch, SPANS_PER_BATCH) <= after_crash.keys(), f"batch {batch} lost"
        # Senders re-send what was not acknowledged, and some of what was.
        resend = sorted(in_flight) + sorted(acked)[:10]
        with httpx.Client(timeout=10) as client:
            assert all(_send(restarted.url, batch, client) for batch in resend)
    finally:
        assert restarted.stop() == 0, restarted.log()
    final = Counter(span_keys(data))
    assert max(final.values()) == 1, "re-sending stored a duplicate"
    expected = set().union(*(batch_keys(b, SPANS_PER_BATCH) for b in attempted))
    assert set(final) == expected
    assert not list((data / "wal").glob("*.wal")), "a clean stop leaves no WAL behind"
