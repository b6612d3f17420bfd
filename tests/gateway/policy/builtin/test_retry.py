"""``retry`` through the gateway with an injected ``sleep``: the waits between attempts (fixed, linear ``delta``,
exponential ``delta`` + ``max-interval``, ``first-fast-retry``) are checked where they happen, without waiting."""

from __future__ import annotations

import time

import pytest

from ...fakes import FakeUpstream
from ..helpers import gateway


class Sleeper:
    """An injected ``sleep``: records each wait and how many upstream calls had been made when it began."""

    def __init__(self, pool_calls) -> None:
        self.pool_calls = pool_calls
        self.waits: list[tuple[float, int]] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append((seconds, len(self.pool_calls())))


def statuses(*codes: int):
    """A respond function answering ``codes`` in turn (the last one again once they run out)."""
    answers = list(codes)

    def respond(call):
        return FakeUpstream(status=answers.pop(0) if len(answers) > 1 else answers[0], body=b'{"n": 1}')

    return respond


def retrying(attrs: str, respond):
    policy = (
        "<policies><inbound><base/></inbound><backend>"
        f'<retry condition="@(context.Response.StatusCode >= 500)" {attrs}><forward-request /></retry>'
        "</backend></policies>"
    )
    holder: dict = {}
    sleeper = Sleeper(lambda: holder["gw"].pool.calls)
    holder["gw"] = gateway(respond, api_policy=policy, sleep=sleeper)
    return holder["gw"], sleeper


async def test_fixed_interval_waits_between_every_attempt_and_no_real_time_passes():
    gw, sleeper = retrying('count="3" interval="20"', statuses(500))
    started = time.monotonic()
    response = await gw.chat()
    assert time.monotonic() - started < 5  # 60 s of intervals, none of them waited for real
    assert response.status == 500  # the last attempt's answer
    assert len(gw.pool.calls) == 4
    assert sleeper.waits == [(20, 1), (20, 2), (20, 3)]  # after each failed attempt, none after the last


async def test_linear_delta_with_first_fast_retry():
    gw, sleeper = retrying('count="3" interval="1" delta="2" first-fast-retry="true"', statuses(503))
    await gw.chat()
    assert len(gw.pool.calls) == 4
    # retry 1 at once (no wait between calls 1 and 2), then interval + (n - 1) * delta
    assert sleeper.waits == [(3, 2), (5, 3)]


async def test_exponential_delta_is_capped_by_max_interval():
    gw, sleeper = retrying('count="5" interval="1" delta="2" max-interval="10"', statuses(500))
    await gw.chat()
    assert len(gw.pool.calls) == 6
    waits = [wait for wait, _ in sleeper.waits]
    assert [calls for _, calls in sleeper.waits] == [1, 2, 3, 4, 5]
    assert waits[0] == 1
    assert 1 + 1 * 1.6 <= waits[1] <= 1 + 1 * 2.4  # interval + (2^1 - 1) * delta, delta jittered ±20 %
    assert 1 + 3 * 1.6 <= waits[2] <= 1 + 3 * 2.4  # interval + (2^2 - 1) * delta
    assert waits[3] == waits[4] == 10  # 1 + 7 * delta and 1 + 15 * delta pass max-interval


@pytest.mark.parametrize("fast", ["true", "false"])
async def test_a_good_answer_ends_the_retries_and_the_waits(fast):
    gw, sleeper = retrying(f'count="4" interval="7" first-fast-retry="{fast}"', statuses(500, 429, 200))
    response = await gw.chat()
    assert response.status == 429  # 429 is not >= 500: the condition ends the retries with that answer
    assert len(gw.pool.calls) == 2
    assert sleeper.waits == ([] if fast == "true" else [(7, 1)])


async def test_zero_interval_never_sleeps():
    gw, sleeper = retrying('count="2" interval="0"', statuses(500, 500, 200))
    response = await gw.chat()
    assert response.status == 200
    assert len(gw.pool.calls) == 3
    assert sleeper.waits == []
