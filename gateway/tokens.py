"""Token counting: ``TokenUsage``, the offline BPE tokenizer (``bpe-openai``: tables in the wheel, linear worst
case), prompt estimation (OpenAI's chat accounting) and usage extraction from JSON bodies and SSE streams
(:class:`SseUsageMeter`, a chunk filter that holds at most one incomplete line). See docs/token-limits.md.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import zlib
from collections.abc import Callable
from functools import cache, lru_cache
from typing import Any, Final, NamedTuple

import orjson

__all__ = (
    "CL100K",
    "DEFAULT_ENCODING",
    "IMAGE_TOKENS",
    "O200K",
    "RequestKind",
    "SseUsageMeter",
    "TailUsageMeter",
    "TokenUsage",
    "Tokenizer",
    "completion_text_tokens",
    "decode_body",
    "encoding_for_model",
    "estimate_prompt_tokens",
    "get_tokenizer",
    "request_kind",
    "usage_from_body",
    "usage_from_mapping",
)

logger = logging.getLogger("gateway.tokens")

CL100K: Final = "cl100k_base"
O200K: Final = "o200k_base"
# Unknown models (other vendors behind an OpenAI-compatible API) are estimated with cl100k: its smaller vocabulary
# gives the larger count, which keeps a reservation on the safe side.
DEFAULT_ENCODING: Final = CL100K
TOKENS_PER_MESSAGE: Final = 3
TOKENS_PER_NAME: Final = 1
REPLY_PRIMING: Final = 3
IMAGE_TOKENS: Final = 1200
MAX_SSE_LINE: Final = 1 << 20  # a line longer than this is passed on unparsed (no unbounded holding back)
TAIL_WINDOW: Final = 4096  # bytes of a large JSON body kept to find its usage object
# Prompt estimation remembers the counts of the texts it counted (roles, system prompts, repeated messages), per
# encoding: texts up to REMEMBER_TEXT characters, REMEMBER_CHARS characters in all, then all forgotten at once.
REMEMBER_TEXT: Final = 16384
REMEMBER_CHARS: Final = 1 << 20
MAX_PENDING: Final = 64 << 10  # bytes of SSE deltas held unparsed (counted only when the usage is missing)

# The members of a request that describe tools or the output format: counted as their JSON text.
_TOOL_KEYS: Final = ("tools", "functions", "response_format", "text")
_O200K_PREFIXES: Final = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "gpt-oss", "codex")
_CL100K_PREFIXES: Final = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-3", "text-embedding-ada-002")


#
# Usage
#


class TokenUsage(NamedTuple):
    """Tokens of one request: reported by the backend, or ``estimated`` by the gateway when it reported none
    (a stream the client cancelled, a backend without a usage section). Immutable; a named tuple rather than a frozen
    dataclass because one is built for every LLM request and a frozen dataclass's ``__init__`` costs about five
    times as much (one ``object.__setattr__`` per field)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    model: str | None = None
    estimated: bool = False
    cached_tokens: int = 0  # part of the prompt served from the provider's prompt cache
    reasoning_tokens: int = 0  # part of the completion spent on reasoning


_new_usage: Final = tuple.__new__  # ``_new_usage(TokenUsage, (seven fields))``: TokenUsage without its Python __new__


MAX_USAGE_TOKENS: Final = 10**15  # a reported count above this is treated as this (the counters stay exact)
_NUMERIC: Final = re.compile(r"\s*(\d{1,30})(?:\.0*)?\s*")


def _int(value: Any) -> int:
    """A reported token count: an integer, also when sent as ``16.0`` or ``"16"`` (some backends do); anything
    negative, fractional or not a number counts 0."""
    kind = type(value)
    if kind is int:
        number = value
    elif kind is float:
        if not value.is_integer():  # also NaN and the infinities
            return 0
        number = int(value)
    elif kind is str and len(value) <= 40:
        match = _NUMERIC.fullmatch(value)
        if match is None:
            return 0
        number = int(match.group(1))
    else:
        return 0
    return min(number, MAX_USAGE_TOKENS) if number >= 0 else 0


