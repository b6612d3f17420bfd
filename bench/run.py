#!/usr/bin/env python3
"""`make bench`: what a Sluice gateway adds on top of a model backend, measured on loopback.

It starts the project's mock model server, seeds a throwaway configuration (its own temporary SQLite database and
secrets: your `var/` and `.env` are never touched) with an imported OpenAI API and a subscription, starts the
management plane and one gateway, and then compares `direct` (client → mock) with `gateway`
(client → gateway → mock):

* non-streaming chat completions at each `--conc`, for `--duration` seconds per cell, with `wrk` when it is
  installed (else a Python closed-loop client, labelled client-bound): RPS, p50/p99, p50 added by the gateway, and
  the gateway's CPU time per request (utime+stime from /proc, divided by the requests of the cell);
* streaming chat completions at concurrency 1 with a Python client: time to first byte and the TTFB added.

With 2+ cores the mock, the management plane and the gateway share one server core and the load generator runs on
another, so the numbers compare like with like. Every step is bounded in time; everything started is stopped.

    python bench/run.py [--duration 5] [--conc 1,16] [--stream-requests 200] [--out results.md]
"""

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway_admin.management.processes import ManagedProcess, free_port  # noqa: E402

API_NAME = "bench"
API_PATH = "bench/v1"
KEY_HEADER = "Ocp-Apim-Subscription-Key"
CHAT_BODY = {
    "model": "mock",
    "messages": [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Explain in two sentences what an AI gateway adds to each model request."},
    ],
    "max_tokens": 64,
}
WRK_RESULT = "SLUICE_BENCH_RESULT "
# Written to the run's temporary folder; wrk calls init() once per thread and done() once at the end.
WRK_SCRIPT = """\
-- args: BODY_FILE ["Header-Name: value" ...]
function init(args)
  local fh = assert(io.open(args[1], "rb"))
  wrk.method = "POST"
  wrk.body = fh:read("*a")
  fh:close()
  wrk.headers["Content-Type"] = "application/json"
  for i = 2, #args do
    local name, value = args[i]:match("^([^:]+):%s*(.*)$")
    if name then wrk.headers[name] = value end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('%s{"requests":%d,"duration_us":%d,"errors":%d,"status_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d,"mean_us":%.1f}\\n', "SLUICE_BENCH_RESULT ",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def run_async(coro):  # type: ignore[no-untyped-def]
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


#
# CPU accounting and pinning
#


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every process in a process group (a gateway may fork workers)."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after "pid (comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_layout(no_pin: bool) -> tuple[str, str]:
    """(client cpus, server cpus) as taskset lists, or empty strings when not pinning."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if no_pin or count < 2 or not shutil.which("taskset"):
        return "", ""
    cpus = sorted(os.sched_getaffinity(0))
    return str(cpus[0]), str(cpus[1])


#
# Load generators
#


@dataclass
class Cell:
    target: str
    conc: int
    tool: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    gateway_cpu_us: float | None = None
    mock_cpu_us: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(url: str, conc: int, seconds: int, headers: dict[str, str], workdir: Path) -> dict:
    script = workdir / "post.lua"
    if not script.exists():
        script.write_text(WRK_SCRIPT)
    argv = [
        "wrk",
        "-t1",
        f"-c{conc}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
        "--",
        str(workdir / "body.json"),
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)  # noqa: S603
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(WRK_RESULT):
            return json.loads(line[len(WRK_RESULT) :])
    raise RuntimeError(f"wrk failed (exit {done.returncode}): {done.stdout[-300:]} {done.stderr[-300:]}")


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


