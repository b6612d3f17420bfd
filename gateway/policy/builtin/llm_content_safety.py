"""``llm-content-safety``: check prompts and completions with a content-safety engine; block with 403.

APIM: https://learn.microsoft.com/azure/api-management/llm-content-safety-policy (apim-spec §3.4). Sluice differs
(docs/content-safety.md): three engines (Azure AI Content Safety, OpenAI-compatible moderation, the built-in
blocklists), a ``fail-open`` attribute (default: fail closed), streamed completions checked window by window and cut
with an SSE error event, and ``backend-id``, thresholds and blocklist ids taken literally (no expressions).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any, Final

import orjson

from gateway.blocklists import Blocklist, normalise
from gateway.errors import GatewayError
from gateway.http.client import UpstreamError
from gateway.http.headers import find_header
from gateway.llm_accounting import exchange_for
from gateway.types import Scope

from ..base import Attr, BindEnv, Policy, Section, check_boolean, text_value, truth
from ..errors import PolicyError
from ..values import Value
from ..xml import Element
from ._safety import (
    BUILTIN_BACKEND,
    CATEGORIES,
    Analysis,
    BuiltinEngine,
    Engine,
    EngineError,
    completion_text,
    delta_text,
    engine_for,
    prompt_texts,
    windows,
)

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.messages import Response

__all__ = ("CUT_EVENT", "MSG_BLOCKED", "MSG_UNAVAILABLE", "STREAM_OVERLAP", "STREAM_WINDOW", "LlmContentSafety")

logger = logging.getLogger("gateway.policy.content_safety")

MSG_BLOCKED: Final = "Request failed content safety check."
MSG_UNAVAILABLE: Final = "The content safety check could not be performed."
REASON_BLOCKED: Final = "ContentSafetyViolation"
REASON_UNAVAILABLE: Final = "ContentSafetyUnavailable"
# a streamed completion without window-size is checked every 1000 characters, each window overlapping the previous
# one by 100 (a blocklist term or a harmful phrase across two windows is seen whole in the overlap)
STREAM_WINDOW: Final = 1000
STREAM_OVERLAP: Final = 100
MAX_PARALLEL_CALLS: Final = 4  # engine calls in flight for one text (its windows, and the prompt shield)
OUTPUT_TYPES: Final = ("FourSeverityLevels", "EightSeverityLevels")
# what the client of a cut stream gets last: one SSE error event (OpenAI's error shape), then the end of the body
CUT_EVENT: Final = (
    b"event: error\ndata: "
    + orjson.dumps({"error": {"message": MSG_BLOCKED, "type": "content_filter", "code": "content_filter"}})
    + b"\n\n"
)
_EVENT_STREAM: Final = b"text/event-stream"


class _Blocked(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class LlmContentSafety(Policy):
    name = "llm-content-safety"
    sections = frozenset({Section.INBOUND, Section.OUTBOUND})
    scopes = frozenset({Scope.GLOBAL, Scope.PRODUCT, Scope.API})
    attributes = {
        "backend-id": Attr(required=True, expressions=False),
        "shield-prompt": Attr(default="false"),
        "enforce-on-completions": Attr(default="false"),
        "window-size": Attr(expressions=False),
        "window-overlap-size": Attr(expressions=False),
        "fail-open": Attr(default="false"),  # Sluice's extension: pass when the engine cannot answer
    }
    children = frozenset({"categories", "blocklists"})
    # a prompt the policy cannot read must not pass unchecked: a body that is not a JSON object gets 400 first
    requires_json_body = True

    __slots__ = (
        "backend_id",
        "blocklist_ids",
        "eight_levels",
        "enforce_on_completions",
        "engine",
        "fail_open",
        "local_blocklists",
        "overlap",
        "remote_blocklists",
        "shield_prompt",
        "thresholds",
        "window",
    )

    def __init__(
        self,
        backend_id: str,
        shield_prompt: Value,
        enforce_on_completions: Value,
        fail_open: Value,
        window: int | None,
        overlap: int,
        thresholds: dict[str, int],
        eight_levels: bool,
        blocklist_ids: tuple[str, ...],
    ) -> None:
        super().__init__()
        self.backend_id = backend_id
        self.shield_prompt = shield_prompt
        self.enforce_on_completions = enforce_on_completions
        self.fail_open = fail_open
        self.window = window
        self.overlap = overlap
        self.thresholds = thresholds
        self.eight_levels = eight_levels
        self.blocklist_ids = blocklist_ids
        self.engine: Engine = BuiltinEngine()
        self.local_blocklists: tuple[Blocklist, ...] = ()
        self.remote_blocklists: tuple[str, ...] = ()

    # load time

    @classmethod
    def from_element(cls, el: Element) -> LlmContentSafety:
        attrs = cls.check_element(el)
        for name in ("shield-prompt", "enforce-on-completions", "fail-open"):
            check_boolean(attrs[name], el, name)
        window = _size(el, attrs, "window-size", minimum=1)
        overlap = _size(el, attrs, "window-overlap-size", minimum=0) or 0
        if overlap and window is None:
            raise el.error("<llm-content-safety>: window-overlap-size needs window-size")
        if window is not None and overlap >= window:
            raise el.error("<llm-content-safety>: window-overlap-size must be smaller than window-size")
        thresholds: dict[str, int] = {}
        eight_levels = False
        blocklists: list[str] = []
        seen: set[str] = set()
        for child in el.children:
            if child.tag in seen:
                raise child.error(f"<{child.tag}> may appear only once in <llm-content-safety>")
            seen.add(child.tag)
            if child.tag == "categories":
                eight_levels = _categories(child, thresholds)
            else:
                for item in child.children:
                    if item.tag != "id":
                        raise item.error(f"<{item.tag}> is not allowed inside <blocklists> (use <id>)")
                    value = text_value(item, expressions=False).literal.strip()
                    if not value:
                        raise item.error("<id>: a blocklist name is required")
                    if value not in blocklists:
                        blocklists.append(value)
        backend_id = attrs["backend-id"].literal.strip()
        return cls(
            backend_id,
            attrs["shield-prompt"],
            attrs["enforce-on-completions"],
            attrs["fail-open"],
            window,
            overlap,
            thresholds,
            eight_levels,
            tuple(blocklists),
        )

    def bind(self, env: BindEnv) -> None:
        if self.backend_id == BUILTIN_BACKEND:
            self.engine = BuiltinEngine()
        else:
            try:
                target = env.backend(self.backend_id)
            except PolicyError:
                raise PolicyError(f"llm-content-safety: unknown backend '{self.backend_id}'") from None
            if target.origin is None:
                raise PolicyError(
                    f"llm-content-safety: backend '{self.backend_id}' is a pool; a safety engine is one backend"
                )
            self.engine = engine_for(target)
        engine = self.engine
        local, remote = [], []
        for name in self.blocklist_ids:
            found = env.blocklist(name)
            if found is not None:
                local.append(found)
            elif engine.name == "azure-content-safety":
                remote.append(name)  # a blocklist of the Content Safety resource
            else:
                raise PolicyError(f"llm-content-safety: unknown blocklist '{name}'")
        self.local_blocklists, self.remote_blocklists = tuple(local), tuple(remote)
        if self.thresholds and not engine.analyses:
            raise PolicyError(
                "llm-content-safety: the built-in engine has no harm classifier: <categories> needs a backend"
            )
        literal = self.shield_prompt.literal.strip().lower() if self.shield_prompt.is_literal else ""
        if literal == "true" and not engine.shields:
            raise PolicyError(
                f"llm-content-safety: shield-prompt needs an engine with prompt shields, not {engine.name}"
            )

    # per request

    async def apply(self, ctx: RequestContext) -> Response | None:
        if ctx.section == Section.INBOUND:
            body = exchange_for(ctx).body
            if body is not None:
                texts, user = prompt_texts(body)
                shield = user if truth(self.shield_prompt, ctx) else None
                await self._check(ctx, "prompt", "\n".join(texts), self.window, shield)
            if truth(self.enforce_on_completions, ctx):
                ctx.response_checks.append(self.check_response)
            return None
        await self.check_response(ctx)
        return None

    async def check_response(self, ctx: RequestContext) -> None:
        """Check the backend's successful response: a buffered body now, a streamed one as it passes."""
        head = ctx.response
        if head is None or not 200 <= head.status < 300:
            return
        if head.upstream is not None:
            content_type = find_header(head.headers, b"content-type") or b""
            if content_type.startswith(_EVENT_STREAM):
                ctx.stream_stages.append(lambda source: _CheckedStream(self, ctx, source))
                return
            upstream, head.upstream = head.upstream, None
            try:
                head.body = await upstream.read()
            except UpstreamError:
                raise GatewayError(
                    502, "The backend service sent an invalid response.", source="forward-request",
                    reason="BackendConnectionFailure",
                ) from None  # fmt: skip
            finally:
                await upstream.aclose()
            head.content_length = len(head.body)
        encoding = find_header(head.headers, b"content-encoding")
        if encoding not in (None, b"identity"):
            self._engine_failed(ctx, "completion", EngineError("the response is compressed and cannot be inspected"))
            return
        try:
            document = orjson.loads(head.body) if head.body else None
        except orjson.JSONDecodeError:
            document = None
        await self._check(ctx, "completion", completion_text(document), self.window, None)

    async def _check(
        self, ctx: RequestContext, direction: str, text: str, window: int | None, user: str | None
    ) -> None:
        """Raise GatewayError 403 when ``text`` (or the user prompt, with shields) is unsafe; 500 when the engine
        cannot answer and the policy fails closed."""
        try:
            await self.verdict(ctx, text, window, user)
        except _Blocked as blocked:
            self._record(ctx, direction, "blocked", blocked.reason, blocked.detail)
            ctx.block_reason = f"content-safety:{blocked.reason}"
            error = GatewayError(
                403, f"llm-content-safety: {blocked.detail}", source=self.name, reason=REASON_BLOCKED,
                client_message=MSG_BLOCKED,
            )  # fmt: skip
            error.section = ctx.section.value if ctx.section is not None else None
            raise error from None
        except EngineError as exc:
            self._engine_failed(ctx, direction, exc)
            return
        self._record(ctx, direction, "allowed", "", "")

    def _engine_failed(self, ctx: RequestContext, direction: str, exc: EngineError) -> None:
        logger.warning("content safety engine %s failed: %s", self.engine.name, exc)
        if truth(self.fail_open, ctx):
            self._record(ctx, direction, "failed_open", "EngineUnavailable", str(exc))
            return
        self._record(ctx, direction, "failed_closed", "EngineUnavailable", str(exc))
        ctx.block_reason = "content-safety:EngineUnavailable"
        error = GatewayError(
            500, f"llm-content-safety: {exc}", source=self.name, reason=REASON_UNAVAILABLE,
            client_message=MSG_UNAVAILABLE,
        )  # fmt: skip
        error.section = ctx.section.value if ctx.section is not None else None
        raise error

    async def verdict(self, ctx: RequestContext, text: str, window: int | None, user: str | None) -> None:
        """Raise _Blocked when unsafe, EngineError when the engine cannot answer; return when safe."""
        if self.local_blocklists and text:
            normalised = normalise(text)
            for blocklist in self.local_blocklists:
                item = blocklist.match(normalised)
                if item is not None:
                    raise _Blocked("Blocklist", f"blocklist '{blocklist.name}' matched")
        engine = self.engine
        calls: list[Coroutine[Any, Any, Analysis | bool]] = []
        if engine.analyses and text and (self.thresholds or self.remote_blocklists):
            parts = windows(text, window, self.overlap)
            limit = engine.max_chars
            if limit is not None and any(len(part) > limit for part in parts):
                raise _Blocked("TextTooLong", f"text longer than the engine's limit of {limit} characters")
            pool = ctx.services.pool
            categories = tuple(self.thresholds)
            calls = [
                engine.analyze(pool, part, categories, self.eight_levels, self.remote_blocklists) for part in parts
            ]
        if user:
            calls.append(engine.shield(ctx.services.pool, user, ()))
        results: list[Analysis | bool | BaseException] = []
        for start in range(0, len(calls), MAX_PARALLEL_CALLS):  # a long text: a few calls at a time
            results += await asyncio.gather(*calls[start : start + MAX_PARALLEL_CALLS], return_exceptions=True)
        failure: BaseException | None = None
        for result in results:
            if isinstance(result, BaseException):
                failure = failure or result  # a block found by another call still wins (fail-open must not hide it)
                continue
            if isinstance(result, bool):
                if result:
                    raise _Blocked("PromptAttack", "prompt shields detected an attack")
                continue
            if result.blocklist is not None:
                raise _Blocked("Blocklist", f"blocklist '{result.blocklist}' matched")
            for category, threshold in self.thresholds.items():
                severity = result.severities.get(category, 0)
                if severity >= threshold:
                    raise _Blocked(category, f"{category} severity {severity} >= threshold {threshold}")
        if failure is not None:
            raise failure

    def _record(self, ctx: RequestContext, direction: str, outcome: str, reason: str, detail: str) -> None:
        metrics = ctx.services.metrics
        if metrics is not None:
            metrics.record_content_safety(ctx.api.name, direction, outcome, reason)
        if ctx.trace is not None:
            entry: dict[str, Any] = {
                "section": ctx.section.value if ctx.section is not None else "",
                "policy": self.name,
                "check": direction,
                "engine": self.engine.name,
                "outcome": outcome,
            }
            if reason:
                entry["reason"] = reason
            if detail:
                entry["detail"] = detail
            if outcome.startswith("failed"):
                entry["fail-open"] = outcome == "failed_open"
            ctx.trace.append(entry)


