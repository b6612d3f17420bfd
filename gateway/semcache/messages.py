"""What is embedded, what is stored, and how a stored answer is replayed.

* The **prompt text** of a chat request is its messages, one ``role: content`` line each (system messages left out
  with ``ignore-system-messages``); of a legacy completions request, its ``prompt``. Requests the cache cannot
  answer faithfully are not looked up: several choices (``n`` > 1), tools or functions, no text.
* An **entry** is a complete ``chat.completion`` (or ``text_completion``) document, whether the backend answered
  with JSON or with server-sent events (:class:`StreamAssembler` builds the document while the stream passes).
  Answers with tool calls are not stored.
* A **replay** answers JSON for a JSON request, and for a streamed request the same document as server-sent events
  framed as OpenAI streams them: a role chunk, content chunks, a chunk with the finish reason, the usage chunk when
  ``stream_options.include_usage`` asked for it, then ``data: [DONE]``. Each replay has an ``id`` of its own
  (``chatcmpl-`` or ``cmpl-`` and the request id's hex digits, see :func:`replay_id`): two clients served the same
  entry never see one completion id, and the id leads to the request's ``x-request-id``. The content, ``created``
  (when the model made the answer), ``model`` and ``usage`` are the stored ones.
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson

__all__ = (
    "CHAT",
    "COMPLETIONS",
    "StreamAssembler",
    "entry_from_json",
    "prompt_text",
    "replay_id",
    "replay_json",
    "replay_sse",
)

CHAT: Final = "chat"
COMPLETIONS: Final = "completions"
_UNCACHEABLE_REQUEST: Final = ("tools", "functions", "tool_choice", "function_call")
_PIECE: Final = re.compile(r"\S+\s*|\s+")
_PIECE_CHARS: Final = 48  # content per replayed chunk (about a dozen tokens)


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only text parts can be compared
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                return None
            texts.append(part["text"])
        return "\n".join(texts)
    return None


def prompt_text(body: dict[str, Any], kind: str, ignore_system: bool, max_messages: int | None) -> str | None:
    """The text to embed, or None when this request is not cached (see the module docstring)."""
    n = body.get("n")
    if (n is not None and n != 1) or any(name in body for name in _UNCACHEABLE_REQUEST):
        return None
    if kind == COMPLETIONS:
        prompt = body.get("prompt")
        return prompt if isinstance(prompt, str) and prompt.strip() else None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    lines = []
    for message in messages:
        if not isinstance(message, dict):
            return None
        role = message.get("role")
        if not isinstance(role, str):
            return None
        if ignore_system and role in ("system", "developer"):
            continue
        text = _content_text(message.get("content"))
        if text is None:
            return None
        lines.append(f"{role}: {text}")
    if not lines or (max_messages is not None and len(lines) > max_messages):
        return None
    return "\n".join(lines)


def entry_from_json(data: bytes, kind: str) -> bytes | None:
    """The entry for a JSON answer (the document itself), or None when it must not be stored."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or not _complete(document, kind):
        return None
    return orjson.dumps(document)


def _complete(document: dict[str, Any], kind: str) -> bool:
    choices = document.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    for choice in choices:
        if not isinstance(choice, dict) or not choice.get("finish_reason"):
            return False
        if kind == CHAT:
            message = choice.get("message")
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                return False
            if message.get("tool_calls") or message.get("function_call"):
                return False
        elif not isinstance(choice.get("text"), str):
            return False
    return True


def usage_of(entry: dict[str, Any]) -> tuple[int, int]:
    """``(prompt, completion)`` tokens the stored answer cost when the model made it."""
    usage = entry.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (prompt if type(prompt) is int else 0), (completion if type(completion) is int else 0)


def replay_id(kind: str, request_id: bytes) -> str:
    """The completion id of a replay, shaped as OpenAI's: ``chatcmpl-`` (chat) or ``cmpl-`` (legacy completions),
    then the 32 hex digits of the request id (``x-request-id``), unique per request."""
    prefix = "chatcmpl-" if kind == CHAT else "cmpl-"
    return prefix + request_id.decode("ascii").replace("-", "")


def replay_json(entry: dict[str, Any], response_id: str) -> bytes:
    """The stored answer as the JSON document a request gets, under the id ``response_id``."""
    return orjson.dumps({**entry, "id": response_id})


def _pieces(text: str) -> list[str]:
    pieces: list[str] = []
    current = ""
    for match in _PIECE.finditer(text):
        current += match.group()
        if len(current) >= _PIECE_CHARS:
            pieces.append(current)
            current = ""
    if current or not pieces:
        pieces.append(current)
    return pieces


