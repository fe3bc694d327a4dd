"""The committed sample data in its three encodings decodes to the same rows."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ingest.files import iter_file

DATA = Path(__file__).parent.parent.parent / "sample_data" / "data"
ORDER = [("trace_id", "ascending"), ("span_id", "ascending")]


@pytest.fixture(scope="module")
def decoded() -> dict[str, pa.Table]:
    tables = {}
    for name in ("traces.pb.gz", "traces.otlp.jsonl.gz", "traces.jsonl.gz"):
        batches = list(iter_file(DATA / name))
        assert [e for b in batches for e in b.errors] == []
        tables[name] = pa.concat_tables([b.spans for b in batches]).sort_by(ORDER)
    return tables


def test_protobuf_otlp_json_and_flat_jsonl_agree(decoded: dict[str, pa.Table]) -> None:
    pb, otlp_json, flat = decoded.values()
    assert pb.num_rows > 20_000
    assert pb.equals(otlp_json)
    assert pb.equals(flat)


def test_sample_conventions_are_normalized(decoded: dict[str, pa.Table]) -> None:
    spans = decoded["traces.pb.gz"]
    calls = spans.filter(pc.equal(spans["operation"], "chat"))
    chat = calls.filter(pc.not_equal(calls["status_code"], "ERROR"))
    assert 0 < calls.num_rows - chat.num_rows < 100  # failed calls carry no response
    # every answered call has a model, token counts and a user question, whichever convention it used
    assert chat["response_model"].null_count == 0
    assert chat["input_tokens"].null_count == 0
    assert chat["output_tokens"].null_count == 0
    assert chat["input_text"].null_count == 0
    support = chat.filter(pc.equal(chat["service_name"], "support-bot"))
    assert support.num_rows > 0 and support["ttft_ms"].null_count < support.num_rows