def usage_from_mapping(usage: dict[str, Any], model: str | None) -> TokenUsage:
    """A TokenUsage from a ``usage`` object: Chat Completions / Completions / Embeddings names
    (``prompt_tokens``, ``completion_tokens``) or Responses names (``input_tokens``, ``output_tokens``)."""
    get = usage.get
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        prompt, completion = get("prompt_tokens"), get("completion_tokens")
        details_in, details_out = get("prompt_tokens_details"), get("completion_tokens_details")
    else:
        prompt, completion = get("input_tokens"), get("output_tokens")
        details_in, details_out = get("input_tokens_details"), get("output_tokens_details")
    total = get("total_tokens")
    # ``_int`` of each count, with its common case (a plain int in range) inline
    if type(prompt) is not int or not 0 <= prompt <= MAX_USAGE_TOKENS:
        prompt = _int(prompt)
    if type(completion) is not int or not 0 <= completion <= MAX_USAGE_TOKENS:
        completion = _int(completion)
    if type(total) is not int or not 0 < total <= MAX_USAGE_TOKENS:
        total = _int(total) or prompt + completion
    cached = _int(details_in.get("cached_tokens")) if isinstance(details_in, dict) else 0
    reasoning = _int(details_out.get("reasoning_tokens")) if isinstance(details_out, dict) else 0
    return _new_usage(TokenUsage, (prompt, completion, total, model, False, cached, reasoning))


def decode_body(body: bytes, encoding: bytes | None) -> bytes | None:
    """The identity bytes of a response body (gzip / deflate undone); None when it cannot be decoded."""
    if not encoding or encoding == b"identity":
        return body
    try:
        if encoding == b"gzip":
            return zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if encoding == b"deflate":
            return zlib.decompress(body)
    except zlib.error:
        return None
    return None


def usage_from_body(body: bytes) -> tuple[dict[str, Any] | None, str | None, Any]:
    """``(usage, model, document)`` of a JSON response body; ``(None, None, None)`` when it is not a JSON object."""
    if body[:1] != b"{" and body.lstrip()[:1] != b"{":
        return None, None, None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None, None
    if not isinstance(document, dict):
        return None, None, None
    usage = document.get("usage")
    model = document.get("model")
    if not isinstance(usage, dict):
        response = document.get("response")  # a Responses API event or wrapper
        if isinstance(response, dict):
            usage, model = response.get("usage"), response.get("model")
    return (usage if isinstance(usage, dict) else None), (model if isinstance(model, str) else None), document


#
# Tokenizer
#


class Tokenizer:
    """Counts the tokens of text with the BPE tables of OpenAI's models (loaded once, shared by all requests)."""

    __slots__ = ("_counters", "_remembering", "default")

    def __init__(self, counters: dict[str, Callable[[str], int]], default: str = DEFAULT_ENCODING) -> None:
        self._counters = counters
        self._remembering: dict[str | None, Callable[[str], int]] = {}
        self.default = default

    @classmethod
    def load(cls, encodings: tuple[str, ...] = (CL100K, O200K)) -> Tokenizer:
        """Load the encoders from the ``bpe-openai`` wheel (no file or network access beyond the wheel)."""
        bindings = _load_bindings()
        if bindings is not None:  # the Rust core: ``count`` without building a token list
            return cls({name: bindings.tokenizer_for_encoding(name).count for name in encodings})
        import bpe_openai  # pragma: no cover - another layout of the package: its public, slower API

        counters: dict[str, Callable[[str], int]] = {}  # pragma: no cover
        for name in encodings:  # pragma: no cover
            encode = bpe_openai.get_encoding(name).encode_ordinary
            counters[name] = lambda text, encode=encode: len(encode(text))  # type: ignore[misc]  # the default binds the loop's encoder; mypy cannot type a lambda's default
        return cls(counters)  # pragma: no cover

    def counter(self, encoding: str | None = None) -> Callable[[str], int]:
        """The ``count(text) -> int`` function of ``encoding`` (the default encoding when unknown)."""
        counters = self._counters
        return counters.get(encoding or self.default) or counters[self.default]

    def count(self, text: str, encoding: str | None = None) -> int:
        return _safe(self.counter(encoding), text) if text else 0

    def prompt_counter(self, encoding: str | None = None) -> Callable[[str], int]:
        """``counter(encoding)`` for prompt estimation: never raises (``_safe``), and remembers the count of each
        text it counted (see ``_remembering``), since prompts repeat their roles and often their system prompt."""
        counter = self._remembering.get(encoding)
        if counter is None:
            name = encoding if encoding in self._counters else self.default
            counter = self._remembering.get(name)
            if counter is None:
                counter = self._remembering[name] = _remembering(self.counter(name))
        return counter


