"""Errors raised on the request path and the fixed client-facing messages (APIM wording)."""

from __future__ import annotations

__all__ = (
    "MSG_API_UNAVAILABLE",
    "MSG_BACKEND_CONNECT",
    "MSG_BACKEND_OPEN",
    "MSG_BACKEND_PROTOCOL",
    "MSG_BACKEND_TIMEOUT",
    "MSG_BAD_TARGET",
    "MSG_INTERNAL_ERROR",
    "MSG_INVALID_KEY",
    "MSG_MISSING_KEY",
    "MSG_NOT_CONFIGURED",
    "MSG_NO_BACKEND",
    "MSG_OPERATION_NOT_FOUND",
    "MSG_POOL_UNAVAILABLE",
    "GatewayError",
)

MSG_OPERATION_NOT_FOUND = "Unable to match incoming request to an operation."
MSG_MISSING_KEY = (
    "Access denied due to missing subscription key. "
    "Make sure to include subscription key when making requests to an API."
)
MSG_INVALID_KEY = (
    "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription."
)
MSG_BACKEND_CONNECT = "Unable to connect to the backend service."
MSG_BACKEND_OPEN = "The backend '{}' is temporarily unavailable (circuit breaker open)."
MSG_POOL_UNAVAILABLE = "No backend of the pool '{}' is available (every circuit breaker is open)."
MSG_BACKEND_TIMEOUT = "The backend service did not respond in time."
MSG_BACKEND_PROTOCOL = "The backend service sent an invalid response."
MSG_BAD_TARGET = "The request cannot be forwarded: invalid characters in its target."
MSG_NO_BACKEND = "No backend service is configured for this API."
MSG_NOT_CONFIGURED = "The gateway has no configuration loaded yet."
MSG_API_UNAVAILABLE = "The API is unavailable: the gateway could not load its configuration."
# APIM's generic answer to a failure inside the gateway (an expression that threw): the detail is kept for the log,
# the trace and context.LastError, never sent to the client.
MSG_INTERNAL_ERROR = "Internal server error."


class GatewayError(Exception):
    """A request failure that routes control to ``on-error`` (``context.LastError`` in APIM).

    ``source`` is the policy name or built-in step, ``reason`` a machine code (``BackendConnectionFailure``),
    ``status`` the HTTP status of the default error response. The pipeline fills ``section``, ``scope``
    and ``policy_id`` when it catches the error. ``client_message`` is what the default error response says when
    it differs from ``message`` (which ``context.LastError.Message`` reads).
    """

    def __init__(
        self, status: int, message: str, *, source: str, reason: str, client_message: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.client_message = message if client_message is None else client_message
        self.source = source
        self.reason = reason
        self.section: str | None = None
        self.scope: str | None = None
        self.policy_id: str | None = None

    def __repr__(self) -> str:
        return f"GatewayError({self.status}, {self.message!r}, source={self.source!r}, reason={self.reason!r})"
