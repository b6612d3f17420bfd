"""APIM's ``context`` object model over :class:`gateway.context.RequestContext`.

Nothing is built up front: each member reads the RequestContext when an expression touches it. The runtime value
of ``context``, ``context.Request``, ``context.Subscription`` and ``context.Request.Body`` is the RequestContext
itself; the others are the gateway's own objects (ApiEntry, OperationEntry, ProductEntry, ResponseHead,
GatewayError, the header list, the variables dict) or a small :class:`Url`.

What it reads of ``ctx.services`` (``gateway.context.Services``): ``now``, the wall clock for ``DateTime.UtcNow``
and ``context.Timestamp`` (None: the system clock); ``clock`` (monotonic seconds) for ``context.Elapsed``;
``deployment`` for ``context.Deployment`` (None: empty strings). The most recently parsed body is remembered, and
a body already parsed by the LLM exchange (``ctx.llm``) is reused.

Deviations from APIM, by design:

* ``Body.As<T>(preserveContent: false)`` does not consume the body: the gateway keeps the bytes and forwards them.
* ``context.Request.Headers`` are the headers that will be forwarded (so ``set-header`` changes show), plus the
  client's headers the gateway never forwards (Host, the subscription-key header, hop-by-hop and framing headers);
  the gateway's own trace header is never visible. ``GetValueOrDefault`` joins repeated headers with ", ".
* ``context.Request.Url`` is the URL after routing (the subscription-key query parameter removed);
  ``OriginalUrl`` is the one the client sent. ``QueryString`` starts with "?"; query names are case-insensitive.
* ``context.Subscription.Key`` is the key the caller presented; the primary/secondary keys are not known (the
  gateway holds only hashes). ``context.User`` is always null (there are no users).
"""

from __future__ import annotations

import http
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote_plus, urlsplit

from gateway.types import Deployment

from .conversions import cast_converter, default_of
from .dotnet import Guid, utc
from .errors import ExpressionRuntimeError, RequestBodyError
from .jsonlib import parse_json
from .runtime import wall_now
from .typesys import (
    BOOL,
    DATETIME,
    GUID,
    INT,
    JARRAY,
    JOBJECT,
    JTOKEN,
    OBJECT,
    STRING,
    TIMESPAN,
    Param,
    define,
)

if TYPE_CHECKING:
    from gateway.context import RequestContext, ResponseHead

__all__ = ("ANY_TYPE", "CONTEXT_TYPE", "DEFAULT_T", "Deployment", "Url")

CONTEXT_TYPE: Final = "IProxyRequestContext"
ANY_TYPE: Final = ("*",)  # a generic method accepting any type argument


class _DefaultOfT:
    def __repr__(self) -> str:
        return "default(T)"


DEFAULT_T: Final = _DefaultOfT()  # the default value of an optional parameter of type T

BODY_TYPE_ARGS: Final = (STRING, JOBJECT, JTOKEN, JARRAY, "byte[]")

MSG_KEY_NOT_FOUND: Final = "The given key '{}' was not present in the dictionary."
MSG_KEYS_UNAVAILABLE: Final = (
    "context.Subscription.{} is not available: the gateway stores only hashes of subscription keys; "
    "use context.Subscription.Key (the key the caller presented)"
)
MSG_NOT_TRACKED: Final = "{} is not available: the gateway does not track it"
MSG_STREAMED_BODY: Final = (
    "The response body is being streamed and cannot be read; the policy must ask the pipeline to buffer it."
)


_NO_DEPLOYMENT: Final = Deployment()


class Url:
    """An ``IUrl``: scheme, host, port, path and the raw query (without "?")."""

    __slots__ = ("_query", "host", "path", "port", "query", "scheme")
    net_name = "IUrl"

    def __init__(self, scheme: str, host: str, port: int, path: str, query: str) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.path = path
        self.query = query
        self._query: dict[str, tuple[str, ...]] | None = None

    def net_string(self) -> str:
        default_port = (self.scheme == "http" and self.port == 80) or (self.scheme == "https" and self.port == 443)
        authority = self.host if default_port or self.port < 0 else f"{self.host}:{self.port}"
        return f"{self.scheme}://{authority}{self.path}{'?' + self.query if self.query else ''}"

    def query_map(self) -> dict[str, tuple[str, ...]]:
        if self._query is None:
            grouped: dict[str, list[str]] = {}
            for part in self.query.split("&") if self.query else ():
                name, _, value = part.partition("=")
                grouped.setdefault(unquote_plus(name).lower(), []).append(unquote_plus(value))
            self._query = {name: tuple(values) for name, values in grouped.items()}
        return self._query

    def __repr__(self) -> str:
        return f"Url({self.net_string()!r})"


