"""The usage record: the contract between the gateway and the management plane (standard library and msgspec only).

CONTRACT (version 1). The management plane's ``usage`` app and the gateway's request handler code against it.

Record
    ``UsageRecord`` (a ``msgspec.Struct``: slots, positional or keyword construction, ``==`` field by field), one
    for each request the gateway answered:

    =====================  ============  =======================================================================
    field                  type          meaning
    =====================  ============  =======================================================================
    ``request_id``         str           unique per request, GUID-shaped (``gateway.ids``); the deduplication key
    ``ts_ms``              int           request start, epoch milliseconds, UTC
    ``api``                str           API name
    ``operation``          str           operation name
    ``subscription``       str | None    subscription name; None when no key was needed
    ``product``            str | None    product that gave access
    ``backend``            str | None    backend name; None when the API's service URL was used
    ``model``              str | None    model reported by the backend (or, failing that, requested)
    ``prompt_tokens``      int           >= 0
    ``completion_tokens``  int           >= 0
    ``status``             int           HTTP status sent to the client (0 to 999)
    ``latency_ms``         float         request start to last byte sent, >= 0
    ``cache_hit``          bool          answered from the semantic cache
    ``gateway_id``         str           the gateway that served it (``SLUICE_GATEWAY_ID``)
    ``block_reason``       str | None    why a policy refused the request or cut its response
                                         (``content-safety:Hate``, ``content-safety:Blocklist``, ...); optional
    ``failed_attempts``    str | None    forwarding attempts that failed before the answer (``retry``), space
                                         separated ``backend:status`` or ``backend:Reason`` (``ptu:429``);
                                         optional (None when absent). ``backend`` then names the pool member
                                         that answered.
    =====================  ============  =======================================================================

    Readers cut strings longer than ``MAX_LENGTHS`` and read ``""`` as None. They ignore fields they do not
    know, so a newer gateway may add some. A bad record raises ``RecordError`` naming the field.

Wire formats
    Redis (production): stream ``sluice:usage`` (``DEFAULT_STREAM``, configurable), one ``XADD`` entry per
    record, ``MAXLEN ~ 1000000`` (``DEFAULT_MAXLEN``) so the stream stays bounded. Each entry has one field,
    ``json`` (``STREAM_FIELD``): the record's ``to_json()`` object, the line the gateway's journal wrote (UTF-8,
    followed by its newline, which is JSON whitespace). Gateways before this form wrote one flat string field per
    record field instead (``UsageRecord.to_fields``: None is ``""``, booleans are ``"1"`` or ``"0"``, numbers
    are in decimal), and a stream may hold both forms. ``UsageRecord.from_fields`` reads an entry of either form:
    the management plane must be upgraded before its gateways, since an older one counts the new entries invalid.

    HTTP (the embedded default, which has no Redis): ``POST {management}/api/gateway/usage/`` with the header
    ``Authorization: Gateway <token>`` and the body ``{"records": [UsageRecord.to_json(), ...]}``, in JSON types
    (null, true/false, numbers). The answer is ``202`` once the records are committed. A ``400`` names the bad
    field (``{"records": {"3": {"status": ["..."]}}}``); the batch is then logged and dropped, because sending
    it again cannot succeed. A ``413`` splits the batch in two. Any other answer, and any network error, is
    retried.

    The management plane imports only this module: it must stay free of the gateway's runtime (aiohttp,
    uvloop, fcntl, other gateway modules). ``tests/usage/test_record_imports.py`` checks it.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

__all__ = (
    "DEFAULT_MAXLEN",
    "DEFAULT_STREAM",
    "FIELD_NAMES",
    "MAX_LENGTHS",
    "STREAM_FIELD",
    "USAGE_PATH",
    "RecordError",
    "UsageRecord",
    "canonical_guid",
)

DEFAULT_STREAM = "sluice:usage"
STREAM_FIELD = "json"  # the stream entry's one field: the record's JSON object
DEFAULT_MAXLEN = 1_000_000
USAGE_PATH = "/api/gateway/usage/"

MAX_LENGTHS = {
    "api": 80,
    "operation": 80,
    "subscription": 80,
    "product": 80,
    "backend": 80,
    "model": 200,
    "gateway_id": 200,
    "block_reason": 80,
    "failed_attempts": 1000,
}
MAX_TOKENS = 2**31 - 1
MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_STATUS = 999

ERR_REQUIRED = "This field is required."
ERR_NULL = "This field may not be null."
ERR_BLANK = "This field may not be blank."
ERR_STRING = "Not a valid string."
ERR_INTEGER = "A valid integer is required."
ERR_NUMBER = "A valid number is required."
ERR_BOOLEAN = "Must be a valid boolean."
ERR_GUID = "Must be a GUID."
ERR_JSON = "Not valid JSON."


#
# Records
#


class RecordError(ValueError):
    """A usage record that cannot be read: ``field`` names the culprit (as DRF would)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UsageRecord(msgspec.Struct):
    """What the gateway reports about one request (see the module docstring for the meaning of each field). A
    ``msgspec.Struct`` rather than a dataclass: it is built in under half the time, and ``msgspec.json`` encodes it
    in C without ``to_json()``'s dict (``gateway.usage.journal.encode_line``)."""

    request_id: str
    ts_ms: int
    api: str
    operation: str
    subscription: str | None
    product: str | None
    backend: str | None
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    status: int
    latency_ms: float
    cache_hit: bool
    gateway_id: str
    block_reason: str | None = None
    failed_attempts: str | None = None

    def to_fields(self) -> dict[str, str]:
        """The Redis stream entry as gateways before the ``json`` field wrote it: flat strings."""
        return dict(zip(FIELD_NAMES, self.field_values(), strict=True))

    def field_values(self) -> tuple[str, ...]:
        """``to_fields``'s values, in ``FIELD_NAMES`` order."""
        return (
            self.request_id,
            str(self.ts_ms),
            self.api,
            self.operation,
            self.subscription or "",
            self.product or "",
            self.backend or "",
            self.model or "",
            str(self.prompt_tokens),
            str(self.completion_tokens),
            str(self.status),
            repr(float(self.latency_ms)),
            "1" if self.cache_hit else "0",
            self.gateway_id,
            self.block_reason or "",
            self.failed_attempts or "",
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object used by the HTTP sink and the spool file."""
        return {
            "request_id": self.request_id,
            "ts_ms": self.ts_ms,
            "api": self.api,
            "operation": self.operation,
            "subscription": self.subscription,
            "product": self.product,
            "backend": self.backend,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "cache_hit": self.cache_hit,
            "gateway_id": self.gateway_id,
            "block_reason": self.block_reason,
            "failed_attempts": self.failed_attempts,
        }

    @classmethod
    def from_json(cls, data: Any) -> UsageRecord:
        """Validate a JSON object (``to_json``'s shape); raises ``RecordError``. The request id is normalised."""
        record = _from_plain_json(cls, data)
        return record if record is not None else cls._from_json_checked(data)

    @classmethod
    def _from_json_checked(cls, data: Any) -> UsageRecord:
        """``from_json`` field by field: the one that names what is wrong."""
        if not isinstance(data, Mapping):
            raise RecordError("non_field_errors", "Expected an object.")
        return cls(
            request_id=_guid(data),
            ts_ms=_integer(data, "ts_ms", 0, MAX_TS_MS),
            api=_name(data, "api"),
            operation=_name(data, "operation"),
            subscription=_optional_name(data, "subscription"),
            product=_optional_name(data, "product"),
            backend=_optional_name(data, "backend"),
            model=_optional_name(data, "model"),
            prompt_tokens=_integer(data, "prompt_tokens", 0, MAX_TOKENS),
            completion_tokens=_integer(data, "completion_tokens", 0, MAX_TOKENS),
            status=_integer(data, "status", 0, MAX_STATUS),
            latency_ms=_latency(data),
            cache_hit=_boolean(data, "cache_hit"),
            gateway_id=_gateway_id(data),
            block_reason=_newer_name(data, "block_reason"),
            failed_attempts=_newer_name(data, "failed_attempts"),
        )

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any], *, loads: Callable[[str], Any] = json.loads) -> UsageRecord:
        """Read a Redis stream entry: the record's JSON object in the field ``json`` (``from_json``), or the flat
        strings of ``to_fields`` (older gateways). Keys and values may be bytes. Raises ``RecordError``. ``loads``
        decodes the JSON (a faster decoder than the standard library's, if the caller has one: it must raise
        ValueError for what is not JSON)."""
        line = fields.get(STREAM_FIELD)
        if line is None:
            line = fields.get(_STREAM_FIELD_BYTES)
        if line is not None:
            return cls.from_json(_json_object(line, loads))
        data: dict[str, Any] = {_text(key): _text(value) for key, value in fields.items()}
        for name in _INTEGER_FIELDS:
            if isinstance(data.get(name), str):
                data[name] = _parse_int(name, data[name])
        if isinstance(data.get("latency_ms"), str):
            data["latency_ms"] = _parse_float("latency_ms", data["latency_ms"])
        if isinstance(data.get("cache_hit"), str):
            data["cache_hit"] = _parse_bool("cache_hit", data["cache_hit"])
        return cls.from_json(data)


