"""The test console of an API (apim-spec §7): pick an operation, fill its parameters and headers, send the request
through the real gateway and read the answer, its token usage and the pipeline trace.

The browser never talks to the gateway: it posts the request to `ConsoleSendView`, which relays it server-side with
`requests` to `SLUICE["GATEWAY_URL"]` and streams the gateway's answer back as it arrives. The relay adds a trace
token (`gateway.contract.sign_trace_token`: HMAC with a key derived from the gateway token, for this API only,
valid `TRACE_TOKEN_TTL` seconds), so the gateway token stays on the server and no CORS is needed. The subscription
key is put in by the relay from the chosen subscription unless the user typed or revealed one; revealing it in the
page is audited like any other reveal.
"""

import json
import re
import time
from urllib.parse import quote, urlencode

import requests
from django.conf import settings
from django.db.models import Q
from django.http import JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache

from apis.models import API
from gateway.contract import sign_trace_token, trace_key
from gateway_admin.models import ConfigRevision, RevealRecord
from subscriptions.models import Subscription

from .views import CONSOLE_PERMISSIONS, UIView

__all__ = ("ConsoleKeyView", "ConsoleSendView", "ConsoleView", "template_parameters")

TRACE_HEADER = "x-sluice-trace"
TRACE_TOKEN_TTL = 300  # seconds
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 120
MAX_SUBSCRIPTIONS = 100  # choices offered in the key picker
# never taken from the form: the relay and the HTTP client set these
REFUSED_HEADERS = frozenset(
    {"host", "content-length", "connection", "transfer-encoding", "keep-alive", "upgrade", "te", "trailer",
     TRACE_HEADER}
)  # fmt: skip
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_PARAM = re.compile(r"\{([^{}]+)\}")
WILDCARD = "*"
SAMPLE_CHAT = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello in three languages."},
    ],
    "max_tokens": 64,
    "stream": False,
}


def template_parameters(url_template: str) -> list[str]:
    """The parameters of an operation's URL template; `*` (a wildcard tail) counts as one."""
    names = _PARAM.findall(url_template)
    return [*names, WILDCARD] if url_template.rstrip("/").endswith("/*") else names


def resolve_path(url_template: str, values: dict[str, str]) -> str:
    """The template with its parameters filled in (percent-encoded; the wildcard keeps its slashes)."""
    path = _PARAM.sub(lambda m: quote(values.get(m.group(1), ""), safe=""), url_template)
    if path.rstrip("/").endswith("/*"):
        path = path[: path.rindex("*")] + quote(values.get(WILDCARD, "").lstrip("/"), safe="/")
    return path


def subscriptions_for(api: API):
    """Active subscriptions whose scope grants access to `api`: all-access first, then API, then product scoped."""
    return (
        Subscription.objects.filter(
            Q(api__isnull=True, product__isnull=True) | Q(api=api) | Q(product__apis=api), state="active"
        )
        .select_related("api", "product")
        .distinct()
        .order_by("api", "product", "name")
    )


class ConsoleMixin:
    permission_required = CONSOLE_PERMISSIONS

    def get_api(self) -> API:
        return get_object_or_404(API.objects.prefetch_related("operations"), name=self.kwargs["name"])


@method_decorator(never_cache, name="dispatch")
class ConsoleView(ConsoleMixin, UIView):
    template_name = "webui/console.html"

    def get_context_data(self, **kwargs):
        api = self.get_api()
        operations = sorted(api.operations.all(), key=lambda op: (op.url_template, op.method))
        chosen = self.request.GET.get("operation")
        operation = next((op for op in operations if op.name == chosen), None)
        if operation is None:
            # the chat operation of an OpenAI-compatible API, else the first one
            operation = next((op for op in operations if op.url_template.endswith("/chat/completions")), None)
            operation = operation or (operations[0] if operations else None)
        subscriptions = list(subscriptions_for(api)[:MAX_SUBSCRIPTIONS])
        default = next((s for s in subscriptions if s.name == "master"), subscriptions[0] if subscriptions else None)
        has_body = operation is not None and operation.method not in ("GET", "HEAD", "DELETE", "OPTIONS")
        return super().get_context_data(
            api=api,
            operations=operations,
            operation=operation,
            parameters=template_parameters(operation.url_template) if operation else [],
            subscriptions=subscriptions,
            default_subscription=default,
            key_header=api.subscription_key_header,
            body=json.dumps(SAMPLE_CHAT, indent=2) if has_body else "",
            has_body=has_body,
            gateway_url=settings.SLUICE["GATEWAY_URL"],
            **kwargs,
        )


def _problem(status: int, message: str) -> JsonResponse:
    return JsonResponse({"detail": message}, status=status)


class ConsoleKeyView(ConsoleMixin, UIView):
    """POST {"subscription": name}: the subscription's primary key, for the eye button; audited as a reveal."""

    http_method_names = ["post"]

    def post(self, request, *args, **kwargs):
        api = self.get_api()
        name = request.POST.get("subscription", "")
        subscription = subscriptions_for(api).filter(name=name).first()
        if subscription is None:
            return _problem(404, f"No active subscription '{name}' grants access to API '{api.name}'.")
        RevealRecord.record(request.user, "subscription", subscription.name, "console")
        response = JsonResponse({"subscription": subscription.name, "key": subscription.primary_key})
        response["Cache-Control"] = "no-store"
        return response


