#!/usr/bin/env python3
"""The semantic cache, measured through a real gateway process (docs/semantic-cache.md shows the figures).

It starts ``python -m mockllm``, ``python -m embeddings`` (the local MiniLM engine) and ``python -m gateway`` on free
loopback ports, with three APIs in front of the same mock model:

* ``plain``: no cache (the baseline);
* ``fast``: lookup and store, embeddings from the mock model's ``/embeddings`` (hash vectors of 384 dimensions,
  answered in well under a millisecond): what the lookup itself adds on a miss;
* ``local``: lookup and store with the local engine (real embeddings).

Parts (``--only``):

* ``latency``: one client, requests back to back, p50 and p99 per case: misses (a new prompt each time) and hits
  (the same prompt again);
* ``rates``: the pair sets of tests/fixtures/embeddings/pairs.json through the ``local`` API: for each pair the first
  text is sent (a miss, stored), then the second; a hit on a paraphrase is right, a hit on an unrelated or near-miss
  pair is a false hit. Each pair has a partition of its own (``vary-by`` on a header);
* ``scan``: the in-process store's lookup cost by partition size (the exact cosine scan), and Redis's when
  ``REDIS_URL`` is set.

    python bench/semantic_cache.py [--requests 200] [--only latency,rates,scan]
"""

import argparse
import asyncio
import http.client
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.redis import RespClient  # noqa: E402
from gateway.secrets import hash_key, sign_trace_token, trace_key  # noqa: E402
from gateway.semcache import MemoryVectorStore, RedisVectorStore  # noqa: E402
from gateway_admin.management.processes import ManagedProcess, free_port  # noqa: E402

PAIRS = ROOT / "tests" / "fixtures" / "embeddings" / "pairs.json"
KEY = "bench-semantic-cache-key"
TOKEN = "bench-semantic-cache-token"  # noqa: S105
THRESHOLD = "0.10"
CHAT = [{"name": "chat", "display_name": "chat", "method": "POST", "url_template": "/chat/completions", "policy": None}]


def policy(backend: str, vary: str) -> str:
    return (
        f'<policies><inbound><base/><llm-semantic-cache-lookup score-threshold="{THRESHOLD}" '
        f'embeddings-backend-id="{backend}" embeddings-backend-auth="system-assigned" ignore-system-messages="true">'
        f"<vary-by>{vary}</vary-by></llm-semantic-cache-lookup></inbound>"
        '<outbound><base/><llm-semantic-cache-store duration="3600"/></outbound></policies>'
    )


def api(name: str, service_url: str, document: str | None) -> dict:
    return {
        "name": name,
        "path": name,
        "service_url": service_url,
        "api_type": "openai",
        "subscription_required": True,
        "subscription_key_header": "Ocp-Apim-Subscription-Key",
        "subscription_key_query": "subscription-key",
        "policy": document,
        "operations": CHAT,
    }


def snapshot(mock: str, embeddings: str) -> dict:
    vary = '@(context.Subscription.Id + context.Request.Headers.GetValueOrDefault("x-partition", ""))'
    return {
        "version": 1,
        "revision": 1,
        "named_values": [],
        "backends": [
            {"name": "emb-fast", "url": f"{mock}/v1/embeddings"},
            {"name": "emb-local", "url": f"{embeddings}/v1/embeddings"},
        ],
        "products": [],
        "apis": [
            api("plain", f"{mock}/v1", None),
            api("fast", f"{mock}/v1", policy("emb-fast", vary)),
            api("local", f"{mock}/v1", policy("emb-local", vary)),
        ],
        "subscriptions": [{"name": "bench", "scope": "/apis", "state": "active", "key_hashes": [hash_key(KEY)]}],
    }


class Client:
    """One keep-alive connection to the gateway."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def chat(self, path: str, text: str, partition: str = "", trace: list | None = None) -> tuple[float, str]:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
        headers = {"Content-Type": "application/json", "Ocp-Apim-Subscription-Key": KEY, "x-partition": partition}
        if trace is not None:
            headers["x-sluice-trace"] = sign_trace_token(trace_key(TOKEN), path, int(time.time()) + 600)
        start = time.perf_counter()
        self.conn.request("POST", f"/{path}/chat/completions", orjson.dumps(body), headers)
        response = self.conn.getresponse()
        response.read()
        elapsed = time.perf_counter() - start
        if response.status != 200:
            raise RuntimeError(f"{path}: status {response.status}")
        if trace is not None:
            trace.extend(orjson.loads(response.getheader("x-sluice-trace") or "[]"))
        return elapsed, response.getheader("x-semantic-cache") or ""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(label: str, times: list[float]) -> str:
    ms = [t * 1000 for t in times]
    return f"| {label} | {len(ms)} | {statistics.median(ms):.2f} | {percentile(ms, 0.99):.2f} |"


def direct_embeddings_us(port: int, requests: int) -> list[float]:
    """The mock model's /embeddings called directly, as the gateway calls it (one keep-alive connection)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    for i in range(requests):
        body = orjson.dumps({"model": "text-embedding-3-small", "input": f"user: Direct question {i}"})
        start = time.perf_counter()
        conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
        conn.getresponse().read()
        times.append((time.perf_counter() - start) * 1e6)
    conn.close()
    return times


