"""A gateway SIGKILLed mid-run loses no usage record of a response the client received completely.

Real processes: the mock model server and ``python -m gateway`` serving from a snapshot cache file (the management
plane URL points at a closed port), with ``REDIS_URL`` set so records go to a Redis stream. Clients send plain and
streamed chat completions at concurrency 16; the gateway is killed with SIGKILL while requests are in flight,
restarted on the same spool, and stopped. Every request whose response the client read to its end (x-request-id)
must have a record in the stream; the stream is then counted into the per-minute rollups the way the Celery task
does (``usage.stream.StreamConsumer``), and the rollups must hold each of those requests exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid

import aiohttp
import orjson
import pytest

from gateway.usage.record import UsageRecord
from tests.fixtures_procs import free_port, mock_llm, process_factory  # noqa: F401  (fixtures)

from .helpers import KEYS, TOKEN, base_snapshot

pytestmark = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis: set REDIS_URL (CI does)")

REDIS_URL = os.environ.get("REDIS_URL", "")
KEY = {"Ocp-Apim-Subscription-Key": KEYS["master"][0]}
CHAT = "/llm/chat/chat/completions"
CONCURRENCY = 16
BEFORE_KILL = 60  # responses read to their end before the SIGKILL (then 16 more are in flight)
WAIT = 60.0  # the bound on each wait for traffic: generous for a loaded CI machine, reached only on a failure


def gateway_env(tmp_path, port: int, stream: str) -> dict[str, str]:
    return {
        **os.environ,
        "SLUICE_GATEWAY_TOKEN": TOKEN,
        "SLUICE_GATEWAY_PORT": str(port),
        "SLUICE_ADMIN_PORT": "0",  # no admin listener: gateways of parallel tests would share 9180
        "SLUICE_GATEWAY_ID": "kill-test",
        "SLUICE_SNAPSHOT_CACHE": str(tmp_path / "snapshot.json"),
        "SLUICE_MANAGEMENT_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: serve from the cache
        "SLUICE_POLL_INTERVAL": "5",
        "SLUICE_USAGE_STREAM": stream,
        "REDIS_URL": REDIS_URL,
        "SLUICE_LOG_LEVEL": "WARNING",
    }


def start_gateway(start, env: dict[str, str], port: int):
    argv = [sys.executable, "-m", "gateway"]
    return start(argv, f"http://127.0.0.1:{port}/__sluice/health", env=env, name="gateway", timeout=30)


class Traffic:
    """Closed-loop clients; ``completed`` holds the ids of responses read to their very end."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}{CHAT}"
        self.completed: set[str] = set()
        self.failed = 0
        self.sent = 0
        self.stop = asyncio.Event()
        self._wanted = 0
        self._reached = asyncio.Event()

    async def until_completed(self, count: int, timeout: float = WAIT) -> None:
        """Wait until ``count`` responses have been read to their end (the event itself, not a guess of the time)."""
        self._wanted = count
        if len(self.completed) < count:
            self._reached.clear()
            await asyncio.wait_for(self._reached.wait(), timeout)

    async def one(self, session: aiohttp.ClientSession, n: int) -> None:
        stream = n % 3 == 0
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"request {n}"}], "stream": stream}
        headers = {**KEY, "X-Mock-Delay-Ms": "15", "X-Mock-Chunk-Delay-Ms": "2" if stream else "0"}
        self.sent += 1
        try:
            async with session.post(self.url, data=orjson.dumps(body), headers=headers) as response:
                await response.read()  # raises when a chunked or sized body is cut short
                if response.status == 200:
                    self.completed.add(response.headers["x-request-id"])
                    if len(self.completed) >= self._wanted:
                        self._reached.set()
        except (TimeoutError, aiohttp.ClientError):
            self.failed += 1

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def worker(index: int) -> None:
                n = index
                while not self.stop.is_set():
                    await self.one(session, n)
                    n += CONCURRENCY

            await asyncio.gather(*(worker(i) for i in range(CONCURRENCY)))


def stream_records(stream: str) -> list[UsageRecord]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return [UsageRecord.from_fields(fields) for _, fields in client.xrange(stream)]
    finally:
        client.close()


def delete_stream(stream: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.delete(stream)
    finally:
        client.close()


@pytest.fixture
def stream():
    name = f"sluice:usage:test-{uuid.uuid4().hex}"
    yield name
    delete_stream(name)


@pytest.mark.django_db(transaction=True)
def test_sigkill_mid_run_loses_no_completed_record(tmp_path, mock_llm, process_factory, stream):  # noqa: F811
    (tmp_path / "snapshot.json").write_bytes(orjson.dumps(_snapshot(mock_llm.root_url)))
    port = free_port()
    env = gateway_env(tmp_path, port, stream)

    async def scenario() -> tuple[Traffic, Traffic]:
        gateway = start_gateway(process_factory, env, port)
        first = Traffic(port)
        runner = asyncio.ensure_future(first.run())
        await first.until_completed(BEFORE_KILL)
        assert gateway.signal_group(signal.SIGKILL)  # mid-run: requests are in flight
        await asyncio.to_thread(gateway.popen.wait, 10)
        first.stop.set()
        await runner

        start_gateway(process_factory, env, port)  # same spool: replays what the killed one left there
        second = Traffic(port)
        runner = asyncio.ensure_future(second.run())
        await second.until_completed(1)
        second.stop.set()
        await runner
        return first, second

    first, second = asyncio.run(scenario())
    assert len(first.completed) >= BEFORE_KILL and first.failed > 0, (len(first.completed), first.failed)
    assert second.completed

    deadline = time.monotonic() + WAIT  # the restarted gateway delivers its last records within its flush interval
    completed = first.completed | second.completed
    while True:
        records = stream_records(stream)
        ids = {r.request_id for r in records}
        if completed <= ids or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    missing = completed - ids
    assert not missing, f"{len(missing)} completed requests have no usage record"
    assert all(r.gateway_id == "kill-test" and r.api == "chat" for r in records)
    assert all(r.prompt_tokens > 0 and r.completion_tokens > 0 for r in records if r.request_id in completed)

    _check_rollups(stream, records, completed)


def _check_rollups(stream: str, records: list[UsageRecord], completed: set[str]) -> None:
    """Count the stream as the Celery task does; every request once, whatever was delivered twice."""
    from django.db.models import Sum

    from usage.models import UsageRecordSeen, UsageRollup
    from usage.stream import StreamConsumer, redis_client

    StreamConsumer(redis_client(REDIS_URL), stream, consumer="kill-test").run()
    distinct = {r.request_id: r for r in records}
    totals = UsageRollup.objects.aggregate(
        requests=Sum("requests"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens")
    )
    assert totals["requests"] == len(distinct)
    assert totals["prompt"] == sum(r.prompt_tokens for r in distinct.values())
    assert totals["completion"] == sum(r.completion_tokens for r in distinct.values())
    seen = {str(request_id) for request_id in UsageRecordSeen.objects.values_list("request_id", flat=True)}
    assert completed <= seen


def _snapshot(mock_url: str) -> dict:
    data = base_snapshot(mock_url)
    data["apis"][0]["api_type"] = "openai"
    return data
