"""Celery for real, as production and CI run it: a ``celery -A gateway_admin worker --beat`` child process with Redis
as the broker ingests the usage stream into the rollups of the database this test uses.

The other usage tests call the task functions in-process; these prove the deployed path: beat schedules
``usage.tasks.ingest_usage_stream`` through the broker, a separate worker process runs it against PostgreSQL, a
worker killed with SIGKILL in the middle of a batch loses nothing and counts nothing twice once the next worker
takes over, and ``.delay()`` goes through the broker (tasks are not eager when REDIS_URL is set) to our worker, not
to a worker of another run on the same Redis.

Isolation: each test's workers have a broker of their own on REDIS_URL: every key kombu writes starts with a prefix
of the test's (SLUICE_TEST_BROKER_PREFIX, which gateway_admin.settings.test makes the transport's
``global_keyprefix``), so that a worker of another run on the same server (another checkout, another CI job, a
developer's ``runsluice``) neither takes our tasks nor gives us its own, and our teardown deletes no key of theirs. Each
test also uses its own usage stream key (SLUICE_USAGE_STREAM), the one the gateways' ``RedisStreamSink`` writes to,
and deletes it, and its broker keys, afterwards. Workers reach the test database through a DATABASE_URL built at test
time, tagged with an ``application_name`` of their own so that the test can see (and, at teardown, end) their server
connections.
"""

import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
import pytest
import redis
from celery.result import AsyncResult, EagerResult
from django.conf import settings
from django.db import connection
from django.db.models import Sum
from kombu import pools as kombu_pools

from gateway.usage.record import UsageRecord
from gateway.usage.sinks import RedisStreamSink
from gateway_admin.celery import app as celery_app
from tests.fixtures_procs import ManagedProcess, process_factory  # noqa: F401  (fixture)
from usage.models import UsageRollup
from usage.stream import CLAIM_MIN_IDLE_MS, GROUP
from usage.tasks import ingest_usage_stream

from .factories import UsageRecordFactory, at

IS_POSTGRES = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"

pytestmark = [
    pytest.mark.skipif(
        not settings.REDIS_URL,
        reason="needs Redis as the Celery broker: set REDIS_URL (e.g. redis://127.0.0.1:6379/0); CI sets it",
    ),
    pytest.mark.skipif(
        not IS_POSTGRES,
        reason="needs PostgreSQL (DATABASE_URL) shared by the test and the worker process, as in CI and production",
    ),
    # Committed rows, so the worker sees them. No serialized_rollback: once a transactional test without it has
    # flushed the database (test_api, test_ingest, ... run before this module), post_migrate has recreated the
    # content types under new ids, and restoring the serialized ones fails on their unique (app_label, model).
    pytest.mark.django_db(transaction=True),
]

DEADLINE = 20.0  # seconds: bound of every wait on the worker (beat ticks every 2 s, a worker starts in ~1 s)
POLL = 0.05  # seconds: polling interval of the bounded waits, not a stand-in for synchronisation

APIS = (("chat", "chat-completions"), ("embed", "embeddings"))
SUBSCRIPTIONS = ("alpha", "beta", None)
# Every record with these values falls into one rollup row.
LATE = {
    "ts_ms": at(minutes=3, seconds=30),
    "api": "late",
    "operation": "chat-completions",
    "subscription": "alpha",
    "product": "starter",
    "status": 200,
}


#
# Records and what they must add up to
#


def make_records(count: int, rng: random.Random, **fixed) -> list[UsageRecord]:
    """Records over four minutes, two APIs and three subscriptions (one of them none), with varied token counts."""
    records = []
    for _ in range(count):
        api, operation = rng.choice(APIS)
        subscription = rng.choice(SUBSCRIPTIONS)
        values = {
            "ts_ms": at(minutes=rng.randrange(4), seconds=rng.uniform(0.5, 59)),
            "api": api,
            "operation": operation,
            "subscription": subscription,
            "product": "starter" if subscription else None,
            "prompt_tokens": rng.randrange(0, 2000),
            "completion_tokens": rng.randrange(0, 800),
            "status": rng.choice((200, 200, 200, 429, 502)),
            "latency_ms": round(rng.uniform(5, 900), 3),
        }
        records.append(UsageRecordFactory.build(**{**values, **fixed}))
    return records


def with_redeliveries(records: list[UsageRecord], again: Sequence[UsageRecord], rng: random.Random) -> list:
    """``records`` with ``again`` (the very same records: same request ids) re-emitted at random places."""
    out = list(records)
    for record in again:
        out.insert(rng.randrange(len(out) + 1), record)
    return out