#
# Helpers
#


def _decode(value: bytes) -> str:
    return value.decode("latin-1")


def _split_host(host: str, scheme: str) -> tuple[str, int]:
    default = 443 if scheme == "https" else 80
    if host.startswith("["):
        close = host.find("]")
        rest = host[close + 1 :]
        return host[: close + 1], int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name, int(port)
    return host, default


def _request_url(ctx: RequestContext, original: bool) -> Url:
    request = ctx.request
    proto = request.header(b"x-forwarded-proto")
    scheme = "https" if proto is not None and proto.strip().lower() == b"https" else "http"
    host, port = _split_host(_decode(request.header(b"host") or b""), scheme)
    if original:
        return Url(scheme, host, port, request.path, request.query)
    prefix = "/" + ctx.api.path if ctx.api.path else ""
    return Url(scheme, host, port, prefix + ctx.forward_path if prefix or ctx.forward_path else "/", ctx.query)


def _service_url(url: str) -> Url | None:
    if not url:
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port if parts.port is not None else (443 if scheme == "https" else 80)
    return Url(scheme, parts.hostname or "", port, parts.path or "/", parts.query)


def _presented_key(ctx: RequestContext) -> str | None:
    """The subscription key the caller sent (header first, then query parameter), as the gateway read it."""
    from gateway.subscription import split_query_param

    api = ctx.api
    key = ctx.request.header(api.key_header)
    if key:
        return key.decode("utf-8", errors="replace")
    value, _ = split_query_param(ctx.request.query, api.key_query)
    return value or None


# The most recently parsed body: (body bytes object, parsed value), replaced as a whole so that a body is never
# paired with another one's value.
_last_body: list[tuple[bytes, Any] | None] = [None]


def _parsed_body(ctx: RequestContext | None, data: bytes) -> Any:
    """The JSON value of ``data`` (a body); the last one parsed is remembered, keyed by the identity of the bytes.

    A request body the LLM exchange already parsed (``ctx.llm``, from the same bytes) is reused as it is: neither
    the exchange nor expressions modify it.
    """
    entry = _last_body[0]
    if entry is not None and entry[0] is data:
        return entry[1]
    exchange = ctx.llm if ctx is not None else None
    if exchange is not None and exchange.raw is data and exchange.body is not None:
        return exchange.body
    parsed = parse_json(data)
    _last_body[0] = (data, parsed)
    return parsed


def _body_as(target: str, ctx: RequestContext | None, data: bytes) -> Any:
    if target == STRING:
        return data.decode("utf-8", errors="replace")
    if target == "byte[]":
        return data
    value = _parsed_body(ctx, data)
    if target == JOBJECT and type(value) is not dict:
        raise ExpressionRuntimeError("Error reading JObject from JsonReader. Current JsonReader item is not an object.")
    if target == JARRAY and type(value) is not list:
        raise ExpressionRuntimeError("Error reading JArray from JsonReader. Current JsonReader item is not an array.")
    return value


def _request_body_factory(target: str) -> Callable[..., Any]:
    def as_(ctx: RequestContext, preserve_content: bool = False) -> Any:
        try:
            return _body_as(target, ctx, ctx.request.body)
        except ExpressionRuntimeError as exc:  # not JSON, or not the JSON type read: 400, the client's mistake
            raise RequestBodyError(exc.message) from None

    return as_


def _response_body_factory(target: str) -> Callable[..., Any]:
    def as_(head: ResponseHead, preserve_content: bool = False) -> Any:
        if head.upstream is not None:
            raise ExpressionRuntimeError(MSG_STREAMED_BODY)
        return _body_as(target, None, head.body)

    return as_


def _elapsed(ctx: RequestContext) -> timedelta:
    return timedelta(seconds=max(ctx.services.clock() - ctx.started, 0.0))


def _timestamp(ctx: RequestContext) -> Any:
    return utc(wall_now(ctx)) - _elapsed(ctx)


def _trace(ctx: RequestContext, message: str | None) -> None:
    if ctx.trace is not None:
        section = ctx.section.value if ctx.section is not None else None
        ctx.trace.append({"section": section, "source": "context.Trace", "message": message})


