#!/usr/bin/env python3
"""The local embeddings engine (embeddings/): speed, and the cosine distances that set the semantic cache threshold.

* `engine`: the numpy forward pass in this process, batches of 1, 8 and 32 texts, short texts (about 10 tokens) and
  about 100-token texts: latency per call (p50, p99) and texts per second;
* `server`: `python -m embeddings` started on a free loopback port, one client sending requests back to back
  (batch 1 and 32, short texts): latency per request, HTTP and JSON included;
* `distances`: the pair sets of tests/fixtures/embeddings/pairs.json, their cosine distances (APIM's score: 1 - cosine
  similarity, lower is closer), and for a few score-threshold values the hit rate on paraphrases and the false-hit
  rate on unrelated and near-miss pairs.

    python bench/embeddings.py [--duration 3] [--only engine,server,distances] [--out results.md]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embeddings.model import MODEL_NAME, MiniLM  # noqa: E402
from gateway_admin.management.processes import ManagedProcess, free_port  # noqa: E402

PAIRS = ROOT / "tests" / "fixtures" / "embeddings" / "pairs.json"
THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
BATCHES = (1, 8, 32)
SHORT = "How do I reset the password of my account number {i}?"
LONG = (
    "Our team runs a small online shop that sells handmade ceramics, and order {i} arrived broken. The customer sent "
    "three photos of the cracked bowls, asked for a refund to the original card, and wants to know whether a "
    "replacement can ship before the end of the month. Write a polite reply that apologises, explains the refund "
    "timeline of five to seven working days, offers free express shipping on a replacement, and asks the customer "
    "to keep the broken pieces until the courier has collected them."
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed_calls(call, duration: float, minimum: int = 5) -> list[float]:
    """Run ``call(n)`` back to back for ``duration`` seconds (at least ``minimum`` times); seconds per call."""
    times: list[float] = []
    deadline = time.perf_counter() + duration
    n = 0
    while n < minimum or time.perf_counter() < deadline:
        start = time.perf_counter()
        call(n)
        times.append(time.perf_counter() - start)
        n += 1
    return times


def engine_rows(model: MiniLM, duration: float, threads: list[int]) -> list[str]:
    rows = ["| BLAS threads | texts | tokens/text | batch | p50 ms | p99 ms | texts/s |", "|---" * 7 + "|"]
    cells = [(n, label, template, batch) for n in threads for label, template in (("short", SHORT),
             ("~100 tokens", LONG)) for batch in BATCHES]  # fmt: skip
    for n_threads, label, template, batch in cells:
        tokens = model.count_tokens([template.format(i=0)])[0]
        with threadpool_limits(limits=n_threads, user_api="blas"):
            times = timed_calls(lambda n, b=batch, t=template: model.encode([t.format(i=n * b + j) for j in range(b)]),
                                duration)  # fmt: skip
            p50, p99 = statistics.median(times), percentile(times, 0.99)
            cell = f"| {n_threads} | {label} | {tokens} | {batch} |"
            rows.append(f"{cell} {p50 * 1000:.1f} | {p99 * 1000:.1f} | {batch / p50:.0f} |")
    return rows


def post(url: str, body: dict) -> dict:
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback URL built here
        return json.loads(response.read())


def server_rows(duration: float, log_dir: Path) -> list[str]:
    port = free_port()
    argv = [sys.executable, "-m", "embeddings", "--host", "127.0.0.1", "--port", str(port)]
    process = ManagedProcess(argv, name="embeddings", cwd=str(ROOT), log_path=log_dir / "bench-embeddings.log")
    process.start()
    rows = ["| request | p50 ms | p99 ms | texts/s |", "|---|---|---|---|"]
    try:
        process.wait_ready(f"http://127.0.0.1:{port}/health", timeout=60)
        url = f"http://127.0.0.1:{port}/v1/embeddings"
        for batch in (1, 32):
            times = timed_calls(
                lambda n, b=batch: post(url, {"model": MODEL_NAME, "input": [SHORT.format(i=n * b + j)
                                                                              for j in range(b)]}),
                duration,
            )  # fmt: skip
            p50 = statistics.median(times)
            rows.append(
                f"| {batch} short text(s), float | {p50 * 1000:.1f} | {percentile(times, 0.99) * 1000:.1f} "
                f"| {batch / p50:.0f} |"
            )
    finally:
        process.stop()
    return rows


def distances(model: MiniLM, pairs: list[list[str]]) -> np.ndarray:
    left = model.encode([a for a, _ in pairs]).vectors
    right = model.encode([b for _, b in pairs]).vectors
    return 1.0 - np.sum(left * right, axis=1)


def distance_rows(model: MiniLM) -> list[str]:
    data = json.loads(PAIRS.read_text())
    sets = {name: distances(model, data[name]) for name in ("paraphrase", "unrelated", "near_miss")}
    rows = ["| set | pairs | min | p10 | median | p90 | max |", "|---|---|---|---|---|---|---|"]
    for name, values in sets.items():
        q = np.quantile(values, [0.0, 0.1, 0.5, 0.9, 1.0])
        rows.append(f"| {name} | {len(values)} | " + " | ".join(f"{v:.3f}" for v in q) + " |")
    rows += ["", "| score-threshold | paraphrase hit rate | unrelated false hits | near-miss false hits |",
             "|---|---|---|---|"]  # fmt: skip
    for threshold in THRESHOLDS:
        cells = [f"{np.mean(values <= threshold) * 100:.0f} % ({int(np.sum(values <= threshold))})"
                 for values in sets.values()]  # fmt: skip
        rows.append(f"| {threshold:.2f} | " + " | ".join(cells) + " |")
    near = sorted(zip(sets["near_miss"], data["near_miss"], strict=True))[:3]
    rows += ["", "Closest near-miss pairs:"] + [f"* {d:.3f}: {a!r} / {b!r}" for d, (a, b) in near]
    far = sorted(zip(sets["paraphrase"], data["paraphrase"], strict=True))[-3:]
    rows += ["", "Farthest paraphrase pairs:"] + [f"* {d:.3f}: {a!r} / {b!r}" for d, (a, b) in far]
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measured cell (default 3)")
    parser.add_argument("--only", default="engine,server,distances", help="comma-separated parts to run")
    parser.add_argument("--threads", default="1,2", help="BLAS thread counts for the engine part (default 1,2)")
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    args = parser.parse_args(argv)
    args.threads = [int(n) for n in args.threads.split(",") if n]
    args.only = {part for part in args.only.split(",") if part}
    unknown = args.only - {"engine", "server", "distances"}
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    threadpool_limits(limits=1, user_api="blas")  # as `python -m embeddings` runs by default
    model = MiniLM.load()
    loaded = time.perf_counter() - started
    model.encode(["warm up"])
    lines = [
        f"# {MODEL_NAME} in numpy: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"numpy {np.__version__}; model loaded in {loaded:.2f} s; load average at start "
        f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1 / 5 / 15 min)",
        "",
    ]
    if "engine" in args.only:
        lines += ["## Engine (in process)", "", *engine_rows(model, args.duration, args.threads), ""]
    if "server" in args.only:
        title = "## Server (`python -m embeddings`, 1 BLAS thread; HTTP on loopback, one client)"
        lines += [title, "", *server_rows(args.duration, ROOT / "var"), ""]
    if "distances" in args.only:
        lines += ["## Cosine distances (score = 1 - cosine similarity)", "", *distance_rows(model), ""]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
