#!/usr/bin/env python3
"""Micro-benchmarks of single layers of the gateway, for changes too small for `make bench` to see on a shared machine.

Each case runs in one process on uvloop and reports CPU time (``time.process_time``) per operation, as the median of
``--repeat`` rounds; a client in the same process is part of the figure, so compare cases only with themselves
(before/after a change: run this file from both checkouts, e.g. with ``--root``).

* ``server``: keep-alive requests over ``--connections`` loopback connections to ``gateway.http.server`` with a
  handler that answers at once (the server's own per-request cost, plus a minimal client's).
* ``metrics``: ``Metrics.record_request`` of one series (what every request records), no event loop.
* ``redis``: ``RespClient.call_encoded`` of a pre-encoded ``PING`` against the Redis of ``--redis-url``, 16 callers at a
  time (the client's per-call cost, plus Redis's round trips).
* ``request``: keep-alive chat completions through the whole gateway (``create_app``: routing, subscription key, LLM
  accounting, forwarding, metrics and a usage record to a ``MemorySink``) to an upstream in the same process that
  answers a fixed completion at once (the gateway's per-request cost, plus the upstream's and the client's).
* ``request --without metrics,usage,accounting,key``: the same with parts of the gateway's work left out (the
  request metrics, the usage record, the LLM accounting of an OpenAI-type API, the subscription key check): what
  each part costs per request, by difference.
* ``request --sink http``: the usage records go as in a gateway without Redis, journal included: each is appended to
  a ``UsageJournal`` (in a temporary directory) and handed to an ``HttpSink``, which POSTs its batches to a stand-in
  management plane in the same process (a handler on ``gateway.http.server`` that reads the body and answers 202).
* ``request --policies governance --sink redis``: the request as gwbench's governance configuration runs it
  (``bench/gwbench_sluice.py --policies governance``): the API's policy is the wizard's ``llm-token-limit`` (per
  subscription, estimation on, a limit never reached) and ``llm-emit-token-metric`` (two built-in dimensions), its
  counters on the Redis of ``--redis-url``, the body ``bench/run.py``'s two-message chat; ``--sink redis`` appends
  each usage record to a ``UsageJournal`` and hands it to a ``RedisStreamSink`` on a stream of its own (deleted after
  the run) on the same Redis. ``--policy TEXT`` puts another policy document in the governance one's place (for
  instance a ``rate-limit-by-key`` alone, its counters on the same Redis). ``--lease-seconds S`` sets the gateway's
  token lease lifetime (``SLUICE_TOKEN_LEASE_SECONDS``, which this case does not read: its ``GatewaySettings`` are
  built here; default the settings' 0.5 s). Under valgrind a request runs about fifty times slower, so a lease serves
  fewer requests than natively; a longer lifetime keeps the share of admissions sent to Redis near the native one.
* ``request --stream full|first``: the same requests with ``"stream": true`` and ``stream_options.include_usage``
  (gwbench's stream client's body): the upstream answers as gwbench's mock does with no delay, the whole SSE stream
  (head, the mock's 32 chunks, usage, ``[DONE]``, chunked) in one write, from a callback-only protocol. ``first``
  sends only the role event, the usage event and ``[DONE]``: the same request, head, first event and end of stream,
  without the 33 events between them, so ``full`` minus ``first`` is what those events cost. A streamed request counts
  when the client has read its terminating chunk.
* ``forward``: the floor of our own stack: a handler on ``gateway.http.server`` that checks the key with one header
  comparison and forwards with ``gateway.http.client.UpstreamPool`` (no routing, pipeline, accounting or telemetry).
* ``floor``: the floor of any Python proxy hop in this harness: a callback-only proxy (uvloop protocols and httptools
  on both sides, no coroutine, no task) in front of the same upstream.
* ``stream``: the SSE parsers that can see one streamed chat completion (the mock's 32 chunks, with usage and
  ``[DONE]``), one event per read: the usage meter (``SseUsageMeter``), the semantic cache's ``StreamAssembler`` and
  the content-safety stage's event reading, each alone and all three (µs per stream).

    python bench/micro.py server [--root DIR] [--requests 20000] [--repeat 7]
"""

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REQUEST = b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Client(asyncio.Protocol):
    """Sends ``wire`` again on each answer (one answer per read on loopback) until ``left`` answers are in."""

    def __init__(self, wire: bytes, left: int, done: asyncio.Future[None]) -> None:
        self.wire = wire
        self.left = left
        self.done = done

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not data.startswith(b"HTTP/1.1 200"):
            raise SystemExit(data[:300].decode(errors="replace"))
        self.left -= 1
        if self.left:
            self.transport.write(self.wire)
        elif not self.done.done():
            self.done.set_result(None)


