#!/usr/bin/env python3
"""Requests per backend per second through a circuit breaker trip and recovery (issue #11), as a PNG.

The Azure OpenAI lab setup on loopback: two mock model processes, ``ptu`` (priority 1) and ``paygo`` (priority 2),
in a pool behind a gateway (in this process: the real HTTP server, upstream pool and policies). Each has the lab's
circuit breaker (one 429 trips it, accepting Retry-After), and the API retries a 429 on the next member.

Timeline (real time): the load runs at ``--rate`` requests/s for ``--duration`` seconds. At ``--fail-at`` the PTU
starts answering every request 429 with ``Retry-After: --retry-after``; at ``--heal-at`` it answers normally again.
Each mock's own counters are sampled every 100 ms, so the figure shows what each backend received:

* ptu answered (200), ptu refused (429), paygo answered, and client-side failures (anything but 200).

It prints the trip time (first 429 → the PTU stops getting traffic), the probes, the recovery time (heal → the PTU
serves again) and the client failures, and writes ``--out`` (PNG) and the same data as JSON next to it.

    python bench/pool_timeline.py [--rate 40] [--duration 14] [--fail-at 3] [--heal-at 8] [--retry-after 2]
                                  [--out bench/results/pool-timeline.png]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway.app import create_app  # noqa: E402
from gateway.http.client import UpstreamPool  # noqa: E402
from gateway.http.server import ServerLimits, serve  # noqa: E402
from gateway.secrets import hash_key  # noqa: E402
from gateway.settings import GatewaySettings  # noqa: E402
from gateway.snapshot import load_snapshot  # noqa: E402
from gateway_admin.management.processes import ManagedProcess, free_port  # noqa: E402

TOKEN = "bench-pool-token"  # noqa: S105 - a throwaway gateway token of this run
KEY = "bench-pool-key"
RULE = {
    "name": "trip-on-429",
    "failure_count": 1,
    "interval_seconds": 60,
    "status_code_ranges": [[429, 429]],
    "error_reasons": [],
    "trip_duration_seconds": 60,
    "accept_retry_after": True,
}
POLICY = (
    '<policies><inbound><base /><set-backend-service backend-id="aoai" /></inbound><backend>'
    '<retry condition="@(context.Response.StatusCode == 429)" count="1" interval="0" first-fast-retry="true">'
    "<forward-request /></retry></backend><outbound><base /></outbound></policies>"
)
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


def snapshot(ptu: str, paygo: str) -> dict[str, Any]:
    operation = {"name": "chat", "display_name": "chat", "method": "POST", "url_template": "/chat/completions",
                 "policy": None}  # fmt: skip
    return {
        "version": 1,
        "revision": 1,
        "named_values": [],
        "backends": [
            {"name": "ptu", "type": "Single", "url": ptu, "circuit_breaker": RULE},
            {"name": "paygo", "type": "Single", "url": paygo, "circuit_breaker": RULE},
            {
                "name": "aoai",
                "type": "Pool",
                "pool_services": [
                    {"backend": "ptu", "priority": 1, "weight": 1},
                    {"backend": "paygo", "priority": 2, "weight": 1},
                ],
            },
        ],
        "products": [],
        "apis": [
            {
                "name": "aoai",
                "path": "aoai",
                "service_url": ptu,
                "api_type": "openai",
                "subscription_required": True,
                "subscription_key_header": "api-key",
                "subscription_key_query": "subscription-key",
                "policy": POLICY,
                "operations": [operation],
            }
        ],
        "subscriptions": [{"name": "bench", "scope": "/apis", "state": "active", "key_hashes": [hash_key(KEY)]}],
    }


async def mock_call(session: aiohttp.ClientSession, url: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    if data is None:
        async with session.get(url) as response:
            return dict(await response.json())
    async with session.post(url, json=data) as response:
        return dict(await response.json())


def counts(stats: dict[str, Any]) -> tuple[int, int]:
    """(answered, refused with a status) by one mock so far."""
    return stats["requests"].get("/chat/completions", 0), stats["failures"].get("status", 0)


async def run(args: argparse.Namespace, mocks: list[str]) -> dict[str, Any]:
    ptu_root, paygo_root = mocks
    config = GatewaySettings(gateway_token=TOKEN, max_retry_after=600)
    upstream = UpstreamPool(connect_timeout=2.0, read_timeout=10.0)
    app = create_app(config, pool=upstream)
    app.snapshot = load_snapshot(snapshot(ptu_root + "/v1", paygo_root + "/v1"), gateway_token=TOKEN)
    server = await serve(app, "127.0.0.1", 0, limits=ServerLimits())
    port = server.sockets[0].getsockname()[1]
    samples: list[dict[str, float]] = []
    client: list[tuple[float, int]] = []
    async with aiohttp.ClientSession() as control, aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        for root in mocks:
            await mock_call(control, root + "/mock/reset", {})
        start = time.monotonic()

        async def one() -> None:
            sent = time.monotonic() - start
            try:
                async with session.post("/aoai/chat/completions", json=CHAT, headers={"api-key": KEY}) as response:
                    await response.read()
                    client.append((sent, response.status))
            except aiohttp.ClientError:
                client.append((sent, 0))

        async def sampler() -> None:
            while True:
                ptu, paygo = await asyncio.gather(*(mock_call(control, r + "/mock/stats") for r in mocks))
                (ptu_ok, ptu_refused), (paygo_ok, _) = counts(ptu), counts(paygo)
                samples.append({"t": time.monotonic() - start, "ptu_ok": ptu_ok, "ptu_429": ptu_refused,
                                "paygo_ok": paygo_ok})  # fmt: skip
                await asyncio.sleep(0.1)

        async def script() -> None:
            await asyncio.sleep(args.fail_at)
            await mock_call(control, ptu_root + "/mock/fail", {"mode": "status", "status": 429,
                                                               "retry_after": str(args.retry_after)})  # fmt: skip
            await asyncio.sleep(args.heal_at - args.fail_at)
            await mock_call(control, ptu_root + "/mock/fail", {"mode": "none"})

        sampling = asyncio.create_task(sampler())
        scripted = asyncio.create_task(script())
        tasks = []
        interval = 1.0 / args.rate
        for index in range(int(args.duration * args.rate)):
            delay = start + index * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        await scripted
        await asyncio.sleep(0.15)
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
    server.close()
    await app.aclose()
    return {"samples": samples, "client": client, "args": vars(args)}


def per_second(data: dict[str, Any]) -> dict[str, list[int]]:
    """Counts per whole second of the run, from the cumulative samples (each sample's increase goes to its
    second)."""
    seconds = int(data["args"]["duration"]) + 1
    series = {key: [0] * seconds for key in ("ptu_ok", "ptu_429", "paygo_ok")}
    previous = {key: 0 for key in series}
    for sample in data["samples"]:
        second = min(int(sample["t"]), seconds - 1)
        for key in series:
            series[key][second] += int(sample[key]) - previous[key]
            previous[key] = int(sample[key])
    series["client_failures"] = [0] * seconds
    for sent, status in data["client"]:
        if status != 200:
            series["client_failures"][min(int(sent), seconds - 1)] += 1
    return series


def figures(data: dict[str, Any]) -> dict[str, float | int | None]:
    """Trip and recovery times measured from the 100 ms samples."""
    args = data["args"]
    samples = data["samples"]
    first_429 = next((s["t"] for s in samples if s["ptu_429"] > 0), None)
    healed_served = None
    last_ok = None
    for before, after in itertools.pairwise(samples):
        if after["t"] >= args["heal_at"] and after["ptu_ok"] > before["ptu_ok"] and healed_served is None:
            healed_served = after["t"]
        if after["t"] < args["heal_at"] and after["ptu_ok"] > before["ptu_ok"]:
            last_ok = after["t"]
    return {
        "ptu_429_answers": samples[-1]["ptu_429"] if samples else 0,
        "first_429_s": round(first_429, 2) if first_429 is not None else None,
        "ptu_last_served_before_heal_s": round(last_ok, 2) if last_ok is not None else None,
        "recovery_after_heal_s": round(healed_served - args["heal_at"], 2) if healed_served is not None else None,
        "client_requests": len(data["client"]),
        "client_failures": sum(1 for _, status in data["client"] if status != 200),
    }


def plot(series: dict[str, list[int]], data: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args = data["args"]
    seconds = list(range(len(series["ptu_ok"])))
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    ax.step(seconds, series["ptu_ok"], where="post", label="ptu (priority 1): answered", linewidth=2)
    ax.step(seconds, series["ptu_429"], where="post", label="ptu: refused 429 (trips the breaker)", linewidth=2)
    ax.step(seconds, series["paygo_ok"], where="post", label="paygo (priority 2): answered", linewidth=2)
    ax.step(seconds, series["client_failures"], where="post", label="client failures", linestyle="--")
    ax.axvspan(args["fail_at"], args["heal_at"], color="tab:red", alpha=0.08, label="ptu answers 429")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("requests per second")
    ax.set_title(f"Pool failover and recovery: {args['rate']:g} req/s, ptu Retry-After {args['retry_after']} s")
    ax.legend(loc="center right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second (open loop)")
    parser.add_argument("--duration", type=float, default=14.0)
    parser.add_argument("--fail-at", type=float, default=3.0)
    parser.add_argument("--heal-at", type=float, default=8.0)
    parser.add_argument("--retry-after", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pool-timeline.png")
    args = parser.parse_args()
    if not 0 < args.fail_at < args.heal_at < args.duration:
        parser.error("expected 0 < --fail-at < --heal-at < --duration")
    processes = []
    with tempfile.TemporaryDirectory() as workdir:
        try:
            roots = []
            for name in ("ptu", "paygo"):
                port = free_port()
                argv = [sys.executable, "-m", "mockllm", "--host", "127.0.0.1", "--port", str(port), "--tokens", "8"]
                process = ManagedProcess(argv, name=name, cwd=ROOT, log_path=Path(workdir) / f"{name}.log").start()
                processes.append(process)
                process.wait_ready(f"http://127.0.0.1:{port}/health", timeout=30)
                roots.append(f"http://127.0.0.1:{port}")
            data = asyncio.run(run(args, roots))
        finally:
            for process in processes:
                process.stop()
    series = per_second(data)
    result = figures(data)
    args.out.with_suffix(".json").write_text(json.dumps({"figures": result, "per_second": series}, indent=1))
    plot(series, data, args.out)
    print("second  ptu_ok  ptu_429  paygo_ok  client_failures")
    for second in range(len(series["ptu_ok"])):
        row = [series[k][second] for k in ("ptu_ok", "ptu_429", "paygo_ok", "client_failures")]
        print(f"{second:6d}  {row[0]:6d}  {row[1]:7d}  {row[2]:8d}  {row[3]:15d}")
    for key, value in result.items():
        print(f"{key}: {value}")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