def _remembering(count: Callable[[str], int]) -> Callable[[str], int]:
    """``_safe(count, text)``, remembered (see ``_RememberedCounts``)."""
    return _RememberedCounts(count).__getitem__


class _RememberedCounts(dict[str, int]):
    """Texts and their counts (``_safe(count, text)``), for texts of at most ``REMEMBER_TEXT`` characters; when the
    remembered texts would exceed ``REMEMBER_CHARS`` characters, all are forgotten at once. A count depends on the text
    alone, so a remembered one is the count itself. A remembered text is found by the dictionary's own look-up
    (``__getitem__``, no Python call); ``__missing__`` counts the others."""

    __slots__ = ("count", "size")

    def __init__(self, count: Callable[[str], int]) -> None:
        super().__init__()
        self.count = count
        self.size = 0

    def __missing__(self, text: str) -> int:
        tokens = _safe(self.count, text)
        length = len(text)
        if length <= REMEMBER_TEXT:
            if self.size + length > REMEMBER_CHARS:
                self.clear()
                self.size = 0
            self[text] = tokens
            self.size += length
        return tokens


def _load_bindings() -> Any:
    """``bpe_openai._bindings`` (the compiled core, whose tables are built into the library), loaded without running
    ``bpe_openai/__init__``: that package also parses every ``.tiktoken.gz`` table into Python dicts at import,
    about 80 MB and most of a second per process that the Rust core does not need. None if the layout differs."""
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or spec.origin is None:
        return None
    folder = os.path.dirname(spec.origin)
    for name in sorted(os.listdir(folder)):
        if name.startswith("_bindings.") and name.endswith((".so", ".pyd")):
            module_spec = importlib.util.spec_from_file_location("bpe_openai._bindings", os.path.join(folder, name))
            if module_spec is None or module_spec.loader is None:
                return None
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            return module if hasattr(module, "tokenizer_for_encoding") else None
    return None


@cache
def get_tokenizer() -> Tokenizer:
    """The process-wide tokenizer (its tables are read-only, so forked workers share the pages)."""
    return Tokenizer.load()


_ENCODINGS: dict[str, str] = {}  # model -> encoding, for the first models seen
_ENCODINGS_MAX: Final = 1024


def encoding_for_model(model: Any) -> str:
    """``o200k_base`` for the GPT-4o / 4.1 / 5 and o-series families, ``cl100k_base`` for GPT-4 / 3.5 and the
    embedding models, and the default for anything else (including a missing model)."""
    if not isinstance(model, str) or not model:
        return DEFAULT_ENCODING
    encoding = _ENCODINGS.get(model)
    if encoding is None:
        encoding = _encoding_for_name(model)
        if len(_ENCODINGS) < _ENCODINGS_MAX:
            _ENCODINGS[model] = encoding
    return encoding


def _encoding_for_name(model: str) -> str:
    name = model.lower().rpartition("/")[2]  # "openai/gpt-4o" as some routers spell it
    if name.startswith(_O200K_PREFIXES):
        return O200K
    if name.startswith(_CL100K_PREFIXES):
        return CL100K
    return DEFAULT_ENCODING


