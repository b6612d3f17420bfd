"""The ingestion endpoint's parser: a gateway's batch read in one pass with msgspec, everything else left to the
JSON parser and the serializer, with the same records and the same errors."""

import io
import json
import uuid

import msgspec
import pytest
from rest_framework.exceptions import ParseError

from gateway.usage.record import FIELD_NAMES, MAX_LENGTHS, RecordError, UsageRecord
from gateway_admin.api.parsers import JSONParser
from usage.api.parsers import UsageBatchParser, UsageRecords, _PlainRecord
from usage.models import UsageRollup
from usage.services import ingest_records

from .conftest import totals
from .factories import UsageRecordFactory
from .test_records import TRICKY_VALUES


def parse(body: bytes, charset: str | None = "utf-8", parser=UsageBatchParser):
    """The parser's result: `UsageRecords` with their records made `UsageRecord`s, plain data, or the error."""
    context = {} if charset is None else {"encoding": charset}
    try:
        data = parser().parse(io.BytesIO(body), "application/json", context)
    except ParseError as exc:  # compared by its text
        return f"ParseError: {exc}"
    if isinstance(data, UsageRecords):
        return UsageRecords(UsageRecord(*msgspec.structs.astuple(plain)) for plain in data)
    return data


def outcome(data):
    """What the view makes of a batch of one record parsed as plain data: the record, or the field and message (or
    the parser's error)."""
    if isinstance(data, str):
        return data
    try:
        return [UsageRecord.from_json(data["records"][0])]
    except RecordError as exc:
        return (exc.field, exc.message)


def test_the_plain_record_has_the_records_fields_in_order():
    assert _PlainRecord.__struct_fields__ == FIELD_NAMES
    assert _PlainRecord.__struct_defaults__ == (None, None)  # block_reason, failed_attempts: newer fields


@pytest.mark.parametrize(
    "record",
    [
        UsageRecordFactory(),
        UsageRecordFactory(subscription=None, product=None, backend=None, model=None, cache_hit=True, status=0),
        UsageRecordFactory(block_reason="content-safety:Hate", failed_attempts="ptu:429 ptu2:Timeout", latency_ms=0.0),
        UsageRecordFactory(gateway_id="", model="m" * MAX_LENGTHS["model"], api="é" * MAX_LENGTHS["api"]),
    ],
)
def test_a_gateways_batch_is_read_in_one_pass(record):
    records = parse(json.dumps({"records": [record.to_json(), record.to_json()]}).encode())
    assert isinstance(records, UsageRecords)
    assert records == [record, record]


ID = str(uuid.UUID(int=0x0123456789ABCDEF0123456789ABCDEF))
NOT_CANONICAL_IDS = [
    ID + "\n",  # a pattern ending in `$` would let it through
    ID.upper(),
    ID[:-1] + "G",
    "{" + ID + "}",
    ID.replace("-", ""),
    ID[:8] + ID[9] + "-" + ID[10:],  # 36 characters, a dash one place off
    ID[:-1] + "-",  # a fifth dash
    ID[:-1] + "\uff17",  # a fullwidth digit seven
    ID[:-1] + "\x00",
    ID[:-1] + "é",
]


def test_canonical_ids_are_read_in_one_pass():
    ids = [ID, str(uuid.UUID(int=0)), str(uuid.UUID(int=2**128 - 1)), *(str(uuid.uuid4()) for _ in range(100))]
    records = [UsageRecordFactory(request_id=request_id) for request_id in ids]
    parsed = parse(json.dumps({"records": [record.to_json() for record in records]}).encode())
    assert isinstance(parsed, UsageRecords)
    assert [record.request_id for record in parsed] == ids


@pytest.mark.parametrize("request_id", NOT_CANONICAL_IDS, ids=repr)
def test_a_batch_with_an_id_not_in_the_canonical_form_is_read_field_by_field(request_id):
    """The view's serializer then normalises the id (`canonical_guid`) or names the record and field in a 400."""
    data = {"records": [UsageRecordFactory().to_json(), {**UsageRecordFactory().to_json(), "request_id": request_id}]}
    assert parse(json.dumps(data).encode()) == data