def _header_values(headers: list[tuple[bytes, bytes]], name: str | None) -> list[str]:
    if name is None:
        raise ExpressionRuntimeError("Value cannot be null. (Parameter 'key')")
    raw = name.lower().encode("latin-1", errors="replace")
    return [_decode(value) for key, value in headers if key == raw]


def _request_headers(ctx: RequestContext) -> list[tuple[bytes, bytes]]:
    """The forwarded headers plus the client's headers that are never forwarded (``api.drop_headers``)."""
    dropped = ctx.api.drop_headers
    return ctx.request_headers + [header for header in ctx.request.headers if header[0] in dropped]


def _request_header_values(ctx: RequestContext, name: str | None) -> list[str]:
    if name is None:
        raise ExpressionRuntimeError("Value cannot be null. (Parameter 'key')")
    raw = name.lower().encode("latin-1", errors="replace")
    headers = ctx.request.headers if raw in ctx.api.drop_headers else ctx.request_headers
    return [_decode(value) for key, value in headers if key == raw]


def _joined(values: list[str], default: str | None) -> str | None:
    return ", ".join(values) if values else default


def _header_get(headers: list[tuple[bytes, bytes]], name: str | None, default: str | None = None) -> str | None:
    return _joined(_header_values(headers, name), default)


def _header_index(headers: list[tuple[bytes, bytes]], name: str | None) -> tuple[str, ...]:
    values = _header_values(headers, name)
    if not values:
        raise ExpressionRuntimeError(MSG_KEY_NOT_FOUND.format(name))
    return tuple(values)


def _mapping_index(mapping: Mapping[str, Any], name: str | None) -> Any:
    if name is None:
        raise ExpressionRuntimeError("Value cannot be null. (Parameter 'key')")
    try:
        return mapping[name]
    except KeyError:
        raise ExpressionRuntimeError(MSG_KEY_NOT_FOUND.format(name)) from None


def _query_get(query: dict[str, tuple[str, ...]], name: str | None, default: str | None = None) -> str | None:
    values = query.get(name.lower()) if name is not None else None
    return ",".join(values) if values else default


def _variables_get_factory(target: str) -> Callable[..., Any]:
    converter = cast_converter(OBJECT, target)
    if converter is False:
        raise ExpressionRuntimeError(f"Variables cannot be read as {target}.")
    fallback = default_of(target)

    def get(variables: dict[str, Any], name: str | None, default: Any = DEFAULT_T) -> Any:
        if name is not None and name in variables:
            value = variables[name]
            return converter(value) if callable(converter) else value
        return fallback if default is DEFAULT_T else default

    return get


def _reason(head: ResponseHead) -> str:
    if head.reason:
        return _decode(head.reason)
    try:
        return http.HTTPStatus(head.status).phrase
    except ValueError:
        return ""


#
# The tables
#

_context = define(CONTEXT_TYPE)
_context.prop("Api", "IApi", lambda ctx: ctx.api)
_context.prop("Operation", "IOperation", lambda ctx: ctx.operation)
_context.prop("Product", "IProduct", lambda ctx: ctx.product)
_context.prop("Subscription", "ISubscription", lambda ctx: ctx if ctx.subscription is not None else None)
_context.prop("User", "IUser", lambda ctx: None)
_context.prop("Request", "IRequest", lambda ctx: ctx)
_context.prop("Response", "IResponse", lambda ctx: ctx.response, flag="response")
_context.prop("Variables", "IVariables", lambda ctx: ctx.variables)
_context.prop("Deployment", "IDeployment", lambda ctx: ctx.services.deployment or _NO_DEPLOYMENT)
_context.prop("RequestId", GUID, lambda ctx: Guid(ctx.request_id.decode("ascii", errors="replace")))
_context.prop("Timestamp", DATETIME, _timestamp)
_context.prop("Elapsed", TIMESPAN, _elapsed)
_context.prop("LastError", "ILastError", lambda ctx: ctx.last_error)
_context.prop("Tracing", BOOL, lambda ctx: ctx.trace is not None)
_context.method("Trace", (Param("message", STRING),), "void", _trace)
# the backend entity the request is routed to (a pool, not the member it picked); null for a plain service URL
_context.prop("Backend", "IBackend", lambda ctx: ctx.backend if ctx.backend is not None and ctx.backend.name else None)
_context.unavailable["Workspace"] = MSG_NOT_TRACKED.format("context.Workspace")

