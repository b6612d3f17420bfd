"""The policy pipeline: inbound -> backend -> outbound, with any GatewayError jumping to on-error."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import cast

import orjson

from gateway.context import RequestContext, ResponseHead
from gateway.errors import MSG_BACKEND_PROTOCOL, MSG_BACKEND_TIMEOUT, GatewayError
from gateway.expressions.errors import ExpressionRuntimeError
from gateway.forward import abandon_filters, build_response, discard_upstream, run_finish
from gateway.http.client import UpstreamError, UpstreamTimeout
from gateway.http.messages import Response, StreamingResponse
from gateway.policy import Base, Policy, PolicyDocument, Section, merge_sections, walk
from gateway.policy.builtin.forward_request import ForwardRequest
from gateway.request_checks import parse_json_body
from gateway.tokens import RequestKind, request_kind

__all__ = (
    "JSON_HEADERS",
    "Pipeline",
    "compile_pipeline",
    "error_body",
    "error_response",
    "run_pipeline",
)

logger = logging.getLogger("gateway.pipeline")

JSON_HEADERS = ((b"content-type", b"application/json; charset=utf-8"),)
REASON_INVALID_BODY = "InvalidRequestBody"
_DEFAULT_FORWARD = ForwardRequest(None)
_DEFAULT_FORWARD.section = Section.BACKEND
# The sections every request passes, as module constants: on Python 3.11 reading an enum member through its class
# (``Section.INBOUND``) costs about 900 machine instructions, a module global about a tenth of that.
_INBOUND = Section.INBOUND
_BACKEND = Section.BACKEND
_OUTBOUND = Section.OUTBOUND


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The effective, compiled steps of one operation in one product context."""

    inbound: tuple[Policy, ...]
    backend: tuple[Policy, ...]
    outbound: tuple[Policy, ...]
    on_error: tuple[Policy, ...]
    requires_request_body: bool = False
    requires_response_body: bool = False
    requires_json_body: bool = False  # a request body must be a JSON object, else 400 before any step
    # The backend section is one forward-request with a literal timeout (or none) and no fail-on-error-status-code:
    # run_pipeline then calls ``ctx.services.forward(ctx, forward_timeout)`` itself, as that step's apply would.
    direct_forward: bool = field(init=False, default=False)
    forward_timeout: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if len(self.backend) == 1:
            step = self.backend[0]
            if type(step) is ForwardRequest and step.timeout_value is None and not step.fail_on_error:
                object.__setattr__(self, "direct_forward", True)
                object.__setattr__(self, "forward_timeout", step.timeout)


def compile_pipeline(documents: Sequence[PolicyDocument | None]) -> Pipeline:
    """Expand ``<base/>`` over ``documents`` (global, product, API, operation) into a Pipeline.

    When no scope puts a ``forward-request`` in the backend section, one with default settings is appended:
    forwarding is what a gateway does, and snapshots need not carry a global policy.
    """
    merged = merge_sections([d.sections if d is not None else None for d in documents], _is_base)
    backend = merged.get(Section.BACKEND, [])
    if not any(isinstance(step, ForwardRequest) for step in walk(backend)):
        backend = [*backend, _DEFAULT_FORWARD]
    steps = list(walk(step for section in merged.values() for step in section))
    return Pipeline(
        inbound=tuple(merged.get(Section.INBOUND, ())),
        backend=tuple(backend),
        outbound=tuple(merged.get(Section.OUTBOUND, ())),
        on_error=tuple(merged.get(Section.ON_ERROR, ())),
        requires_request_body=any(step.requires_request_body or "body" in step.uses for step in steps),
        requires_response_body=any(step.requires_response_body or "response_body" in step.uses for step in steps),
        requires_json_body=any(step.requires_json_body for step in steps),
    )


def _is_base(step: Policy) -> bool:
    return isinstance(step, Base)


def error_body(status: int, message: str) -> bytes:
    return orjson.dumps({"statusCode": status, "message": message})


def error_response(status: int, message: str) -> Response:
    return Response(status, list(JSON_HEADERS), error_body(status, message))


