"""The usage record contract: stream fields and JSON round trips, validation naming the field."""

import uuid

import pytest

from gateway.usage.record import FIELD_NAMES, MAX_LENGTHS, RecordError, UsageRecord

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


def test_a_non_object_is_refused():
    with pytest.raises(RecordError):
        UsageRecord.from_json(["not", "an", "object"])
