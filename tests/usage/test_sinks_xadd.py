"""The Redis sink's XADD of a record: one field, ``json``, holding the record's journal line as it is (RESP bulk
strings, as ``encode_command`` writes them), read back by ``UsageRecord.from_fields``."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from gateway.redis import encode_command
from gateway.usage.journal import encode_line
from gateway.usage.record import STREAM_FIELD, UsageRecord
from gateway.usage.sinks import _xadd_commands, _xadd_prefix

BASE = UsageRecord(
    "3f2a9c1e-5b7d-4e21-9a0b-00000000002a", 1_700_000_000_250, "chat", "chat-completions", "starter-sub", "starter",
    None, "gpt-4o-mini", 11, 7, 200, 250.0, False, "gw-1",
)  # fmt: skip

VARIANTS: list[dict[str, Any]] = [
    {},
    {"subscription": None, "product": None, "backend": None, "model": None, "gateway_id": ""},
    {"cache_hit": True, "block_reason": "content-safety:Hate", "failed_attempts": "ptu:429 b:Timeout"},
    {"api": "çà", "model": "modèle \u2603", "gateway_id": "gw-é", "block_reason": "ü" * 80},
    {"latency_ms": 123456.789, "ts_ms": 253_402_300_799_999, "prompt_tokens": 2**31 - 1, "status": 0},
]


@pytest.mark.parametrize("stream", ["sluice:usage", "flux-\u00e9:\udcff"])
def test_a_batch_is_one_xadd_per_line(stream: str):
    records = [msgspec.structs.replace(BASE, **changes) for changes in VARIANTS]
    lines = [encode_line(record) for record in records]
    prefix = _xadd_prefix(stream, 1000)
    expected = [encode_command(("XADD", stream, "MAXLEN", "~", "1000", "*", STREAM_FIELD, line)) for line in lines]
    assert _xadd_commands(prefix, lines) == b"".join(expected)
    assert _xadd_commands(prefix, []) == b""


@pytest.mark.parametrize("changes", VARIANTS)
def test_the_entry_reads_back_as_the_record(changes: dict[str, Any]):
    record = msgspec.structs.replace(BASE, **changes)
    line = encode_line(record)
    assert UsageRecord.from_fields({STREAM_FIELD.encode(): line}) == record  # redis-py without decode_responses
    assert UsageRecord.from_fields({STREAM_FIELD: line.decode()}) == record  # with it
