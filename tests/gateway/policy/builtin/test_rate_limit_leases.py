"""rate-limit-by-key on the Redis store's leases (docs/token-limits.md, "Leases"): the statement hands the store the
same window tuple for a counter key and period, so a busy process admits from its lease without a Redis command;
never more than ``calls`` in a period, one process alone admits exactly ``calls``, the increment condition and
``sluice-on-store-error`` behave as without leases. The request within a lease and ``sluice-on-store-error`` also for
quota-by-key's calls (its own tests: test_quota_leases.py). Against Redis (REDIS_URL)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.limits.breaker import BreakerState, CircuitBreaker

from ...limits.helpers import NO_REDIS, REDIS_URL, FakeClock, Sent, counted, leased, stores
from ..helpers import gateway, header, upstream
from .test_quota_leases import policy as quota

pytestmark = pytest.mark.skipif(not REDIS_URL, reason=NO_REDIS)

SUBSCRIPTION = "@(context.Subscription.Id)"  # remembered per subscription
ADDRESS = "@(context.Request.IpAddress)"  # evaluated per request, its windows kept by value
COUNTER = "rk:*"  # the one rate-limit counter of a test


def policy(calls: int, key: str = SUBSCRIPTION, extra: str = "", period: str = "60") -> str:
    return (
        f'<policies><inbound><base/><rate-limit-by-key calls="{calls}" renewal-period="{period}" counter-key="{key}" '
        f'remaining-calls-header-name="x-remaining" {extra}/></inbound></policies>'
    )


# a statement of 1,000 calls for each kind of key: rate-limit-by-key's, and quota-by-key's (also one never renewed)
WITHIN_A_LEASE = {
    "rate-sub": policy(1000),
    "rate-ip": policy(1000, ADDRESS),
    "quota-sub": quota(1000),
    "quota-ip": quota(1000, ADDRESS),
    "quota-forever": quota(1000, period="0"),
}


@pytest.mark.parametrize("document", WITHIN_A_LEASE.values(), ids=WITHIN_A_LEASE.keys())
async def test_a_request_within_the_lease_sends_no_command(document):
    clock = FakeClock()
    async with stores(1, clock) as (store,):
        gw = gateway(upstream(), clock=clock, store=store, api_policy=document)
        for _ in range(6):  # the first requests of a window ask for no lease
            assert (await gw.chat()).status == 200
            if leased(store):
                break
        left = leased(store)
        assert left
        sent = Sent(store)
        responses = [await gw.chat() for _ in range(left)]
        assert [r.status for r in responses] == [200] * left
        assert sent.commands == []
        assert leased(store) == 0
        assert (await gw.chat()).status == 200  # the lease is spent: to Redis again
        assert len(sent.commands) == 1


@pytest.mark.parametrize(
    ("key", "period"), [(SUBSCRIPTION, "60"), (ADDRESS, "60"), (SUBSCRIPTION, "@(60)")], ids=["sub", "ip", "expr"]
)
async def test_one_process_admits_exactly_calls_with_exact_remaining_counts(key, period):
    clock = FakeClock()
    calls = 300
    async with stores(1, clock) as (store,):
        sent = Sent(store)
        gw = gateway(upstream(), clock=clock, store=store, api_policy=policy(calls, key, period=period))
        responses = [await gw.chat() for _ in range(calls + 1)]
        assert [r.status for r in responses] == [200] * calls + [429]
        assert [int(header(r, b"x-remaining")) for r in responses] == [*range(calls - 1, -1, -1), 0]
        assert len(sent.commands) < calls / 2  # most were admitted from leases
        assert await counted(store, COUNTER) == calls


async def test_one_process_admits_exactly_calls_under_concurrency():
    """Requests in flight together: a request Redis refuses while this process's lease holds calls is admitted from
    the lease, so the process alone is never refused before it has admitted ``calls``."""
    clock = FakeClock()
    calls = 300
    async with stores(1, clock) as (store,):
        gw = gateway(upstream(), clock=clock, store=store, api_policy=policy(calls))
        statuses = []
        for _ in range(8):
            statuses += [r.status for r in await asyncio.gather(*(gw.chat() for _ in range(50)))]
        assert statuses.count(200) == calls
        assert statuses[: statuses.index(429)].count(200) == calls  # nothing refused before the last admission
        assert await counted(store, COUNTER) == calls


async def test_two_processes_never_admit_more_than_calls():
    clock = FakeClock()
    calls = 600
    async with stores(2, clock) as pair:
        gateways = [gateway(upstream(), clock=clock, store=store, api_policy=policy(calls)) for store in pair]
        admitted = 0
        remaining: list[int] = []
        largest = 0

        async def client(gw) -> None:
            nonlocal admitted, largest
            for _ in range(calls // 4):
                response = await gw.chat()
                left = int(header(response, b"x-remaining"))
                assert 0 <= left < calls
                if response.status == 200:
                    admitted += 1
                    remaining.append(left)
                else:
                    assert response.status == 429 and left == 0
                largest = max(largest, *(leased(store) for store in pair))

        await asyncio.gather(*(client(gw) for gw in gateways for _ in range(4)))
        assert largest > 0  # leases were held
        assert calls - 2 * (calls // 16) <= admitted <= calls
        assert await counted(pair[0], COUNTER) == admitted
        assert min(remaining) <= 2 * (calls // 16)


async def test_leases_off_sends_every_request_to_redis():
    clock = FakeClock()
    async with stores(1, clock, lease_seconds=0) as (store,):
        sent = Sent(store)
        gw = gateway(upstream(), clock=clock, store=store, api_policy=policy(1000))
        responses = [await gw.chat() for _ in range(20)]
        assert [int(header(r, b"x-remaining")) for r in responses] == list(range(999, 979, -1))
        assert len(sent.commands) == 20
        assert store._leases == {}
        assert await counted(store, COUNTER) == 20


async def test_the_increment_condition_gives_back_calls_admitted_from_a_lease():
    """Reserved now (from the lease or from Redis), given back when the condition is false: only the kept calls
    count, and a process alone still admits exactly ``calls`` of them."""
    clock = FakeClock()
    calls = 200
    statuses = iter([500] * 100 + [200] * 1000)
    condition = 'increment-condition="@(context.Response.StatusCode &lt; 400)"'
    async with stores(1, clock) as (store,):
        gw = gateway(lambda call: upstream(status=next(statuses))(call), clock=clock, store=store,
                     api_policy=policy(calls, extra=condition))  # fmt: skip
        assert [(await gw.chat()).status for _ in range(100)] == [500] * 100
        assert leased(store)  # the failed calls were admitted from leases too
        assert await counted(store, COUNTER) == 0  # and given back
        assert [(await gw.chat()).status for _ in range(calls + 1)] == [200] * calls + [429]
        assert await counted(store, COUNTER) == calls


@pytest.mark.parametrize("statement", [policy, quota], ids=["rate", "quota"])
@pytest.mark.parametrize(("choice", "status"), [("deny", 503), ("allow", 200)])
async def test_an_open_breaker_decides_even_with_a_lease(statement, choice, status):
    hold = asyncio.Event()  # never set: the breaker stays open until the test ends

    async def held(_: float) -> None:
        await hold.wait()

    async def ping() -> None:  # never reached: the breaker's wait before its probe is held
        raise AssertionError("probed")

    clock = FakeClock()
    breaker = CircuitBreaker(ping, threshold=1, sleep=held)
    async with stores(1, clock, breaker=breaker) as (store,):
        gw = gateway(upstream(), clock=clock, store=store,
                     api_policy=statement(1000, extra=f'sluice-on-store-error="{choice}"'))  # fmt: skip
        for _ in range(6):
            assert (await gw.chat()).status == 200
        assert leased(store)
        breaker.failure()
        assert breaker.state is BreakerState.OPEN
        sent = Sent(store)
        assert [(await gw.chat()).status for _ in range(3)] == [status] * 3
        assert sent.commands == []