async def run_pipeline(pipeline: Pipeline, ctx: RequestContext) -> Response | StreamingResponse:
    """Run the request through ``pipeline``; ``ctx.on_finish`` callbacks run once the response is over.

    One coroutine for the whole request: the sections are run here, not in coroutines of their own, and a backend
    section that is only a plain ``forward-request`` calls the forwarder directly (``Pipeline.forward_timeout``), so
    the task resumes through fewer frames when the backend answers.
    """
    answer: Response | StreamingResponse
    try:
        try:
            if pipeline.requires_json_body and ctx.request.body:
                _check_body(ctx)
            traced = ctx.trace is not None  # set before the pipeline runs (gateway.app), never by a step
            run_steps = _run_traced if traced else _run_steps
            # A section without steps is not run; it still becomes ``ctx.section``.
            ctx.section = _INBOUND
            if pipeline.inbound:
                response = await run_steps(ctx, _INBOUND, pipeline.inbound)
            else:
                response = None
            outbound = pipeline.outbound
            if response is not None and ctx.resume_outbound_after is not None and ctx.response is not None:
                response = None  # answered from a cache: no backend, outbound from after the cache's store step
                outbound = _resume_after(outbound, ctx.resume_outbound_after)
            elif response is None:
                ctx.section = _BACKEND
                if pipeline.direct_forward and not traced:  # what _run_steps does for this one step
                    try:
                        await ctx.services.forward(ctx, pipeline.forward_timeout)
                    except Exception as exc:
                        raise _as_gateway_error(exc, _BACKEND, pipeline.backend[0]) from exc
                else:
                    response = await run_steps(ctx, _BACKEND, pipeline.backend)
            if response is None:
                if pipeline.requires_response_body:
                    await _read_body(ctx)
                if ctx.response_checks:  # inbound steps' checks of the response (the backend's, or a cached one)
                    checks, ctx.response_checks = ctx.response_checks, []
                    for check in checks:
                        await check(ctx)
                ctx.section = _OUTBOUND
                if outbound:
                    response = await run_steps(ctx, _OUTBOUND, outbound)
            if response is not None:  # a step ended the request (return-response, cache hit, limit, ...)
                abandon_filters(ctx.chunk_filters)
                await discard_upstream(ctx)
                answer = response
            elif ctx.response is None:
                raise GatewayError(
                    500, "The backend section produced no response.", source="backend", reason="NoResponse"
                )
            else:
                answer = build_response(ctx)
        except GatewayError as error:
            await discard_upstream(ctx)
            answer = await _on_error(pipeline, ctx, error)
        except BaseException:  # cancelled (client gone) while a backend response is open: release it
            abandon_filters(ctx.chunk_filters)
            await discard_upstream(ctx)
            raise
    except BaseException:
        run_finish(ctx, False)
        raise
    if ctx.response_headers:
        answer.headers.extend(ctx.response_headers)
    ctx.status = answer.status
    if ctx.on_finish and not isinstance(answer, StreamingResponse):
        run_finish(ctx, True)
    return answer


def _resume_after(steps: tuple[Policy, ...], names: frozenset[str]) -> tuple[Policy, ...]:
    """The outbound steps after the first top-level one named in ``names``; none when there is no such step."""
    for i, step in enumerate(steps):
        if step.name in names:
            return steps[i + 1 :]
    return ()


def _check_body(ctx: RequestContext) -> None:
    """Refuse a body the policies would have to read and cannot: 400, and on-error runs (issue #7). Without this a
    body orjson rejects (NaN, a BOM, a lone surrogate) would pass as "no body": nothing reserved, nothing counted.

    Model operations (chat, completions, embeddings, responses) take JSON only. Elsewhere a body that says it is not
    JSON (multipart audio, images) is let through: it reserves nothing and is counted from the response's usage.
    """
    if request_kind(ctx.forward_path) == RequestKind.OTHER:
        content_type = ctx.request.header(b"content-type")
        if content_type is not None and b"json" not in content_type.lower():
            return
    body = ctx.request.body
    document, problem = parse_json_body(body, need_object=True)
    if problem is not None:
        error = GatewayError(400, problem, source="request", reason=REASON_INVALID_BODY)
        error.section = Section.INBOUND.value
        raise error
    ctx.json_body = body, document


async def _run_section(ctx: RequestContext, section: Section, steps: tuple[Policy, ...]) -> Response | None:
    ctx.section = section
    if ctx.trace is not None:
        return await _run_traced(ctx, section, steps)
    return await _run_steps(ctx, section, steps)


