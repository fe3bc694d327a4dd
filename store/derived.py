"""Relations derived from each lake segment and kept beside the lake, so queries skip that work.

Two steps cost most metrics the most: building requests from their spans (``views.sql``:
``trace_parts_of`` then ``traces_from_parts``) and pricing model calls (``llm_calls_of``, an
ASOF join). Over 30 days of 10M spans every query would group all the spans and price ~3M
calls again. Both depend only on one segment's rows (and the prices), and segments are
immutable, so they are computed once per segment and kept, one file per :data:`KINDS` entry:

    <data>/_cache/derived/<fingerprint>/<kind>/date=YYYY-MM-DD/<segment name>   (today)
    <data>/_cache/derived/<fingerprint>/<kind>/date=YYYY-MM-DD/day-<hash>.parquet  (past days)

(a past day that has stopped receiving segments for DAY_SETTLE is kept whole, one file per kind
named for its set of segments, since a query pays for every file it opens; a late or compacted
segment changes the set and the day is kept again)

* ``trace_parts``: one row per (project, trace_id, hour) of the segment's spans;
* ``llm_calls``: the segment's model calls, priced, with every ``llm_calls`` column but the
  texts, attribute maps, events and links (:data:`CALL_COLUMNS_EXCLUDED`);
* ``root_spans``: the segment's root spans (no parent), without those columns either.

``fingerprint`` hashes what they depend on besides the rows (``views.sql``, the span schema,
DuckDB's version, the prices, the rules that map model names to them and the model-call
operations), so a price change starts a new folder instead of serving stale costs. The mapping
of each data model name (``price_models``) is a function of the name and those, so it is not
hashed: a new model
name does not make every segment's files stale. Instead a segment is kept only once the mapping
has looked at every model name in it; until then it is listed as ``unkept`` and readers compute
its rows from the spans. A file is written to a temp name, fsynced and renamed, like a segment.

A scoped query (``analytics.scope``) reads the kept rows of the hours that lie wholly inside its
window and computes the rest from the spans, only for the partial hours at the window's two
ends; the result is the same as computing everything from the spans. A segment written after
``ensure`` listed the partitions is left out of the whole hours until the next query (the kept
rows lag the lake by at most one query).

The folder is a cache: deleting it loses nothing. Files of segments that compaction removed are
deleted when ``ensure`` next lists their partition, and folders of other fingerprints a day after
they were last written. When the data directory cannot be written, ``ensure`` returns ``None``
and the query computes everything from the spans.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from store.catalog import PARTITION_COLUMN, quote_literal
from store.lake import PARTITION_PREFIX, SPANS, Lake
from store.wal import fsync_dir

log = logging.getLogger(__name__)

CACHE_DIR = "_cache"
DERIVED_DIR = "derived"
#: Name prefix of a past day's kept file (one per kind, for all the day's segments).
DAY_PREFIX = "day-"
#: A past day is kept whole once no segment has been written to it for this long.
DAY_SETTLE = timedelta(minutes=10)
#: Columns of ``llm_calls`` and of root spans that are not kept (no metric over many rows reads
#: them).
CALL_COLUMNS_EXCLUDED = (
    "input_text",
    "output_text",
    "resource_attributes",
    "attributes",
    "events",
    "links",
)
_EXCLUDE = ", ".join(CALL_COLUMNS_EXCLUDED)
#: What is kept per segment: kind -> query over the segment's rows (the relation
#: ``segment_spans``).
KINDS: dict[str, str] = {
    "trace_parts": "SELECT * FROM trace_parts_of('segment_spans')",
    "llm_calls": f"SELECT * EXCLUDE ({_EXCLUDE}) FROM llm_calls_of('segment_spans')",
    "root_spans": (
        f"SELECT * EXCLUDE ({_EXCLUDE}) FROM segment_spans WHERE coalesce(parent_span_id, '') = ''"
    ),
}
#: Folders of other fingerprints (other prices) are removed this long after their last write.
STALE_FINGERPRINT_AGE = timedelta(days=1)
_HOUR = timedelta(hours=1)

# One build at a time per process: concurrent dashboard sessions would build the same parts.
_build_lock = threading.Lock()

_FINGERPRINT_SQL = """
SELECT
    (SELECT coalesce(string_agg(CAST(p AS VARCHAR), '|' ORDER BY p.model, p.effective_from), '')
     FROM prices AS p)
    || '#' ||
    (SELECT coalesce(string_agg(o.operation, '|' ORDER BY o.operation), '')
     FROM llm_operations AS o)
    || '#' ||
    coalesce((SELECT value FROM _catalog_settings WHERE name = 'price_mapping_rules'), '')
