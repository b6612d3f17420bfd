#!/usr/bin/env python3
"""Memory of one gateway under a long run over many subscriptions: is it flat?

Seeds a throwaway configuration like `bench/run.py` (its own SQLite database, the mock model, the management
plane) with one API and `--subscriptions` distinct subscriptions, starts one gateway, and sends `--requests`
non-streaming chat completions, each with the next subscription's key in turn (closed loop, `--conc` at a time,
Python aiohttp client). The gateway's RSS (VmRSS from /proc) is printed at `--checkpoints` evenly spaced points.

Growth is measured from the first checkpoint after every subscription has been used once (the first pass fills
what is meant to grow with the number of subscriptions: counters, metric label sets, caches) to the end.

With `--policies governance` (default) the API carries the wizard's per-subscription token limit and token metrics
and the gateway keeps its counters and usage records in Redis (`--redis-url`, loopback), so every subscription has
its own counter key and metric label set; the run's Redis keys are deleted at the end.

    python bench/memory.py [--requests 200000] [--subscriptions 10000] [--policies governance|none]
"""

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # bench/run.py, next to this file
    CHAT_BODY,
    DEFAULT_REDIS_URL,
    KEY_HEADER,
    Bench,
    RedisRun,
    check_redis_url,
    cpu_layout,
    free_port,
    log,
    redact,
    run_async,
    wait_serving,
)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def drive(url: str, keys: list[str], total: int, conc: int, checkpoint, every: int) -> int:
    """Send ``total`` requests, key after key; call ``checkpoint(sent)`` every ``every`` answers. Returns errors."""
    import aiohttp

    body = json.dumps(CHAT_BODY).encode()
    sent = 0  # requests started
    done = 0  # answers read
    errors = 0
    connector = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(connector=connector, headers={"Content-Type": "application/json"}) as session:

        async def worker() -> None:
            nonlocal sent, done, errors
            while sent < total:
                key = keys[sent % len(keys)]
                sent += 1
                async with session.post(url, data=body, headers={KEY_HEADER: key}) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                done += 1
                if done % every == 0:
                    checkpoint(done)

        await asyncio.gather(*(worker() for _ in range(conc)))
    return errors