class ConsoleSendView(ConsoleMixin, UIView):
    """POST the console's request (JSON); answers with one JSON line (status, headers, trace of the gateway's
    answer) and then the gateway's body as it arrives."""

    http_method_names = ["post"]

    def post(self, request, *args, **kwargs):
        api = self.get_api()
        try:
            data = json.loads(request.body)
        except ValueError:
            return _problem(400, "The request must be a JSON object.")
        if not isinstance(data, dict):
            return _problem(400, "The request must be a JSON object.")
        operation = next((op for op in api.operations.all() if op.name == data.get("operation")), None)
        if operation is None:
            return _problem(400, f"API '{api.name}' has no operation '{data.get('operation')}'.")
        try:
            params = _string_map(data.get("parameters", {}), "parameters")
            query = _pairs(data.get("query", []), "query")
            headers = _pairs(data.get("headers", []), "headers")
        except ValueError as exc:
            return _problem(400, str(exc))
        problem = _header_problem(headers)
        if problem:
            return _problem(400, problem)
        body = data.get("body") or ""
        if not isinstance(body, str):
            return _problem(400, "'body' must be a string.")
        key_header = api.subscription_key_header
        if api.subscription_required and not any(n.lower() == key_header.lower() for n, _ in headers):
            subscription = subscriptions_for(api).filter(name=data.get("subscription", "")).first()
            if subscription is None:
                return _problem(400, f"Pick a subscription, or give the {key_header} header.")
            headers.append((key_header, subscription.primary_key))
        if data.get("trace", True):
            token = sign_trace_token(
                trace_key(settings.SLUICE["GATEWAY_TOKEN"]), api.name, int(time.time()) + TRACE_TOKEN_TTL
            )
            headers.append((TRACE_HEADER, token))
        url = gateway_url(api, resolve_path(operation.url_template, params), query)
        try:
            upstream = requests.request(
                operation.method if operation.method != "*" else "POST",
                url,
                headers=_header_dict(headers),
                data=body.encode("utf-8") if body else None,
                stream=True,
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return _problem(502, f"The gateway at {settings.SLUICE['GATEWAY_URL']} did not answer: {exc}")
        return _relay(upstream, url, _behind_note() if upstream.status_code == 404 else None)


def _behind_note() -> str | None:
    """A 404 right after a change is most often a gateway that has not polled the new configuration yet: say so,
    from its health document, rather than leave a newcomer with "Unable to match incoming request"."""
    base = settings.SLUICE["GATEWAY_URL"].rstrip("/")
    try:
        served = requests.get(f"{base}/__sluice/health", timeout=CONNECT_TIMEOUT).json().get("revision")
    except (requests.RequestException, ValueError, AttributeError):
        return None
    current = ConfigRevision.current()
    if not isinstance(served, int) or served >= current:
        return None
    return (
        f"The gateway still serves configuration revision {served}; the current one is {current}. It loads the "
        "latest change within a few seconds: send again."
    )


def gateway_url(api: API, path: str, query: list[tuple[str, str]]) -> str:
    base = settings.SLUICE["GATEWAY_URL"].rstrip("/")
    prefix = f"/{api.path}" if api.path else ""
    return f"{base}{prefix}{path}" + (f"?{urlencode(query)}" if query else "")


def _relay(upstream: requests.Response, url: str, note: str | None = None) -> StreamingHttpResponse:
    trace = upstream.headers.get(TRACE_HEADER)
    meta = {
        "status": upstream.status_code,
        "reason": upstream.reason,
        "url": url,
        "headers": [[name, value] for name, value in upstream.headers.items() if name.lower() != TRACE_HEADER],
        "trace": json.loads(trace) if trace else None,
        "note": note,
    }

    def stream():
        try:
            yield json.dumps(meta).encode("utf-8") + b"\n"
            yield from upstream.iter_content(chunk_size=None)
        except requests.RequestException as exc:
            yield f"\n[the gateway's answer broke off: {exc}]".encode()
        finally:
            upstream.close()

    response = StreamingHttpResponse(stream(), content_type="application/x-sluice-console")
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"
    return response


def _string_map(value, field: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"'{field}' must map names to strings.")
    return value


def _pairs(value, field: str) -> list[tuple[str, str]]:
    if not isinstance(value, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in value
    ):
        raise ValueError(f"'{field}' must be a list of [name, value] pairs of strings.")
    return [(name.strip(), text) for name, text in value if name.strip()]


def _header_dict(headers: list[tuple[str, str]]) -> dict[str, str]:
    """One value per name, repeated names joined with commas (RFC 9110 §5.3)."""
    merged: dict[str, str] = {}
    names: dict[str, str] = {}
    for name, value in headers:
        first = names.setdefault(name.lower(), name)
        merged[first] = f"{merged[first]}, {value}" if first in merged else value
    return merged


def _header_problem(headers: list[tuple[str, str]]) -> str | None:
    for name, value in headers:
        if not _TOKEN.match(name):
            return f"'{name}' is not a valid header name."
        if name.lower() in REFUSED_HEADERS:
            return f"The console sets the {name} header itself."
        if "\r" in value or "\n" in value:
            return f"The value of header '{name}' has a line break."
    return None
