"""The admission bound under concurrency, across two gateway processes sharing Redis (docs/token-limits.md).

Real processes: the mock model server and two ``python -m gateway`` serving the same snapshot from a cache file
(the management plane URL points at a closed port) with ``REDIS_URL`` set. Many concurrent clients, half on each
gateway, send chat completions that each take a while at the backend, against a small tokens-per-minute limit.
The test adds up the real usage of every admitted request (from the response bodies), checks that the Redis counters
end equal to it (every reservation was settled to the real total, in the window that admitted it), each minute
window's usage against the bound, and that the limit was reached (429s).

The burst starts whenever the test gets there: it may straddle two minute windows, each with the whole limit. The
gateways read this machine's clock, so a request was admitted in the minute of some moment between its sending and
its answer: the requests sent and answered inside one minute were admitted in it, and the few in flight at the turn
of the minute in one of the two. Each window's counter, once settled, is its admitted usage; it must lie between the
usage of the requests inside the window and that plus the usage of those in flight at its edges, and within the
bound; the counters add up to the admitted total. A burst inside one minute (the usual case) is checked exactly as
before: one counter, equal to the admitted total, within the bound.

* Bounded reservations (``max_tokens`` set, prompt estimate >= the backend's count): admitted usage <= limit.
* Under-reserved requests (no ``max_tokens``, a default reservation smaller than the completion): admitted usage
  <= limit + (requests in flight) x (largest excess of usage over reservation).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

import aiohttp
import orjson
import pytest

from tests.fixtures_procs import free_port, mock_llm, process_factory  # noqa: F401  (fixtures)

from .helpers import KEYS, TOKEN, llm_snapshot

pytestmark = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis: set REDIS_URL (CI does)")

REDIS_URL = os.environ.get("REDIS_URL", "")
KEY = {"Ocp-Apim-Subscription-Key": KEYS["master"][0]}
CHAT_URL = "/llm/chat/completions"
CLIENTS = 32  # concurrent clients, 16 per gateway
REQUESTS = 400
LIMIT = 1500


def start_gateways(tmp_path, start, policy: str, mock_url: str, count: int = 2) -> list[int]:
    (tmp_path / "snapshot.json").write_bytes(orjson.dumps(llm_snapshot(mock_url, policy)))
    ports = []
    for index in range(count):
        port = free_port()
        cache = tmp_path / f"snapshot-{index}.json"
        cache.write_bytes((tmp_path / "snapshot.json").read_bytes())
        env = {
            **os.environ,
            "SLUICE_GATEWAY_TOKEN": TOKEN,
            "SLUICE_GATEWAY_PORT": str(port),
            "SLUICE_ADMIN_PORT": "0",  # no admin listener: gateways of parallel tests would share 9180
            "SLUICE_GATEWAY_ID": f"concurrency-{index}",
            "SLUICE_SNAPSHOT_CACHE": str(cache),
            "SLUICE_MANAGEMENT_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: serve from the cache
            "SLUICE_POLL_INTERVAL": "5",
            "SLUICE_USAGE_STREAM": f"sluice-test:usage:{uuid.uuid4().hex}",
            "SLUICE_USAGE_SPOOL": str(tmp_path / f"usage-{index}.spool"),
            "SLUICE_USAGE_SETTLE_TIMEOUT": "0",
            "REDIS_URL": REDIS_URL,
            "SLUICE_LOG_LEVEL": "WARNING",
        }
        start(
            [sys.executable, "-m", "gateway"],
            f"http://127.0.0.1:{port}/__sluice/health",
            env=env,
            name=f"gateway-{index}",
            timeout=30,
        )
        ports.append(port)
    return ports


def cleanup_redis(counter: str, streams: str = "sluice-test:usage:*") -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"sluice:tl:{{{counter}}}*")) + list(client.scan_iter(match=streams))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


async def burst(ports: list[int], body: dict, headers: dict[str, str]) -> dict:
    # (sent, answered) in epoch seconds (the gateways' clock), status, total tokens of an admitted request
    results: list[tuple[float, float, int, int]] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(REQUESTS):
        queue.put_nowait(n)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def client(index: int) -> None:
            url = f"http://127.0.0.1:{ports[index % len(ports)]}{CHAT_URL}"
            while not queue.empty():
                queue.get_nowait()
                sent = time.time()
                async with session.post(url, data=orjson.dumps(body), headers=headers) as response:
                    data = await response.json()
                    total = data["usage"]["total_tokens"] if response.status == 200 else 0
                results.append((sent, time.time(), response.status, total))

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(CLIENTS)))
        elapsed = time.perf_counter() - started
    statuses = [status for _, _, status, _ in results]
    return {
        "sent": len(results),
        "admitted": statuses.count(200),
        "refused": statuses.count(429),
        "other": len(results) - statuses.count(200) - statuses.count(429),
        "tokens": sum(total for *_, total in results),
        "max_single": max((total for *_, total in results), default=0),
        "seconds": elapsed,
        "requests": results,
    }


def settled_counters(counter: str, minutes: list[int], total: int, limit: float = 10.0) -> list[int]:
    """The minute counters of ``counter`` once they add up to ``total``. The gateways settle on their own timers
    (and give back the leftovers of leases when these end), so the counters are read again each time Redis reports
    that one of them changed: client-side caching's broadcast tracking of their prefix, redirected to a connection
    subscribed to the invalidations. ``limit`` only guards against a failure; the counters are returned as they are
    then."""
    import redis

    pool = redis.ConnectionPool.from_url(REDIS_URL, protocol=2)  # RESP2: the invalidations come as pub/sub messages
    watcher, reader = pool.make_connection(), pool.make_connection()
    try:
        watcher.send_command("CLIENT", "ID")
        watcher_id = watcher.read_response()
        watcher.send_command("SUBSCRIBE", "__redis__:invalidate")
        watcher.read_response()
        prefix = f"sluice:tl:{{{counter}}}:"
        reader.send_command("CLIENT", "TRACKING", "ON", "REDIRECT", watcher_id, "BCAST", "PREFIX", prefix)
        reader.read_response()
        deadline = time.monotonic() + limit
        while True:
            reader.send_command("MGET", *(f"{prefix}m:{minute}" for minute in minutes))
            counts = [int(value) if value is not None else 0 for value in reader.read_response()]
            if sum(counts) == total or not watcher.can_read(timeout=max(0.0, deadline - time.monotonic())):
                return counts
            watcher.read_response()  # an invalidation: a counter changed
    finally:
        watcher.disconnect()
        reader.disconnect()
        pool.disconnect()


def check_windows(counter: str, figures: dict, bound: int, near: int | None = None) -> list[int]:
    """Check each minute window the burst reached (see the module's docstring): its settled counter within the bound
    and consistent with the answers sent and received inside it, the counters adding up to the admitted usage; with
    ``near``, that every window where a request was refused was used beyond ``near`` (one at least). Returns the
    counters."""
    requests = figures["requests"]
    first = int(min(sent for sent, *_ in requests) // 60 * 60)
    last = int(max(answered for _, answered, *_ in requests) // 60 * 60)
    minutes = list(range(first, last + 1, 60))
    # every reservation settled to the real usage: in each test the corrections still to come all have one sign
    # (reservations above the usage, or all below), so the sum reaches the total only once each counter is settled
    counts = settled_counters(counter, minutes, figures["tokens"])
    assert sum(counts) == figures["tokens"], (minutes, counts)
    refused_in = []
    for minute, count in zip(minutes, counts, strict=True):
        inside = [r for r in requests if minute <= r[0] and r[1] < minute + 60]
        reaching = [r for r in requests if r[0] < minute + 60 and r[1] >= minute]  # inside, or in flight at an edge
        assert sum(r[3] for r in inside) <= count <= sum(r[3] for r in reaching), (minute, count)
        assert count <= bound, (minute, count)
        if any(r[2] == 429 for r in inside):
            refused_in.append(count)
    if near is not None:
        assert max(counts) > near
        assert all(count > near for count in refused_in), (near, minutes, counts)
    return counts


def report(label: str, figures: dict, bound: int, limit: int = LIMIT) -> None:
    print(  # shown with -s; the figures quoted in docs/token-limits.md
        f"\n[{label}] sent={figures['sent']} admitted={figures['admitted']} refused(429)={figures['refused']} "
        f"tokens admitted={figures['tokens']} limit={limit} bound={bound} largest single={figures['max_single']} "
        f"in {figures['seconds']:.2f}s"
    )


def token_limit_policy(counter: str, limit: int, attributes: str = "") -> str:
    return (
        f'<policies><inbound><base/><llm-token-limit counter-key="{counter}" tokens-per-minute="{limit}" '
        f'estimate-prompt-tokens="true"{attributes}/></inbound></policies>'
    )


# mock usage: prompt 3 + 5 words = 8, completion min(X-Mock-Tokens, max_tokens) = 20: 28 per request;
# reservation: estimate (3 + 1 + 5 + 3 = 12) + max_tokens 24 = 36 >= 28
BOUNDED_BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "one two three four five"}],
    "max_tokens": 24,
}
BOUNDED_HEADERS = {**KEY, "X-Mock-Tokens": "20", "X-Mock-Delay-Ms": "30"}


def test_bounded_reservations_never_exceed_the_limit(tmp_path, mock_llm, process_factory):  # noqa: F811
    counter = f"conc-{uuid.uuid4().hex[:10]}"
    policy = token_limit_policy(counter, LIMIT)
    ports = start_gateways(tmp_path, process_factory, policy, mock_llm.base_url)
    try:
        figures = asyncio.run(burst(ports, BOUNDED_BODY, BOUNDED_HEADERS))
        report("bounded", figures, LIMIT)
        assert figures["other"] == 0
        assert figures["refused"] > 0  # the limit was reached
        # the guarantee, in each window: reservations bound the usage (<= LIMIT); and used up to within what is
        # still reserved in flight (> LIMIT - CLIENTS * 36)
        check_windows(counter, figures, LIMIT, near=LIMIT - CLIENTS * 36)
    finally:
        cleanup_redis(counter)


def test_under_reserved_requests_stay_within_the_stated_bound(tmp_path, mock_llm, process_factory):  # noqa: F811
    counter = f"conc-{uuid.uuid4().hex[:10]}"
    default = 8  # completion tokens reserved when max_tokens is absent; the mock answers with 40
    policy = token_limit_policy(counter, LIMIT, f' sluice-default-completion-reservation="{default}"')
    ports = start_gateways(tmp_path, process_factory, policy, mock_llm.base_url)
    try:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "one two three four five"}]}
        headers = {**KEY, "X-Mock-Tokens": "40", "X-Mock-Delay-Ms": "30"}
        figures = asyncio.run(burst(ports, body, headers))
        reservation = 12 + default
        excess = 8 + 40 - reservation  # usage minus reservation of every request: 28
        # F, the requests unsettled at the last admission: each client has at most one request in flight, and at
        # most one finished request whose correction still waits in the gateway's 5 ms settlement batch (every
        # request takes at least the mock's 30 ms), so |F| <= 2 * CLIENTS (in each window).
        bound = LIMIT + 2 * CLIENTS * excess
        report("under-reserved", figures, bound)
        assert figures["other"] == 0
        assert figures["refused"] > 0
        check_windows(counter, figures, bound)
    finally:
        cleanup_redis(counter)


LEASE_LIMIT = 6000  # room // 16 = 375 at the start: each gateway's admissions are leased (docs/token-limits.md)


def test_leased_admissions_stay_within_the_limit_and_settle(
    tmp_path,
    mock_llm,  # noqa: F811
    process_factory,  # noqa: F811
    monkeypatch,
):
    """Two gateways with leases (SLUICE_TOKEN_LEASE_SECONDS) against a limit large enough for them: the admitted usage
    stays within the limit, comes within what leases and requests in flight can hold back of it, and the counter
    settles to the admitted usage once the leases end and give their leftovers back."""
    monkeypatch.setenv("SLUICE_TOKEN_LEASE_SECONDS", "0.5")
    counter = f"lease-{uuid.uuid4().hex[:10]}"
    ports = start_gateways(tmp_path, process_factory, token_limit_policy(counter, LEASE_LIMIT), mock_llm.base_url)
    try:
        # as in the bounded test: 28 used, 36 reserved per request; 400 x 28 > limit
        figures = asyncio.run(burst(ports, BOUNDED_BODY, BOUNDED_HEADERS))
        report("leased", figures, LEASE_LIMIT, LEASE_LIMIT)
        assert figures["other"] == 0
        assert figures["refused"] > 0
        # in each window: leases never let the counters admit more than the limit; held back at the end: reservations
        # in flight, and at most one lease per gateway (each <= limit // 16)
        near = LEASE_LIMIT - CLIENTS * 36 - len(ports) * (LEASE_LIMIT // 16)
        check_windows(counter, figures, LEASE_LIMIT, near=near)
    finally:
        cleanup_redis(counter)
