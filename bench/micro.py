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

    python bench/micro.py server [--root DIR] [--requests 20000] [--repeat 7]
"""

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

REQUEST = b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def server_case(requests: int, connections: int) -> float:
    from gateway.http.server import Response, serve, shutdown

    async def handler(request):  # type: ignore[no-untyped-def]
        await request.read_body()
        return Response(200, [(b"content-type", b"application/json")], b"{}")

    server = await serve(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    per_connection = requests // connections

    class Client(asyncio.Protocol):
        def __init__(self, done: asyncio.Future[None]) -> None:
            self.left = per_connection
            self.done = done

        def connection_made(self, transport):  # type: ignore[no-untyped-def]
            self.transport = transport

        def data_received(self, data: bytes) -> None:  # one small response per read on loopback
            self.left -= 1
            if self.left:
                self.transport.write(REQUEST)
            elif not self.done.done():
                self.done.set_result(None)

    clients = []
    for _ in range(connections):
        done = loop.create_future()
        transport, _ = await loop.create_connection(lambda done=done: Client(done), "127.0.0.1", port)
        clients.append((transport, done))
    started = time.process_time()
    for transport, _ in clients:
        transport.write(REQUEST)
    await asyncio.gather(*(done for _, done in clients))
    spent = time.process_time() - started
    for transport, _ in clients:
        transport.close()
    await shutdown(server, 1.0)
    return spent / (per_connection * connections)


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
    parser.add_argument("case", choices=("server", "redis", "metrics"))
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="checkout to test")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()
    sys.path.insert(0, str(args.root.resolve()))
    import uvloop

    import gateway

    assert Path(gateway.__file__).resolve().is_relative_to(args.root.resolve()), gateway.__file__

    rounds = []
    for _ in range(args.repeat):
        if args.case == "server":
            rounds.append(uvloop.run(server_case(args.requests, args.connections)))
        elif args.case == "metrics":
            rounds.append(metrics_case(args.requests))
        else:
            rounds.append(uvloop.run(redis_case(args.requests, args.connections, args.redis_url)))
    micro = sorted(r * 1e6 for r in rounds)
    print(
        f"{args.case} ({args.root}): median {statistics.median(micro):.2f} µs/op, "
        f"min {micro[0]:.2f}, max {micro[-1]:.2f} over {args.repeat} rounds of {args.requests}"
    )


if __name__ == "__main__":
    main()
