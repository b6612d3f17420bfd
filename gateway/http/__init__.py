"""Hand-written HTTP/1.1 for the data plane, on uvloop + httptools.

``server`` parses client requests and writes responses; ``client`` forwards to model backends over pooled
keep-alive connections (HTTP and HTTPS); ``headers`` holds the header sets both sides share.
"""

from __future__ import annotations

from gateway.http.client import (
    Origin,
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTimeout,
)
from gateway.http.server import (
    Handler,
    Request,
    Response,
    ServerLimits,
    StreamingResponse,
    error_response,
    serve,
    shutdown,
)

__all__ = (
    "Handler",
    "Origin",
    "Request",
    "Response",
    "ServerLimits",
    "StreamingResponse",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamProtocolError",
    "UpstreamResponse",
    "UpstreamTimeout",
    "error_response",
    "serve",
    "shutdown",
)
