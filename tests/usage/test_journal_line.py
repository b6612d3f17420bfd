"""The record's line (``encode_line``: the journal's, the HTTP body's and the Redis stream entry's JSON) is encoded by
msgspec from the record itself, and is byte for byte what orjson of ``to_json()`` wrote before; every reader reads
it as it did."""

import io
import json
import random
import struct

import msgspec
import orjson
import pytest

from gateway.usage.journal import encode, encode_line
from gateway.usage.record import STREAM_FIELD, UsageRecord
from usage.api.parsers import UsageBatchParser, UsageRecords

from .factories import UsageRecordFactory


def before(record: UsageRecord) -> bytes:
    """The line as gateways before msgspec wrote it."""
    return orjson.dumps(record.to_json(), option=orjson.OPT_APPEND_NEWLINE)


NAMES = [
    "x",
    "",
    "modèle",
    'quote " backslash \\ slash /',
    "tab\tnew\nline\r\x00\x1f\x7f",
    "\u2028\u2029",
    "😀 ok",
    "m" * 300,
]

RECORDS = [
    UsageRecordFactory(),
    UsageRecordFactory(subscription=None, product=None, backend=None, model=None, cache_hit=True, status=0),
    UsageRecordFactory(block_reason="content-safety:Hate", failed_attempts="ptu:429 paygo:ClientConnectorError"),
    UsageRecordFactory(prompt_tokens=2**31 - 1, completion_tokens=0, ts_ms=253_402_300_799_999, status=999),
    *(UsageRecordFactory(api=name or "a", model=name, gateway_id=name, block_reason=name) for name in NAMES),
]


def latencies() -> list[float]:
    """Latencies a gateway can write (elapsed milliseconds, under 1e16), exact and random, small and large."""
    rng = random.Random(8)
    values = [0.0, 5e-324, 1e-7, 1e-6, 1e-5, 0.1, 1 / 3, 2.5, 12.5, 1e15, 9_999_999_999_999_998.0]
    values += [rng.uniform(0, 10) for _ in range(2000)] + [rng.uniform(0, 1e7) for _ in range(2000)]
    values += [10 ** rng.uniform(-320, 15.9) for _ in range(2000)]
    for _ in range(2000):  # any bit pattern that is a float in range
        value = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        if 0 <= value < 1e16:
            values.append(value)
    return values


@pytest.mark.parametrize("record", RECORDS, ids=repr)
def test_the_line_is_the_bytes_orjson_of_to_json_wrote(record):
    assert encode_line(record) == before(record)
    assert json.loads(encode_line(record)) == record.to_json()


def test_latencies_are_written_as_orjson_wrote_them():
    record = UsageRecordFactory()
    for latency in latencies():
        record.latency_ms = latency
        assert encode_line(record) == before(record), latency


def test_a_latency_of_1e16_ms_or_more_is_the_same_number():
    """The one difference: msgspec writes 1e16 where orjson wrote 1e+16 (316,000 years: no gateway measures it)."""
    record = UsageRecordFactory(latency_ms=1e16)
    assert encode_line(record) == before(record).replace(b"1e+16", b"1e16")
    for latency in (1e16, 1.2345678901234568e17, 1e300, 1.7976931348623157e308):
        record.latency_ms = latency
        assert json.loads(encode_line(record)) == json.loads(before(record)) == record.to_json()
        assert UsageRecord.from_json(orjson.loads(encode_line(record))) == record


def test_a_value_msgspec_does_not_encode_falls_back_to_orjson():
    class Name(str):
        pass

    record = UsageRecordFactory(api=Name("chat"), model=Name("gpt"))
    with pytest.raises(TypeError):
        msgspec.json.encode(record)
    assert encode_line(record) == before(record)


def test_every_reader_reads_the_lines_as_the_records():
    records = [*RECORDS, UsageRecordFactory(latency_ms=1e16)]
    lines = [encode_line(record) for record in records]
    read = [UsageRecord.from_json(record.to_json()) for record in records]  # what the readers make of a record
    # the journal's recovery and the spool: a line at a time
    assert [UsageRecord.from_json(orjson.loads(line)) for line in lines] == read
    assert encode(records) == b"".join(lines)
    # the Redis stream consumer: the line as the entry's one field, bytes or text
    assert [UsageRecord.from_fields({STREAM_FIELD.encode(): line}, loads=orjson.loads) for line in lines] == read
    assert [UsageRecord.from_fields({STREAM_FIELD: line.decode()}) for line in lines] == read
    # the HTTP ingestion endpoint: its msgspec fast path reads a batch of plain records, its fallback the rest
    plain = b'{"records":[' + b",".join(lines[:4]) + b"]}"
    batch = UsageBatchParser().parse(io.BytesIO(plain), "application/json", {"encoding": "utf-8"})
    assert isinstance(batch, UsageRecords)
    assert [UsageRecord(*msgspec.structs.astuple(record)) for record in batch] == read[:4]
    body = b'{"records":[' + b",".join(lines) + b"]}"
    data = UsageBatchParser().parse(io.BytesIO(body), "application/json", {"encoding": "utf-8"})
    assert data == {"records": [record.to_json() for record in records]}