"""


# Model names of a segment's calls that the catalog's price mapping has not looked at yet.
_UNMAPPED_SQL = """
SELECT DISTINCT coalesce(s.response_model, s.request_model) AS model
FROM segment_spans AS s
WHERE s.operation IN (SELECT o.operation FROM llm_operations AS o)
    AND coalesce(s.response_model, s.request_model) IS NOT NULL
    AND coalesce(s.response_model, s.request_model) NOT IN (SELECT m.model FROM price_models AS m)
"""


@dataclass(frozen=True)
class Kept:
    """The kept files (by kind) of the segments that may hold spans of the hours ``[start, end)``.

    A file also holds rows outside those hours: readers filter on the hour. ``unkept`` lists
    the segments of those hours that have nothing kept (a model name the price mapping has not
    looked at yet): readers compute their rows from the spans.
    """

    files: dict[str, tuple[str, ...]]
    start: datetime
    end: datetime
    unkept: tuple[str, ...] = ()


def whole_hours(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The hours wholly inside ``[start, end)``, as ``[first, last)`` (empty: first == last)."""
    first = _floor_hour(start)
    if first < start:
        first += _HOUR
    last = max(_floor_hour(end), first)
    return first, last


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def fingerprint(conn: duckdb.DuckDBPyConnection) -> str:
    """What the parts of a segment depend on besides its rows, hashed."""
    views = importlib.resources.files("store").joinpath("views.sql").read_bytes()
    rows = conn.execute(_FINGERPRINT_SQL).fetchall()
    digest = hashlib.sha256(views)
    digest.update(str(SPANS.schema).encode())
    digest.update(duckdb.__version__.encode())  # HASH() ranks the root candidates
    digest.update(str(rows[0][0] if rows else "").encode())
    return digest.hexdigest()[:16]