#
# Prompt estimation
#


class RequestKind:
    """The OpenAI operation a request body belongs to (from the path it is forwarded to)."""

    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    RESPONSES = "responses"
    OTHER = "other"


@lru_cache(maxsize=1024)  # one path per operation, mostly: the kind is looked up, not recomputed
def request_kind(path: str) -> str:
    path = path.rstrip("/")
    if path.endswith("/chat/completions"):
        return RequestKind.CHAT
    if path.endswith("/completions"):
        return RequestKind.COMPLETIONS
    if path.endswith("/embeddings"):
        return RequestKind.EMBEDDINGS
    if path.endswith("/responses"):
        return RequestKind.RESPONSES
    return RequestKind.OTHER


def estimate_prompt_tokens(body: dict[str, Any], kind: str, tokenizer: Tokenizer, encoding: str | None) -> int:
    """Estimate the prompt tokens the backend will count for ``body`` (an OpenAI request of ``kind``)."""
    count = tokenizer.prompt_counter(encoding)
    total = 0
    if kind == RequestKind.CHAT:
        messages = body.get("messages")
        if isinstance(messages, list):
            for message in messages:
                total += TOKENS_PER_MESSAGE
                if isinstance(message, dict):
                    total += _message_tokens(message, count)
            total += REPLY_PRIMING
        total += _tools_tokens(body, count)
    elif kind == RequestKind.COMPLETIONS:
        total += _input_tokens(body.get("prompt"), count) + _input_tokens(body.get("suffix"), count)
    elif kind == RequestKind.EMBEDDINGS:
        total += _input_tokens(body.get("input"), count)
    elif kind == RequestKind.RESPONSES:
        total += _input_tokens(body.get("instructions"), count)
        value = body.get("input")
        if isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    total += TOKENS_PER_MESSAGE + _message_tokens(item, count)
                else:
                    total += _input_tokens(item, count)
            total += REPLY_PRIMING
        else:
            total += _input_tokens(value, count)
        total += _tools_tokens(body, count)
    return total


def _safe(count: Callable[[str], int], text: str) -> int:
    """``count(text)``; lone surrogates and the like are counted on the repaired text."""
    try:
        return count(text)
    except (UnicodeError, ValueError):
        return count(text.encode("utf-8", "replace").decode("utf-8"))


def _message_tokens(message: dict[str, Any], count: Callable[[str], int]) -> int:
    """The tokens of one message's fields; ``count`` never raises (``prompt_counter``, or a ``_safe`` one) here and in
    the helpers below."""
    total = 0
    for key, value in message.items():
        if isinstance(value, str):
            if value:
                total += count(value)
            if key == "name":
                total += TOKENS_PER_NAME
        elif key == "content" and isinstance(value, list):
            total += _parts_tokens(value, count)
        elif key in ("tool_calls", "function_call") and value:
            total += count(orjson.dumps(value).decode())
    return total


def _parts_tokens(parts: list[Any], count: Callable[[str], int]) -> int:
    total = 0
    for part in parts:
        if isinstance(part, str):
            total += count(part)
        elif isinstance(part, dict):
            kind = part.get("type", "")
            text = part.get("text")
            if isinstance(text, str):
                total += count(text)
            elif isinstance(kind, str) and ("image" in kind or "file" in kind or "audio" in kind):
                total += IMAGE_TOKENS
            elif isinstance(part.get("refusal"), str):
                total += count(part["refusal"])
    return total


def _input_tokens(value: Any, count: Callable[[str], int]) -> int:
    """A prompt / input: a string, a list of strings, a list of token ids, or a list of token-id lists."""
    if isinstance(value, str):
        return count(value) if value else 0
    if isinstance(value, list):
        if value and all(type(item) is int for item in value):
            return len(value)
        total = 0
        for item in value:
            if isinstance(item, dict):  # Responses content parts
                total += _parts_tokens([item], count)
            else:
                total += _input_tokens(item, count)
        return total
    return 0


