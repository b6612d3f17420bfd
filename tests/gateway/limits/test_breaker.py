"""The counter store's circuit breaker (issue #7 item 5): a hung Redis costs a bounded wait, then none at all.

The state machine runs on an injected clock and sleep; the regression test talks to a real TCP server on loopback
that accepts connections and never answers (a hung Redis).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.limits import StoreUnavailable, create_store, minute_window
from gateway.limits.breaker import BreakerState, CircuitBreaker

from .helpers import FakeClock


class ManualTime:
    """Monotonic seconds and a ``sleep`` that records the wait and moves the clock instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.now += seconds


class Probe:
    def __init__(self) -> None:
        self.answers = False
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if not self.answers:
            raise ConnectionError("refused")


def make_breaker(**options) -> tuple[CircuitBreaker, ManualTime, Probe]:
    clock, probe = ManualTime(), Probe()
    breaker = CircuitBreaker(probe, clock=clock, sleep=clock.sleep, **options)
    return breaker, clock, probe


async def failing() -> None:
    raise StoreUnavailable("refused")


async def test_opens_after_threshold_consecutive_failures_and_then_fails_fast():
    breaker, _, _ = make_breaker(threshold=3)
    changes: list[tuple[BreakerState, bool]] = []
    breaker.listeners.append(lambda state, opened: changes.append((state, opened)))
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            await breaker.call(failing)
    assert breaker.state is BreakerState.CLOSED
    with pytest.raises(StoreUnavailable):
        await breaker.call(failing)
    assert breaker.state is BreakerState.OPEN and breaker.opened == 1
    assert changes[0] == (BreakerState.OPEN, True)

    called = []

    async def would_call_redis() -> int:
        called.append(1)
        return 1

    with pytest.raises(StoreUnavailable, match="circuit open"):
        await breaker.call(would_call_redis)
    assert called == []  # open: no I/O at all
    await breaker.aclose()


async def test_a_success_resets_the_failure_count():
    breaker, _, _ = make_breaker(threshold=2)

    async def ok() -> str:
        return "ok"

    for _ in range(5):
        with pytest.raises(StoreUnavailable):
            await breaker.call(failing)
        assert await breaker.call(ok) == "ok"
    assert breaker.state is BreakerState.CLOSED and breaker.opened == 0


async def test_probes_back_off_exponentially_up_to_the_cap_then_close():
    breaker, clock, probe = make_breaker(threshold=1, min_backoff=0.5, max_backoff=15.0)
    states: list[BreakerState] = []
    breaker.listeners.append(lambda state, opened: states.append(state))
    with pytest.raises(StoreUnavailable):
        await breaker.call(failing)
    assert breaker.retry_after() == 1  # 0.5 s to the first probe, rounded up
    for _ in range(7):
        assert await breaker.probe_once() is False
    # waits after each failed probe: 1, 2, 4, 8, 15 (capped), 15, 15
    assert breaker.backoff == 15.0 and breaker.next_probe_at == clock.now + 15.0
    assert breaker.retry_after() == 15
    assert BreakerState.HALF_OPEN in states and breaker.state is BreakerState.OPEN
    probe.answers = True
    assert await breaker.probe_once() is True
    assert breaker.state is BreakerState.CLOSED
    assert probe.calls == 8
    await breaker.aclose()


async def test_the_background_prober_sleeps_the_backoff_and_closes_the_circuit():
    breaker, clock, probe = make_breaker(threshold=1, min_backoff=0.5, max_backoff=4.0)
    closed = asyncio.Event()
    breaker.listeners.append(lambda state, opened: state is BreakerState.CLOSED and closed.set())

    def answer_on_fifth_probe(seconds: float) -> None:
        if len(clock.sleeps) == 5:
            probe.answers = True

    original = clock.sleep

    async def sleep(seconds: float) -> None:
        await original(seconds)
        answer_on_fifth_probe(seconds)

    breaker.sleep = sleep
    with pytest.raises(StoreUnavailable):
        await breaker.call(failing)
    await asyncio.wait_for(closed.wait(), 5)
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert breaker.state is BreakerState.CLOSED and probe.calls == 5
    await breaker.aclose()


