"""The receiver's own Prometheus metrics, in a registry per receiver (no process-global state).

Labels stay low-cardinality: ``project`` only takes configured project names (unauthenticated
requests are never labelled with anything they sent), ``path`` only the receiver's routes.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from store.writer import Backlog

__all__ = ["CONTENT_TYPE_LATEST", "ReceiverMetrics"]

_LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ReceiverMetrics:
    """Counters, gauges and histograms of one receiver, rendered by ``render``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.spans_accepted = Counter(
            "flywheel_spans_accepted",
            "Spans durably logged (acknowledged to the sender).",
            ["project", "transport"],
            registry=r,
        )
        self.spans_rejected = Counter(
            "flywheel_spans_rejected",
            "Spans rejected as invalid (reported back as partial success).",
            ["project", "transport"],
            registry=r,
        )
        self.feedback_accepted = Counter(
            "flywheel_feedback_accepted",
            "Feedback records durably logged.",
            ["project"],
            registry=r,
        )
        self.feedback_rejected = Counter(
            "flywheel_feedback_rejected", "Feedback records rejected.", ["project"], registry=r
        )
        self.requests = Counter(
            "flywheel_requests",
            "Requests by transport, path and status (HTTP code or gRPC status name).",
            ["transport", "path", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "flywheel_request_seconds",
            "Request latency from headers received to response, by transport and path.",
            ["transport", "path"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.fsync_seconds = Histogram(
            "flywheel_wal_fsync_seconds",
            "Time of one group commit: WAL write plus fsync.",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.group_requests = Histogram(
            "flywheel_wal_group_commit_requests",
            "Requests acknowledged by one fsync (group commit size).",
            buckets=_GROUP_BUCKETS,
            registry=r,
        )
        self.flush_seconds = Histogram(
            "flywheel_lake_flush_seconds",
            "Time to write buffered rows to Parquet segments.",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.flush_rows = Counter(
            "flywheel_lake_flushed_rows",
            "Rows written to the lake by flushes (after dedup).",
            registry=r,
        )
        self.flush_errors = Counter(
            "flywheel_lake_flush_errors", "Flushes that failed (rows stay in the WAL).", registry=r
        )
        self.backlog_rows = Gauge(
            "flywheel_wal_backlog_rows",
            "Rows acknowledged (in the WAL) but not yet in the lake.",
            registry=r,
        )
        self.backlog_bytes = Gauge(
            "flywheel_wal_backlog_bytes",
            "Arrow bytes acknowledged but not yet in the lake.",
            registry=r,
        )
        self.backlog_age = Gauge(
            "flywheel_wal_backlog_oldest_age_seconds",
            "Age of the oldest row acknowledged but not yet in the lake.",
            registry=r,
        )
        self.pending_rows = Gauge(
            "flywheel_pending_rows",
            "Rows decoded and waiting for the next group commit.",
            registry=r,
        )

    def watch(self, backlog: Callable[[], Backlog], pending_rows: Callable[[], int]) -> None:
        """Read the backlog gauges from the writer at scrape time."""
        self.backlog_rows.set_function(lambda: backlog().num_rows)
        self.backlog_bytes.set_function(lambda: backlog().num_bytes)
        self.backlog_age.set_function(lambda: backlog().oldest_age_s)
        self.pending_rows.set_function(lambda: float(pending_rows()))

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)