FIELD_NAMES: tuple[str, ...] = UsageRecord.__struct_fields__


def _from_plain_json(cls: type[UsageRecord], data: Any) -> UsageRecord | None:
    """``from_json`` of a record as a gateway writes it (a dict with every field, in its exact JSON type, in range,
    the request id canonical), in one pass; None for anything else, which ``_from_json_checked`` then reads and
    names the problem of. It gives the same record as ``_from_json_checked`` for everything it accepts."""
    if type(data) is not dict:
        return None
    try:
        request_id, ts_ms, api, operation = data["request_id"], data["ts_ms"], data["api"], data["operation"]
        subscription, product, backend, model = data["subscription"], data["product"], data["backend"], data["model"]
        prompt_tokens, completion_tokens = data["prompt_tokens"], data["completion_tokens"]
        status, latency_ms, cache_hit = data["status"], data["latency_ms"], data["cache_hit"]
        gateway_id = data["gateway_id"]
    except KeyError:
        return None
    block_reason, failed_attempts = data.get("block_reason"), data.get("failed_attempts")
    if not (
        type(request_id) is str
        and _CANONICAL_GUID.fullmatch(request_id)
        and type(ts_ms) is int
        and 0 <= ts_ms <= MAX_TS_MS
        and type(prompt_tokens) is int
        and 0 <= prompt_tokens <= MAX_TOKENS
        and type(completion_tokens) is int
        and 0 <= completion_tokens <= MAX_TOKENS
        and type(status) is int
        and 0 <= status <= MAX_STATUS
        and type(latency_ms) is float
        and 0.0 <= latency_ms < math.inf
        and type(cache_hit) is bool
        and type(api) is str
        and api
        and type(operation) is str
        and operation
        and type(gateway_id) is str
    ):
        return None
    for value in (subscription, product, backend, model, block_reason, failed_attempts):
        if value is not None and type(value) is not str:
            return None
    return cls(
        request_id,
        ts_ms,
        api[: MAX_LENGTHS["api"]],
        operation[: MAX_LENGTHS["operation"]],
        subscription[: MAX_LENGTHS["subscription"]] if subscription else None,
        product[: MAX_LENGTHS["product"]] if product else None,
        backend[: MAX_LENGTHS["backend"]] if backend else None,
        model[: MAX_LENGTHS["model"]] if model else None,
        prompt_tokens,
        completion_tokens,
        status,
        latency_ms,
        cache_hit,
        gateway_id[: MAX_LENGTHS["gateway_id"]],
        block_reason[: MAX_LENGTHS["block_reason"]] if block_reason else None,
        failed_attempts[: MAX_LENGTHS["failed_attempts"]] if failed_attempts else None,
    )