async def run_clients(
    port: int, wire: bytes, per_connection: int, connections: int, *, warm: bool, client: type[Client] = Client
) -> float:
    """CPU seconds per request of ``connections`` keep-alive clients sending ``wire`` ``per_connection`` times each
    (after one request each, not measured, when ``warm``)."""
    loop = asyncio.get_running_loop()
    clients = []
    for _ in range(connections):
        done = loop.create_future()
        transport, _ = await loop.create_connection(lambda done=done: client(wire, 1, done), "127.0.0.1", port)
        clients.append((transport, done))
    if warm:
        for transport, _ in clients:
            transport.write(wire)
        await asyncio.gather(*(done for _, done in clients))
    finished = []
    for transport, _ in clients:
        protocol = transport.get_protocol()
        protocol.left, protocol.done = per_connection, loop.create_future()
        finished.append(protocol.done)
    started = time.process_time()
    for transport, _ in clients:
        transport.write(wire)
    await asyncio.gather(*finished)
    spent = time.process_time() - started
    for transport, _ in clients:
        transport.close()
    return spent / (per_connection * connections)


async def server_case(requests: int, connections: int) -> float:
    from gateway.http.server import Response, serve, shutdown

    async def handler(request):  # type: ignore[no-untyped-def]
        await request.read_body()
        return Response(200, [(b"content-type", b"application/json")], b"{}")

    server = await serve(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    spent = await run_clients(port, REQUEST, requests // connections, connections, warm=False)
    await shutdown(server, 1.0)
    return spent


async def redis_case(requests: int, connections: int, url: str) -> float:
    from gateway.redis import RespClient, encode_command

    client = RespClient(url)
    ping = encode_command(("PING",))
    await client.call_encoded(ping)

    async def caller(count: int) -> None:
        for _ in range(count):
            await client.call_encoded(ping)

    started = time.process_time()
    await asyncio.gather(*(caller(requests // connections) for _ in range(connections)))
    spent = time.process_time() - started
    await client.aclose()
    return spent / (requests // connections * connections)


CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the benchmark."}]}'
COMPLETION = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","system_fingerprint":"fp",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello, benchmark.","refusal":null},'
    b'"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":4,"total_tokens":18}}'
)


def _chat_wire(body: bytes) -> bytes:
    return (
        b"POST /llm/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Ocp-Apim-Subscription-Key: bench-key\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )


CHAT_WIRE = _chat_wire(CHAT)
# bench/run.py's CHAT_BODY (what gwbench sends), for --policies governance: two messages, max_tokens
GOVERNANCE_CHAT = json.dumps(
    {
        "model": "mock",
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Explain in two sentences what an AI gateway adds to each model request."},
        ],
        "max_tokens": 64,
    }
).encode()
# the wizard's policy for bench/run.py's governance configuration (token_limit and token_metrics)
GOVERNANCE_POLICY = (
    '<policies><inbound><base/><llm-token-limit counter-key="@(context.Subscription?.Id ?? &quot;anonymous&quot;)" '
    'tokens-per-minute="1000000000" estimate-prompt-tokens="true"/><llm-emit-token-metric namespace="bench">'
    '<dimension name="API ID"/><dimension name="Subscription ID"/></llm-emit-token-metric></inbound></policies>'
)


def _upstream():  # type: ignore[no-untyped-def]
    """The upstream of the request cases: a fixed completion, at once. Made after ``--root`` is on ``sys.path``; the
    import is done here once, not per request (a function-level import costs about 6 k instructions a call)."""
    from gateway.http.server import Response

    async def upstream(request):  # type: ignore[no-untyped-def]
        await request.read_body()
        return Response(200, [(b"content-type", b"application/json")], COMPLETION)

    return upstream


_STREAM_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Stream a short answer about reverse proxies and gateways, please."},
]
STREAM_CHAT = json.dumps(  # gwbench's stream_client.py body
    {"model": "mock", "messages": _STREAM_MESSAGES, "max_tokens": 64, "stream": True,
     "stream_options": {"include_usage": True}}
).encode()  # fmt: skip


def _sse_response(events: str) -> bytes:
    """gwbench's mock's answer to ``STREAM_CHAT`` with no delay: head and every chunk in one write. ``first``: only
    the role event, the usage event and ``[DONE]``."""
    from mockllm.app import _chat_events

    chunks = _chat_events("chatcmpl-1", 1, "mock", 32, "stop", 30, True)
    if events == "first":
        chunks = [chunks[0], *chunks[-2:]]
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
    )
    return head + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


class _SseUpstream(asyncio.Protocol):
    """The upstream of ``request --stream``: answers each request with ``answer`` in one write, from its callback."""

    def __init__(self, answer: bytes) -> None:
        import httptools

        self.answer = answer
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.transport.write(self.answer)


class StreamClient(Client):
    """``Client`` for chunked answers that arrive in several reads: an answer is in with its terminating chunk."""

    fresh = True

    def data_received(self, data: bytes) -> None:
        if self.fresh and not data.startswith(b"HTTP/1.1 200"):
            raise SystemExit(data[:300].decode(errors="replace"))
        self.fresh = data.endswith(b"\r\n0\r\n\r\n")
        if self.fresh:
            super().data_received(b"HTTP/1.1 200")


def _management():  # type: ignore[no-untyped-def]
    """The stand-in management plane of ``request --sink http``: takes a batch of usage records."""
    from gateway.http.server import Response

    async def management(request):  # type: ignore[no-untyped-def]
        body = await request.read_body()
        assert body.startswith(b'{"records":['), body[:100]
        return Response(202, [(b"content-type", b"application/json")], b"{}")

    return management


async def request_case(
    requests: int,
    connections: int,
    without: frozenset[str] = frozenset(),
    sink_kind: str = "memory",
    policies: str = "none",
    redis_url: str = "",
    stream_events: str = "",
    policy: str | None = None,
    lease_seconds: float | None = None,
) -> float:
    from gateway.app import create_app
    from gateway.http.server import serve, shutdown
    from gateway.metrics import Metrics
    from gateway.secrets import hash_key
    from gateway.settings import GatewaySettings
    from gateway.snapshot import load_snapshot
    from gateway.usage.sinks import MemorySink

    if stream_events:
        answer = _sse_response(stream_events)
        mock = await asyncio.get_running_loop().create_server(lambda: _SseUpstream(answer), "127.0.0.1", 0)
    else:
        mock = await serve(_upstream(), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{mock.sockets[0].getsockname()[1]}"
    api_type = "passthrough" if "accounting" in without else "openai"  # only OpenAI-type APIs are accounted
    api_policy = policy or (GOVERNANCE_POLICY if policies == "governance" else None)
    operation = {"name": "chat", "display_name": "chat", "method": "POST", "url_template": "/chat/completions",
                 "policy": None}  # fmt: skip
    data = {
        "version": 1, "revision": 1, "named_values": [], "backends": [], "products": [],
        "apis": [{"name": "llm", "path": "llm", "service_url": base, "api_type": api_type,
                  "subscription_required": "key" not in without, "subscription_key_header": "Ocp-Apim-Subscription-Key",
                  "subscription_key_query": "subscription-key",
                  "policy": api_policy, "operations": [operation]}],
        "subscriptions": [{"name": "bench", "scope": "/apis", "state": "active",
                           "key_hashes": [hash_key("bench-key")]}],
    }  # fmt: skip
    sink = MemorySink()
    token = "micro-benchmark"  # noqa: S105  (signs nothing: the snapshot has no secret)
    metrics = None if "metrics" in without else Metrics()
    usage_sink: Any = None if "usage" in without else sink
    journal = management = None
    stream = f"sluice:micro:{os.getpid()}:usage"  # --sink redis: this run's stream, deleted at the end
    if usage_sink is not None and sink_kind in ("http", "redis"):
        import tempfile

        from gateway.usage.journal import UsageJournal
        from gateway.usage.sinks import HttpSink, RedisStreamSink

        if sink_kind == "http":
            management = await serve(_management(), "127.0.0.1", 0)
            usage_sink = HttpSink(f"http://127.0.0.1:{management.sockets[0].getsockname()[1]}", token)
        else:
            usage_sink = RedisStreamSink(redis_url, stream)
        await usage_sink.start()
        journal = UsageJournal(str(Path(tempfile.mkdtemp(prefix="sluice-micro-")) / "usage.spool"))
        journal.start(usage_sink)
    # governance: the token counters on Redis, as gwbench's gateway keeps them (REDIS_URL)
    settings = GatewaySettings(gateway_token=token, redis_url=redis_url if policies == "governance" else "")
    if lease_seconds is not None:
        settings = dataclasses.replace(settings, token_lease_seconds=lease_seconds)
    app = create_app(settings, metrics=metrics, usage_sink=usage_sink, usage_journal=journal)
    app.snapshot = load_snapshot(data, gateway_token=token)
    gateway = await serve(app, "127.0.0.1", 0)
    port = gateway.sockets[0].getsockname()[1]
    per_connection = requests // connections
    if stream_events:
        wire = _chat_wire(STREAM_CHAT)
    else:
        wire = _chat_wire(GOVERNANCE_CHAT) if policies == "governance" else CHAT_WIRE
    client = StreamClient if stream_events else Client
    spent = await run_clients(port, wire, per_connection, connections, warm=True, client=client)
    if usage_sink is sink:
        assert len(sink.records) >= per_connection * connections, len(sink.records)
    await shutdown(gateway, 1.0)
    if journal is not None:
        await journal.close(usage_sink)
        await usage_sink.close()
        assert usage_sink.stats.delivered >= per_connection * connections, usage_sink.stats
    if policies == "governance" or sink_kind == "redis":
        from gateway.redis import RespClient

        redis = RespClient(redis_url)
        if sink_kind == "redis":
            assert await redis.call("XLEN", stream) >= per_connection * connections
            await redis.call("DEL", stream)
        await redis.aclose()
        await app.aclose()
    if management is not None:
        await shutdown(management, 1.0)
    if stream_events:
        mock.close()
    else:
        await shutdown(mock, 1.0)
    return spent


async def forward_case(requests: int, connections: int) -> float:
    from gateway.http.client import Origin, UpstreamPool
    from gateway.http.server import Response, serve, shutdown

    mock = await serve(_upstream(), "127.0.0.1", 0)
    origin, _ = Origin.from_url(f"http://127.0.0.1:{mock.sockets[0].getsockname()[1]}")
    pool = UpstreamPool()
    headers = [(b"content-type", b"application/json")]

    async def handler(request):  # type: ignore[no-untyped-def]
        if not request.body_complete:
            await request.read_body()
        if request.header(b"ocp-apim-subscription-key") != b"bench-key":
            return Response(401, [], b"")
        upstream = await pool.request(origin, "POST", "/chat/completions", list(headers), request.body)
        return Response(upstream.status, list(headers), await upstream.read())

    gateway = await serve(handler, "127.0.0.1", 0)
    spent = await run_clients(gateway.sockets[0].getsockname()[1], CHAT_WIRE, requests // connections, connections,
                              warm=True)  # fmt: skip
    await shutdown(gateway, 1.0)
    await pool.close()
    await shutdown(mock, 1.0)
    return spent


class _FloorUpstream(asyncio.Protocol):
    """The floor proxy's side to the upstream: parses each response and writes it back to the client."""

    def __init__(self, client: asyncio.Transport) -> None:
        import httptools

        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        self.body.clear()
        self.client.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )


class _FloorProxy(asyncio.Protocol):
    """The floor proxy's side to the client: one upstream connection per client connection, opened first."""

    def __init__(self, upstream_port: int) -> None:
        import httptools

        self.upstream_port = upstream_port
        self.parser = httptools.HttpRequestParser(self)
        self.key: bytes | None = None
        self.body: list[bytes] = []
        self.upstream: asyncio.Transport | None = None
        self.pending: bytes | None = None

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.transport = transport
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.upstream, _ = await loop.create_connection(
            lambda: _FloorUpstream(self.transport), "127.0.0.1", self.upstream_port
        )
        if self.pending is not None:
            self.upstream.write(self.pending)
            self.pending = None

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"ocp-apim-subscription-key":
            self.key = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        key, self.key = self.key, None
        if key != b"bench-key":
            self.transport.write(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
            return
        body = b"".join(self.body)
        self.body.clear()
        wire = (
            b"POST /chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        if self.upstream is None:
            self.pending = wire
        else:
            self.upstream.write(wire)


async def floor_case(requests: int, connections: int) -> float:
    from gateway.http.server import serve, shutdown

    mock = await serve(_upstream(), "127.0.0.1", 0)
    upstream_port = mock.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    proxy = await loop.create_server(lambda: _FloorProxy(upstream_port), "127.0.0.1", 0)
    spent = await run_clients(proxy.sockets[0].getsockname()[1], CHAT_WIRE, requests // connections, connections,
                              warm=True)  # fmt: skip
    proxy.close()
    await shutdown(mock, 1.0)
    return spent


def stream_case(streams: int, parsers: str) -> float:
    from types import SimpleNamespace

    from gateway.policy.builtin.llm_content_safety import _CheckedStream
    from gateway.semcache.messages import StreamAssembler
    from gateway.tokens import SseUsageMeter, get_tokenizer
    from mockllm.app import _chat_events

    reads = _chat_events("chatcmpl-1", 1, "gpt-4o-mini", 32, "stop", 14, True)
    count = get_tokenizer().counter("o200k_base")
    policy = SimpleNamespace(window=0, overlap=0)

    def done(meter: SseUsageMeter, complete: bool) -> None:
        assert meter.usage is not None

    started = time.process_time()
    for _ in range(streams):
        if "meter" in parsers:
            meter = SseUsageMeter(count, done, strip=True)
            for read in reads:
                meter.feed(read)
            meter.finish(True)
        if "cache" in parsers:
            assembler = StreamAssembler("chat", 1 << 20)
            for read in reads:
                assembler.feed(read)
            assert assembler.document() is not None
        if "safety" in parsers:
            checked = _CheckedStream(policy, None, None)  # type: ignore[arg-type]
            for read in reads:
                checked._take(read)
            assert checked._length > 0
    return (time.process_time() - started) / streams


def metrics_case(requests: int) -> float:
    from gateway.metrics import Metrics

    metrics = Metrics()
    metrics.record_request("api", "op", 200, 0.001)
    started = time.process_time()
    for _ in range(requests):
        metrics.record_request("api", "op", 200, 0.0012)
    return (time.process_time() - started) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=("server", "redis", "metrics", "request", "forward", "floor", "stream"))
    parser.add_argument(
        "--without", default="", help="request: parts left out (comma-separated: metrics, usage, accounting, key)"
    )
    parser.add_argument(
        "--sink",
        choices=("memory", "http", "redis"),
        default="memory",
        help="request: where the usage records go (http: a journal and an HttpSink to an in-process stand-in; "
        "redis: a journal and a RedisStreamSink on --redis-url)",
    )
    parser.add_argument(
        "--policies",
        choices=("none", "governance"),
        default="none",
        help="request: the API's policy (governance: llm-token-limit and llm-emit-token-metric, counters on "
        "--redis-url, as bench/run.py configures them)",
    )
    stream_help = "request: streamed chat completions (full: gwbench's mock's stream in one write; first: its ends)"
    parser.add_argument("--stream", choices=("", "full", "first"), default="", help=stream_help)
    parser.add_argument(
        "--policy",
        default=None,
        help="request: the API's policy document instead of --policies' (with --policies governance: its counters on "
        "--redis-url and the two-message body)",
    )
    parser.add_argument("--parsers", default="meter,cache,safety", help="stream: which parsers run (comma-separated)")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="checkout to test")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=None,
        help="request: the token lease lifetime (SLUICE_TOKEN_LEASE_SECONDS; default the settings' default)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(args.root.resolve()))
    import uvloop

    import gateway

    assert Path(gateway.__file__).resolve().is_relative_to(args.root.resolve()), gateway.__file__

    without = frozenset(filter(None, args.without.split(",")))
    unknown = without - {"metrics", "usage", "accounting", "key"}
    if unknown:
        parser.error(f"--without: unknown part(s) {', '.join(sorted(unknown))}")
    rounds = []
    for _ in range(args.repeat):
        if args.case == "server":
            rounds.append(uvloop.run(server_case(args.requests, args.connections)))
        elif args.case == "metrics":
            rounds.append(metrics_case(args.requests))
        elif args.case == "request":
            rounds.append(
                uvloop.run(
                    request_case(
                        args.requests,
                        args.connections,
                        without,
                        args.sink,
                        args.policies,
                        args.redis_url,
                        args.stream,
                        args.policy,
                        args.lease_seconds,
                    )
                )
            )
        elif args.case == "forward":
            rounds.append(uvloop.run(forward_case(args.requests, args.connections)))
        elif args.case == "floor":
            rounds.append(uvloop.run(floor_case(args.requests, args.connections)))
        elif args.case == "stream":
            rounds.append(stream_case(args.requests // 10, args.parsers))
        else:
            rounds.append(uvloop.run(redis_case(args.requests, args.connections, args.redis_url)))
    micro = sorted(r * 1e6 for r in rounds)
    name = f"{args.case} {args.parsers}" if args.case == "stream" else args.case
    if args.case == "request" and without:
        name += f" without {','.join(sorted(without))}"
    if args.case == "request" and args.sink != "memory":
        name += f" sink {args.sink}"
    if args.case == "request" and args.policies != "none":
        name += f" policies {args.policies}"
    if args.case == "request" and args.stream:
        name += f" stream {args.stream}"
    if args.case == "request" and args.policy:
        name += " with --policy"
    if args.case == "request" and args.lease_seconds is not None:
        name += f" lease {args.lease_seconds:g} s"
    print(
        f"{name} ({args.root}): median {statistics.median(micro):.2f} µs/op, "
        f"min {micro[0]:.2f}, max {micro[-1]:.2f} over {args.repeat} rounds of {args.requests}"
    )


if __name__ == "__main__":
    main()
