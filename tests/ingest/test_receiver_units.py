"""The receiver's parts without a server: inflation, tokens, limits, decoding, commit and pool failures."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import psutil
import pytest

from ingest.receiver_config import ConfigError, Limits, TokenTable, parse_tokens, read_tokens
from ingest.receiver_core import Ingestor, Unavailable
from ingest.receiver_decode import BodyTooLarge, MalformedBody, decode_body, inflate
from tests.ingest.receiver_process import count_spans, make_request

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


def _bomb(inflated_mib: int) -> bytes:
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * MiB
    return b"".join(deflater.compress(zeros) for _ in range(inflated_mib)) + deflater.flush()


def test_inflate_stops_at_the_limit_without_inflating_the_bomb() -> None:
    bomb = _bomb(128)
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLarge, match="stopped inflating"):
            inflate(bomb, "gzip", 4 * MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB while refusing a 128 MiB bomb"


def test_inflate_round_trips_and_rejects_bad_data() -> None:
    data = b"spans" * 1000
    assert inflate(gzip.compress(data), "gzip", len(data)) == data
    assert inflate(zlib.compress(data), "deflate", len(data)) == data
    assert inflate(gzip.compress(data[:10]) + gzip.compress(data[10:]), "gzip", 10**6) == data
    assert inflate(data, "identity", len(data)) == data
    with pytest.raises(BodyTooLarge):
        inflate(gzip.compress(data), "gzip", len(data) - 1)
    with pytest.raises(BodyTooLarge):
        inflate(data, "", len(data) - 1)
    with pytest.raises(MalformedBody, match="truncated"):
        inflate(gzip.compress(data)[:-10], "gzip", 10**6)
    with pytest.raises(MalformedBody, match="not valid gzip"):
        inflate(b"\x1f\x8bnope", "gzip", 10**6)
    with pytest.raises(MalformedBody, match="unsupported"):
        inflate(data, "br", 10**6)


def test_tokens_parse_and_errors_never_quote_a_token(tmp_path: Path) -> None:
    assert parse_tokens(" tokA=projA, tokB=proj.b ,") == {"tokA": "projA", "tokB": "proj.b"}
    for text in ("secret-one", "secret-two=bad project!", "=proj"):
        with pytest.raises(ConfigError) as error:
            parse_tokens(text)
        assert "secret" not in str(error.value)
    path = tmp_path / "tokens.toml"
    path.write_text('[tokens]\n"s3cret-file" = "team-a"\n')
    env = {"FLYWHEEL_TOKENS": "s3cret-env=team-b", "FLYWHEEL_TOKENS_FILE": str(path)}
    assert read_tokens(env) == {"s3cret-env": "team-b", "s3cret-file": "team-a"}
    path.write_text('tokens = "s3cret"')
    with pytest.raises(ConfigError) as error:
        read_tokens({"FLYWHEEL_TOKENS_FILE": str(path)})
    assert "s3cret" not in str(error.value)


def test_token_table_maps_bearer_tokens_to_projects() -> None:
    table = TokenTable({"tokA": "a", "tokB": "b"}, "default")
    assert table.enabled and table.projects == ["a", "b"]
    assert table.project_for("Bearer tokA") == "a"
    assert table.project_for("bearer  tokB ") == "b"
    for header in (None, "", "Bearer", "Bearer tokC", "Basic tokA", "tokA", "Bearer tokA2"):
        assert table.project_for(header) is None
    open_table = TokenTable({}, "default")
    assert not open_table.enabled
    assert open_table.project_for(None) == open_table.project_for("Bearer x") == "default"


def test_limits_from_env() -> None:
    limits = Limits.from_env({"FLYWHEEL_MAX_BODY_BYTES": "1024", "FLYWHEEL_FLUSH_MAX_AGE_S": "0.5"})
    assert (limits.max_body_bytes, limits.flush_max_age_s) == (1024, 0.5)
    assert Limits.from_env({}) == Limits()
    with pytest.raises(ConfigError, match="FLYWHEEL_MAX_BACKLOG_ROWS"):
        Limits.from_env({"FLYWHEEL_MAX_BACKLOG_ROWS": "lots"})
    with pytest.raises(ConfigError, match="FLYWHEEL_FLUSH_MAX_AGE_S"):
        Limits.from_env({"FLYWHEEL_FLUSH_MAX_AGE_S": "0"})


def test_decode_body_outcomes() -> None:
    request = make_request(1, 3)
    ok = decode_body(request.SerializeToString(), "", "protobuf", "p", MiB, "test")
    assert ok.failure is None and ok.num_rows == 3 and not ok.errors
    assert ok.spans is not None and set(ok.spans.column("project").to_pylist()) == {"p"}
    request.resource_spans[0].scope_spans[0].spans[0].span_id = b""
    partial = decode_body(request.SerializeToString(), "", "protobuf", "p", MiB, "test")
    assert partial.num_rows == 2 and len(partial.errors) == 1
    assert partial.error_message().startswith("resourceSpans[0].scopeSpans[0].spans[0]: ")
    failure = decode_body(b"\xff", "", "protobuf", "p", MiB, "test").failure
    assert failure is not None and failure[0] == 400
    assert failure[1].startswith("test: byte 0 of 1: malformed OTLP protobuf")
    big = decode_body(gzip.compress(b"{}" + b" " * MiB), "gzip", "json", "p", MiB, "t")
    assert big.failure is not None and big.failure[0] == 413
    empty = decode_body(b"{}", "", "json", "p", MiB, "t")
    assert empty.failure is None and empty.num_rows == 0
    feedback = decode_body(
        json.dumps(
            [{"trace_id": "ab" * 16, "time": 1, "kind": "copy", "project": "x"}, []]
        ).encode(),
        "",
        "feedback",
        "p",
        MiB,
        "t",
    )
    assert feedback.num_rows == 1 and feedback.errors == [("[1]", "expected an object, got list")]
    assert feedback.feedback is not None and feedback.feedback.column("project").to_pylist() == [
        "p"
    ]


def test_a_failed_group_commit_fails_its_requests_and_the_next_one_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingestor = Ingestor(tmp_path / "lake", limits=Limits(decode_workers=0))
    try:
        outcome = ingestor.decode(
            make_request(1, 3).SerializeToString(), "", "protobuf", "default", "t"
        ).result()

        def full_disk(records: object) -> None:
            raise OSError(28, "No space left on device")

        with monkeypatch.context() as patch:
            patch.setattr(ingestor.writer, "append_many", full_disk)
            with pytest.raises(Unavailable, match="No space left"):
                ingestor.commit(outcome.tables()).result(10)
        assert ingestor.pending_rows == 0 and ingestor.healthy()
        ingestor.commit(outcome.tables()).result(10)
        assert ingestor.backlog().num_rows == 3
    finally:
        ingestor.close()
    assert count_spans(tmp_path / "lake") == 3


def test_a_dead_decoder_process_is_replaced(tmp_path: Path) -> None:
    ingestor = Ingestor(tmp_path / "lake", limits=Limits(decode_workers=1))
    body = make_request(1, 2).SerializeToString()
    try:
        assert ingestor.decode(body, "", "protobuf", "default", "t").result(30).num_rows == 2
        workers = [p for p in psutil.Process().children() if "spawn_main" in " ".join(p.cmdline())]
        assert workers
        for worker in workers:
            worker.kill()
        outcomes = []
        num_refused = 0
        for _ in range(50):
            try:
                outcomes.append(ingestor.decode(body, "", "protobuf", "default", "t").result(30))
                break
            except Unavailable:  # 503 / UNAVAILABLE: the sender retries
                num_refused += 1
                time.sleep(0.2)
        assert num_refused >= 1 and outcomes and outcomes[0].num_rows == 2
    finally:
        ingestor.close()


def test_decoder_workers_do_not_load_the_query_engine() -> None:
    """A decoder process needs the schema, not DuckDB or pandas (about 85 MiB each)."""
    code = (
        "import sys, ingest.receiver_decode; print(sorted({'duckdb', 'pandas'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"
