"""quota-by-key on the Redis store's leases (docs/token-limits.md, "Leases"): the statement hands the store the same
calls window tuple for a counter key and period, so a busy process admits calls from its lease without a Redis
command; one process, and several together, admit exactly ``calls``; the bandwidth is never leased (every bandwidth
admission goes to Redis) and is settled to the request and response kilobytes; the increment condition and leases off
behave as without leases. A call within a lease and ``sluice-on-store-error`` with a lease held: with
rate-limit-by-key's, in test_rate_limit_leases.py. Against Redis (REDIS_URL)."""

from __future__ import annotations

import asyncio
import math

import orjson
import pytest

from ...limits.helpers import NO_REDIS, REDIS_URL, FakeClock, Sent, counted, leased, stores
from ..helpers import gateway, upstream

pytestmark = pytest.mark.skipif(not REDIS_URL, reason=NO_REDIS)

SUBSCRIPTION = "@(context.Subscription.Id)"  # remembered per subscription
ADDRESS = "@(context.Request.IpAddress)"  # evaluated per request, its windows kept by value
CALLS = "qk:*:c"  # the one calls counter of a test
KILOBYTES = "qk:*:b"  # the one bandwidth counter of a test
REQUEST_BODY = b"{}"  # what Gateway.chat sends


def policy(calls: int | None, key: str = SUBSCRIPTION, *, bandwidth: int | None = None, period: str = "3600",
           extra: str = "") -> str:  # fmt: skip
    limits = (f'calls="{calls}" ' if calls else "") + (f'bandwidth="{bandwidth}" ' if bandwidth else "")
    return (
        f'<policies><inbound><base/><quota-by-key {limits}renewal-period="{period}" counter-key="{key}" {extra}/>'
        "</inbound></policies>"
    )


def bandwidth_admissions(sent: Sent) -> int:
    """The bandwidth admissions among the commands sent (their counter's key ends in ``:b``)."""
    return sum(b":b\r\n" in command for command in sent.commands)


def kilobytes(response_body: bytes) -> int:
    return math.ceil((len(REQUEST_BODY) + len(response_body)) / 1024)


@pytest.mark.parametrize("key", [SUBSCRIPTION, ADDRESS], ids=["sub", "ip"])
async def test_one_process_admits_exactly_calls(key):
    clock = FakeClock()
    calls = 300
    async with stores(1, clock) as (store,):
        sent = Sent(store)
        gw = gateway(upstream(), clock=clock, store=store, api_policy=policy(calls, key))
        assert [(await gw.chat()).status for _ in range(calls + 1)] == [200] * calls + [403]
        assert len(sent.commands) < calls / 2  # most were admitted from leases
        assert await counted(store, CALLS) == calls


@pytest.mark.parametrize("processes", [2, 3])
async def test_processes_admitting_together_admit_exactly_calls(processes):
    """A concurrent burst, four clients per process, each sending until it is refused: never more than ``calls``
    admitted, and exactly ``calls`` once every client is refused (a process refused early while another held a lease
    stops; the holder spends it before it is refused). Most calls come from leases."""
    clock = FakeClock()
    calls = 600
    async with stores(processes, clock) as made:
        sent = [Sent(store) for store in made]
        gateways = [gateway(upstream(), clock=clock, store=store, api_policy=policy(calls)) for store in made]
        admitted = 0
        largest = 0

        async def client(gw) -> None:
            nonlocal admitted, largest
            for _ in range(calls + 1):  # (a bound: every client is refused long before)
                response = await gw.chat()
                largest = max(largest, *(leased(store) for store in made))
                if response.status != 200:
                    assert response.status == 403
                    assert orjson.loads(response.body)["message"].startswith("Out of call volume quota.")
                    return
                admitted += 1
                assert admitted <= calls

        await asyncio.gather(*(client(gw) for gw in gateways for _ in range(4)))
        assert admitted == calls
        assert largest > 0  # leases were held
        assert sum(len(s.commands) for s in sent) < calls / 2
        assert leased(made[0]) == 0
        assert await counted(made[0], CALLS) == calls


async def test_bandwidth_is_settled_to_the_kilobytes_with_calls_from_leases():
    """Calls admitted from leases, the bandwidth admitted by Redis for every request and settled to the request and
    response kilobytes at the end, or to 0 (with the call) when the increment condition is false."""
    clock = FakeClock()
    body = b"x" * 1500
    statuses = iter([500] * 30 + [200] * 30)
    condition = 'increment-condition="@(context.Response.StatusCode &lt; 400)"'
    async with stores(1, clock) as (store,):
        sent = Sent(store)
        gw = gateway(lambda call: upstream(status=next(statuses), body=body)(call), clock=clock, store=store,
                     api_policy=policy(1000, bandwidth=10**6, extra=condition))  # fmt: skip
        assert [(await gw.chat()).status for _ in range(30)] == [500] * 30
        assert leased(store)  # calls admitted from a lease, given back with the condition false
        assert await counted(store, CALLS) == 0
        assert await counted(store, KILOBYTES) == 0
        sent.commands.clear()
        assert [(await gw.chat()).status for _ in range(30)] == [200] * 30
        assert bandwidth_admissions(sent) == 30  # never leased
        assert len(sent.commands) - 30 < 15  # the calls mostly from leases
        assert await counted(store, CALLS) == 30
        assert await counted(store, KILOBYTES) == 30 * kilobytes(body) == 60


async def test_the_bandwidth_quota_refuses_once_used_up_with_calls_leased():
    """Large responses against a bandwidth quota: the bandwidth is admitted by Redis each time, so the first request
    after the quota is used up is refused (a lease of 1 KB reservations would have let a whole grant of requests
    through, each settling 100 KB); the call admitted for a refused request, from a lease, is given back."""
    clock = FakeClock()
    body = b"x" * (100 * 1024 - len(REQUEST_BODY))  # 100 KB with the request
    quota = 5000
    async with stores(1, clock) as (store,):
        gw = gateway(upstream(body=body), clock=clock, store=store, api_policy=policy(10**6, bandwidth=quota))
        statuses = []
        while not statuses or statuses[-1] == 200:
            statuses.append((await gw.chat()).status)
            assert len(statuses) <= 60
        admitted = statuses.count(200)
        assert statuses[-1] == 403
        assert leased(store)  # the calls came from a lease
        used = await counted(store, KILOBYTES)
        # refused once the count reached the quota; at most the request before it unsettled when it was admitted
        assert quota <= used == admitted * 100 <= quota + 2 * 100
        assert await counted(store, CALLS) == admitted


async def test_leases_off_sends_every_admission_to_redis():
    clock = FakeClock()
    body = b"x" * 1500
    async with stores(1, clock, lease_seconds=0) as (store,):
        sent = Sent(store)
        gw = gateway(upstream(body=body), clock=clock, store=store, api_policy=policy(1000, bandwidth=10**6))
        assert [(await gw.chat()).status for _ in range(20)] == [200] * 20
        assert len(sent.commands) == 40
        assert bandwidth_admissions(sent) == 20
        assert store._leases == {}
        assert await counted(store, CALLS) == 20
        assert await counted(store, KILOBYTES) == 20 * kilobytes(body)