async def python_load(url: str, conc: int, seconds: float, headers: dict[str, str], body: bytes) -> dict:
    """Closed loop with aiohttp: `conc` workers, each sends its next request when the previous one is answered."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(connector=connector, headers={"Content-Type": "application/json"}) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        if response.status != 200:
                            errors += 1
                            continue
                except aiohttp.ClientError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "duration_us": elapsed * 1e6,
        "errors": errors,
        "status_errors": 0,
        "p50_us": percentile(latencies, 50) * 1e6,
        "p99_us": percentile(latencies, 99) * 1e6,
    }


async def stream_once(session, url: str, headers: dict[str, str], body: bytes) -> tuple[float, float, bool]:
    """One streamed chat completion: (TTFB s, total s, complete: content chunks + usage + [DONE])."""
    started = time.perf_counter()
    first = None
    data = b""
    async with session.post(url, data=body, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:200]}")
        async for chunk in response.content.iter_any():
            if first is None:
                first = time.perf_counter()
            data += chunk
    total = time.perf_counter() - started
    complete = b"word1" in data and b'"usage":{' in data and data.rstrip().endswith(b"data: [DONE]")
    return (first or time.perf_counter()) - started, total, complete


async def stream_ttfb(targets: dict[str, str], headers: dict[str, str], requests: int, seconds: float) -> dict:
    """Alternate one streamed request per target, so drift on the machine hits every target alike."""
    import aiohttp

    body = json.dumps({**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}).encode()
    results: dict[str, dict[str, list]] = {name: {"ttfb": [], "total": [], "bad": []} for name in targets}
    deadline = time.perf_counter() + seconds
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, headers={"Content-Type": "application/json"}) as session:
        for _ in range(3):  # open the keep-alive connections
            for url in targets.values():
                await stream_once(session, url, headers, body)
        for _ in range(requests):
            if time.perf_counter() > deadline:
                break
            for name, url in targets.items():
                ttfb, total, complete = await stream_once(session, url, headers, body)
                results[name]["ttfb"].append(ttfb)
                results[name]["total"].append(total)
                if not complete:
                    results[name]["bad"].append(1)
    return results


#
# The run
#


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sluice-bench-")))
    processes: list[ManagedProcess] = field(default_factory=list)
    client_cpus: str = ""
    server_cpus: str = ""

    def start(self, name: str, argv: list[str], ready_url: str, env: dict[str, str] | None = None) -> ManagedProcess:
        process = ManagedProcess(
            argv, name=name, env=env, cwd=ROOT, log_path=self.workdir / f"{name}.log", cpus=self.server_cpus or None
        ).start()
        self.processes.append(process)
        took = process.wait_ready(ready_url, timeout=self.args.ready_timeout)
        log(f"{name} ready after {took:.1f}s (pid {process.pid}, cpus {self.server_cpus or 'any'})")
        return process

    def stop(self) -> None:
        while self.processes:
            process = self.processes.pop()
            with contextlib.suppress(Exception):
                process.stop(grace=10)
        if self.args.keep:
            log(f"kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def django_env(self) -> dict[str, str]:
        from cryptography.fernet import Fernet

        return {
            "DJANGO_SETTINGS_MODULE": "gateway_admin.settings.local",
            "DATABASE_URL": f"sqlite:///{self.workdir / 'bench.sqlite3'}",
            "REDIS_URL": "",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "SLUICE_SECRET_KEYS": Fernet.generate_key().decode(),
            "SLUICE_GATEWAY_TOKEN": secrets.token_urlsafe(32),
            "DJANGO_LOG_LEVEL": "WARNING",
        }

    def seed(self, env: dict[str, str], mock_url: str) -> str:
        """Migrate the throwaway database, import the API and create a subscription; return its key."""
        os.environ.update(env)
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        from gateway_admin.management.commands.runsluice import ensure_language_model_api, ensure_subscription

        call_command("migrate", interactive=False, verbosity=0)
        ensure_language_model_api(
            {
                "display_name": "Benchmark model",
                "name": API_NAME,
                "url": mock_url,
                "path": API_PATH,
                "type": "openai",
                "operations": ["POST /embeddings", "GET /models"],
                "subscription_required": True,
            }
        )
        key = ensure_subscription(API_NAME, f"/apis/{API_NAME}", "Benchmark")
        connections.close_all()
        return key

    def run(self) -> int:
        args = self.args
        self.client_cpus, self.server_cpus = cpu_layout(args.no_pin)
        if self.client_cpus:
            os.sched_setaffinity(0, {int(self.client_cpus)})  # this process and the load tools it runs
        python = sys.executable
        mock_port, admin_port, gateway_port = free_port(), free_port(), free_port()
        mock_root = f"http://127.0.0.1:{mock_port}"
        admin_url = f"http://127.0.0.1:{admin_port}"
        gateway_root = f"http://127.0.0.1:{gateway_port}"
        log(
            f"work folder {self.workdir}; client cpus {self.client_cpus or 'any'}, server cpus "
            f"{self.server_cpus or 'any'}"
        )

        self.start(
            "mock",
            [python, "-m", "mockllm", "--port", str(mock_port), "--tokens", str(args.tokens)],
            f"{mock_root}/health",
        )
        env = self.django_env()
        key = self.seed(env, f"{mock_root}/v1")
        child_env = {**os.environ, **env}
        from gateway_admin.management.commands.runsluice import gunicorn_argv

        self.start("management", gunicorn_argv(f"127.0.0.1:{admin_port}", 1), f"{admin_url}/admin/login/", child_env)
        gateway = self.start(
            "gateway",
            [python, "-m", "gateway"],
            f"{gateway_root}/__sluice/health",
            {
                **child_env,
                "SLUICE_MANAGEMENT_URL": admin_url,
                "SLUICE_GATEWAY_HOST": "127.0.0.1",
                "SLUICE_GATEWAY_PORT": str(gateway_port),
                "SLUICE_SNAPSHOT_CACHE": str(self.workdir / "snapshot.json"),
                "SLUICE_GATEWAY_WORKERS": "1",  # one process on the one server core
            },
        )
        mock = self.processes[0]
        headers = {KEY_HEADER: key}
        targets = {
            "direct": f"{mock_root}/v1/chat/completions",
            "gateway": f"{gateway_root}/{API_PATH}/chat/completions",
        }
        wait_serving(targets["gateway"], headers, args.ready_timeout, gateway)

        body = json.dumps(CHAT_BODY).encode()
        (self.workdir / "body.json").write_bytes(body)
        use_wrk = shutil.which("wrk") is not None and not args.python_client
        if not use_wrk and not args.python_client:
            log(
                "wrk is not installed: `sudo apt-get install wrk` for real numbers; using the Python client "
                "(client-bound: it measures the client as much as the servers)"
            )
        tool = "wrk" if use_wrk else "python (client-bound)"

        def measure(url: str, conc: int, seconds: int) -> dict:
            if use_wrk:
                return run_wrk(url, conc, seconds, headers, self.workdir)
            return run_async(python_load(url, conc, seconds, headers, body))

        for url in targets.values():  # warm-up: connection pools, lazy imports
            measure(url, 8, args.warmup)
        cells: list[Cell] = []
        for conc in args.conc:
            for name, url in targets.items():
                if args.cell_warmup:
                    measure(url, conc, args.cell_warmup)
                gateway_before, mock_before = group_cpu_seconds(gateway.pid), group_cpu_seconds(mock.pid)
                result = measure(url, conc, args.duration)
                gateway_cpu = group_cpu_seconds(gateway.pid) - gateway_before
                mock_cpu = group_cpu_seconds(mock.pid) - mock_before
                requests = result["requests"]
                cell = Cell(
                    name,
                    conc,
                    tool,
                    requests,
                    result["duration_us"] / 1e6,
                    result["p50_us"] / 1000,
                    result["p99_us"] / 1000,
                    result["errors"] + result["status_errors"],
                    gateway_cpu / requests * 1e6 if requests and name == "gateway" else None,
                    mock_cpu / requests * 1e6 if requests else None,
                )
                cells.append(cell)
                log(
                    f"{name:8} c={conc:<3} rps={cell.rps:9.1f} p50={cell.p50_ms:.3f}ms p99={cell.p99_ms:.3f}ms "
                    f"errors={cell.errors}"
                )
                time.sleep(0.3)
        streams = run_async(stream_ttfb(targets, headers, args.stream_requests, args.stream_seconds))
        report = render(cells, streams, self, tool)
        print(report)
        if args.out:
            Path(args.out).write_text(report + "\n")
            log(f"wrote {args.out}")
        return 0


def wait_serving(url: str, headers: dict[str, str], timeout: float, process: ManagedProcess) -> None:
    """The gateway answers health before its first snapshot arrives; wait until the API itself answers."""
    import urllib.error
    import urllib.request

    body = json.dumps({**CHAT_BODY, "max_tokens": 1}).encode()
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not process.alive:
            raise RuntimeError(f"gateway exited with {process.returncode}:\n{process.tail()}")
        request = urllib.request.Request(  # noqa: S310 - loopback URL built here
            url, data=body, headers={**headers, "Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                if response.status == 200 and b"choices" in response.read():
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} {exc.read()[:200]!r}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.25)
    raise RuntimeError(f"the gateway did not serve {url} within {timeout:.0f}s: {last}\n{process.tail()}")


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(cells: list[Cell], streams: dict, bench: Bench, tool: str) -> str:
    args = bench.args
    direct = {c.conc: c for c in cells if c.target == "direct"}
    rows = [
        "| target | conc | RPS | p50 ms | p99 ms | added p50 ms | errors | gateway CPU µs/req | mock CPU µs/req |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        added = c.p50_ms - direct[c.conc].p50_ms if c.target == "gateway" and c.conc in direct else None
        rows.append(
            f"| {c.target} | {c.conc} | {c.rps:.0f} | {fmt(c.p50_ms)} | {fmt(c.p99_ms)} | {fmt(added)} | "
            f"{c.errors} | {fmt(c.gateway_cpu_us, 0)} | {fmt(c.mock_cpu_us, 0)} |"
        )
    stream_rows = [
        "| target | streams | TTFB p50 ms | TTFB p99 ms | total p50 ms | added TTFB p50 ms | incomplete |",
        "|---|---|---|---|---|---|---|",
    ]
    base = statistics.median(streams["direct"]["ttfb"]) * 1000 if streams["direct"]["ttfb"] else None
    for name, result in streams.items():
        ttfb = [x * 1000 for x in result["ttfb"]]
        total = [x * 1000 for x in result["total"]]
        p50 = statistics.median(ttfb) if ttfb else None
        added = p50 - base if name != "direct" and p50 is not None and base is not None else None
        stream_rows.append(
            f"| {name} | {len(ttfb)} | {fmt(p50)} | {fmt(percentile(ttfb, 99) if ttfb else None)} | "
            f"{fmt(statistics.median(total) if total else None)} | {fmt(added)} | "
            f"{len(result['bad'])} |"
        )
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    pinning = (
        f"client on CPU {bench.client_cpus}, mock + management + gateway on CPU {bench.server_cpus}"
        if bench.server_cpus
        else "not pinned"
    )
    return "\n".join(
        [
            "## Sluice gateway overhead (loopback)",
            "",
            f"- load: {tool}, {args.duration}s per cell (+{args.cell_warmup}s warm-up), closed loop, keep-alive",
            f"- mock: {args.tokens} completion tokens per answer; machine: {cpu}, {os.cpu_count()} CPUs, {pinning}",
            "- `added p50` = gateway p50 - direct p50 at the same concurrency; CPU µs/req = utime+stime ÷ requests",
            "",
            *rows,
            "",
            f"Streaming chat completions at concurrency 1 ({args.tokens} content chunks, usage, [DONE]; "
            "Python aiohttp client, requests alternate between targets):",
            "",
            *stream_rows,
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured cell (default 5)")
    parser.add_argument(
        "--conc",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[1, 16],
        help="concurrencies for non-streaming chat (default 1,16)",
    )
    parser.add_argument("--warmup", type=int, default=2, help="seconds of global warm-up per target")
    parser.add_argument("--cell-warmup", type=int, default=1, help="seconds of discarded load before each cell")
    parser.add_argument("--stream-requests", type=int, default=200, help="streamed requests per target (bound)")
    parser.add_argument("--stream-seconds", type=float, default=20.0, help="time bound of the streaming part")
    parser.add_argument("--tokens", type=int, default=32, help="completion tokens of the mock (= stream chunks)")
    parser.add_argument("--python-client", action="store_true", help="use the Python load client even with wrk")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, database)")
    parser.add_argument("--out", help="also write the markdown report to this file")
    args = parser.parse_args(argv)
    if args.duration < 1 or not args.conc or min(args.conc) < 1:
        parser.error("--duration and --conc must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    bench = Bench(parse_args(argv))

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        return bench.run()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        log(f"failed: {exc}")
        bench.args.keep = True  # the logs of the children are in the work folder
        return 1
    finally:
        bench.stop()


if __name__ == "__main__":
    sys.exit(main())