_backend = define("IBackend")
_backend.prop("Id", STRING, lambda backend: backend.name)
_backend.prop("Type", STRING, lambda backend: backend.kind)
_backend.unavailable["AzureRegion"] = MSG_NOT_TRACKED.format("context.Backend.AzureRegion")

_api = define("IApi")
_api.prop("Id", STRING, lambda api: api.name)
_api.prop("Name", STRING, lambda api: api.name)
_api.prop("Path", STRING, lambda api: api.path)
_api.prop("ServiceUrl", "IUrl", lambda api: _service_url(api.service_url))
for _name in ("Version", "Revision", "IsCurrentRevision", "Protocols", "SubscriptionKeyParameterNames"):
    _api.unavailable[_name] = MSG_NOT_TRACKED.format(f"context.Api.{_name}")

_operation = define("IOperation")
_operation.prop("Id", STRING, lambda op: op.name)
_operation.prop("Name", STRING, lambda op: op.display_name)
_operation.prop("Method", STRING, lambda op: op.method)
_operation.prop("UrlTemplate", STRING, lambda op: op.url_template)

_product = define("IProduct")
_product.prop("Id", STRING, lambda product: product.name)
_product.prop("Name", STRING, lambda product: product.name)
_product.prop("State", "ProductState", lambda product: "Published" if product.published else "NotPublished")
_product.prop("SubscriptionRequired", BOOL, lambda product: product.subscription_required)
for _name in ("ApprovalRequired", "SubscriptionsLimit", "Groups", "Apis"):
    _product.unavailable[_name] = MSG_NOT_TRACKED.format(f"context.Product.{_name}")
_product_state = define("static:ProductState")
_product_state.prop("Published", "ProductState", lambda _: "Published")
_product_state.prop("NotPublished", "ProductState", lambda _: "NotPublished")

_subscription = define("ISubscription")
_subscription.prop("Id", STRING, lambda ctx: ctx.subscription.name)
_subscription.prop("Name", STRING, lambda ctx: ctx.subscription.name)
_subscription.prop("Key", STRING, _presented_key)
for _name in ("PrimaryKey", "SecondaryKey"):
    _subscription.unavailable[_name] = MSG_KEYS_UNAVAILABLE.format(_name)
for _name in ("CreatedDate", "StartDate", "EndDate"):
    _subscription.unavailable[_name] = MSG_NOT_TRACKED.format(f"context.Subscription.{_name}")

_user = define("IUser")
for _name in ("Id", "Email", "FirstName", "LastName", "Note"):
    _user.prop(_name, STRING, lambda user: None)
for _name in ("Groups", "Identities", "RegistrationDate"):
    _user.unavailable[_name] = MSG_NOT_TRACKED.format(f"context.User.{_name}")

_request = define("IRequest")
_request.prop("IpAddress", STRING, lambda ctx: ctx.request.client_ip)
_request.prop("Method", STRING, lambda ctx: ctx.request.method)
_request.prop("Url", "IUrl", lambda ctx: _request_url(ctx, original=False))
_request.prop("OriginalUrl", "IUrl", lambda ctx: _request_url(ctx, original=True))
_request.prop("Headers", "IRequestHeaders", lambda ctx: ctx)
_request.prop("Body", "IMessageBody", lambda ctx: ctx if ctx.request.body else None, flag="body")
_request.prop("MatchedParameters", "IMatchedParameters", lambda ctx: ctx.matched_parameters)
_request.unavailable["Certificate"] = MSG_NOT_TRACKED.format("context.Request.Certificate")

_response = define("IResponse")
_response.prop("StatusCode", INT, lambda head: head.status)
_response.prop("StatusReason", STRING, _reason)
_response.prop("Headers", "IHeaders", lambda head: head.headers)
_response.prop(
    "Body", "IResponseBody", lambda head: head if head.body or head.upstream is not None else None, flag="response_body"
)

_body = define("IMessageBody")
_body.method(
    "As", (Param("preserveContent", BOOL, False),), "T", _request_body_factory, type_args=BODY_TYPE_ARGS, flag="body"
)
_response_body = define("IResponseBody")
_response_body.method(
    "As",
    (Param("preserveContent", BOOL, False),),
    "T",
    _response_body_factory,
    type_args=BODY_TYPE_ARGS,
    flag="response_body",
)