@pytest.mark.django_db
def test_ingestion_reads_the_plain_records_as_records():
    records = UsageRecordFactory.build_batch(3, failed_attempts="ptu:429 ptu2:Timeout")
    body = json.dumps({"records": [record.to_json() for record in records]}).encode()
    plain = UsageBatchParser().parse(io.BytesIO(body), "application/json", {"encoding": "utf-8"})
    assert isinstance(plain, UsageRecords)
    assert ingest_records(plain).counted == 3
    assert totals() == {"requests": 3, "prompt_tokens": 30, "completion_tokens": 60, "total_tokens": 90}
    assert UsageRollup.objects.get().failed_attempts == 6


@pytest.mark.parametrize("field", FIELD_NAMES)
@pytest.mark.parametrize("value", TRICKY_VALUES, ids=repr)
def test_a_record_is_read_as_the_field_by_field_reading_reads_it(field, value):
    """Whatever the one-pass reading accepts, it reads as `UsageRecord.from_json` does; the rest is plain data."""
    data = {**UsageRecordFactory(block_reason="b", failed_attempts="ptu:429").to_json(), field: value}
    for body in (data, {name: data[name] for name in data if name != field}):
        text = json.dumps({"records": [body]}).encode()
        parsed, expected = parse(text), outcome(parse(text, parser=JSONParser))
        if isinstance(parsed, UsageRecords):
            assert parsed == expected
        else:
            assert outcome(parsed) == expected


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        # the last of two values wins, as in the JSON parser
        ('"status": 500, "status": 200', False),
        ('"status": 200, "status": "ok"', True),
        # a number the standard library reads as an int, orjson as a float: left to the JSON parser
        ('"prompt_tokens": 12345678901234567890123', True),
        ('"latency_ms": 12345678901234567890123', False),
        ('"latency_ms": 1234567890123456789', False),
        ('"latency_ms": 1e400', True),
        ('"latency_ms": 1e-400', False),
        ('"latency_ms": NaN', True),
        ('"latency_ms": 3', False),
        ('"status": 200.0', True),
        ('"status": 2e2', True),
        ('"model": "\\ud800"', None),
        ('"model": "caf\\u00e9 \\ud83d\\ude00"', False),
        ('"api": ""', True),
        ('"region": "eu"', False),
    ],
)
def test_json_edge_cases_read_as_the_json_parser_reads_them(text, plain):
    record = {name: value for name, value in UsageRecordFactory().to_json().items() if f'"{name}"' not in text}
    body = ('{"records": [' + json.dumps(record)[:-1] + ", " + text + "}]}").encode()
    parsed = parse(body)
    expected = parse(body, parser=JSONParser)
    if plain is not None:
        assert isinstance(parsed, UsageRecords) is not plain
    if isinstance(parsed, UsageRecords):
        assert parsed == outcome(expected)
    else:
        assert parsed == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[1, 2",
        b"[]",
        b'{"records": "x"}',
        b'{"records": [1]}',
        b'{"rows": []}',
        b'{"records": []} x',
        b'\xef\xbb\xbf{"records": []}',
    ],
    ids=repr,
)
def test_what_is_not_a_batch_is_the_json_parsers(body):
    assert parse(body) == parse(body, parser=JSONParser)


def test_an_empty_batch_is_read_in_one_pass():
    assert parse(b'{"records": []}') == UsageRecords()


def test_too_many_records_are_left_to_the_serializer():
    body = json.dumps({"records": [UsageRecordFactory().to_json()] * 10_001}).encode()
    assert not isinstance(UsageBatchParser().parse_body(body), UsageRecords)  # nor a ParseError


def test_another_charset_goes_to_the_json_parser():
    body = json.dumps({"records": [UsageRecordFactory().to_json()]}).encode()
    assert not isinstance(parse(body, "latin-1"), UsageRecords)
    assert isinstance(parse(body, None), UsageRecords)  # settings.DEFAULT_CHARSET, UTF-8