async def _run_steps(ctx: RequestContext, section: Section, steps: tuple[Policy, ...]) -> Response | None:
    step: Policy | None = None
    try:
        for step in steps:
            if step.is_control:  # choose: run the selected branch's steps in place
                response = await _run_steps(ctx, section, step.select(ctx)[1])
            else:
                response = await step.apply(ctx)
            if response is not None:
                return response
    except Exception as exc:
        raise _as_gateway_error(exc, section, step) from exc
    return None


async def _run_traced(ctx: RequestContext, section: Section, steps: tuple[Policy, ...]) -> Response | None:
    trace = ctx.trace
    assert trace is not None
    for step in steps:
        started = perf_counter()
        try:
            if step.is_control:
                branch, chosen = step.select(ctx)
                trace.append(_trace_entry(ctx, section, step, started, {"branch": branch}))
                response = await _run_traced(ctx, section, chosen)
            else:
                response = await step.apply(ctx)
                trace.append(_trace_entry(ctx, section, step, started, step.trace_details(ctx)))
        except Exception as exc:
            if isinstance(exc, GatewayError) and exc.section is not None:
                raise  # from a step nested in this one: already attributed and traced
            error = _as_gateway_error(exc, section, step)
            trace.append(_trace_entry(ctx, section, step, started, {"error": error.message}))
            raise error from exc
        if response is not None:
            return response
    return None


async def _read_body(ctx: RequestContext) -> None:
    """Read a streamed backend body whole, for outbound policies that read ``context.Response.Body``."""
    head = ctx.response
    if head is None or head.upstream is None:
        return
    upstream, head.upstream = head.upstream, None
    try:
        head.body = await upstream.read()
    except UpstreamTimeout:
        raise GatewayError(504, MSG_BACKEND_TIMEOUT, source="forward-request", reason="Timeout") from None
    except UpstreamError:
        reason = "BackendConnectionFailure"
        raise GatewayError(502, MSG_BACKEND_PROTOCOL, source="forward-request", reason=reason) from None
    finally:
        await upstream.aclose()
    head.content_length = len(head.body)


def _trace_entry(
    ctx: RequestContext, section: Section, step: Policy, started: float, details: object
) -> dict[str, object]:
    entry: dict[str, object] = {
        "section": section.value,
        "policy": step.name,
        "scope": step.scope.value if step.scope is not None else None,
        "elapsed_ms": round((perf_counter() - started) * 1000, 3),
        "since_start_ms": round((ctx.services.clock() - ctx.started) * 1000, 3),
    }
    if isinstance(details, dict):
        entry.update(details)
    return entry


def _as_gateway_error(exc: Exception, section: Section, step: Policy | None) -> GatewayError:
    if isinstance(exc, GatewayError):
        error = exc
    elif isinstance(exc, ExpressionRuntimeError):
        error = cast(GatewayError, exc.as_gateway_error(step.name if step else section.value))
        where = f"line {step.line}" if step is not None and step.line is not None else "?"
        level = logging.WARNING if error.status >= 500 else logging.DEBUG  # a 400 is the client's: no log noise
        logger.log(level, "expression of %s (%s, %s) failed: %s", error.source, section.value, where, error.message)
    else:
        logger.exception("policy %s failed in %s", step.name if step else "?", section.value)
        error = GatewayError(
            500, "Internal server error.", source=step.name if step else section.value, reason="InternalError"
        )
    if error.section is None:
        error.section = section.value
        if step is not None:
            error.scope = step.scope.value if step.scope is not None else None
            error.policy_id = step.policy_id
    return error


async def _on_error(pipeline: Pipeline, ctx: RequestContext, error: GatewayError) -> Response | StreamingResponse:
    ctx.last_error = error
    abandon_filters(ctx.chunk_filters)
    body = error_body(error.status, error.client_message)
    ctx.response = ResponseHead(error.status, list(JSON_HEADERS), body=body)
    if ctx.trace is not None:
        ctx.trace.append(
            {
                "section": Section.ON_ERROR.value,
                "error": {
                    "source": error.source,
                    "reason": error.reason,
                    "message": error.message,
                    "status": error.status,
                    "section": error.section,
                    "scope": error.scope,
                    "policy_id": error.policy_id,
                },
            }
        )
    try:
        response = await _run_section(ctx, Section.ON_ERROR, pipeline.on_error)
    except GatewayError as second:
        return error_response(second.status, second.client_message)
    if response is not None:
        return response
    return build_response(ctx)
