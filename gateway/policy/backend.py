"""``set-backend-service`` (choose the forwarding target) and ``forward-request`` (forward to it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Attr, BindEnv, Policy, Section, register
from .values import Value
from .xml import Element

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.server import Response
    from gateway.model import BackendTarget

__all__ = ("ForwardRequest", "SetBackendService")


@register
class SetBackendService(Policy):
    """``<set-backend-service backend-id="…"/>`` or ``<set-backend-service base-url="…"/>`` (exactly one)."""

    name = "set-backend-service"
    sections = frozenset({Section.INBOUND, Section.BACKEND})
    attributes = {"backend-id": Attr(), "base-url": Attr()}
    __slots__ = ("backend_id", "base_url", "target")

    def __init__(self, backend_id: Value | None, base_url: Value | None) -> None:
        super().__init__()
        self.backend_id = backend_id
        self.base_url = base_url
        self.target: BackendTarget | None = None

    @classmethod
    def from_element(cls, el: Element) -> SetBackendService:
        attrs = cls.check_element(el)
        backend_id, base_url = attrs.get("backend-id"), attrs.get("base-url")
        if (backend_id is None) == (base_url is None):
            raise el.error("<set-backend-service>: exactly one of 'backend-id' or 'base-url' is required")
        if base_url is not None and not base_url.literal.startswith(("http://", "https://")):
            raise el.error(f"<set-backend-service>: 'base-url' must be an http(s) URL, got {base_url.literal!r}")
        return cls(backend_id, base_url)

    def bind(self, env: BindEnv) -> None:
        if self.backend_id is not None:
            self.target = env.backend(self.backend_id.literal)
        elif self.base_url is not None:
            self.target = env.target_for_url(self.base_url.literal)

    async def apply(self, ctx: RequestContext) -> Response | None:
        if self.target is not None:
            ctx.backend = self.target
        return None

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        if self.backend_id is not None:
            return {"backend-id": self.backend_id.literal}
        return {"base-url": self.base_url.literal if self.base_url is not None else None}


@register
class ForwardRequest(Policy):
    """``<forward-request timeout="seconds" buffer-response="…"/>``: the backend section's forwarding step."""

    name = "forward-request"
    sections = frozenset({Section.BACKEND})
    attributes = {"timeout": Attr(), "buffer-response": Attr(choices=("true", "false"))}
    __slots__ = ("timeout",)

    def __init__(self, timeout: float | None) -> None:
        super().__init__()
        self.timeout = timeout

    @classmethod
    def from_element(cls, el: Element) -> ForwardRequest:
        attrs = cls.check_element(el)
        timeout: float | None = None
        if "timeout" in attrs:
            text = attrs["timeout"].literal.strip()
            try:
                timeout = float(text)
            except ValueError:
                timeout = -1.0
            if not timeout > 0 or timeout != timeout or timeout == float("inf"):
                raise el.error(f"<forward-request>: 'timeout' must be a positive number of seconds, got {text!r}")
        return cls(timeout)

    async def apply(self, ctx: RequestContext) -> Response | None:
        await ctx.services.forward(ctx, self.timeout)
        return None

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        details: dict[str, Any] = {}
        if ctx.backend is not None:
            details["backend"] = ctx.backend.name or ctx.backend.url
            details["target"] = ctx.backend.url_for(ctx.forward_path, ctx.query)
        if ctx.response is not None:
            details["status"] = ctx.response.status
        return details
