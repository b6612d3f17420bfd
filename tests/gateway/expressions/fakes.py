"""A RequestContext for expression tests, built from the gateway's real dataclasses, with an injectable clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.context import RequestContext, ResponseHead
from gateway.http.server import Request
from gateway.model import ApiEntry, OperationEntry, ProductEntry, SubscriptionEntry
from gateway.types import Deployment

NOW = datetime(2026, 11, 25, 18, 30, 5, 123456, tzinfo=UTC)
REQUEST_ID = b"3f2a9c1e-5b7d-4e21-9a0b-00000000002a"
CHAT_BODY = {
    "model": "gpt-4o",
    "stream": False,
    "max_tokens": 256,
    "temperature": 0.5,
    "user": None,
    "messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Hello"},
    ],
}


@dataclass
class FakeServices:
    """Quacks like gateway.context.Services, plus the attributes the expression engine reads."""

    monotonic: float = 100.25
    now_value: datetime = NOW
    deployment: Deployment | None = field(
        default_factory=lambda: Deployment(
            region="westeurope", service_name="sluice-gw", gateway_id="gw-1", instance_id="gw-1-pod-a"
        )
    )

    metrics: None = None
    limits: None = None

    def clock(self) -> float:
        return self.monotonic

    def now(self) -> datetime:
        return self.now_value

    async def forward(self, ctx: RequestContext, timeout: float | None) -> None:  # pragma: no cover
        raise NotImplementedError


PRODUCT = ProductEntry(name="starter", published=True, subscription_required=True, apis=("chat",))
SUBSCRIPTION = SubscriptionEntry(name="sub-42", scope="/products/starter", active=True, product=PRODUCT)
OPERATION = OperationEntry(
    name="chat-completions",
    display_name="Creates a chat completion",
    method="POST",
    url_template="/deployments/{deployment-id}/chat/completions",
)


def make_api(**overrides: Any) -> ApiEntry:
    values: dict[str, Any] = {
        "name": "azure-openai",
        "path": "openai",
        "api_type": "openai",
        "service_url": "https://my-aoai.openai.azure.com/openai",
        "subscription_required": True,
        "key_header": b"api-key",
        "key_query": "subscription-key",
        "backend": None,
        "operations": (OPERATION,),
        "drop_headers": frozenset(),
        "allowed_scopes": frozenset({"/apis"}),
        "products": {"starter": PRODUCT},
        "open_access": None,
        "no_key_access": None,
    }
    values.update(overrides)
    return ApiEntry(**values)


def make_ctx(
    *,
    body: bytes | dict[str, Any] | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    query: str = "api-version=2024-10-21",
    subscription: SubscriptionEntry | None = SUBSCRIPTION,
    product: ProductEntry | None = PRODUCT,
    variables: dict[str, Any] | None = None,
    response: ResponseHead | None = None,
    services: FakeServices | None = None,
    trace: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> RequestContext:
    raw_body = orjson.dumps(CHAT_BODY) if body is None else (orjson.dumps(body) if isinstance(body, dict) else body)
    request_headers = (
        headers
        if headers is not None
        else [
            (b"host", b"gateway.example.com:8443"),
            (b"api-key", b"caller-key-1"),
            (b"x-user", b"alice"),
            (b"accept", b"application/json"),
            (b"accept", b"text/plain"),
            (b"content-type", b"application/json"),
        ]
    )
    request = Request(
        "POST", "/openai/deployments/gpt-4o/chat/completions", query, request_headers, raw_body, "203.0.113.7", "1.1"
    )
    forwarded = [(k, v) for k, v in request_headers if k not in (b"host", b"api-key")]
    forwarded.append((b"x-forwarded-for", b"203.0.113.7"))
    values: dict[str, Any] = {
        "request": request,
        "request_id": REQUEST_ID,
        "api": make_api(),
        "operation": OPERATION,
        "product": product,
        "subscription": subscription,
        "services": services or FakeServices(),
        "backend": None,
        "forward_path": "/deployments/gpt-4o/chat/completions",
        "query": query,
        "request_headers": forwarded,
        "matched_parameters": {"deployment-id": "gpt-4o"},
        "variables": variables if variables is not None else {},
        "response": response,
        "trace": trace,
        "started": 100.0,
    }
    values.update(fields)
    return RequestContext(**values)
