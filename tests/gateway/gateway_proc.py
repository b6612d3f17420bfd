"""A real gateway process (``python -m gateway``) for tests, and a small real HTTP server beside it.

``start_gateway(start, tmp_path, snapshot)`` writes the snapshot to the gateway's cache file and starts the process
with that cache (its management URL points at ``Sidecar`` when given, else at a closed port).

``Sidecar`` is an aiohttp server on loopback, run in a thread of the test process. It plays two parts:

* a lenient model backend under ``/lenient``: it answers every request, whatever its body (many real backends accept
  ``NaN`` or a BOM that orjson refuses), with a usage the test chooses, as JSON or as server-sent events; it keeps
  the headers of the requests it got;
* the management plane's usage endpoint (``/api/gateway/usage/``), keeping the records the gateway delivers; the
  snapshot endpoint answers 304 (the gateway serves its cache).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.fixtures_procs import ManagedProcess, _factory, free_port

from .helpers import KEYS, TOKEN, api, op, subscription

__all__ = (
    "KEY",
    "RunningGateway",
    "Sidecar",
    "safety_gateway",
    "safety_snapshot",
    "sidecar",
    "start_gateway",
    "wait_for",
)

DEFAULT_USAGE = {"prompt_tokens": "16", "completion_tokens": 16.0, "total_tokens": "32"}


@dataclass
class RunningGateway:
    port: int
    process: ManagedProcess

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")


def start_gateway(
    start: Callable[..., Any],
    tmp_path: Path,
    snapshot: dict,
    management_url: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> RunningGateway:
    """Start ``python -m gateway`` serving ``snapshot``; returns once /__sluice/health answers 200. ``extra_env`` is
    added to the process's environment (``REDIS_URL`` is dropped unless it is given there)."""
    cache = tmp_path / "snapshot.json"
    cache.write_bytes(orjson.dumps(snapshot))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")},
        "SLUICE_GATEWAY_TOKEN": TOKEN,
        "SLUICE_GATEWAY_PORT": str(port),
        "SLUICE_GATEWAY_WORKERS": "1",
        "SLUICE_SNAPSHOT_CACHE": str(cache),
        "SLUICE_USAGE_SPOOL": str(tmp_path / "usage-spool"),
        "SLUICE_MANAGEMENT_URL": management_url or f"http://127.0.0.1:{free_port()}",
        "SLUICE_LOG_LEVEL": "WARNING",
        "SLUICE_ADMIN_PORT": "0",  # no admin listener: the default 9180 is shared by every gateway on the machine
    }
    if management_url is None:
        env["SLUICE_USAGE_SETTLE_TIMEOUT"] = "0"
    env.update(extra_env or {})
    process = start(
        [sys.executable, "-m", "gateway"], f"http://127.0.0.1:{port}/__sluice/health", env=env, name="gateway"
    )
    return RunningGateway(port, process)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``predicate`` until it returns something truthy (bounded): for records delivered asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


class Sidecar:
    """See the module docstring. ``usage`` is what the lenient backend reports; ``sse`` makes it stream."""

    def __init__(self) -> None:
        self.port = free_port()
        self.records: list[dict[str, Any]] = []
        self.backend_requests: list[dict[str, Any]] = []
        self.usage: dict[str, Any] = dict(DEFAULT_USAGE)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Sidecar:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the sidecar server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/lenient/{tail:.*}", self._backend)
        app.router.add_post("/api/gateway/usage/", self._usage)
        app.router.add_get("/api/gateway/snapshot/", self._snapshot)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _snapshot(self, request: web.Request) -> web.Response:
        return web.Response(status=304)

    async def _usage(self, request: web.Request) -> web.Response:
        self.records.extend(orjson.loads(await request.read())["records"])
        return web.json_response({"accepted": True}, status=202)

    async def _backend(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.backend_requests.append({"headers": dict(request.headers), "body": body, "path": request.path})
        if request.headers.get("x-test-sse"):
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            delta = {"model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": "hello there"}}]}
            await response.write(b"data: " + orjson.dumps(delta) + b"\n\n")
            usage_event = {"model": "gpt-4o", "choices": [], "usage": self.usage}
            await response.write(b"data: " + orjson.dumps(usage_event) + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        document = {
            "id": "x",
            "object": "chat.completion",
            "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello there"}}],
            "usage": self.usage,
        }
        return web.Response(body=orjson.dumps(document), content_type="application/json")


