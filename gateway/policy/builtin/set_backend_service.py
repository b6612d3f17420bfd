"""``set-backend-service``: chooses the backend the request is forwarded to (a backend entity or a base URL).

APIM reference: https://learn.microsoft.com/azure/api-management/set-backend-service-policy
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..base import Attr, BindEnv, Policy, Section
from ..errors import PolicyError
from ..values import ExpressionRuntimeError, Value
from ..xml import Element

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.messages import Response
    from gateway.model import BackendTarget

__all__ = ("SetBackendService",)

# Distinct URLs from a base-url expression kept per statement, least recently used first out. The URLs come from
# request data, so the cache must be bounded; functools.lru_cache keeps the hit path (every request) in C.
_MAX_URL_TARGETS = 256


class SetBackendService(Policy):
    """``<set-backend-service backend-id="…"/>`` or ``<set-backend-service base-url="…"/>`` (exactly one).

    A literal id or URL is resolved when the snapshot loads; an expression is resolved per request against the
    same snapshot's backends (an unknown id or a bad URL is then an ``ExpressionValueEvaluationFailure``).
    """

    name = "set-backend-service"
    sections = frozenset({Section.INBOUND, Section.BACKEND})
    attributes = {"backend-id": Attr(), "base-url": Attr()}
    __slots__ = ("backend_id", "base_url", "env", "target", "url_target")

    def __init__(self, backend_id: Value | None, base_url: Value | None) -> None:
        super().__init__()
        self.backend_id = backend_id
        self.base_url = base_url
        self.target: BackendTarget | None = None
        self.env: BindEnv | None = None
        #: a base-url expression's value -> its target, bounded (set by ``bind``)
        self.url_target: Callable[[str], BackendTarget] | None = None

    @classmethod
    def from_element(cls, el: Element) -> SetBackendService:
        attrs = cls.check_element(el)
        backend_id, base_url = attrs.get("backend-id"), attrs.get("base-url")
        if (backend_id is None) == (base_url is None):
            raise el.error("<set-backend-service>: exactly one of 'backend-id' or 'base-url' is required")
        if base_url is not None and base_url.is_literal and not base_url.literal.startswith(("http://", "https://")):
            raise el.error(f"<set-backend-service>: 'base-url' must be an http(s) URL, got {base_url.literal!r}")
        return cls(backend_id, base_url)

    def bind(self, env: BindEnv) -> None:
        if self.backend_id is not None:
            if self.backend_id.is_literal:
                self.target = env.backend(self.backend_id.literal)
            else:
                self.env = env
        elif self.base_url is not None:
            if self.base_url.is_literal:
                self.target = env.target_for_url(self.base_url.literal)
            else:
                self.env = env
                self.url_target = lru_cache(maxsize=_MAX_URL_TARGETS)(_url_resolver(env))

    def _resolve(self, ctx: RequestContext) -> BackendTarget | None:
        env = self.env
        if env is None:  # not bound (validation only)
            return None
        try:
            if self.backend_id is not None:
                return env.backend(self.backend_id.evaluate(ctx))
            assert self.base_url is not None and self.url_target is not None
            return self.url_target(self.base_url.evaluate(ctx))  # a refused URL raises: errors are not cached
        except PolicyError as exc:
            raise ExpressionRuntimeError(exc.message) from None

    async def apply(self, ctx: RequestContext) -> Response | None:
        target = self.target if self.target is not None else self._resolve(ctx)
        if target is not None:
            ctx.backend = target
        return None

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        backend = ctx.backend
        if self.backend_id is not None:
            return {"backend-id": backend.name if backend is not None else self.backend_id.source}
        return {"base-url": backend.url if backend is not None else self.base_url.source if self.base_url else None}


def _url_resolver(env: BindEnv) -> Callable[[str], BackendTarget]:
    def resolve(url: str) -> BackendTarget:
        if not url.startswith(("http://", "https://")):
            raise ExpressionRuntimeError(f"'base-url' must be an http(s) URL, got {url!r}.")
        return env.target_for_url(url)

    return resolve