def expected_rollups(*emitted: Sequence[UsageRecord]) -> dict[tuple, tuple[int, int, int, int]]:
    """(minute, api, subscription) -> (requests, prompt, completion, total tokens), each request id once."""
    unique: dict[str, UsageRecord] = {}
    for records in emitted:
        for record in records:
            unique.setdefault(record.request_id, record)
    sums: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for record in unique.values():
        minute = datetime.fromtimestamp(record.ts_ms / 1000, tz=UTC).replace(second=0, microsecond=0)
        counters = sums[(minute, record.api, record.subscription or "")]
        counters[0] += 1
        counters[1] += record.prompt_tokens
        counters[2] += record.completion_tokens
        counters[3] += record.prompt_tokens + record.completion_tokens
    return {key: tuple(value) for key, value in sums.items()}


def rollups() -> dict[tuple, tuple[int, int, int, int]]:
    """The same view of what the worker committed to the per-minute rollups."""
    rows = (
        UsageRollup.objects.values("minute", "api", "subscription")
        .annotate(r=Sum("requests"), p=Sum("prompt_tokens"), c=Sum("completion_tokens"), t=Sum("total_tokens"))
        .order_by()
    )
    return {(row["minute"], row["api"], row["subscription"]): (row["r"], row["p"], row["c"], row["t"]) for row in rows}


def requests_in(view: dict) -> int:
    return sum(value[0] for value in view.values())


#
# Redis and PostgreSQL helpers
#


def database_url(application_name: str) -> str:
    """A DATABASE_URL for the database this test runs on (pytest-django's test database, known only now)."""
    params = connection.settings_dict
    userinfo = quote(params["USER"] or "", safe="")
    if params["PASSWORD"]:
        userinfo += ":" + quote(params["PASSWORD"], safe="")
    host = quote(params["HOST"] or "", safe="")
    netloc = f"{userinfo}@{host}" if userinfo else host
    if params["PORT"]:
        netloc += f":{params['PORT']}"
    options = {key: value for key, value in params["OPTIONS"].items() if isinstance(value, str | int)}
    options["application_name"] = application_name
    return f"postgres://{netloc}/{quote(params['NAME'], safe='')}?{urlencode(options)}"


def lock_connection() -> psycopg.Connection:
    """A connection of its own (not Django's) to the test database, in a transaction."""
    params = connection.settings_dict
    conninfo = {
        "dbname": params["NAME"],
        "user": params["USER"],
        "password": params["PASSWORD"],
        "host": params["HOST"],
        "port": params["PORT"],
    }
    return psycopg.connect(**{key: value for key, value in conninfo.items() if value not in (None, "")})


