"""The usage record contract: stream fields and JSON round trips, validation naming the field."""

import json
import uuid

import orjson
import pytest

from gateway.usage.record import FIELD_NAMES, MAX_LENGTHS, STREAM_FIELD, RecordError, UsageRecord, _from_plain_json

from .factories import UsageRecordFactory


def test_field_names_are_the_contract():
    assert FIELD_NAMES == (
        "request_id",
        "ts_ms",
        "api",
        "operation",
        "subscription",
        "product",
        "backend",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "status",
        "latency_ms",
        "cache_hit",
        "gateway_id",
        "block_reason",
        "failed_attempts",
    )


def test_block_reason_is_optional_and_round_trips():
    data = UsageRecordFactory().to_json()
    del data["block_reason"]  # a record of an older gateway
    assert UsageRecord.from_json(data).block_reason is None
    record = UsageRecordFactory(block_reason="content-safety:Hate")
    assert UsageRecord.from_fields(record.to_fields()) == record
    assert UsageRecord.from_json(record.to_json()) == record
    assert UsageRecord.from_fields(UsageRecordFactory().to_fields()).block_reason is None


def test_stream_fields_are_flat_strings_and_round_trip():
    record = UsageRecordFactory(subscription=None, backend=None, cache_hit=True, latency_ms=12.5)
    fields = record.to_fields()
    assert set(fields) == set(FIELD_NAMES)
    assert all(isinstance(value, str) for value in fields.values())
    assert fields["subscription"] == "" and fields["cache_hit"] == "1" and fields["latency_ms"] == "12.5"
    assert UsageRecord.from_fields(fields) == record
    assert UsageRecord.from_fields({k.encode(): v.encode() for k, v in fields.items()}) == record


def test_json_round_trip():
    record = UsageRecordFactory(model=None, product=None)
    assert UsageRecord.from_json(record.to_json()) == record


def test_request_id_is_normalised_and_must_be_a_guid():
    raw = uuid.uuid4()
    data = UsageRecordFactory(request_id=raw.hex.upper()).to_json()
    assert UsageRecord.from_json(data).request_id == str(raw)
    with pytest.raises(RecordError) as excinfo:
        UsageRecord.from_json({**data, "request_id": "req-1"})
    assert excinfo.value.field == "request_id"


def test_unknown_fields_are_ignored_and_long_names_cut():
    data = {**UsageRecordFactory().to_json(), "region": "eu", "model": "m" * 500}
    record = UsageRecord.from_json(data)
    assert record.model == "m" * MAX_LENGTHS["model"]


def test_failed_attempts_is_optional_for_records_of_older_gateways():
    data = UsageRecordFactory(failed_attempts="ptu:429 ptu2:Timeout").to_json()
    assert UsageRecord.from_json(data).failed_attempts == "ptu:429 ptu2:Timeout"
    del data["failed_attempts"]
    assert UsageRecord.from_json(data).failed_attempts is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ts_ms", "1700000000000"),
        ("ts_ms", -1),
        ("api", None),
        ("api", ""),
        ("operation", 3),
        ("subscription", 5),
        ("prompt_tokens", -1),
        ("prompt_tokens", True),
        ("completion_tokens", 1.5),
        ("status", 1000),
        ("latency_ms", "fast"),
        ("latency_ms", float("nan")),
        ("latency_ms", -0.5),
        ("cache_hit", 1),
        ("gateway_id", 7),
    ],
)
def test_bad_json_values_name_the_field(field, value):
    with pytest.raises(RecordError) as excinfo:
        UsageRecord.from_json({**UsageRecordFactory().to_json(), field: value})
    assert excinfo.value.field == field


@pytest.mark.parametrize("field", [name for name in FIELD_NAMES if name not in ("block_reason", "failed_attempts")])
def test_every_field_is_required(field):
    data = UsageRecordFactory().to_json()
    del data[field]
    with pytest.raises(RecordError, match="required") as excinfo:
        UsageRecord.from_json(data)
    assert excinfo.value.field == field


@pytest.mark.parametrize(
    ("field", "value"),
    [("ts_ms", "--5"), ("ts_ms", "1e3"), ("status", ""), ("latency_ms", "x"), ("cache_hit", "yes")],
)
def test_bad_stream_values_name_the_field(field, value):
    with pytest.raises(RecordError) as excinfo:
        UsageRecord.from_fields({**UsageRecordFactory().to_fields(), field: value})
    assert excinfo.value.field == field