def _size(el: Element, attrs: dict[str, Value], name: str, *, minimum: int) -> int | None:
    value = attrs.get(name)
    if value is None:
        return None
    text = value.literal.strip()
    if not text.isdigit() or int(text) < minimum or int(text) > 1_000_000:
        raise el.error(f"<llm-content-safety>: attribute '{name}' must be an integer from {minimum} to 1000000")
    return int(text)


def _categories(el: Element, thresholds: dict[str, int]) -> bool:
    """Fill ``thresholds`` from ``<categories>``; return True for EightSeverityLevels."""
    for attr in el.attrs:
        if attr != "output-type":
            raise el.error(f"<categories>: unknown attribute '{attr}' (allowed: output-type)")
    output_type = el.attrs.get("output-type", OUTPUT_TYPES[0])
    if output_type not in OUTPUT_TYPES:
        raise el.error(f"<categories>: output-type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
    for child in el.children:
        if child.tag != "category":
            raise child.error(f"<{child.tag}> is not allowed inside <categories>")
        unknown = set(child.attrs) - {"name", "threshold"}
        if unknown:
            raise child.error(f"<category>: unknown attribute '{sorted(unknown)[0]}' (allowed: name, threshold)")
        name = child.attrs.get("name")
        if name is None or "threshold" not in child.attrs:
            raise child.error(f"<category>: missing required attribute '{'name' if name is None else 'threshold'}'")
        if name not in CATEGORIES:
            raise child.error(f"<category>: name must be one of {', '.join(CATEGORIES)}, got {name!r}")
        if name in thresholds:
            raise child.error(f"<category>: '{name}' appears twice")
        threshold = child.attrs["threshold"].strip()
        if not threshold.isdigit() or int(threshold) > 7:
            raise child.error(f"<category>: threshold must be an integer from 0 to 7, got {threshold!r}")
        thresholds[name] = int(threshold)
    return output_type == OUTPUT_TYPES[1]


class _CheckedStream:
    """A streamed completion, checked window by window before the client sees it (a ``StreamStage``).

    SSE events are held until the text they carry has been checked: each time ``window`` unchecked characters have
    arrived, they are checked (with the last ``overlap`` characters of the previous window), and the events wholly
    inside checked text are released. At the end of the stream the rest is checked. When a window is unsafe (or the
    engine fails and the policy fails closed) the client gets ``CUT_EVENT`` and the body ends: no unsafe text is
    ever sent, and the response is recorded with ``ctx.block_reason``.
    """

    __slots__ = ("_buffer", "_checked", "_ctx", "_done", "_held", "_length", "_overlap", "_parts", "_pending",
                 "_policy", "_ready", "_source", "_start", "_window")  # fmt: skip

    def __init__(self, policy: LlmContentSafety, ctx: RequestContext, source: AsyncIterator[bytes]) -> None:
        self._policy = policy
        self._ctx = ctx
        self._source = source
        if policy.window:
            self._window, self._overlap = policy.window, policy.overlap
        else:
            self._window, self._overlap = STREAM_WINDOW, STREAM_OVERLAP
        self._buffer = b""  # the start of an event whose end has not arrived
        self._held: deque[tuple[bytes, int]] = deque()  # (event, offset of the end of its text)
        self._ready: list[bytes] = []
        # offsets count characters of the streamed text from its start
        self._parts: list[str] = []  # the text from ``_start`` on, joined only when a window is full
        self._pending = 0  # its length
        self._length = 0  # all the text so far
        self._start = 0  # where the next window starts
        self._checked = 0  # the end of the text checked so far
        self._done = False

    def __aiter__(self) -> _CheckedStream:
        return self

    async def __anext__(self) -> bytes:
        while not self._ready:
            if self._done:
                raise StopAsyncIteration
            try:
                chunk = await self._source.__anext__()
            except StopAsyncIteration:
                await self._end()
                continue
            self._take(chunk)
            if self._pending >= self._window:
                await self._check_full_windows()
        out = b"".join(self._ready)
        self._ready.clear()
        return out

    def _take(self, chunk: bytes) -> None:
        *events, self._buffer = (self._buffer + chunk).replace(b"\r\n", b"\n").split(b"\n\n")
        for event in events:
            text = _event_text(event)
            if text:
                self._parts.append(text)
                self._pending += len(text)
                self._length += len(text)
            self._held.append((event + b"\n\n", self._length))

    async def _check_full_windows(self) -> None:
        text = "".join(self._parts)
        window, step = self._window, self._window - self._overlap
        position = 0
        while len(text) - position >= window:
            if not await self._passes(text[position : position + window]):
                return
            self._checked = self._start + window
            self._release(self._checked)
            position += step
            self._start += step
        self._parts = [text[position:]]
        self._pending = len(text) - position

    async def _end(self) -> None:
        if self._buffer:
            self._take(b"\n\n")
        if self._length > self._checked and not await self._passes("".join(self._parts)):
            return
        self._release(None)
        self._done = True

    def _release(self, upto: int | None) -> None:
        held = self._held
        while held and (upto is None or held[0][1] <= upto):
            self._ready.append(held.popleft()[0])

    async def _passes(self, text: str) -> bool:
        """Check one window; on a block (or a fail-closed engine failure) cut the stream and return False."""
        policy, ctx = self._policy, self._ctx
        try:
            await policy._check(ctx, "completion", text, None, None)
        except GatewayError:
            self._held.clear()
            self._ready.append(CUT_EVENT)
            self._done = True
            return False
        return True


def _event_text(event: bytes) -> str:
    if event.startswith(b"data:") and b"\n" not in event:  # one data line, as most backends send
        data = event[5:].strip()
        if data[:1] in (b"{", b"["):
            try:
                return delta_text(orjson.loads(data))
            except orjson.JSONDecodeError:
                pass
        return ""
    text = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            data = line[5:].strip()
            if data and data[:1] in b"{[":
                try:
                    text.append(delta_text(orjson.loads(data)))
                except orjson.JSONDecodeError:
                    continue
    return "".join(text)