async def test_a_call_that_hangs_is_cut_at_the_call_timeout():
    breaker, _, _ = make_breaker(call_timeout=0.05, threshold=5)
    never = asyncio.Event()

    async def hang() -> None:
        await never.wait()

    started = time.perf_counter()
    with pytest.raises(StoreUnavailable, match=r"did not answer within 0\.05 s"):
        await breaker.call(hang)
    assert time.perf_counter() - started < 1.0
    assert breaker.failures == 1


async def test_a_cancellation_from_outside_propagates_and_is_no_store_failure():
    breaker, _, _ = make_breaker(call_timeout=5.0, threshold=1)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.get_running_loop().create_task(breaker.call(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.failures == 0 and breaker.state is BreakerState.CLOSED


async def test_a_timeout_inside_an_outer_timeout_is_the_store_timeout_and_leaves_the_outer_one_armed():
    breaker, _, _ = make_breaker(call_timeout=0.02, threshold=5)

    async def hang() -> None:
        await asyncio.Event().wait()

    async with asyncio.timeout(5.0) as outer:
        with pytest.raises(StoreUnavailable, match="did not answer"):
            await breaker.call(hang)
        assert asyncio.current_task().cancelling() == 0
    assert not outer.expired()
    assert breaker.failures == 1


async def test_an_answer_in_time_cancels_the_timer():
    breaker, _, _ = make_breaker(call_timeout=0.02, threshold=1)

    async def answer() -> int:
        return 7

    assert await breaker.call(answer) == 7
    await asyncio.sleep(0.05)  # past the call timeout: a timer left armed would cancel this task here
    assert breaker.failures == 0 and breaker.state is BreakerState.CLOSED


#
# Regression: a hung Redis made every admission wait the client's full 2 s timeout, on every call, forever.
#


@pytest.fixture
async def hung_redis():
    """A TCP server that accepts connections, reads what it is sent and never answers (a SIGSTOPped Redis)."""
    connections: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"
    for writer in connections:
        writer.close()
    server.close()


async def test_regression_a_hung_redis_costs_a_bounded_wait_then_none(hung_redis: str, clock: FakeClock):
    """Before the breaker each admission waited the client's full timeout (2 s, 16 s for eight of them). Asserted
    without reading the wall time: which timer ended each wait (its message), and that once the circuit is open an
    admission raises before it ever suspends (no I/O, no timer, no wait, however loaded the machine)."""
    store = create_store("redis", url=hung_redis, clock=clock, prefix="sluice-test:hung:")
    window = minute_window("k", clock(), 100)
    for _ in range(3):  # three timeouts of the breaker (0.5 s), not of the client (2 s), open the circuit ...
        with pytest.raises(StoreUnavailable, match=r"did not answer within 0\.5 s"):
            await store.reserve([window], 1, clock())
    assert store.breaker.state is not BreakerState.CLOSED
    for _ in range(5):  # ... and then nobody waits: the admission fails on its first step
        admission = store.reserve([window], 1, clock())
        with pytest.raises(StoreUnavailable, match="circuit open"):
            admission.send(None)
    assert store.unavailable_retry_after() >= 1
    await store.aclose()


async def test_admissions_in_flight_each_time_out_by_their_own_deadline(hung_redis: str, clock: FakeClock):
    """The Redis store bounds its admissions with one timer for all of them (not one each): a second admission sent
    while the first waits still gets the whole call timeout, and each fails with the breaker's timeout error."""
    store = create_store("redis", url=hung_redis, clock=clock, prefix="sluice-test:hung:", call_timeout=0.2)
    window = minute_window("k", clock(), 100)
    loop = asyncio.get_running_loop()
    ended: dict[str, float] = {}

    async def admit(name: str) -> None:
        started = loop.time()
        with pytest.raises(StoreUnavailable, match=r"did not answer within 0\.2 s"):
            await store.reserve([window], 1, clock())
        ended[name] = loop.time() - started

    first = loop.create_task(admit("first"))
    await asyncio.sleep(0.1)  # halfway through the first one's wait
    second = loop.create_task(admit("second"))
    await asyncio.gather(first, second)
    # each waited its whole call timeout from its own start; the message says the breaker's timer, not the client's
    # 2 s timeout, ended it (so no upper bound read from the wall clock, which a loaded machine stretches)
    assert ended["first"] >= 0.19 and ended["second"] >= 0.19, ended
    assert store.breaker.failures == 2 and store.breaker.state is BreakerState.CLOSED  # (3 in a row open it)
    assert not store._deadlines  # nothing left waiting for the timer
    await store.aclose()
