"""The Redis sink's XADD of a record: the bytes of every field encoded one by one (RESP bulk strings of
``to_fields``), whatever the record holds, through the cache of the fields that repeat between requests."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gateway.redis import encode_command
from gateway.usage import sinks
from gateway.usage.record import DEFAULT_MAXLEN, UsageRecord
from gateway.usage.sinks import _xadd_command_exact, _xadd_commands, _xadd_prefix

BASE = UsageRecord(
    "3f2a9c1e-5b7d-4e21-9a0b-00000000002a", 1_700_000_000_250, "chat", "chat-completions", "starter-sub", "starter",
    None, "gpt-4o-mini", 11, 7, 200, 250.0, False, "gw-1",
)  # fmt: skip

VARIANTS: list[dict[str, Any]] = [
    {},
    {"subscription": "", "product": None, "backend": "", "model": None, "gateway_id": ""},
    {"cache_hit": True, "block_reason": "content-safety:Hate", "failed_attempts": "ptu:429 b:Timeout"},
    {"api": "çà", "model": "modèle \u2603", "gateway_id": "gw-é", "block_reason": "ü" * 80},
    {"request_id": "not-ascii-\u00e9", "latency_ms": 1e-7},  # out of the gateway's form: the exact path
    {"model": "\udcff surrogate", "failed_attempts": "a:\ud800"},
    {"latency_ms": 123456.789, "ts_ms": 253_402_300_799_999, "prompt_tokens": 2**31 - 1, "status": 0},
    {"latency_ms": 3, "completion_tokens": 0},  # an int latency is written as a float, as to_fields does
]


def reference(prefix_args: tuple[str, ...], record: UsageRecord) -> bytes:
    fields = [part for item in record.to_fields().items() for part in item]
    return encode_command((*prefix_args, *fields))


@pytest.mark.parametrize("changes", VARIANTS)
def test_the_command_is_the_records_fields_in_resp(changes: dict[str, Any]):
    record = dataclasses.replace(BASE, **changes)
    prefix = _xadd_prefix("sluice:usage", DEFAULT_MAXLEN)
    expected = reference(("XADD", "sluice:usage", "MAXLEN", "~", str(DEFAULT_MAXLEN), "*"), record)
    assert _xadd_command_exact(prefix, record) == expected
    assert _xadd_commands(prefix, [record]) == expected  # the runs encoded, then cached
    assert _xadd_commands(prefix, [record]) == expected


def test_records_that_differ_in_one_cached_field_get_their_own_bytes(monkeypatch):
    monkeypatch.setattr(sinks, "_RUNS_CACHED", 3)
    monkeypatch.setattr(sinks, "_runs", {})
    prefix = _xadd_prefix("s", 10)
    records = [dataclasses.replace(BASE, **{name: value}) for name in ("api", "model") for value in ("a", "b", "c")]
    records += [dataclasses.replace(BASE, model=None), dataclasses.replace(BASE, cache_hit=True), BASE]
    for _ in range(2):
        for record in records:
            assert _xadd_commands(prefix, [record]) == _xadd_command_exact(prefix, record)
    assert len(sinks._runs) <= 3  # bounded: the cache starts over


@pytest.mark.parametrize("stream", ["sluice:usage", "flux-\u00e9:\udcff"])
def test_a_batch_is_its_records_commands_joined(stream: str):
    prefix = _xadd_prefix(stream, 1000)
    records = [dataclasses.replace(BASE, **changes) for changes in VARIANTS * 2]
    assert _xadd_commands(prefix, records) == b"".join(_xadd_command_exact(prefix, record) for record in records)
    assert _xadd_commands(prefix, []) == b""