def backends(application_name: str) -> list[tuple[int, str | None]]:
    """(pid, wait_event_type) of the server connections the workers opened."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, wait_event_type FROM pg_stat_activity WHERE application_name = %s", [application_name]
        )
        return cursor.fetchall()


def group_info(client: redis.Redis, stream: str) -> dict | None:
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:  # no stream yet
        return None
    return next((group for group in groups if group["name"] == GROUP), None)


def drained(client: redis.Redis, stream: str) -> bool:
    """Every entry of the stream delivered to the group and acknowledged."""
    group = group_info(client, stream)
    if group is None:
        return False
    last_id = client.xinfo_stream(stream)["last-generated-id"]
    return group["pending"] == 0 and group["last-delivered-id"] == last_id


def consumer_name(worker: ManagedProcess) -> str:
    """The stream consumer of a worker whose tasks run in its main process (``--pool solo``)."""
    return f"{socket.gethostname()}-{worker.pid}"


def pending_of(client: redis.Redis, stream: str, consumer: str) -> list[str]:
    entries = client.xpending_range(stream, GROUP, "-", "+", 100_000, consumername=consumer)
    return [entry["message_id"] for entry in entries]


def emit(redis_url: str, stream: str, records: Sequence[UsageRecord]) -> None:
    """What a gateway does: hand the records to a RedisStreamSink and flush."""

    async def send() -> None:
        sink = RedisStreamSink(redis_url, stream)
        for record in records:
            sink.emit(record)
        await sink.flush()
        await sink.close()
        assert (sink.stats.delivered, sink.stats.dropped) == (len(records), 0)

    asyncio.run(send())


#
# The worker processes
#


class Workers:
    """Starts Celery workers on a broker of their own (a key prefix), the test database and one usage stream; cleans
    up after."""

    def __init__(self, start: Callable[..., ManagedProcess], tmp_path: Path, *, name: str = "celery-worker") -> None:
        self._start = start
        self.name = name
        self.tmp_path = tmp_path
        self.redis_url = settings.REDIS_URL
        self.client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        self.stream = f"sluice-test:usage:{uuid.uuid4().hex}"
        self.broker_prefix = f"sluice-test-broker-{uuid.uuid4().hex[:12]}:"
        self.application_name = f"sluice-test-worker-{uuid.uuid4().hex[:12]}"
        self.started: list[ManagedProcess] = []
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("CELERY_")}
        self.env.update(
            DJANGO_SETTINGS_MODULE="gateway_admin.settings.test",
            DATABASE_URL=database_url(self.application_name),
            REDIS_URL=self.redis_url,
            SLUICE_USAGE_STREAM=self.stream,
            SLUICE_TEST_BROKER_PREFIX=self.broker_prefix,
            PYTHONUNBUFFERED="1",
        )

    def start(self, *, beat: bool = True) -> ManagedProcess:
        """A worker as `runsluice` runs one (one task at a time), in the solo pool so tasks run in its main
        process; with an embedded beat keeping its schedule in this test's tmp_path. Returns once it is ready."""
        celery = Path(sys.executable).with_name("celery")
        argv = [str(celery)] if celery.exists() else [sys.executable, "-m", "celery"]
        argv += ["-A", "gateway_admin", "worker", "--pool", "solo", "--concurrency", "1", "--loglevel", "INFO"]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]  # alone on its broker: start fast
        if beat:
            argv += ["--beat", "--schedule", str(self.tmp_path / "celerybeat-schedule")]
        worker = self._start(argv, name=f"{self.name}-{len(self.started)}", env=self.env)
        self.started.append(worker)
        self.wait("the worker to be ready", lambda: " ready." in log_of(worker))
        return worker

    def wait(self, what: str, predicate: Callable[[], object], timeout: float = DEADLINE):
        """Poll ``predicate`` until it is true (and return its value), failing with the workers' logs after
        ``timeout`` seconds or as soon as a worker that should run has exited."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            dead = [w for w in self.started if not w.alive and w.returncode != -signal.SIGKILL]
            if dead or time.monotonic() > deadline:
                why = f"{dead[0].name} exited with {dead[0].returncode}" if dead else f"{timeout:.0f} s passed"
                pytest.fail(f"gave up waiting for {what}: {why}\n{self.logs()}")
            time.sleep(POLL)

    @contextlib.contextmanager
    def publishing(self) -> Iterator[None]:
        """Point the test process's Celery app (the one `.delay()` uses) at these workers' broker for a while.

        The app read its configuration once and caches its broker connection pools: the transport options (the key
        prefix) are swapped and the pools dropped, then the same on the way back (kombu's pools are closed and made
        again on next use)."""
        saved = celery_app.conf.broker_transport_options

        def use(options: dict) -> None:
            celery_app.conf.broker_transport_options = options
            celery_app._pool = None
            celery_app.amqp._producer_pool = None

        use({**saved, "global_keyprefix": self.broker_prefix})
        try:
            yield
        finally:
            kombu_pools.reset()
            use(saved)

    def logs(self) -> str:
        return "\n".join(f"--- {w.name} (pid {w.pid}, rc {w.returncode}) ---\n{w.tail(30)}" for w in self.started)

    def close(self) -> None:
        for worker in reversed(self.started):
            worker.stop()
        # Safety net: a killed worker's server connection outlives it while it waits for a lock.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                [self.application_name],
            )
        self.client.delete(self.stream, *self.client.scan_iter(match=f"{self.broker_prefix}*", count=1000))
        self.client.close()


def log_of(worker: ManagedProcess) -> str:
    try:
        return worker.log_path.read_text(errors="replace")
    except OSError:
        return ""


def ingest_runs(worker: ManagedProcess) -> int:
    """How many ingest tasks the worker finished, from its log."""
    return sum(
        1
        for line in log_of(worker).splitlines()
        if "usage.tasks.ingest_usage_stream[" in line and "] succeeded in" in line
    )


@pytest.fixture
def workers(process_factory, tmp_path) -> Iterator[Workers]:  # noqa: F811  (the imported fixture)
    harness = Workers(process_factory, tmp_path)
    try:
        yield harness
    finally:
        harness.close()


#
# Tests
#


def test_beat_and_a_worker_count_the_stream_exactly_once_even_when_the_worker_is_killed(workers):
    rng = random.Random(20240501)
    client = workers.client

    # 1. A gateway emits usage (re-delivering some records); beat makes the worker ingest it.
    worker = workers.start()
    first = [*make_records(300, rng), *make_records(5, rng, **LATE)]  # LATE: a rollup row step 2 will lock
    emit(workers.redis_url, workers.stream, with_redeliveries(first, rng.sample(first, 20), rng))
    workers.wait("the first batch to be counted and acknowledged", lambda: drained(client, workers.stream))
    assert rollups() == expected_rollups(first)
    assert client.xpending(workers.stream, GROUP)["pending"] == 0
    assert [c["name"] for c in client.xinfo_consumers(workers.stream, GROUP)] == [consumer_name(worker)]

    # 2. A second batch, whose tail adds to a rollup row another transaction holds locked: the worker commits
    # what comes before (one transaction per read of up to 500 entries), then waits in the middle of a batch it
    # has read (pending in the stream) and partly written (uncommitted) -- and is killed there.
    early = make_records(670, rng)
    early = with_redeliveries(early, rng.sample([r for r in first if r.api != "late"], 30), rng)
    late = with_redeliveries(make_records(280, rng, **LATE), rng.sample(early[:400], 20), rng)
    second = [*early, *late]  # 1000 entries: the read that reaches entry 700 cannot commit
    table = UsageRollup._meta.db_table
    with contextlib.closing(lock_connection()) as locker:
        locked = locker.execute(f'SELECT id FROM "{table}" WHERE api = %s FOR UPDATE', ["late"]).fetchall()  # noqa: S608
        assert len(locked) == 1
        emit(workers.redis_url, workers.stream, second)
        waiting = workers.wait(
            "the worker to wait for the locked row in the middle of the second batch",
            lambda: [pid for pid, wait_event in backends(workers.application_name) if wait_event == "Lock"],
        )
        in_flight = pending_of(client, workers.stream, consumer_name(worker))
        at_kill = rollups()
        counted_of_second = requests_in(at_kill) - requests_in(expected_rollups(first))
        assert in_flight, "the batch the worker is in the middle of is pending in the stream"
        assert 0 < counted_of_second <= 670, "committed: some of the new records before the locked row, none after"

        assert worker.signal_group(signal.SIGKILL)
        assert worker.popen.wait(timeout=10) == -signal.SIGKILL
        locker.rollback()

    # The server ends the dead worker's transaction (rolled back: it never sent COMMIT) once it gets the lock.
    workers.wait(
        "the killed worker's transaction to end", lambda: waiting[0] not in dict(backends(workers.application_name))
    )
    assert rollups() == at_kill
    assert pending_of(client, workers.stream, consumer_name(worker)) == in_flight
    # A worker takes over entries another left pending for CLAIM_MIN_IDLE_MS (a minute): XCLAIM with IDLE, to
    # the same consumer, only back-dates them, standing in for that minute.
    client.xclaim(
        workers.stream, GROUP, consumer_name(worker), 0, in_flight, idle=CLAIM_MIN_IDLE_MS + 5_000, justid=True
    )

    # 3. The next worker (same beat schedule file, as a restart would have) claims the orphaned entries and
    # reads the rest: every request counted once, nothing pending.
    successor = workers.start()
    workers.wait("the second batch to be counted and acknowledged", lambda: drained(client, workers.stream))
    expected = expected_rollups(first, second)
    assert rollups() == expected
    assert requests_in(expected) == 305 + 670 + 280
    assert client.xpending(workers.stream, GROUP)["pending"] == 0
    consumers = {c["name"]: c["pending"] for c in client.xinfo_consumers(workers.stream, GROUP)}
    assert consumers == {consumer_name(worker): 0, consumer_name(successor): 0}
    # ... and stay so over the next scheduled run.
    runs = ingest_runs(successor)
    workers.wait("another scheduled ingest run", lambda: ingest_runs(successor) > runs)
    assert rollups() == expected


def test_delay_sends_the_task_through_the_broker_to_our_worker(workers, process_factory, tmp_path):  # noqa: F811
    assert settings.REDIS_URL
    assert settings.CELERY_TASK_ALWAYS_EAGER is False
    assert celery_app.conf.task_always_eager is False

    stream = f"sluice-test:usage:{uuid.uuid4().hex}"  # not the worker's SLUICE_USAGE_STREAM: the kwarg travels
    rng = random.Random(7)
    records = make_records(120, rng)
    # A worker of another run on the same Redis, waiting for tasks before ours is there: it must not get our task.
    with contextlib.closing(Workers(process_factory, tmp_path / "other-run", name="other-run-worker")) as other:
        stranger = other.start(beat=False)
        try:
            emit(workers.redis_url, stream, with_redeliveries(records, records[:10], rng))
            with workers.publishing():
                result = ingest_usage_stream.delay(stream=stream)
            assert isinstance(result, AsyncResult)
            assert not isinstance(result, EagerResult)
            worker = workers.start(beat=False)  # nothing but our message can make it ingest
            workers.wait(
                "the worker to run the task sent with .delay()",
                lambda: f"ingest_usage_stream[{result.id}] succeeded in" in log_of(worker),
            )
            assert f"ingest_usage_stream[{result.id}] received" in log_of(worker)
            assert "ingest_usage_stream[" not in log_of(stranger)
            assert rollups() == expected_rollups(records)
            assert drained(workers.client, stream)
            assert [c["name"] for c in workers.client.xinfo_consumers(stream, GROUP)] == [consumer_name(worker)]
        finally:
            workers.client.delete(stream)