class Derived:
    """The kept relations of one lake's segments (see the module docstring)."""

    def __init__(self, data_dir: Path | str, *, day_settle: timedelta | None = None) -> None:
        """``day_settle``: how long a past day must have received no segment to be kept whole
        (default :data:`DAY_SETTLE`; a batch load that has finished may say 0)."""
        self.lake = Lake(data_dir)
        self.root = Path(data_dir) / CACHE_DIR / DERIVED_DIR
        self.day_settle = DAY_SETTLE if day_settle is None else day_settle

    def ensure(
        self, conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime
    ) -> Kept | None:
        """Kept files for every segment that may hold spans of the whole hours in ``[start, end)``.

        Missing files are built first. Returns ``None`` when nothing can be kept (the data
        directory is read-only): the caller computes from the spans.
        """
        first, last = whole_hours(start, end)
        if first >= last:
            return Kept({kind: () for kind in KINDS}, first, first)
        cur = conn.cursor()
        try:
            cur.execute("SET TimeZone = 'UTC'")
            base = self.root / fingerprint(cur)
            files: dict[str, list[str]] = {kind: [] for kind in KINDS}
            unkept: list[str] = []
            for partition in self._partitions(first, last):
                kept, missing = self._partition_files(cur, base, partition)
                for kind, names in kept.items():
                    files[kind].extend(names)
                unkept.extend(missing)
        except OSError as exc:
            log.warning("kept relations unavailable (%s); computing from spans", exc)
            return None
        finally:
            cur.close()
        self._remove_stale_fingerprints(base.name)
        return Kept(
            {kind: tuple(names) for kind, names in files.items()}, first, last, tuple(unkept)
        )

    def _partitions(self, first: datetime, last: datetime) -> list[str]:
        lo = f"{PARTITION_PREFIX}{first.astimezone(UTC).date().isoformat()}"
        hi = f"{PARTITION_PREFIX}{(last - timedelta(microseconds=1)).astimezone(UTC).date()}"
        return [p for p in self.lake.partitions(SPANS.name) if lo <= p <= hi]

    def _partition_files(
        self, cur: duckdb.DuckDBPyConnection, base: Path, partition: str
    ) -> tuple[dict[str, list[str]], list[str]]:
        """The kept files of a partition (built if missing), and the segments not kept.

        A settled past day (:meth:`_settled`) is kept as one file per kind for all its
        segments, named for the set of segments, since a query pays for every file it opens
        (0.5 ms each); a partition that still receives segments is kept segment by segment.
        """
        segments = self.lake.list_segments(SPANS.name, partition)
        if segments and self._settled(partition, segments):
            digest = hashlib.sha256("\n".join(s.name for s in segments).encode()).hexdigest()
            day = {
                kind: base / kind / partition / f"{DAY_PREFIX}{digest[:16]}.parquet"
                for kind in KINDS
            }
            if not all(path.exists() for path in day.values()):
                with _build_lock:
                    self._build(cur, segments, day)
            if all(path.exists() for path in day.values()):
                self._remove_others(base, partition, {path.name for path in day.values()})
                return {kind: [str(path.resolve())] for kind, path in day.items()}, []
            # not keepable as a whole day yet (a model name not mapped): segment by segment
        self._remove_others(base, partition, {segment.name for segment in segments})
        files: dict[str, list[str]] = {kind: [] for kind in KINDS}
        unkept: list[str] = []
        for segment in segments:
            kept = {kind: base / kind / partition / segment.name for kind in KINDS}
            if not all(path.exists() for path in kept.values()):
                with _build_lock:
                    if segment.exists():
                        self._build(cur, [segment], kept)
            if all(path.exists() for path in kept.values()):
                for kind, path in kept.items():
                    files[kind].append(str(path.resolve()))
            elif segment.exists():
                unkept.append(str(segment.resolve()))
        return files, unkept

    def _settled(self, partition: str, segments: list[Path]) -> bool:
        """Whether a partition is a past day that has stopped receiving segments: before today
        (UTC) and nothing written to it for ``day_settle`` (late spans arrive for a while after
        midnight, and each new segment would make the whole day be kept again)."""
        if partition >= f"{PARTITION_PREFIX}{datetime.now(UTC).date().isoformat()}":
            return False
        try:
            newest = max(segment.stat().st_mtime for segment in segments)
        except FileNotFoundError:  # compacted under us: not settled
            return False
        return time.time() - newest >= self.day_settle.total_seconds()

    def _remove_others(self, base: Path, partition: str, wanted: set[str]) -> None:
        """Delete a partition's kept files other than ``wanted`` (of compacted segments, or
        replaced by a day file)."""
        for kind in KINDS:
            kind_dir = base / kind / partition
            if kind_dir.is_dir():
                for stale in kind_dir.glob("*.parquet"):
                    if stale.name not in wanted:
                        stale.unlink(missing_ok=True)

    def _build(
        self, cur: duckdb.DuckDBPyConnection, segments: list[Path], kept: dict[str, Path]
    ) -> None:
        """Write ``kept`` (kind -> file) from the rows of ``segments``, unless one of them holds
        a model name the price mapping has not looked at yet."""
        listed = ", ".join(quote_literal(str(segment.resolve())) for segment in segments)
        with_segment = (
            "WITH segment_spans AS NOT MATERIALIZED ("
            f"SELECT * EXCLUDE ({PARTITION_COLUMN}) FROM (SELECT * FROM _empty_spans "
            "UNION ALL BY NAME SELECT * FROM "
            f"read_parquet([{listed}], union_by_name = true, hive_partitioning = false))) "
        )
        name = segments[0].name if len(segments) == 1 else f"{len(segments)} segments"
        started = time.perf_counter()
        try:
            unmapped = cur.execute(with_segment + _UNMAPPED_SQL).fetchall()
        except duckdb.IOException:
            return  # the segment was compacted away: nothing to keep
        if unmapped:
            # The price mapping has not looked at these names yet (the catalog maps the names
            # it has seen when its prices are installed): keep nothing that it would misprice.
            log.debug("not keeping %s yet: unmapped models %s", name, unmapped)
            return
        for kind, path in kept.items():
            if path.exists():
                continue
            if not path.parent.is_dir():
                path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f".{path.stem}-{secrets.token_hex(4)}.parquet.tmp"
            try:
                cur.execute(
                    f"COPY ({with_segment}{KINDS[kind]}) TO {quote_literal(str(tmp))} "
                    "(FORMAT parquet, COMPRESSION zstd)"
                )
                with open(tmp, "rb") as handle:
                    os.fsync(handle.fileno())
                os.rename(tmp, path)
            except duckdb.IOException:
                # The segment was compacted away while we read it: nothing to keep.
                tmp.unlink(missing_ok=True)
                return
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            fsync_dir(path.parent)
        log.debug("derived %s in %.3f s", name, time.perf_counter() - started)

    def _remove_stale_fingerprints(self, current: str) -> None:
        if not self.root.is_dir():
            return
        cutoff = time.time() - STALE_FINGERPRINT_AGE.total_seconds()
        for folder in self.root.iterdir():
            if folder.name == current or not folder.is_dir():
                continue
            with contextlib.suppress(OSError):
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder)
