"""The Redis store and its pipelined client: RESP, pipelining, script reloads, failures, cancelled admissions."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from gateway.limits import StoreUnavailable, create_store, minute_window, quota_window
from gateway.limits.base import reservation_for
from gateway.limits.breaker import BreakerState
from gateway.limits.redis import RedisTokenStore
from gateway.redis import RespClient, RespError, encode_command, parse_reply

from .helpers import REDIS_URL, FakeClock

#
# RESP (no server)
#


def test_encode_command():
    assert encode_command(("SET", "k", 12, b"\x00v")) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$2\r\n\x00v\r\n"


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b":42\r\n", 42),
        (b"+OK\r\n", "OK"),
        (b"$3\r\nabc\r\n", b"abc"),
        (b"$-1\r\n", None),
        (b"*3\r\n:0\r\n:15\r\n$2\r\nhi\r\n", [0, 15, b"hi"]),
        (b"*2\r\n*1\r\n:1\r\n*0\r\n", [[1], []]),
    ],
)
def test_parse_reply(data, value):
    assert parse_reply(data, 0) == (value, len(data))
    for cut in range(1, len(data)):  # any prefix is incomplete, never wrong
        with pytest.raises(Exception) as info:
            parse_reply(data[:cut], 0)
        assert type(info.value).__name__ == "_Incomplete"


def test_parse_error_reply():
    error, end = parse_reply(b"-NOSCRIPT No matching script\r\n", 0)
    assert isinstance(error, RespError) and error.code == "NOSCRIPT" and end == 30


def test_url_parsing():
    client = RespClient("rediss://user:p%40ss@cache.example:6380/3")
    assert (client.host, client.port, client.tls, client.username, client.password, client.db) == (
        "cache.example",
        6380,
        True,
        "user",
        "p@ss",
        3,
    )
    with pytest.raises(ValueError, match="unsupported Redis URL scheme"):
        RespClient("unix:///tmp/redis.sock")


async def test_settlements_of_the_same_counters_are_sent_as_their_own_commands(clock: FakeClock):
    """The settlement of a counter set is encoded once up to its correction and reused: each is still exactly
    ``EVALSHA sha numkeys keys… correction``, per counter set, and its reply handler keeps the prefixed keys (for the
    ``EVAL`` after a ``NOSCRIPT``)."""
    store = create_store("redis", url="redis://127.0.0.1:1/0", clock=clock, prefix="p:", settle_interval=3600)
    sent: list[tuple[bytes, object]] = []
    store.client.send_encoded = lambda command, on_reply=None: sent.append((command, on_reply))  # type: ignore[method-assign]
    minute = minute_window("a", clock(), 100)
    windows = (quota_window("a", "Daily", clock(), 1000), minute)
    other = minute_window("\u00e9", clock(), 100)  # a key that is not ASCII: its length in UTF-8 bytes
    sha = store._settle_sha
    for round_ in range(3):
        store.settle(reservation_for(windows, 50), 50 + round_ + 1)
        store.settle(reservation_for((other,), 50), 40 - round_)
        store.settle(reservation_for((minute,), 50), 50)  # no correction: nothing sent
        store._send_settlements()
        full = ["p:" + w.key for w in windows]
        assert [command for command, _ in sent] == [
            encode_command(("EVALSHA", sha, 2, *full, round_ + 1)),
            encode_command(("EVALSHA", sha, 1, "p:" + other.key, -10 - round_)),
        ]
        handler = sent[0][1]
        assert handler.args == (tuple(full), round_ + 1)  # type: ignore[attr-defined]
        sent.clear()


#
# Failures (no Redis needed)
#


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_redis_raises_store_unavailable():
    store = create_store("redis", url=f"redis://127.0.0.1:{closed_port()}/0", connect_timeout=0.5)
    window = minute_window("k", store.now(), 10)
    with pytest.raises(StoreUnavailable, match="cannot connect"):
        await store.reserve([window], 1, store.now())
    store.settle(_reservation(window), 5)  # never raises, even with nothing to send to
    await store.aclose()


def _reservation(window):
    from gateway.limits.base import reservation_for

    return reservation_for([window], 1)


async def test_a_silent_server_times_out_and_the_next_call_reconnects():
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # reads nothing, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = RespClient(f"redis://127.0.0.1:{port}", timeout=0.2)
    try:
        async with asyncio.timeout(3):
            with pytest.raises(TimeoutError):
                await client.call("PING")
            assert client.pending == 0
            with pytest.raises(TimeoutError):
                await client.call("PING")
        assert len(accepted) == 2  # a fresh connection for the second call
    finally:
        await client.aclose()
        server.close()
        for writer in accepted:
            writer.close()


#
# Against Redis
#

needs_redis = pytest.mark.skipif(not REDIS_URL, reason="REDIS_URL is not set (CI sets redis://127.0.0.1:6379/0)")


@needs_redis
async def test_commands_of_one_loop_turn_share_one_write(redis_prefix):
    client = RespClient(REDIS_URL)
    writes = []
    try:
        await client.call("PING")
        original = client._flush

        def counting():
            if client._outbox:
                writes.append(len(client._outbox))
            original()

        client._flush = counting
        replies = await asyncio.gather(*(client.call("INCR", f"{redis_prefix}n") for _ in range(50)))
        assert sorted(replies) == list(range(1, 51))
        assert writes == [50]  # fifty commands, one write
    finally:
        await client.aclose()


@needs_redis
async def test_a_batch_of_commands_is_one_write_with_replies_in_order(redis_prefix):
    client = RespClient(REDIS_URL)
    try:
        commands = [("SET", f"{redis_prefix}s", "x"), ("INCR", f"{redis_prefix}s"), ("INCR", f"{redis_prefix}n")]
        replies = await client.call_batch(b"".join(encode_command(c) for c in commands), len(commands))
        assert replies[0] == "OK" and isinstance(replies[1], RespError) and replies[2] == 1
        assert await client.call_batch(b"", 0) == []
    finally:
        await client.aclose()


async def test_a_batch_fails_as_a_whole_when_redis_is_unreachable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = RespClient(f"redis://127.0.0.1:{port}", connect_timeout=0.5)
    with pytest.raises(ConnectionError):
        await client.call_batch(encode_command(("PING",)) * 3, 3)
    await client.aclose()


async def test_a_batch_whose_connection_is_lost_after_some_replies_fails_as_a_whole():
    """The replies before the last are collected without a handler call each: a loss after two of three replies
    still fails the batch, and the client's next call is answered."""
    served = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        served += 1
        await reader.readexactly(len(encode_command(("PING",))) * (3 if served == 1 else 1))
        writer.write(b"+PONG\r\n+PONG\r\n" if served == 1 else b"+PONG\r\n")  # the first batch: two of three
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    client = RespClient(f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        with pytest.raises(ConnectionError):
            await client.call_batch(encode_command(("PING",)) * 3, 3)
        assert client.pending == 0
        assert await client.call_batch(encode_command(("PING",)), 1) == ["PONG"]
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


@needs_redis
async def test_script_flush_is_survived(redis_prefix, clock: FakeClock):
    store = create_store("redis", url=REDIS_URL, clock=clock, prefix=redis_prefix)
    window = minute_window("k", clock(), 100)
    try:
        assert (await store.reserve([window], 10, clock())).allowed
        await store.client.call("SCRIPT", "FLUSH")
        admission = await store.reserve([window], 10, clock())  # NOSCRIPT -> SCRIPT LOAD -> EVALSHA
        assert admission.allowed and admission.used == (20,)
        await store.client.call("SCRIPT", "FLUSH")
        store.settle(admission.reservation, 15)  # the settlement falls back to EVAL
        await store.flush()
        await store.flush()
        assert await store.count(window) == 25
    finally:
        await store.aclose()


@needs_redis
async def test_keys_expire_after_their_window(redis_prefix, clock: FakeClock):
    store = create_store("redis", url=REDIS_URL, clock=clock, prefix=redis_prefix)
    window = minute_window("ttl", clock(), 100)
    try:
        await store.reserve([window], 1, clock())
        ttl_ms = await store.client.call("PTTL", redis_prefix + window.key)
        assert 0 < ttl_ms <= (window.expires_at - time.time() + 1) * 1000  # Redis expires in real time
    finally:
        await store.aclose()


@needs_redis
async def test_an_admission_whose_caller_is_cancelled_is_given_back(redis_prefix, clock: FakeClock):
    store: RedisTokenStore = create_store("redis", url=REDIS_URL, clock=clock, prefix=redis_prefix, settle_interval=0)
    window = minute_window("cancel", clock(), 100)
    try:
        await store.count(window)  # connected
        task = asyncio.ensure_future(store.reserve([window], 40, clock()))
        await asyncio.sleep(0)  # the command is queued and written
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            await store.flush()
            if await store.count(window) == 0:
                break
        assert await store.count(window) == 0
    finally:
        await store.aclose()


@needs_redis
async def test_two_stores_share_the_counters(redis_prefix, clock: FakeClock):
    """Two replicas (two stores, two connections) see one counter."""
    first = create_store("redis", url=REDIS_URL, clock=clock, prefix=redis_prefix)
    second = create_store("redis", url=REDIS_URL, clock=clock, prefix=redis_prefix)
    window = minute_window("shared", clock(), 100)
    try:
        results = await asyncio.gather(
            *(store.reserve([window], 7, clock()) for _ in range(20) for store in (first, second))
        )
        assert sum(r.allowed for r in results) == 14  # 14 x 7 = 98 <= 100
        assert await first.count(window) == await second.count(window) == 98
    finally:
        await first.aclose()
        await second.aclose()


@needs_redis
async def test_a_window_tuple_handed_in_again_is_found_by_identity(redis_prefix, clock: FakeClock):
    """The token-limit policy hands the same tuple to every request of a minute: its encoding is found by identity;
    an equal tuple or a list (the counting policies) by value; all of them reserve in the same counter."""
    store: RedisTokenStore = create_store("redis", url=REDIS_URL, clock=clock, prefix=redis_prefix)
    kept = (minute_window("identity", clock(), 100),)
    try:
        first = await store.reserve(kept, 10, clock())
        assert store._by_identity[id(kept)][0] is kept
        again = await store.reserve(kept, 10, clock())
        equal = await store.reserve((minute_window("identity", clock(), 100),), 10, clock())
        listed = await store.reserve([kept[0]], 10, clock())
        assert [a.used for a in (first, again, equal, listed)] == [(10,), (20,), (30,), (40,)]
        assert len(store._encoded) == 1  # one encoding, found four ways
        assert first.reservation == again.reservation == listed.reservation
        assert first.reservation.keys == (kept[0].key,)
        assert await store.count(kept[0]) == 40
    finally:
        await store.aclose()


@needs_redis
async def test_an_answered_admission_leaves_nothing_for_the_timer(redis_prefix, clock: FakeClock):
    store: RedisTokenStore = create_store("redis", url=REDIS_URL, clock=clock, prefix=redis_prefix, call_timeout=0.05)
    window = minute_window("timer", clock(), 100)
    try:
        for _ in range(3):
            assert (await store.reserve([window], 1, clock())).allowed
        assert not store._deadlines  # each answered admission took itself off the timer's list
        await asyncio.sleep(0.1)  # past the call timeout: the armed timer fires and finds nothing to fail
        assert store.breaker.failures == 0 and store.breaker.state is BreakerState.CLOSED
        assert (await store.reserve([window], 1, clock())).used == (4,)
    finally:
        await store.aclose()


@needs_redis
async def test_a_settlement_arms_its_timer_on_the_connections_loop(redis_prefix, clock: FakeClock, request):
    """On Python 3.11 asyncio.get_running_loop() is a getpid(2) per call: the settlement after an admission takes the
    loop of the connection the admission opened, and its correction still reaches the counter."""
    store: RedisTokenStore = create_store("redis", url=REDIS_URL, clock=clock, prefix=redis_prefix)
    window = minute_window("settle-loop", clock(), 100)
    try:
        admission = await store.reserve([window], 10, clock())
        asked = request.getfixturevalue("running_loop_asks")  # from here on
        store.settle(admission.reservation, 25)
        assert asked == []
        assert store._flush_scheduled and store._pending
        for _ in range(100):  # the timer sends the correction within settle_interval
            if not store._flush_scheduled:
                break
            await asyncio.sleep(store.settle_interval)
        await store.flush()  # replies come in order: the settlement is applied
        assert await store.count(window) == 25
    finally:
        await store.aclose()


async def test_a_settlement_after_the_connections_loop_closed_is_dropped(clock: FakeClock):
    """At shutdown the connection's loop may be closed: the correction is dropped, nothing raises."""
    store: RedisTokenStore = create_store("redis", url=f"redis://127.0.0.1:{closed_port()}/0", clock=clock)
    closed = asyncio.new_event_loop()
    closed.close()
    store.client._loop = closed  # as if its connection had been opened on a loop that is closed since
    store.settle(_reservation(minute_window("closed", clock(), 100)), 5)
    assert not store._flush_scheduled and not store._pending