def _tools_tokens(body: dict[str, Any], count: Callable[[str], int]) -> int:
    total = 0
    for key in _TOOL_KEYS:
        if key in body:  # most requests have none of them: a test for the key costs less than a ``get`` call
            value = body[key]
            if isinstance(value, (list, dict)) and value:
                total += count(orjson.dumps(value).decode())
    return total


def completion_text_tokens(document: dict[str, Any], count: Callable[[str], int]) -> int:
    """Completion tokens of a whole response that carries no usage: the tokens of its generated text."""

    def safe(text: str) -> int:
        return _safe(count, text)

    total = 0
    choices = document.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            text = choice.get("text")
            if isinstance(text, str):
                total += safe(text)
            message = choice.get("message")
            if isinstance(message, dict):
                total += _message_tokens(message, safe)
    output = document.get("output")
    if isinstance(output, list):
        for item in output:
            if isinstance(item, dict):
                total += _message_tokens(item, safe)
    return total


#
# Streams
#


def _plain_delta(payload: bytes) -> bool:
    """True when the event cannot set a usage, nor (a Responses event) a model: no "response" key and no "usage" key
    but ``"usage":null`` (which OpenAI puts on every chunk of a stream that asked for the usage). The word "usage" in
    text, any other spelling of the key, and any ``\\u00`` escape (which could spell a key) send it to the parser.
    (``partition`` rather than ``in``: a byte string's ``in`` first tries the needle as an int, and raises.) The usage
    is tested first: a read of a whole stream ends with its usage event, and its other searches would scan it all."""
    if payload.count(b"usage") != payload.count(b'"usage":null'):
        return False
    return not (payload.partition(b'"response"')[1] or payload.partition(b"\\u00")[1])


# "usage" other than the key of ``"usage":null``
_SUSPICIOUS_USAGE: Final = re.compile(rb'usage(?:(?!":null)|(?<!"usage))').search


def _next_mark(block: bytes, pos: int, marks: list[int]) -> int:
    """Where the next line that is not a plain delta may be: the first '"response"', '\\u00' or 'usage' (other
    than in ``"usage":null``) at or after ``pos``; ``len(block)`` when there is none. ``marks`` caches the three."""
    size = len(block)
    found = marks[0]
    if found < pos:
        found = block.find(b'"response"', pos)
        marks[0] = found = size if found < 0 else found
    escape = marks[1]
    if escape < pos:
        escape = block.find(b"\\u00", pos)
        marks[1] = escape = size if escape < 0 else escape
    usage = marks[2]
    if usage < pos:
        found_usage = _SUSPICIOUS_USAGE(block, pos)
        marks[2] = usage = size if found_usage is None else found_usage.start()
    return min(found, escape, usage)