class MemoryBench(Bench):
    def seed(self, env: dict[str, str], mock_url: str) -> dict[str, str]:
        """One API, then ``--subscriptions`` subscriptions to it; returns {"keys": json list of their keys}."""
        keys = super().seed(env, mock_url)  # the API and its first subscription
        from django.db import connections

        from gateway_admin.management.commands.runsluice import ensure_subscription

        variant = self.variants[0]
        started = time.monotonic()
        all_keys = [keys[variant.policies]]
        for i in range(1, self.args.subscriptions):
            all_keys.append(ensure_subscription(f"{variant.subscription}-{i}", f"/apis/{variant.api}"))
        connections.close_all()
        log(f"seeded {len(all_keys)} subscriptions in {time.monotonic() - started:.0f}s")
        return {"keys": json.dumps(all_keys)}

    def run(self) -> int:
        args = self.args
        variant = self.variants[0]
        if variant.uses_redis:
            prefix = variant.subscription
            self.redis = RedisRun(args.redis_url, self.run_id, [prefix, f"{prefix}-*"])
            self.redis.check()
        self.client_cpus, self.server_cpus = cpu_layout(args.no_pin)
        if self.client_cpus:
            os.sched_setaffinity(0, {int(self.client_cpus)})
        python = sys.executable
        mock_port, admin_port = free_port(), free_port()
        mock_root, admin_url = f"http://127.0.0.1:{mock_port}", f"http://127.0.0.1:{admin_port}"
        self.start("mock", [python, "-m", "mockllm", "--port", str(mock_port)], f"{mock_root}/health")
        env = self.django_env()
        keys = json.loads(self.seed(env, f"{mock_root}/v1")["keys"])
        child_env = {**os.environ, **env}
        from gateway_admin.management.commands.runsluice import gunicorn_argv

        self.start("management", gunicorn_argv(f"127.0.0.1:{admin_port}", 1), f"{admin_url}/admin/login/", child_env)
        gateway_root = f"http://127.0.0.1:{free_port()}"
        gateway_env = {
            **child_env,
            "SLUICE_MANAGEMENT_URL": admin_url,
            "SLUICE_GATEWAY_HOST": "127.0.0.1",
            "SLUICE_GATEWAY_PORT": gateway_root.rsplit(":", 1)[1],
            "SLUICE_SNAPSHOT_CACHE": str(self.workdir / "snapshot.json"),
            "SLUICE_USAGE_SPOOL": str(self.workdir / "usage.spool"),
            "SLUICE_GATEWAY_WORKERS": "1",
            "SLUICE_ADMIN_PORT": "0",
        }
        if variant.uses_redis and self.redis is not None:
            gateway_env |= {"REDIS_URL": args.redis_url, "SLUICE_USAGE_STREAM": self.redis.stream}
        gateway = self.start("gateway", [python, "-m", "gateway"], f"{gateway_root}/__sluice/health", gateway_env)
        url = f"{gateway_root}/{variant.path}/chat/completions"
        wait_serving(url, {KEY_HEADER: keys[-1]}, args.ready_timeout, gateway)  # the snapshot has every key

        points: list[tuple[int, int, float]] = []
        started = time.monotonic()

        def checkpoint(sent: int) -> None:
            points.append((sent, rss_kib(gateway.pid), time.monotonic() - started))
            log(f"{sent:>9,} requests  RSS {points[-1][1] / 1024:7.1f} MiB  ({sent / points[-1][2]:.0f} req/s)")

        checkpoint(0)
        every = max(1, args.requests // args.checkpoints)
        errors = run_async(drive(url, keys, args.requests, args.conc, checkpoint, every))
        print(render(points, args, errors, len(keys)))
        return 0 if errors == 0 else 1


def render(points: list[tuple[int, int, float]], args: argparse.Namespace, errors: int, subscriptions: int) -> str:
    base = next(((sent, rss) for sent, rss, _ in points if sent >= subscriptions), None)
    last_sent, last_rss, _ = points[-1]
    rows = [
        f"## Gateway memory: {last_sent:,} requests over {subscriptions:,} subscriptions (policies {args.policies})",
        "",
        "| requests | RSS MiB | seconds |",
        "|---|---|---|",
        *(f"| {sent:,} | {rss / 1024:.1f} | {seconds:.0f} |" for sent, rss, seconds in points),
        "",
        f"errors: {errors}",
    ]
    if base is not None and last_sent > base[0]:
        growth = (last_rss - base[1]) / base[1]
        per_million = (last_rss - base[1]) / (last_sent - base[0]) * 1e6 / 1024
        rows.append(
            f"growth after the first pass over the subscriptions (from {base[0]:,} requests, {base[1] / 1024:.1f} "
            f"MiB): {growth:+.1%} over {last_sent - base[0]:,} requests; linear extrapolation: "
            f"{per_million:+.1f} MiB per 1,000,000 requests"
        )
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--conc", type=int, default=16)
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--policies", choices=("governance", "none"), default="governance")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    if min(args.requests, args.subscriptions, args.conc, args.checkpoints) < 1:
        parser.error("--requests, --subscriptions, --conc and --checkpoints must be positive")
    if args.policies == "governance" and (problem := check_redis_url(args.redis_url)):
        parser.error(f"--redis-url {redact(args.redis_url)}: {problem}")
    return args


def main(argv: list[str] | None = None) -> int:
    bench = MemoryBench(parse_args(argv))
    try:
        return bench.run()
    except Exception as exc:
        log(f"failed: {exc}")
        bench.args.keep = True
        return 1
    finally:
        bench.stop()


if __name__ == "__main__":
    sys.exit(main())