def _event(document: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(document) + b"\n\n"


def replay_sse(entry: dict[str, Any], kind: str, include_usage: bool, response_id: str) -> bytes:
    """The stored answer as the server-sent events a streamed request gets, every chunk under the id
    ``response_id``."""
    head: dict[str, Any] = {"id": response_id, "created": entry.get("created", 0), "model": entry.get("model")}
    events = []
    for choice in entry.get("choices", []):
        index = choice.get("index", 0)
        if kind == CHAT:
            message = choice.get("message", {})
            base = {**head, "object": "chat.completion.chunk"}
            role = message.get("role", "assistant")
            events.append(_event({**base, "choices": [{"index": index, "delta": {"role": role, "content": ""}}]}))
            for piece in _pieces(message.get("content", "")):
                events.append(_event({**base, "choices": [{"index": index, "delta": {"content": piece}}]}))
            final = {"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}
            events.append(_event({**base, "choices": [final]}))
        else:
            base = {**head, "object": "text_completion"}
            for piece in _pieces(choice.get("text", "")):
                events.append(_event({**base, "choices": [{"index": index, "text": piece, "finish_reason": None}]}))
            final = {"index": index, "text": "", "finish_reason": choice.get("finish_reason")}
            events.append(_event({**base, "choices": [final]}))
    usage = entry.get("usage")
    if include_usage and isinstance(usage, dict):
        obj = "chat.completion.chunk" if kind == CHAT else "text_completion"
        events.append(_event({**head, "object": obj, "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


_HEAD_FIELDS: Final = ("id", "created", "model", "system_fingerprint")


class StreamAssembler:
    """Builds the document of a streamed answer from its server-sent events, as they pass (nothing is held back).

    ``document()`` is the entry to store, or None when the stream was not a complete, storable answer: no
    ``[DONE]``, a choice without a finish reason, tool calls, an ``error`` event, or an event it cannot read.
    """

    __slots__ = ("_buffer", "_choices", "_done", "_failed", "_head", "_usage", "kind", "limit", "size")

    def __init__(self, kind: str, limit: int) -> None:
        self.kind = kind
        self.limit = limit  # bytes of content kept at most; a longer answer is not stored
        self.size = 0
        self._buffer = b""
        self._choices: dict[int, dict[str, Any]] = {}
        self._head: dict[str, Any] = {}
        self._usage: dict[str, Any] | None = None
        self._done = False
        self._failed = False

    def feed(self, chunk: bytes) -> None:
        if self._failed:
            return
        data = self._buffer + chunk
        lines = data.split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > self.limit:
            self._failed = True
            return
        for line in lines:
            line = line.rstrip(b"\r")
            if line.startswith(b"data:"):
                self._data(line[5:].strip())
            if self._failed:
                return

    def _data(self, payload: bytes) -> None:
        if payload == b"[DONE]":
            self._done = True
            return
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._failed = True
            return
        if not isinstance(event, dict) or "error" in event:
            self._failed = True
            return
        head = self._head
        if len(head) < len(_HEAD_FIELDS):  # once all four are in, later events cannot change them
            for name in _HEAD_FIELDS:
                if name in event and name not in head:
                    head[name] = event[name]
        if isinstance(event.get("usage"), dict):
            self._usage = event["usage"]
        for choice in event.get("choices") or ():
            if not isinstance(choice, dict) or not isinstance(choice.get("index", 0), int):
                self._failed = True
                return
            self._choice(choice)

    def _choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        state = self._choices.get(index)
        if state is None:
            state = self._choices[index] = {"role": "assistant", "text": [], "finish": None}
        if self.kind == CHAT:
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict) or delta.get("tool_calls") or delta.get("function_call"):
                self._failed = True
                return
            if isinstance(delta.get("role"), str):
                state["role"] = delta["role"]
            text = delta.get("content")
        else:
            text = choice.get("text")
        if isinstance(text, str) and text:
            state["text"].append(text)
            self.size += len(text)
            if self.size > self.limit:
                self._failed = True
        if choice.get("finish_reason"):
            state["finish"] = choice["finish_reason"]

    def document(self, usage: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The assembled answer (``usage``: what the gateway measured, when the stream carried none to the client)."""
        if self._failed or not self._done or not self._choices:
            return None
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            if state["finish"] is None:
                return None
            text = "".join(state["text"])
            if self.kind == CHAT:
                message = {"role": state["role"], "content": text}
                choices.append({"index": index, "message": message, "finish_reason": state["finish"]})
            else:
                choices.append({"index": index, "text": text, "finish_reason": state["finish"]})
        obj = "chat.completion" if self.kind == CHAT else "text_completion"
        document: dict[str, Any] = {**self._head, "object": obj, "choices": choices}
        final_usage = self._usage or usage
        if final_usage is not None:
            document["usage"] = final_usage
        return document