class SseUsageMeter:
    """A ChunkFilter over an SSE body: counts completion tokens as deltas pass, keeps the backend's ``usage``.

    Only the incomplete line at the end of a chunk is kept between chunks. With ``strip`` (the gateway added
    ``stream_options.include_usage``, the client did not ask for it) the usage-only event (``choices: []``) is
    removed, and complete lines are sent as they are found, so a line split across two reads goes out with the
    second read. ``on_done(meter, complete)`` runs once, from ``finish``.
    """

    __slots__ = (
        "_completion_tokens",
        "_count",
        "_drop_blank",
        "_events",
        "_on_done",
        "_pending",
        "_pending_size",
        "_strip",
        "_tail",
        "broken",
        "model",
        "usage",
    )

    def __init__(
        self,
        count: Callable[[str], int],
        on_done: Callable[[SseUsageMeter, bool], None],
        *,
        strip: bool = False,
    ) -> None:
        self._count = count
        self._on_done: Callable[[SseUsageMeter, bool], None] | None = on_done
        self._strip = strip
        self._tail = b""
        self._drop_blank = False
        self.broken = False  # a line exceeded MAX_SSE_LINE: the rest passes through unparsed
        self._completion_tokens = 0
        self._events = 0
        # Payloads that cannot carry a usage or a model (plain deltas), parsed and counted only when
        # ``completion_tokens`` is read: when the backend reports usage nobody asks, and the stream is not parsed.
        self._pending: list[bytes] = []
        self._pending_size = 0
        self.model: str | None = None
        self.usage: dict[str, Any] | None = None

    @property
    def completion_tokens(self) -> int:
        """Completion tokens of the deltas seen so far (counted from their text)."""
        if self._pending:
            self._count_pending()
        return self._completion_tokens

    @property
    def events(self) -> int:
        """JSON events seen so far."""
        if self._pending:
            self._count_pending()
        return self._events

    def _count_pending(self) -> None:
        pending, self._pending, self._pending_size = self._pending, [], 0
        for lines in pending:
            for line in lines.split(b"\n"):
                if line.startswith(b"data:"):
                    payload = line[5:].strip()
                    if payload[:1] == b"{":
                        self._parse(payload)

    def feed(self, chunk: bytes) -> bytes:
        if self.broken:
            return chunk
        tail = self._tail
        if not tail and not self._drop_blank:
            if self.model is not None:
                # The common read once the model is known: whole lines of plain deltas, set aside as ``_scan`` would
                # (it finds no line that is not a plain delta) without its per-block set-up.
                if chunk[-1:] == b"\n" and _plain_delta(chunk):
                    self._defer(chunk)
                    return chunk
            elif chunk.find(b"\n") == len(chunk) - 2 and chunk[-1:] == b"\n" and chunk[:5] == b"data:":
                # One event of one line before the model is known (a stream's first event, which the forwarder cuts
                # off its read: the role event): its line accounted as ``_scan`` would; its blank line holds nothing.
                if self._data(chunk[:-2]) and self._strip:
                    return b""  # a usage-only event and its blank line, as ``_scan`` drops them
                return chunk
        data = tail + chunk if tail else chunk
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) > MAX_SSE_LINE:
                return self._give_up(data, chunk)
            self._tail = data
            return b"" if self._strip else chunk
        if end == len(data) - 1:
            block, self._tail = data, b""
        else:
            block, self._tail = data[: end + 1], data[end + 1 :]
            if len(self._tail) > MAX_SSE_LINE:
                return self._give_up(data, chunk)
        kept = self._scan(block)
        return kept if self._strip else chunk

    def finish(self, complete: bool) -> bytes:
        tail, self._tail = self._tail, b""
        out = b""
        if tail and not self.broken:  # the stream ended without a final newline
            kept = self._scan(tail + b"\n")
            if self._strip:
                out = kept[:-1]
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(self, complete)
        return out

    def _give_up(self, data: bytes, chunk: bytes) -> bytes:
        self.broken = True
        self._tail = b""
        return data if self._strip else chunk

    def _scan(self, block: bytes) -> bytes:
        """Account the complete lines of ``block`` (ends with a newline); return what the client gets.

        Once the model is known, runs of plain deltas (``_plain_delta``) are set aside unparsed, found with a few
        substring searches over the block; the other lines are read one by one."""
        size = len(block)
        pos = 0
        dropped: list[tuple[int, int]] | None = None
        marks = [-1, -1, -1]  # the next '"response"', '\u00' and suspicious 'usage' at or after pos (size: none)
        while pos < size:
            if self.model is not None and not self._drop_blank:
                stop = _next_mark(block, pos, marks)
                end = size if stop == size else block.rfind(b"\n", pos, stop) + 1
                if end > pos:
                    self._defer(block[pos:end])
                    pos = end
                    continue
            end = block.index(b"\n", pos) + 1
            line = block[pos : end - 1]
            drop = False
            if self._drop_blank:
                self._drop_blank = False
                drop = not line or line == b"\r"
            if not drop and line.startswith(b"data:") and self._data(line) and self._strip:
                drop = True
                self._drop_blank = True
            if drop:
                if dropped is None:
                    dropped = []
                dropped.append((pos, end))
            pos = end
        if dropped is None:
            return block
        kept: list[bytes] = []
        start = 0
        for drop_start, drop_end in dropped:
            kept.append(block[start:drop_start])
            start = drop_end
        kept.append(block[start:])
        return b"".join(kept)

    def _defer(self, lines: bytes) -> None:
        self._pending.append(lines)
        self._pending_size += len(lines)
        if self._pending_size > MAX_PENDING:
            self._count_pending()

    def _data(self, line: bytes) -> bool:
        """Account one ``data:`` line; True when it is a usage-only event (``"choices": []`` and a usage)."""
        payload = line[5:].strip()
        if payload[:1] != b"{":
            return False
        if self.model is not None and _plain_delta(payload):
            # It sets neither the usage nor the model, only adds to the completion tokens: count it when asked.
            self._defer(line)
            return False
        return self._parse(payload)

    def _parse(self, payload: bytes) -> bool:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(event, dict):
            return False
        self._events += 1
        if self.model is None:
            model = event.get("model")
            if isinstance(model, str):
                self.model = model
        choices = event.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    self._choice(choice)
        else:
            kind = event.get("type")
            if isinstance(kind, str):
                self._responses_event(kind, event)
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
            return choices == []
        return False

    def _choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for key in ("content", "refusal", "reasoning_content", "reasoning"):
                text = delta.get(key)
                if isinstance(text, str) and text:
                    self._completion_tokens += _safe(self._count, text)
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict):
                        self._text(function.get("name"))
                        self._text(function.get("arguments"))
            call = delta.get("function_call")
            if isinstance(call, dict):
                self._text(call.get("name"))
                self._text(call.get("arguments"))
        else:
            self._text(choice.get("text"))  # legacy completions

    def _responses_event(self, kind: str, event: dict[str, Any]) -> None:
        if kind.endswith(".delta"):
            self._text(event.get("delta"))
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = event.get("response")
            if isinstance(response, dict):
                usage = response.get("usage")
                if isinstance(usage, dict):
                    self.usage = usage
                model = response.get("model")
                if isinstance(model, str):
                    self.model = model

    def _text(self, text: Any) -> None:
        if isinstance(text, str) and text:
            self._completion_tokens += _safe(self._count, text)


