"""The parser of `POST /api/gateway/usage/`: a gateway's batch of usage records decoded and checked in one pass."""

from typing import Annotated

import msgspec

from gateway.usage.record import MAX_LENGTHS, MAX_STATUS, MAX_TOKENS, MAX_TS_MS
from gateway_admin.api.parsers import JSONParser, is_utf8

from .serializers import MAX_RECORDS_PER_POST

__all__ = ("UsageBatchParser", "UsageRecords")


def _name(field: str, shortest: int = 1):
    """A string no longer than the record's readers keep, and not empty (they read "" as None)."""
    return Annotated[str, msgspec.Meta(min_length=shortest, max_length=MAX_LENGTHS[field])]


def _integer(highest: int):
    return Annotated[int, msgspec.Meta(ge=0, le=highest)]


# A canonical request id: 36 characters, 8-4-4-4-12 lowercase hex digits with a dash at each of these offsets.
_ID_LENGTH = 36
_ID_DASHES = (8, 13, 18, 23)
_ID_CHARACTERS = b"0123456789abcdef-"


def _canonical_ids(records: list["_PlainRecord"]) -> bool:
    """Whether every record's request id (36 characters, which the decoder checked) is canonical, as
    `canonical_guid` would leave it: checked over all the ids at once, by C loops over their joined text (msgspec's
    `pattern` called Python's `re` for each id, 1,700 instructions per record)."""
    ids = "".join([record.request_id for record in records])
    if not ids.isascii():
        return False
    text = ids.encode("ascii")
    count = len(records)
    return (
        not text.translate(None, _ID_CHARACTERS)  # nothing but lowercase hex digits and dashes
        and text.count(b"-") == len(_ID_DASHES) * count  # as many dashes as the offsets hold ...
        and all(text[offset::_ID_LENGTH].count(b"-") == count for offset in _ID_DASHES)  # ... and all there
    )


class _PlainRecord(msgspec.Struct, gc=False):
    """A usage record as a gateway writes it (`UsageRecord.to_json`): every value one that `UsageRecord.from_json`
    keeps as it is (a canonical request id, names neither empty nor too long, numbers in range, finite). It has
    `UsageRecord`'s fields, in its order (a test holds it), and the values `from_json` would give them, so
    `ingest_records`, which reads a record's attributes only, takes it as it is: making a `UsageRecord` of each
    (`UsageRecord(*astuple(plain))`) cost 5,100 instructions per record, 8 % of the ingestion, for the same values.
    It is not tracked by the garbage collector (it holds no containers)."""

    request_id: Annotated[str, msgspec.Meta(min_length=_ID_LENGTH, max_length=_ID_LENGTH)]  # and `_canonical_ids`
    ts_ms: _integer(MAX_TS_MS)
    api: _name("api")
    operation: _name("operation")
    subscription: _name("subscription") | None
    product: _name("product") | None
    backend: _name("backend") | None
    model: _name("model") | None
    prompt_tokens: _integer(MAX_TOKENS)
    completion_tokens: _integer(MAX_TOKENS)
    status: _integer(MAX_STATUS)
    latency_ms: Annotated[float, msgspec.Meta(ge=0.0, le=1.7976931348623157e308)]  # finite: 1e400 reads as inf
    cache_hit: bool
    gateway_id: _name("gateway_id", 0)
    block_reason: _name("block_reason") | None = None
    failed_attempts: _name("failed_attempts") | None = None


class _PlainBatch(msgspec.Struct, gc=False):
    records: Annotated[list[_PlainRecord], msgspec.Meta(max_length=MAX_RECORDS_PER_POST)]


_DECODER = msgspec.json.Decoder(_PlainBatch)


class UsageRecords(list):
    """The records of a batch (`_PlainRecord`s), read and checked by the parser: the view needs no serializer."""


class UsageBatchParser(JSONParser):
    """Reads a UTF-8 batch whose records are all as a gateway writes them with msgspec, in C, into `UsageRecords`
    (with the values `UsageRecord.from_json` would give). Anything else (a record with "" for a name, a long name,
    an id to normalise, an integer as 1.0, a missing field, a charset other than UTF-8, malformed JSON) is parsed
    by `JSONParser` into plain data, for the serializer to read or to name the problem of."""

    def parse_body(self, body: bytes, media_type=None, parser_context=None):
        if is_utf8(parser_context):
            try:
                batch = _DECODER.decode(body)
            except msgspec.DecodeError:  # and its subclass ValidationError
                pass
            else:
                if _canonical_ids(batch.records):
                    return UsageRecords(batch.records)
        return super().parse_body(body, media_type, parser_context)