_headers = define("IHeaders")
_headers.method(
    "GetValueOrDefault", (Param("headerName", STRING), Param("defaultValue", STRING, None)), STRING, _header_get
)
_headers.method("ContainsKey", (Param("key", STRING),), BOOL, lambda h, k: bool(_header_values(h, k)))
_headers.indexer((Param("key", STRING),), "string[]", _header_index)
_headers.prop("Count", INT, lambda h: len({key for key, _ in h}))

_request_headers_table = define("IRequestHeaders")
_request_headers_table.method(
    "GetValueOrDefault",
    (Param("headerName", STRING), Param("defaultValue", STRING, None)),
    STRING,
    lambda ctx, k, d=None: _joined(_request_header_values(ctx, k), d),
)
_request_headers_table.method(
    "ContainsKey", (Param("key", STRING),), BOOL, lambda ctx, k: bool(_request_header_values(ctx, k))
)
_request_headers_table.indexer(
    (Param("key", STRING),), "string[]", lambda ctx, k: _header_index(_request_headers(ctx), k)
)
_request_headers_table.prop("Count", INT, lambda ctx: len({key for key, _ in _request_headers(ctx)}))

_url = define("IUrl")
_url.prop("Scheme", STRING, lambda url: url.scheme)
_url.prop("Host", STRING, lambda url: url.host)
_url.prop("Port", INT, lambda url: url.port)
_url.prop("Path", STRING, lambda url: url.path)
_url.prop("QueryString", STRING, lambda url: "?" + url.query if url.query else "")
_url.prop("Query", "IQuery", lambda url: url.query_map())

_query = define("IQuery")
_query.method("GetValueOrDefault", (Param("name", STRING), Param("defaultValue", STRING, None)), STRING, _query_get)
_query.method("ContainsKey", (Param("key", STRING),), BOOL, lambda q, k: k is not None and k.lower() in q)
_query.indexer((Param("key", STRING),), "string[]", lambda q, k: _mapping_index(q, k.lower() if k is not None else k))
_query.prop("Count", INT, len)

_matched = define("IMatchedParameters")
_matched.method(
    "GetValueOrDefault",
    (Param("name", STRING), Param("defaultValue", STRING, None)),
    STRING,
    lambda m, k, d=None: m.get(k, d) if k is not None else d,
)
_matched.method("ContainsKey", (Param("key", STRING),), BOOL, lambda m, k: k in m)
_matched.indexer((Param("key", STRING),), STRING, _mapping_index)
_matched.prop("Count", INT, len)

_variables = define("IVariables")
_variables.indexer((Param("name", STRING),), OBJECT, _mapping_index)
_variables.method("ContainsKey", (Param("name", STRING),), BOOL, lambda v, k: k in v)
_variables.method("GetValueOrDefault", (Param("name", STRING),), OBJECT, lambda v, k: v.get(k))
_variables.method(
    "GetValueOrDefault",
    (Param("name", STRING), Param("defaultValue", "T", DEFAULT_T)),
    "T",
    _variables_get_factory,
    type_args=ANY_TYPE,
)
_variables.prop("Count", INT, len)

_deployment = define("IDeployment")
_deployment.prop("Region", STRING, lambda d: d.region)
_deployment.prop("ServiceName", STRING, lambda d: d.service_name)
_deployment.prop("GatewayId", STRING, lambda d: d.gateway_id)
_deployment.prop("Gateway", "IGateway", lambda d: d)
_deployment.unavailable["ServiceId"] = MSG_NOT_TRACKED.format("context.Deployment.ServiceId")
_deployment.unavailable["SustainedEnvironmentName"] = MSG_NOT_TRACKED.format("context.Deployment.ServiceId")
_gateway = define("IGateway")
_gateway.prop("Id", STRING, lambda d: d.gateway_id)
_gateway.prop("InstanceId", STRING, lambda d: d.instance_id)
_gateway.prop("IsManaged", BOOL, lambda d: False)

_last_error = define("ILastError")
_last_error.prop("Source", STRING, lambda e: e.source)
_last_error.prop("Reason", STRING, lambda e: e.reason)
_last_error.prop("Message", STRING, lambda e: e.message)
_last_error.prop("Scope", STRING, lambda e: e.scope)
_last_error.prop("Section", STRING, lambda e: e.section)
_last_error.prop("Path", STRING, lambda e: getattr(e, "path", None))
_last_error.prop("PolicyId", STRING, lambda e: e.policy_id)
