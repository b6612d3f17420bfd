#!/usr/bin/env python3
"""How early token-limit leases refuse, measured (issue #8; docs/token-limits.md, "Leases").

N worker processes, each with its own ``RedisTokenStore`` on one Redis DB, admit requests of one size against one
shared per-minute limit as fast as they can, the way ``llm-token-limit`` drives the store: the same window tuple for
every request of the minute, ``reserve(windows, size, now)``, then ``settle(reservation, size)`` (actual =
estimate). Each worker stops at its first refusal. The store's clock is injected and frozen in the middle of a
minute (the window never ends during a run; leases still live ``lease_seconds`` of the event loop's clock).

Two patterns: ``race``, every worker admits as fast as it can from the start; ``stop``, workers 2..N admit
``--burst`` of the limit between them and stop, holding what is left of their leases, while worker 1 drains the rest
and gives its own leftover back; then they go on (the worst case the documented bound describes).

Per run (a fresh counter key each time) it records:

* ``first``: the tokens admitted by all workers together when the first refusal anywhere came back (each worker
  publishes its admitted total in shared memory after every admission; the refused worker sums them), and the sum
  when that refused request was sent;
* ``final``: the tokens admitted when every worker has stopped, and the Redis counter once every worker has given
  its leftover back (they must be equal: lossless);
* the limit.

It reports, per configuration (workers, pattern, size, limit, leases on or off), the minimum, median and maximum of
``limit - first`` (the early refusal, plus what the measure itself adds; see below), of the same at the send, and of
``final``, and the documented bound on leases' early refusal, ``(workers - 1) x room / 16`` with room at most
``limit - size``, with a verdict: ``limit - first`` within that bound plus ``workers x size``.

**The bound is checked**: ``final`` or the Redis counter above the limit, or the counter not equal to ``final``
after the leftovers went back, stops the script with exit status 1 (``BOUND VIOLATED``). An early refusal above
the documented bound (the verdict ``**NO**``) ends it with exit status 2 once the report is written.

What the measure adds: when a refusal comes back, another worker's admission may already be counted in Redis
but not yet published (one per other worker in flight), and a worker is refused once fewer than ``size`` tokens
are left; the same runs with ``--modes off`` (lease seconds 0) show that part on its own. The sum at the send also
counts what the others admitted while the refused request waited (for Redis, or for the scheduler on a loaded
machine), so it is reported but not judged.

    python bench/lease_refusals.py [--workers 1,2,4] [--patterns race,stop] [--sizes 50,500]
                                   [--limits 10000,100000] [--runs 20] [--modes on,off] [--lease-seconds 0.5]
                                   [--burst 0.25] [--redis-url redis://127.0.0.1:6379/15]
                                   [--out bench/results/lease-refusals.md]

Only the keys it creates (prefix ``sluice-bench-refuse:<random>:``) are written and deleted; the DB is never flushed.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway.limits import create_store, minute_window  # noqa: E402
from gateway.limits.redis import LEASE_DIVISOR, LEASE_SECONDS, RedisTokenStore  # noqa: E402
from gateway.redis import RespClient  # noqa: E402

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
NO_FIRST = -1
RACE = "race"  # every worker admits as fast as it can from the start
STOP = "stop"  # workers 1.. admit a burst and stop, holding their leases; worker 0 drains; then they go on


class BoundViolated(AssertionError):
    """The admission bound did not hold: more admitted than the limit, or the counter not lossless."""


@dataclass(frozen=True)
class Config:
    workers: int
    size: int
    limit: int
    lease_seconds: float
    pattern: str = RACE
    burst_share: float = 0.25

    def burst(self) -> int:
        """``stop``: the tokens each holder admits before it stops (``burst_share`` of the limit, shared)."""
        return int(self.limit * self.burst_share / max(1, self.workers - 1))

    @property
    def leases(self) -> str:
        return "on" if self.lease_seconds > 0 else "off"

    def documented(self) -> int:
        """The documented early refusal of leases: (workers - 1) x room // 16, room at most limit - size."""
        return (self.workers - 1) * ((self.limit - self.size) // LEASE_DIVISOR)


@dataclass(frozen=True)
class Run:
    config: Config
    first: int  # tokens admitted by all workers when the first refusal came back
    sent: int  # tokens admitted by all workers when the first refused request was sent
    final: int  # tokens admitted when all had stopped
    counter: int  # the Redis counter once every leftover went back
    seconds: float

    @property
    def early(self) -> int:
        return self.config.limit - self.first

    @property
    def early_sent(self) -> int:
        return self.config.limit - self.sent


def frozen_clock(real: float | None = None) -> float:
    """An epoch time 30 s into the next minute: frozen for a run, so its window never ends (Redis expiries are real
    time: the window's expiry is ahead of the real clock)."""
    now = time.time() if real is None else real
    return now - now % 60 + 90.0


@dataclass
class Shared:
    """What the workers share: each one's admitted total, the first refusal (admitted when its reply came back, when
    it was sent), and for ``stop``: the barrier after the holders' bursts and the event of the drainer's refusal."""

    admitted: Any
    first: Any
    ready: Any
    drained: Any


async def admit(store: RedisTokenStore, windows: tuple, config: Config, index: int, shared: Shared, until: int) -> int:
    """Admit ``config.size`` until refused or ``until`` tokens (this worker's total, published after each
    admission) are reached; a refusal is recorded in ``shared.first`` when it is the first. Returns the total."""
    admitted, first, size = shared.admitted, shared.first, config.size
    total = admitted[index]
    while total < until:
        sent = sum(admitted[:])
        admission = await store.reserve(windows, size, store.now())
        if not admission.allowed:
            with first.get_lock():
                if first[0] == NO_FIRST:
                    first[0] = sum(admitted[:])
                    first[1] = sent
            break
        total += size
        admitted[index] = total
        store.settle(admission.reservation, size)  # actual = estimate
        await asyncio.sleep(0)  # the loop runs lease timers and settlements between requests, as a server's does
    return total


async def admit_until_refused(
    url: str, prefix: str, counter_key: str, config: Config, now: float, index: int, shared: Shared
) -> int:
    """One worker, with its own store: admit until refused (``race``), or for ``stop``: worker 0 drains once the
    others (holders) have admitted their burst, then they go on. Returns the tokens this worker admitted; its
    leftover is given back before it returns."""
    store = create_store(
        "redis", url=url, clock=lambda: now, prefix=prefix, lease_seconds=config.lease_seconds, call_timeout=10.0
    )
    assert isinstance(store, RedisTokenStore)
    windows = (minute_window(counter_key, now, config.limit),)  # one tuple for every request, as the policy keeps
    try:
        if config.pattern == STOP and index > 0:
            await admit(store, windows, config, index, shared, config.burst())
            await asyncio.to_thread(shared.ready.wait)  # holding what is left of its lease; the loop runs its timer
            await asyncio.to_thread(shared.drained.wait)
        elif config.pattern == STOP:
            await asyncio.to_thread(shared.ready.wait)
        total = await admit(store, windows, config, index, shared, config.limit + 1)
        await store.flush()  # the leftover back to Redis (before the holders go on, and before the counter is read)
        if config.pattern == STOP and index == 0:
            shared.drained.set()
    finally:
        await store.aclose()
    return total


def worker(url: str, index: int, tasks: Any, results: Any, barrier: Any, shared: Shared) -> None:
    """A worker process: runs what ``tasks`` hands it (None: stop), each started together with the others."""
    import uvloop

    while True:
        task = tasks.get()
        if task is None:
            return
        prefix, counter_key, config, now = task
        barrier.wait()
        total = uvloop.run(admit_until_refused(url, prefix, counter_key, config, now, index, shared))
        results.put((index, total))


async def read_and_delete(url: str, key: str) -> int:
    client = RespClient(url)
    try:
        value = await client.call("GET", key)
        await client.call("DEL", key)
    finally:
        await client.aclose()
    return int(value) if value is not None else 0


class Pool:
    """``workers`` processes kept for every run of a worker count."""

    def __init__(self, url: str, workers: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.url = url
        self.workers = workers
        self.barrier = context.Barrier(workers)
        self.shared = Shared(
            context.Array("q", workers),
            context.Array("q", [NO_FIRST, NO_FIRST]),
            context.Barrier(workers),
            context.Event(),
        )
        self.results = context.Queue()
        self.tasks = [context.Queue() for _ in range(workers)]
        self.processes = [
            context.Process(
                target=worker,
                args=(url, i, self.tasks[i], self.results, self.barrier, self.shared),
                daemon=True,
            )
            for i in range(workers)
        ]
        for process in self.processes:
            process.start()

    def run(self, config: Config, timeout: float = 120.0) -> Run:
        prefix = f"sluice-bench-refuse:{uuid.uuid4().hex[:12]}:"
        counter_key = "bench"
        now = frozen_clock()
        shared = self.shared
        for i in range(self.workers):
            shared.admitted[i] = 0
        shared.first[0] = shared.first[1] = NO_FIRST
        shared.drained.clear()
        started = time.perf_counter()
        for tasks in self.tasks:
            tasks.put((prefix, counter_key, config, now))
        totals = [self.results.get(timeout=timeout)[1] for _ in range(self.workers)]
        seconds = time.perf_counter() - started
        key = prefix + minute_window(counter_key, now, config.limit).key
        counter = asyncio.run(read_and_delete(self.url, key))
        run = Run(config, shared.first[0], shared.first[1], sum(totals), counter, seconds)
        check(run)
        return run

    def close(self) -> None:
        for tasks in self.tasks:
            tasks.put(None)
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.terminate()


def check(run: Run) -> None:
    """The bound and lossless usage; raises ``BoundViolated``."""
    limit = run.config.limit
    if run.final > limit or run.counter > limit:
        raise BoundViolated(f"BOUND VIOLATED: admitted {run.final}, counter {run.counter}, limit {limit} ({run})")
    if run.counter != run.final:
        raise BoundViolated(
            f"BOUND VIOLATED: counter {run.counter} != admitted {run.final} after the leftovers ({run})"
        )
    if not 0 <= run.sent <= run.first <= run.final:
        raise BoundViolated(f"first refusal at {run.first} tokens, final {run.final} ({run})")


def within(group: list[Run]) -> str:
    """Whether every run's early refusal (admitted when the refusal came back) is within the documented bound plus
    what a refusal and the measure leave on their own: less than one request, and one request in flight per other
    worker. (The measure at the send also counts what the others admitted while the refused request waited, for
    a round trip or for the scheduler: on a loaded machine it reaches the whole limit with leases off too.)"""
    config = group[0].config
    allowance = config.documented() + config.workers * config.size - 1
    return "yes" if max(run.early for run in group) <= allowance else "**NO**"


def spread(values: list[int]) -> str:
    return f"{min(values)} / {statistics.median(values):g} / {max(values)}"


def by_config(runs: list[Run]) -> dict[Config, list[Run]]:
    """The runs grouped by configuration, in the order they first ran."""
    groups: dict[Config, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.config, []).append(run)
    return groups


def report(runs: list[Run]) -> str:
    """The Markdown table: one row per configuration."""
    lines = [
        "| workers | pattern | size | limit | leases | runs "
        "| limit - admitted at first refusal (reply): min / median / max | (sent): min / median / max "
        "| final total: min / median / max | limit - final: max | documented (w-1) x (limit-size) // 16 "
        "| within documented + w x size | median run s |",
        "|---:|---|---:|---:|---|---:|---|---|---|---:|---:|---|---:|",
    ]
    for config, group in by_config(runs).items():
        finals = [run.final for run in group]
        cells = [
            config.workers,
            config.pattern,
            config.size,
            config.limit,
            config.leases,
            len(group),
            spread([run.early for run in group]),
            spread([run.early_sent for run in group]),
            spread(finals),
            config.limit - min(finals),
            config.documented(),
            within(group),
            f"{statistics.median(run.seconds for run in group):.3f}",
        ]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def configurations(args: argparse.Namespace) -> list[Config]:
    seconds = {"on": args.lease_seconds, "off": 0.0}
    return [
        Config(workers, size, limit, seconds[mode], pattern, args.burst)
        for workers in args.workers
        for pattern in args.patterns
        if workers > 1 or pattern == RACE  # stop needs holders
        for size in args.sizes
        for limit in args.limits
        for mode in args.modes
    ]


def measure(url: str, configs: list[Config], runs: int, log: Any = None) -> list[Run]:
    """``runs`` runs of each configuration, a worker pool per worker count, leases on and off interleaved."""
    done: list[Run] = []
    for workers in sorted({config.workers for config in configs}, key=[c.workers for c in configs].index):
        pool = Pool(url, workers)
        try:
            mine = [config for config in configs if config.workers == workers]
            for _ in range(runs):
                for config in mine:
                    done.append(pool.run(config))
            if log is not None:
                log(report([run for run in done if run.config.workers == workers]))
        finally:
            pool.close()
    return done


def integers(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"positive integers separated by commas, got {text!r}")
    return values


def one_of(*allowed: str) -> Any:
    """An argparse type: a comma-separated list of ``allowed`` names (at least one)."""

    def names(text: str) -> list[str]:
        values = [part.strip() for part in text.split(",") if part.strip()]
        if not values or set(values) - set(allowed):
            raise argparse.ArgumentTypeError(f"one or more of {', '.join(allowed)} separated by commas, got {text!r}")
        return values

    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure how early token-limit leases refuse: N processes, one shared per-minute limit.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--workers", type=integers, default=[1, 2, 4], help="worker process counts")
    parser.add_argument("--sizes", type=integers, default=[50, 500], help="request sizes (tokens)")
    parser.add_argument("--limits", type=integers, default=[10_000, 100_000], help="per-minute limits (tokens)")
    parser.add_argument("--runs", type=int, default=20, help="runs per configuration")
    parser.add_argument(
        "--modes", type=one_of("on", "off"), default=["on", "off"], help="leases on, off (lease_seconds=0), both"
    )
    parser.add_argument(
        "--patterns",
        type=one_of(RACE, STOP),
        default=[RACE, STOP],
        help=f"{RACE}: every worker admits as fast as it can; {STOP}: workers 2.. admit --burst of the limit and stop "
        "(holding their leases) while worker 1 drains, then go on (needs 2 workers or more)",
    )
    parser.add_argument("--burst", type=float, default=0.25, help="stop: the share of the limit the holders admit")
    parser.add_argument("--lease-seconds", type=float, default=LEASE_SECONDS, help="lease lifetime when on")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="the Redis DB (only its own keys are used)")
    parser.add_argument("--out", type=Path, help="also write the report (Markdown) here")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not 0 < args.burst < 1:
        parser.error("--burst must be between 0 and 1")
    if args.lease_seconds <= 0:
        parser.error("--lease-seconds must be positive (--modes off runs with 0)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configs = configurations(args)
    header = (
        f"# Lease early refusals: {' '.join(sys.argv)}\n\n"
        f"runs per configuration: {args.runs}; lease seconds when on: {args.lease_seconds}; "
        f"started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}\n\n"
    )
    print(header, flush=True)
    try:
        runs = measure(args.redis_url, configs, args.runs, log=lambda text: print(text, flush=True))
    except BoundViolated as exc:
        print(exc, file=sys.stderr, flush=True)
        return 1
    text = header + report(runs)
    print(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    if any(within(group) != "yes" for group in by_config(runs).values()):
        print("EARLY REFUSAL ABOVE THE DOCUMENTED BOUND", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