_USAGE_NUMBER = re.compile(rb'"(prompt_tokens|completion_tokens|total_tokens|input_tokens|output_tokens)"\s*:\s*(\d+)')
_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')


class TailUsageMeter:
    """A ChunkFilter for a large JSON body that is streamed, not buffered: keeps its first and last
    ``TAIL_WINDOW`` bytes and reads the usage numbers (and model) from them at the end. Passes bytes unchanged."""

    __slots__ = ("_head", "_on_done", "_tail")

    def __init__(self, on_done: Callable[[dict[str, Any] | None, str | None, bool], None]) -> None:
        self._head = b""
        self._tail = b""
        self._on_done: Callable[[dict[str, Any] | None, str | None, bool], None] | None = on_done

    def feed(self, chunk: bytes) -> bytes:
        if len(self._head) < TAIL_WINDOW:
            self._head += chunk[: TAIL_WINDOW - len(self._head)]
        self._tail = (self._tail + chunk)[-TAIL_WINDOW:] if len(chunk) < TAIL_WINDOW else chunk[-TAIL_WINDOW:]
        return chunk

    def finish(self, complete: bool) -> bytes:
        on_done, self._on_done = self._on_done, None
        if on_done is None:
            return b""
        usage: dict[str, Any] = {}
        model = None
        for window in (self._head, self._tail):
            position = window.rfind(b'"usage"')
            if position >= 0:
                for name, value in _USAGE_NUMBER.findall(window[position:]):
                    usage.setdefault(name.decode(), int(value))
            found = _MODEL.search(window)
            if found and model is None:
                model = found.group(1).decode("utf-8", "replace")
        on_done(usage or None, model, complete)
        return b""