def latency_rows(client: Client, requests: int, mock_port: int) -> list[str]:
    nonce = uuid.uuid4().hex[:8]
    cases: dict[str, list[float]] = {}
    for path, n in (("plain", requests), ("fast", requests), ("local", max(10, requests // 4))):
        client.chat(path, f"warm up {nonce}")  # connections and first-call costs out of the figures
        misses, hits = [], []
        for i in range(n):  # a partition of its own each: a miss even when the local engine finds prompts close
            elapsed, state = client.chat(path, f"Question {i} of run {nonce}: what is {i} squared?", f"{nonce}-{i}")
            assert path == "plain" or state == "miss", state
            misses.append(elapsed)
        for _ in range(n):
            elapsed, state = client.chat(path, f"Question 0 of run {nonce}: what is 0 squared?", f"{nonce}-0")
            assert path == "plain" or state.startswith("hit"), state
            hits.append(elapsed)
        cases[f"{path} miss"] = misses
        if path != "plain":
            cases[f"{path} hit"] = hits
    lines = ["| case | requests | p50 ms | p99 ms |", "|---|---|---|---|"]
    lines += [row(label, times) for label, times in cases.items()]
    added = (statistics.median(cases["fast miss"]) - statistics.median(cases["plain miss"])) * 1e6
    lines.append("")
    lines.append(f"Miss-path cost of lookup + store with fast embeddings (p50 fast miss - p50 plain): {added:.0f} µs")
    steps: dict[str, list[float]] = {}
    for i in range(requests):  # the same misses, traced: what each step took inside the gateway
        trace: list = []
        client.chat("fast", f"Traced question {i} of run {nonce}", f"{nonce}-t{i}", trace)
        for entry in trace:
            if entry.get("policy") in ("llm-semantic-cache-lookup", "llm-semantic-cache-store"):
                steps.setdefault(entry["policy"], []).append(entry["elapsed_ms"] * 1000)
    for name, us in steps.items():
        lines.append(
            f"- `{name}` step on a traced miss: p50 {statistics.median(us):.0f} µs, p99 {percentile(us, 0.99):.0f} µs"
        )
    us = direct_embeddings_us(mock_port, requests)
    p50, p99 = statistics.median(us), percentile(us, 0.99)
    lines.append(f"- the mock model's /embeddings called directly: p50 {p50:.0f} µs, p99 {p99:.0f} µs")
    return lines


def rate_rows(client: Client) -> list[str]:
    pairs = json.loads(PAIRS.read_text())
    nonce = uuid.uuid4().hex[:8]
    lines = ["| set | pairs | hits through the gateway | rate |", "|---|---|---|---|"]
    for name in ("paraphrase", "unrelated", "near_miss"):
        hits = 0
        for i, (first, second) in enumerate(pairs[name]):
            partition = f"{nonce}-{name}-{i}"
            _, state = client.chat("local", first, partition)
            assert state == "miss", state
            _, state = client.chat("local", second, partition)
            hits += state.startswith("hit")
        total = len(pairs[name])
        lines.append(f"| {name} | {total} | {hits} | {100 * hits / total:.0f} % |")
    return lines


async def scan_rows(sizes: tuple[int, ...], dim: int = 384) -> list[str]:
    rng = np.random.default_rng(7)
    lines = ["| store | partition size | lookup p50 µs | lookup p99 µs |", "|---|---|---|---|"]
    stores: list[tuple[str, object]] = [("memory", MemoryVectorStore(time.monotonic, max_entries=max(sizes)))]
    redis_url = os.environ.get("REDIS_URL", "")
    if redis_url:
        prefix = f"bench:semcache:{uuid.uuid4().hex[:8]}"
        stores.append(("redis", RedisVectorStore(RespClient(redis_url), max_entries=max(sizes), prefix=prefix)))
    for label, store in stores:
        for size in sizes:
            partition = f"p{size}"
            vectors = rng.standard_normal((size, dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            for vector in vectors:
                await store.add(partition, vector, b"x" * 600, 3600)  # type: ignore[attr-defined]
            probe = rng.standard_normal(dim).astype(np.float32)
            probe /= np.linalg.norm(probe)
            times = []
            for _ in range(200):
                start = time.perf_counter()
                await store.search(partition, probe, 0.1)  # type: ignore[attr-defined]
                times.append(time.perf_counter() - start)
            us = [t * 1e6 for t in times]
            lines.append(f"| {label} | {size} | {statistics.median(us):.0f} | {percentile(us, 0.99):.0f} |")
            if label == "redis":  # the partition changed since this process last read it: the vectors come again
                cold = []
                for _ in range(30):
                    store._mirror.clear()  # type: ignore[attr-defined]
                    start = time.perf_counter()
                    await store.search(partition, probe, 0.1)  # type: ignore[attr-defined]
                    cold.append((time.perf_counter() - start) * 1e6)
                p50, p99 = statistics.median(cold), percentile(cold, 0.99)
                lines.append(f"| redis, vectors read again | {size} | {p50:.0f} | {p99:.0f} |")
        if label == "redis":
            await delete_partitions(store, sizes)  # type: ignore[arg-type]
        await store.aclose()  # type: ignore[attr-defined]
    return lines


async def delete_partitions(store: RedisVectorStore, sizes: tuple[int, ...]) -> None:
    for size in sizes:
        await store.client.call("DEL", *store.keys(f"p{size}"))


def start(argv: list[str], ready: str, log_dir: Path, name: str, env: dict[str, str] | None = None) -> ManagedProcess:
    process = ManagedProcess(argv, name=name, log_path=log_dir / f"{name}.log", cwd=str(ROOT), env=env).start()
    process.wait_ready(ready, timeout=60)
    return process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests per latency case (local: a quarter)")
    parser.add_argument("--only", default="latency,rates,scan")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    out = [f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load "
           f"{os.getloadavg()[0]:.1f}", ""]  # fmt: skip
    processes: list[ManagedProcess] = []
    try:
        if parts & {"latency", "rates"}:
            log_dir = Path(tempfile.mkdtemp(prefix="bench-semcache-"))
            mock_port, emb_port, gw_port = free_port(), free_port(), free_port()
            mock, emb = f"http://127.0.0.1:{mock_port}", f"http://127.0.0.1:{emb_port}"
            processes.append(start([sys.executable, "-m", "mockllm", "--port", str(mock_port), "--embed-dim", "384"],
                                   f"{mock}/health", log_dir, "mockllm"))  # fmt: skip
            processes.append(start([sys.executable, "-m", "embeddings", "--port", str(emb_port)],
                                   f"{emb}/health", log_dir, "embeddings"))  # fmt: skip
            cache = log_dir / "snapshot.json"
            cache.write_bytes(orjson.dumps(snapshot(mock, emb)))
            env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")}
            env.update({"SLUICE_GATEWAY_TOKEN": TOKEN, "SLUICE_GATEWAY_PORT": str(gw_port), "SLUICE_ADMIN_PORT": "0",
                        "SLUICE_SNAPSHOT_CACHE": str(cache), "SLUICE_MANAGEMENT_URL": f"http://127.0.0.1:{free_port()}",
                        "SLUICE_USAGE_SPOOL": str(log_dir / "spool"), "SLUICE_LOG_LEVEL": "WARNING"})  # fmt: skip
            processes.append(start([sys.executable, "-m", "gateway"], f"http://127.0.0.1:{gw_port}/__sluice/health",
                                   log_dir, "gateway", env))  # fmt: skip
            client = Client(gw_port)
            if "latency" in parts:
                out += ["### Latency through the gateway (in-process store, mock model answering at once)", ""]
                out += [*latency_rows(client, args.requests, mock_port), ""]
            if "rates" in parts:
                out += [f"### Hit rates through the gateway, local engine, score-threshold {THRESHOLD}", ""]
                out += [*rate_rows(client), ""]
        if "scan" in parts:
            out += ["### Lookup cost by partition size (384 dimensions, exact scan)", ""]
            out += [*asyncio.run(scan_rows((10, 100, 1000))), ""]
    finally:
        for process in reversed(processes):
            process.stop()
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
