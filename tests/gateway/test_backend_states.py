"""gateway.backends without the network: breaker windows and thresholds, probes, Retry-After, pool choice; and the
load-time checks of the retry, limit-concurrency and forward-request attributes."""

from __future__ import annotations

import pytest

from gateway.backends import BackendState, BackendStates, parse_retry_after
from gateway.http.client import Origin
from gateway.model import BackendPool, BackendTarget, BreakerRule, PoolMember
from gateway.policy import PolicyError, parse_document


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def target(name: str, rule: BreakerRule | None) -> BackendTarget:
    origin, path = Origin.from_url(f"http://127.0.0.1:9/{name}")
    return BackendTarget(name, f"http://127.0.0.1:9/{name}", origin, path, breaker=rule)


COUNT_5XX = BreakerRule("r", interval=10, trip_duration=30, count=3, status_ranges=((500, 599),),
                        error_reasons=frozenset({"Timeout"}))  # fmt: skip


async def test_count_within_the_interval_trips_and_old_failures_fall_out():
    clock = Clock()
    states = BackendStates(clock)
    a = target("a", COUNT_5XX)
    assert not states.record(a, 500, None)
    assert not states.record(a, None, "Timeout")
    clock.now += 11  # both fall out of the 10 s window
    assert not states.record(a, 503, None)
    assert not states.record(a, 200, None)  # not a failure
    assert not states.record(a, 404, None)  # not in the ranges
    assert not states.record(a, None, "BackendConnectionFailure")  # not in errorReasons
    assert not states.record(a, 500, None)
    assert states.record(a, 599, None)
    assert states.state("a") == BackendState.OPEN
    assert not await states.admit(a)
    clock.now += 29.9
    assert not await states.admit(a)
    clock.now += 0.1
    assert states.state("a") == BackendState.HALF_OPEN
    assert await states.admit(a)  # the probe
    assert not await states.admit(a)  # one at a time
    states.record(a, 200, None)
    assert states.state("a") == BackendState.CLOSED
    assert await states.admit(a)


async def test_percentage_needs_enough_answers():
    clock = Clock()
    rule = BreakerRule("p", interval=60, trip_duration=5, percentage=50, status_ranges=((500, 599),), min_samples=4)
    states = BackendStates(clock)
    a = target("a", rule)
    assert not states.record(a, 500, None)  # 1/1 failed, but too few answers
    assert not states.record(a, 200, None)
    assert not states.record(a, 500, None)  # 2/3: still too few answers
    assert not states.record(a, 200, None)  # 2/4: a success never trips
    assert not states.record(a, 200, None)
    assert states.state("a") == BackendState.CLOSED
    assert states.record(a, 500, None)  # 3/6 = 50 %: the threshold
    assert states.state("a") == BackendState.OPEN


async def test_retry_after_sets_the_trip_and_is_capped():
    clock = Clock()
    rule = BreakerRule("r", interval=60, trip_duration=60, count=1, status_ranges=((429, 429),),
                       accept_retry_after=True)  # fmt: skip
    states = BackendStates(clock, wall_clock=lambda: 1_000_000.0, max_trip=100)
    a = target("a", rule)
    assert states.record(a, 429, None, parse_retry_after(b"7", 1_000_000.0))
    assert states.retry_in("a") == 7
    clock.now += 7
    assert await states.admit(a)
    assert states.record(a, 429, None, 10_000.0)  # the probe failed: tripped again, capped
    assert states.retry_in("a") == 100
    b = target("b", rule)
    assert states.record(b, 429, None, None)  # no Retry-After: the rule's trip duration
    assert states.retry_in("b") == 60


def test_retry_after_as_an_http_date():
    assert parse_retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    assert parse_retry_after(b"soon", 0.0) is None
    assert parse_retry_after(None, 0.0) is None


async def test_a_probe_whose_client_left_frees_the_slot_and_a_silent_one_times_out():
    clock = Clock()
    states = BackendStates(clock, probe_timeout=20)
    a = target("a", COUNT_5XX)
    for _ in range(3):
        states.record(a, 500, None)
    clock.now += 30
    assert await states.admit(a)
    states.release_probe(a)  # the client went away
    assert await states.admit(a)
    assert not await states.admit(a)
    clock.now += 20  # that probe never reported
    assert await states.admit(a)


async def test_priority_groups_weights_and_tried_members():
    clock = Clock()
    states = BackendStates(clock)
    rule = BreakerRule("r", interval=60, trip_duration=60, count=1, status_ranges=((429, 429),))
    a, b, c = target("a", rule), target("b", rule), target("c", rule)
    pool = BackendPool.of([PoolMember(a, 1, 2), PoolMember(b, 1, 1), PoolMember(c, 2, 1)])
    picks = [(await states.choose("p", pool))[0].target.name for _ in range(6)]
    assert picks == ["a", "b", "a", "a", "b", "a"]  # smooth 2:1, never c
    member, why = await states.choose("p", pool, tried=["a", "b"])
    assert member.target.name == "c" and "priority group 2" in why
    states.record(a, 429, None)
    states.record(b, 429, None)
    assert {(await states.choose("p", pool))[0].target.name for _ in range(3)} == {"c"}
    states.record(c, 429, None)
    member, why = await states.choose("p", pool)
    assert member is None and why == "every member is tripped"


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ('<retry condition="true" count="0" interval="0"><forward-request /></retry>', "'count' must be an integer"),
        ('<retry condition="true" count="51" interval="0"><forward-request /></retry>', "'count' must be an integer"),
        ('<retry condition="true" count="1" interval="301"><forward-request /></retry>', "'interval' must be"),
        (
            '<retry condition="true" count="1" interval="1" max-interval="5"><forward-request /></retry>',
            "needs 'delta'",
        ),
        ('<retry condition="true" count="1" interval="0" />', "needs at least one child"),
        ('<retry condition="maybe" count="1" interval="0"><forward-request /></retry>', "must be true, false"),
        ('<retry count="1" interval="0"><forward-request /></retry>', "missing required attribute 'condition'"),
        ('<limit-concurrency key="k" max-count="0"><forward-request /></limit-concurrency>', "positive integer"),
        ('<forward-request fail-on-error-status-code="yes" />', "must be one of true, false"),
    ],
)
def test_bad_attributes_are_refused_when_the_document_is_written(statement, message):
    with pytest.raises(PolicyError, match=message):
        parse_document(f"<policies><backend>{statement}</backend></policies>", "api")


def _retry(attrs: str):
    document = parse_document(
        f"<policies><backend><retry {attrs}><forward-request /></retry></backend></policies>", "api"
    )
    return next(iter(document.sections.values()))[0]


def test_retry_intervals_fixed_linear_exponential_and_first_fast():
    fixed = _retry('condition="true" count="3" interval="2"')
    assert [fixed.wait_before(n) for n in (1, 2, 3)] == [2, 2, 2]
    linear = _retry('condition="true" count="3" interval="1" delta="2" first-fast-retry="true"')
    assert [linear.wait_before(n) for n in (1, 2, 3)] == [0, 3, 5]
    exponential = _retry('condition="true" count="5" interval="1" delta="2" max-interval="10"')
    waits = [exponential.wait_before(n) for n in (1, 2, 3, 4, 5)]
    assert waits[0] == 1
    assert 1 + 1.6 <= waits[1] <= 1 + 2.4  # 1 + (2^1 - 1) * delta ±20 %
    assert 1 + 3 * 1.6 <= waits[2] <= 1 + 3 * 2.4
    assert waits[3] == waits[4] == 10  # capped by max-interval