#
# The gateway of the request-safety tests and the fuzz battery
#

KEY = KEYS["master"][0]
LIMIT = (
    '<llm-token-limit counter-key="@(context.Subscription.Id)" tokens-per-minute="100000000" '
    'estimate-prompt-tokens="true" tokens-consumed-header-name="x-consumed"/>'
)
METRIC = '<llm-emit-token-metric><dimension name="API ID"/></llm-emit-token-metric>'
# reads the body as a JObject when there is one (a policy that reads it without the null check fails on a GET: the
# policy's own failure, APIM's generic 500, as for BOOM)
JOBJECT = (
    '<set-header name="x-members"><value>@(context.Request.Body == null ? "none" : '
    "context.Request.Body.As&lt;JObject&gt;(preserveContent: true).Count.ToString())</value></set-header>"
)
BOOM = '<set-header name="x-n"><value>@(int.Parse("abc").ToString())</value></set-header>'
WILD = [op("wild-get", "GET", "/*"), op("wild-post", "POST", "/*")]


def inbound(statement: str) -> str:
    return f"<policies><inbound><base/>{statement}</inbound></policies>"


def safety_snapshot(mock_root: str, sidecar: str) -> dict:
    """APIs: ``llm`` (OpenAI, llm-token-limit, to mockllm), ``llm/private`` (passthrough), ``metric``
    (llm-emit-token-metric), ``expr`` (reads the body As<JObject>), ``boom`` (an expression that throws), ``free``
    (no key required), ``lenient`` and ``lenient-limited`` (OpenAI, to the Sidecar's lenient backend)."""
    chat = [op("chat-completions", "POST", "/chat/completions"), *WILD]
    lenient = sidecar + "/lenient/v1"
    return {
        "version": 1,
        "revision": 3,
        "named_values": [],
        "backends": [],
        "products": [],
        "apis": [
            api("llm", "llm", mock_root + "/v1", api_type="openai", policy=inbound(LIMIT), operations=chat),
            api("llm-private", "llm/private", mock_root, operations=WILD),
            api("metric", "metric", mock_root + "/v1", api_type="openai", policy=inbound(METRIC), operations=chat),
            api("expr", "expr", mock_root + "/v1", policy=inbound(JOBJECT), operations=chat),
            api("boom", "boom", mock_root + "/v1", policy=inbound(BOOM), operations=chat),
            api("free", "free", mock_root, subscription_required=False, operations=WILD),
            api("lenient", "lenient", lenient, api_type="openai", operations=chat),
            api(
                "lenient-limited", "lenient-limited", lenient, api_type="openai", policy=inbound(LIMIT), operations=chat
            ),
        ],
        "subscriptions": [subscription("master", "/apis")],
    }


@pytest.fixture(scope="module")
def sidecar() -> Iterator[Sidecar]:
    with Sidecar() as server:
        yield server


@pytest.fixture(scope="module")
def safety_gateway(tmp_path_factory, mock_llm, sidecar) -> Iterator[RunningGateway]:
    """A gateway process serving ``safety_snapshot`` (needs the ``mock_llm`` fixture imported beside it)."""
    tmp = tmp_path_factory.mktemp("gateway")
    start, started = _factory(tmp)
    try:
        yield start_gateway(start, tmp, safety_snapshot(mock_llm.root_url, sidecar.url), sidecar.url)
    finally:
        for process in reversed(started):
            process.stop()