_INTEGER_FIELDS = ("ts_ms", "prompt_tokens", "completion_tokens", "status")
_STREAM_FIELD_BYTES = STREAM_FIELD.encode()


def _json_object(value: Any, loads: Callable[[str], Any]) -> Any:
    """The JSON value of a stream entry's ``json`` field (text, or UTF-8 bytes read as ``_text`` reads them)."""
    text = _text(value)
    if not isinstance(text, str):
        raise RecordError(STREAM_FIELD, ERR_STRING)
    try:
        return loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deep for the decoder
        raise RecordError(STREAM_FIELD, ERR_JSON) from None


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _get(data: Mapping[str, Any], name: str) -> Any:
    if name not in data:
        raise RecordError(name, ERR_REQUIRED)
    return data[name]


_CANONICAL_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_guid(value: str) -> str:
    """The GUID's lowercase hyphenated form: one string per GUID, and these strings sort as the GUIDs' numbers do.
    Raises ValueError for a string that is no GUID."""
    if _CANONICAL_GUID.fullmatch(value):  # what the gateway sends: already in the normal form
        return value
    return str(uuid.UUID(value))


def _guid(data: Mapping[str, Any]) -> str:
    value = _get(data, "request_id")
    if not isinstance(value, str):
        raise RecordError("request_id", ERR_STRING)
    try:
        return canonical_guid(value)
    except ValueError:
        raise RecordError("request_id", ERR_GUID) from None


def _name(data: Mapping[str, Any], name: str) -> str:
    value = _optional_name(data, name)
    if value is None:
        raise RecordError(name, ERR_NULL if data[name] is None else ERR_BLANK)
    return value


def _optional_name(data: Mapping[str, Any], name: str) -> str | None:
    value = _get(data, name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordError(name, ERR_STRING)
    return value[: MAX_LENGTHS[name]] or None


def _newer_name(data: Mapping[str, Any], name: str) -> str | None:
    """A field added after the first gateways shipped: a record from an older gateway may not have it."""
    return _optional_name(data, name) if name in data else None


def _gateway_id(data: Mapping[str, Any]) -> str:
    value = _get(data, "gateway_id")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RecordError("gateway_id", ERR_STRING)
    return value[: MAX_LENGTHS["gateway_id"]]


def _integer(data: Mapping[str, Any], name: str, lowest: int, highest: int) -> int:
    value = _get(data, name)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordError(name, ERR_INTEGER)
    if not lowest <= value <= highest:
        raise RecordError(name, f"Must be between {lowest} and {highest}.")
    return value


def _latency(data: Mapping[str, Any]) -> float:
    value = _get(data, "latency_ms")
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RecordError("latency_ms", ERR_NUMBER)
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise RecordError("latency_ms", "Must be a finite number, at least 0.")
    return value


def _boolean(data: Mapping[str, Any], name: str) -> bool:
    value = _get(data, name)
    if not isinstance(value, bool):
        raise RecordError(name, ERR_BOOLEAN)
    return value


def _parse_int(name: str, text: str) -> int:
    if not (text[1:] if text.startswith("-") else text).isdigit():
        raise RecordError(name, ERR_INTEGER)
    return int(text)


def _parse_float(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise RecordError(name, ERR_NUMBER) from None


def _parse_bool(name: str, text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true"):
        return True
    if lowered in ("0", "false"):
        return False
    raise RecordError(name, ERR_BOOLEAN)
