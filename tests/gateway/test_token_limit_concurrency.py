"""The admission bound under concurrency, across two gateway processes sharing Redis (docs/token-limits.md).

Real processes: the mock model server and two ``python -m gateway`` serving the same snapshot from a cache file
(the management plane URL points at a closed port) with ``REDIS_URL`` set. Many concurrent clients, half on each
gateway, send chat completions that each take a while at the backend, against a small tokens-per-minute limit.
The test runs inside one minute window, adds up the real usage of every admitted request (from the response
bodies) and checks it against the bound, that the limit was reached (429s), and that the Redis counter ends equal to
the admitted usage (every reservation was settled to the real total).

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


def redis_count(key: str) -> int:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        value = client.get(key)
        return int(value) if value is not None else 0
    finally:
        client.close()


def wait_for_fresh_minute(margin: float = 5.0) -> float:
    """Start the burst early in a minute so it cannot straddle two windows; returns the minute's start."""
    now = time.time()
    if now % 60 > 60 - margin:
        time.sleep(60 - now % 60 + 0.05)
        now = time.time()
    return now - now % 60


async def burst(ports: list[int], body: dict, headers: dict[str, str]) -> dict:
    results: list[tuple[int, int]] = []  # (status, total tokens of an admitted request)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(REQUESTS):
        queue.put_nowait(n)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def client(index: int) -> None:
            url = f"http://127.0.0.1:{ports[index % len(ports)]}{CHAT_URL}"
            while not queue.empty():
                queue.get_nowait()
                async with session.post(url, data=orjson.dumps(body), headers=headers) as response:
                    data = await response.json()
                    total = data["usage"]["total_tokens"] if response.status == 200 else 0
                    results.append((response.status, total))

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(CLIENTS)))
        elapsed = time.perf_counter() - started
    statuses = [status for status, _ in results]
    return {
        "sent": len(results),
        "admitted": statuses.count(200),
        "refused": statuses.count(429),
        "other": len(results) - statuses.count(200) - statuses.count(429),
        "tokens": sum(total for _, total in results),
        "max_single": max((total for _, total in results), default=0),
        "seconds": elapsed,
    }


def settled_counter(key: str, expected: int) -> int:
    deadline = time.monotonic() + 5
    value = redis_count(key)
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        value = redis_count(key)
    return value


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
        body, headers = BOUNDED_BODY, BOUNDED_HEADERS
        minute = wait_for_fresh_minute()
        figures = burst(ports, body, headers)
        figures = asyncio.run(figures)
        report("bounded", figures, LIMIT)
        assert figures["other"] == 0
        assert figures["tokens"] <= LIMIT  # the guarantee: reservations bound the usage
        assert figures["refused"] > 0  # the limit was reached
        assert figures["tokens"] > LIMIT - CLIENTS * 36  # and used up to within what is still reserved in flight
        key = f"sluice:tl:{{{counter}}}:m:{int(minute)}"
        assert settled_counter(key, figures["tokens"]) == figures["tokens"]
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
        minute = wait_for_fresh_minute()
        figures = asyncio.run(burst(ports, body, headers))
        reservation = 12 + default
        excess = 8 + 40 - reservation  # usage minus reservation of every request: 28
        # F, the requests unsettled at the last admission: each client has at most one request in flight, and at
        # most one finished request whose correction still waits in the gateway's 5 ms settlement batch (every
        # request takes at least the mock's 30 ms), so |F| <= 2 * CLIENTS.
        bound = LIMIT + 2 * CLIENTS * excess
        report("under-reserved", figures, bound)
        assert figures["other"] == 0
        assert figures["refused"] > 0
        assert figures["tokens"] <= bound
        key = f"sluice:tl:{{{counter}}}:m:{int(minute)}"
        assert settled_counter(key, figures["tokens"]) == figures["tokens"]
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
        minute = wait_for_fresh_minute()  # as in the bounded test: 28 used, 36 reserved per request; 400 x 28 > limit
        figures = asyncio.run(burst(ports, BOUNDED_BODY, BOUNDED_HEADERS))
        report("leased", figures, LEASE_LIMIT, LEASE_LIMIT)
        assert figures["other"] == 0
        assert figures["tokens"] <= LEASE_LIMIT  # leases never let the counters admit more
        assert figures["refused"] > 0
        # held back at the end: reservations in flight, and at most one lease per gateway (each <= limit // 16)
        assert figures["tokens"] > LEASE_LIMIT - CLIENTS * 36 - len(ports) * (LEASE_LIMIT // 16)
        key = f"sluice:tl:{{{counter}}}:m:{int(minute)}"
        assert settled_counter(key, figures["tokens"]) == figures["tokens"]
    finally:
        cleanup_redis(counter)