def test_stream_entries_of_the_json_form_read_as_json_records():
    record = UsageRecordFactory(subscription=None, cache_hit=True, latency_ms=12.5, failed_attempts="ptu:429")
    line = json.dumps(record.to_json()) + "\n"
    assert UsageRecord.from_fields({STREAM_FIELD: line}) == record
    assert UsageRecord.from_fields({STREAM_FIELD.encode(): line.encode()}) == record
    newer = {**record.to_json(), "region": "eu"}  # a newer gateway's field: ignored, as in from_json
    del newer["block_reason"]  # and an older one's record
    assert UsageRecord.from_fields({STREAM_FIELD: json.dumps(newer)}) == record
    assert UsageRecord.from_fields({STREAM_FIELD: line}, loads=orjson.loads) == record


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("{", STREAM_FIELD),
        ("", STREAM_FIELD),
        (b"\xff{}", STREAM_FIELD),  # not UTF-8: read with replacement characters, then not JSON
        ("[" * 100_000, STREAM_FIELD),  # deeper than the decoder goes
        ('["not", "an", "object"]', "non_field_errors"),
        ("null", "non_field_errors"),
        ('{"status": 200}', "request_id"),
    ],
)
@pytest.mark.parametrize("loads", [json.loads, orjson.loads])  # the default, and the stream consumer's
def test_unreadable_json_entries_name_the_problem(value, field, loads):
    with pytest.raises(RecordError) as excinfo:
        UsageRecord.from_fields({STREAM_FIELD: value}, loads=loads)
    assert excinfo.value.field == field


@pytest.mark.parametrize(("field", "value"), [("status", "200"), ("cache_hit", "1"), ("latency_ms", None)])
def test_json_entries_are_validated_as_json_records(field, value):
    """In the JSON form numbers and booleans have their JSON types, as in the HTTP body: not the flat strings."""
    data = {**UsageRecordFactory().to_json(), field: value}
    with pytest.raises(RecordError) as excinfo:
        UsageRecord.from_fields({STREAM_FIELD: json.dumps(data)})
    assert excinfo.value.field == field


def test_a_non_object_is_refused():
    with pytest.raises(RecordError):
        UsageRecord.from_json(["not", "an", "object"])


#
# The one-pass reading of a gateway's own records (`_from_plain_json`) against the field-by-field one
#

# Values that the one-pass reading must either read exactly as the field-by-field one does, or leave to it.
TRICKY_VALUES = [
    None,
    "",
    "x",
    "m" * 300,
    "1700000000000",
    0,
    -1,
    1,
    200,
    999,
    1000,
    2**31 - 1,
    2**31,
    253_402_300_799_999,
    253_402_300_800_000,
    2**70,
    1.0,
    1.5,
    -0.0,
    -0.5,
    12.25,
    float("nan"),
    float("inf"),
    True,
    False,
    [],
    {},
    str(uuid.UUID(int=7)),
    uuid.UUID(int=7).hex.upper(),
]


def read(reader, data):
    """The record `reader` gives, or the field and message of the error it raises."""
    try:
        return reader(data)
    except RecordError as exc:
        return (exc.field, exc.message)


@pytest.mark.parametrize("field", FIELD_NAMES)
@pytest.mark.parametrize("value", TRICKY_VALUES, ids=repr)
def test_the_one_pass_reading_gives_what_the_checked_one_gives(field, value):
    data = {**UsageRecordFactory(block_reason="b", failed_attempts="ptu:429").to_json(), field: value}
    assert read(UsageRecord.from_json, data) == read(UsageRecord._from_json_checked, data)
    del data[field]
    assert read(UsageRecord.from_json, data) == read(UsageRecord._from_json_checked, data)


@pytest.mark.parametrize(
    "record",
    [
        UsageRecordFactory(),
        UsageRecordFactory(subscription=None, product=None, backend=None, model=None, cache_hit=True, status=0),
        UsageRecordFactory(block_reason="content-safety:Hate", failed_attempts="ptu:429 ptu2:Timeout", latency_ms=0.0),
    ],
)
def test_a_gateways_record_is_read_in_one_pass(record):
    assert _from_plain_json(UsageRecord, record.to_json()) == record
    assert _from_plain_json(UsageRecord, {"request_id": record.request_id}) is None  # left to the checked reading
