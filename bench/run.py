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

`--policies` chooses what the gateway does per request:

* `none` (default): subscription key check and `set-backend-service`, usage records over HTTP (the embedded default);
* `governance`: the API is imported with the wizard's `token_limit` (per subscription, a limit too high to ever
  refuse, prompt estimation on) and `token_metrics` blocks, and the gateway runs with `REDIS_URL` (`--redis-url`,
  loopback only): token counters and usage records in Redis, as in production. The run uses its own usage stream
  and subscription name, and deletes the Redis keys it created at the end;
* `both`: one gateway per configuration (each with its own API), measured in the same run, cell after cell, so
  the two are compared under the same conditions.

With 2+ cores the mock, the management plane and the gateway(s) share one server core and the load generator runs on
another, so the numbers compare like with like (Redis, started outside the benchmark, is not pinned; its CPU time is
reported separately). Every step is bounded in time; everything started is stopped.

Comparing runs. Wall-clock RPS and latency on a shared 2-core machine move with whatever else runs there; the
gateway's CPU time per request (utime+stime of its process ÷ requests) is the figure least disturbed by other load,
so judge a change by `gateway CPU µs/req` first. `--save-baseline FILE` writes every figure of the run as JSON;
`--baseline FILE` prints each figure next to the baseline's with their ratio, and marks `WORSE` any figure more than
10 % worse (lower RPS; higher latency or CPU). `--profile DIR` records a py-spy flame graph (SVG) of each gateway
during its cell at the highest concurrency; `--cprofile DIR` runs each gateway under cProfile for the whole run and
writes `DIR/gateway-<policies>.prof` when it stops (cProfile slows the gateway: its figures are not comparable).

    python bench/run.py [--duration 5] [--conc 1,16] [--policies none|governance|both] [--out results.md]
                        [--save-baseline base.json] [--baseline base.json] [--profile DIR] [--cprofile DIR]
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
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway_admin.management.processes import ManagedProcess, free_port  # noqa: E402

API_NAME = "bench"
BASE_SUFFIX = " (base)"  # the label of a configuration run from --compare-root
API_PATH = "bench/v1"
KEY_HEADER = "Ocp-Apim-Subscription-Key"
POLICY_CHOICES = ("none", "governance", "both")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# High enough that no request is ever refused during a run (the policy still reserves and settles every request).
GOVERNANCE_TOKENS_PER_MINUTE = 10**9
GOVERNANCE_METRIC_NAMESPACE = "bench"
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
    return sum(group_cpu_times(pgid))


def group_cpu_times(pgid: int) -> tuple[float, float]:
    """(utime, stime) of every process in a process group: user-space CPU, and CPU spent in the kernel for it."""
    user = system = 0
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
            user += int(fields[11])
            system += int(fields[12])
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


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
    target: str  # "direct" or "gateway"
    conc: int
    tool: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    gateway_cpu_us: float | None = None
    mock_cpu_us: float | None = None
    policies: str = ""  # the gateway's configuration ("none" | "governance"); "" for direct
    management_cpu_us: float | None = None
    redis_cpu_us: float | None = None
    gateway_ir: float | None = None  # --callgrind: instructions the gateway executed per request
    gateway_sys_us: float | None = None  # the part of gateway_cpu_us spent in the kernel (stime)
    # --callgrind: the same, less the instructions the idle gateway runs in as long (usage sink ticks, journal
    # checkpoints, snapshot polls), counted just before the cell: the per-request work alone
    gateway_ir_net: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def label(self) -> str:
        """`direct`, or the gateway's configuration: the key of the comparisons."""
        return self.policies or self.target


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


async def stream_ttfb(targets: dict[str, tuple[str, dict[str, str]]], requests: int, seconds: float) -> dict:
    """Alternate one streamed request per target (name: (url, headers)), so drift on the machine hits every target
    alike."""
    import aiohttp

    body = json.dumps({**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}).encode()
    results: dict[str, dict[str, list]] = {name: {"ttfb": [], "total": [], "bad": []} for name in targets}
    deadline = time.perf_counter() + seconds
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, headers={"Content-Type": "application/json"}) as session:
        for _ in range(3):  # open the keep-alive connections
            for url, headers in targets.values():
                await stream_once(session, url, headers, body)
        for _ in range(requests):
            if time.perf_counter() > deadline:
                break
            for name, (url, headers) in targets.items():
                ttfb, total, complete = await stream_once(session, url, headers, body)
                results[name]["ttfb"].append(ttfb)
                results[name]["total"].append(total)
                if not complete:
                    results[name]["bad"].append(1)
    return results


#
# Gateway configurations (--policies) and their Redis side
#


class SetupError(RuntimeError):
    """A precondition of the run does not hold (nothing worth keeping was started)."""


@dataclass(frozen=True)
class Variant:
    """One gateway configuration under test, with its own API, subscription and gateway process."""

    policies: str  # "none" | "governance"
    api: str
    path: str
    subscription: str

    @property
    def uses_redis(self) -> bool:
        return self.policies == "governance"


def variants_for(policies: str, run_id: str) -> list[Variant]:
    """The configurations `--policies` asks for, in measuring order. The governance subscription name carries the
    run id: its token counters (`sluice:tl:{<subscription>}:…`) are then this run's own keys in Redis."""
    chosen = ["none", "governance"] if policies == "both" else [policies]
    return [
        Variant("none", API_NAME, API_PATH, API_NAME)
        if name == "none"
        else Variant("governance", f"{API_NAME}-gov", f"{API_NAME}-gov/v1", f"{API_NAME}-gov-{run_id}")
        for name in chosen
    ]


def wizard_input(variant: Variant, mock_url: str) -> dict[str, Any]:
    """The body `POST /api/apis/import-language-model/` would get for this configuration."""
    data: dict[str, Any] = {
        "display_name": f"Benchmark model ({variant.policies})",
        "name": variant.api,
        "url": mock_url,
        "path": variant.path,
        "type": "openai",
        "operations": ["POST /embeddings", "GET /models"],
        "subscription_required": True,
    }
    if variant.policies == "governance":
        data["token_limit"] = {
            "counter_key": "subscription",
            "tokens_per_minute": GOVERNANCE_TOKENS_PER_MINUTE,
            "estimate_prompt_tokens": True,
        }
        data["token_metrics"] = {"namespace": GOVERNANCE_METRIC_NAMESPACE, "dimensions": ["API ID", "Subscription ID"]}
    return data


def check_redis_url(url: str) -> str | None:
    """Why ``url`` is not a loopback `redis://` URL, or None when it is one."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return str(exc)
    if parts.scheme != "redis":
        return "the scheme must be redis://"
    if parts.hostname not in LOOPBACK_HOSTS:
        return f"the host must be a loopback address ({', '.join(LOOPBACK_HOSTS)})"
    return None


def redact(url: str) -> str:
    """``url`` without its password."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class RedisRun:
    """The Redis side of a governance run: a PING before anything starts, the server's CPU time, and the keys the
    run created (its usage stream and its subscription's token counters), deleted at the end."""

    def __init__(self, url: str, run_id: str, subscriptions: list[str]) -> None:
        import redis

        self.url = url
        self.client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, decode_responses=True)
        self.stream = f"sluice:bench:{run_id}:usage"
        self.counter_patterns = [f"sluice:tl:{{{name}}}:*" for name in subscriptions]

    def check(self) -> None:
        import redis

        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise SetupError(
                f"--policies governance needs Redis, but {redact(self.url)} does not answer PING ({exc}). "
                "Start one (e.g. `redis-server --port 6379 --save ''`) or pass --redis-url redis://127.0.0.1:PORT/DB."
            ) from None

    def cpu_seconds(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def stream_length(self) -> int:
        return int(self.client.xlen(self.stream))

    def counter_keys(self) -> list[str]:
        return [key for pattern in self.counter_patterns for key in self.client.scan_iter(match=pattern, count=500)]

    def cleanup(self) -> int:
        """Delete the run's keys (call once the gateways are stopped, or they could write again)."""
        keys = self.counter_keys()
        if self.client.exists(self.stream):
            keys.append(self.stream)
        if keys:
            self.client.delete(*keys)
        self.client.close()
        return len(keys)


def metric_total(text: str, sample_name: str, **labels: str) -> float:
    """Sum of the samples called ``sample_name`` whose labels include ``labels``, in a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def http_text(url: str, timeout: float = 5.0) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URL built here
        return response.read().decode()


@dataclass
class Target:
    """What one load cell is sent to."""

    name: str  # "direct", or the gateway's configuration
    url: str
    headers: dict[str, str]
    process: ManagedProcess | None = None  # the gateway
    variant: Variant | None = None
    root: str = ""  # the gateway's base URL
    admin: str = ""  # the gateway's admin listener (metrics), base URL
    management: ManagedProcess | None = None  # the management plane that ingests the gateway's usage over HTTP


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
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    redis: RedisRun | None = None
    governance_check: dict[str, float] = field(default_factory=dict)

    @property
    def variants(self) -> list[Variant]:
        return variants_for(self.args.policies, self.run_id)

    def start(
        self, name: str, argv: list[str], ready_url: str, env: dict[str, str] | None = None, cwd: Path = ROOT
    ) -> ManagedProcess:
        process = ManagedProcess(
            argv, name=name, env=env, cwd=cwd, log_path=self.workdir / f"{name}.log", cpus=self.server_cpus or None
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
        if self.redis is not None:  # after the gateways: a running one could write its keys again
            try:
                log(f"deleted {self.redis.cleanup()} Redis key(s) of this run from {redact(self.redis.url)}")
            except Exception as exc:  # report, keep stopping
                log(f"could not delete this run's Redis keys ({self.redis.stream}, sluice:tl:…): {exc}")
            self.redis = None
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

    def gateway_env(
        self, env: dict[str, str], name: str, variant: Variant, management_url: str, root: str, admin_port: int
    ) -> dict[str, str]:
        """The environment of one gateway process: ``env`` with its listeners, its files and its management plane."""
        gateway_env = {
            **env,
            "SLUICE_MANAGEMENT_URL": management_url,
            "SLUICE_GATEWAY_HOST": "127.0.0.1",
            "SLUICE_GATEWAY_PORT": root.rsplit(":", 1)[1],
            "SLUICE_SNAPSHOT_CACHE": str(self.workdir / f"snapshot-{name}.json"),
            "SLUICE_USAGE_SPOOL": str(self.workdir / f"usage-{name}.spool"),
            "SLUICE_GATEWAY_WORKERS": "1",  # one process on the one server core
            "SLUICE_ADMIN_HOST": "127.0.0.1",
            "SLUICE_ADMIN_PORT": str(admin_port),
        }
        if variant.uses_redis and self.redis is not None:
            gateway_env |= {"REDIS_URL": self.args.redis_url, "SLUICE_USAGE_STREAM": self.redis.stream}
        return gateway_env

    def seed(self, env: dict[str, str], mock_url: str) -> dict[str, str]:
        """Migrate the throwaway database, import one API per configuration through the wizard's validation and
        create its subscription; return {configuration: subscription key}."""
        os.environ.update(env)
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        from apis.api.serializers import ImportLanguageModelSerializer
        from gateway_admin.management.commands.runsluice import ensure_language_model_api, ensure_subscription

        call_command("migrate", interactive=False, verbosity=0)
        keys = {}
        for variant in self.variants:
            serializer = ImportLanguageModelSerializer(data=wizard_input(variant, mock_url))
            serializer.is_valid(raise_exception=True)
            ensure_language_model_api(serializer.validated_data)
            keys[variant.policies] = ensure_subscription(
                variant.subscription, f"/apis/{variant.api}", f"Benchmark ({variant.policies})"
            )
        connections.close_all()
        return keys

    def run(self) -> int:
        args = self.args
        variants = self.variants
        redis_subscriptions = [v.subscription for v in variants if v.uses_redis]
        if redis_subscriptions:
            redis = RedisRun(args.redis_url, self.run_id, redis_subscriptions)
            redis.check()
            self.redis = redis  # from now on, stop() deletes the run's keys
        self.client_cpus, self.server_cpus = cpu_layout(args.no_pin)
        if self.client_cpus:
            os.sched_setaffinity(0, {int(self.client_cpus)})  # this process and the load tools it runs
        python = sys.executable
        mock_port, admin_port = free_port(), free_port()
        mock_root = f"http://127.0.0.1:{mock_port}"
        admin_url = f"http://127.0.0.1:{admin_port}"
        log(
            f"work folder {self.workdir}; policies {args.policies}; client cpus {self.client_cpus or 'any'}, "
            f"server cpus {self.server_cpus or 'any'}"
            + (f"; Redis {redact(args.redis_url)}, usage stream {self.redis.stream}" if self.redis else "")
        )

        self.start(
            "mock",
            [python, "-m", "mockllm", "--port", str(mock_port), "--tokens", str(args.tokens)],
            f"{mock_root}/health",
        )
        mock = self.processes[0]
        env = self.django_env()
        keys = self.seed(env, f"{mock_root}/v1")
        child_env = {**os.environ, **env}
        from gateway_admin.management.commands.runsluice import gunicorn_argv

        management = self.start(
            "management", gunicorn_argv(f"127.0.0.1:{admin_port}", 1), f"{admin_url}/admin/login/", child_env
        )
        # the mock ignores the key; sending one keeps the direct requests the same size as the gateway's
        targets = [Target("direct", f"{mock_root}/v1/chat/completions", {KEY_HEADER: keys[variants[0].policies]})]
        # --compare-root: each configuration also runs from the other checkout, measured right before this one's
        trees = [(Path(args.compare_root).resolve(), BASE_SUFFIX), (ROOT, "")] if args.compare_root else [(ROOT, "")]
        # --compare-root: the other checkout's gateways send their usage to that checkout's management plane (on
        # the same database), so that the management plane's CPU per request is compared too
        managements = {ROOT: (management, admin_url)}
        for tree, _ in trees:
            if tree not in managements:
                port = free_port()
                managements[tree] = (
                    self.start(
                        "management-base",
                        gunicorn_argv(f"127.0.0.1:{port}", 1),
                        f"http://127.0.0.1:{port}/admin/login/",
                        child_env,
                        tree,
                    ),
                    f"http://127.0.0.1:{port}",
                )
        for variant, (tree, suffix) in ((v, t) for v in variants for t in trees):
            name = variant.policies + suffix
            gateway_root = f"http://127.0.0.1:{free_port()}"
            admin_port = free_port()  # metrics are scraped from the admin listener, never the client one
            gateway_env = self.gateway_env(child_env, name, variant, managements[tree][1], gateway_root, admin_port)
            gateway_argv = [python, "-m", "gateway"]
            if args.callgrind:
                out = Path(args.callgrind).resolve()
                out.mkdir(parents=True, exist_ok=True)
                gateway_argv = [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={out}/callgrind.gateway-{name}.%p",
                    *gateway_argv,
                ]
            elif args.cprofile:
                Path(args.cprofile).mkdir(parents=True, exist_ok=True)
                profile_path = Path(args.cprofile).resolve() / f"gateway-{name}.prof"
                gateway_argv = [python, "-m", "cProfile", "-o", str(profile_path), "-m", "gateway"]
            process = self.start(f"gateway-{name}", gateway_argv, f"{gateway_root}/__sluice/health", gateway_env, tree)
            targets.append(
                Target(
                    name,
                    f"{gateway_root}/{variant.path}/chat/completions",
                    {KEY_HEADER: keys[variant.policies]},
                    process,
                    variant,
                    gateway_root,
                    f"http://127.0.0.1:{admin_port}",
                    managements[tree][0],
                )
            )
        for target in targets[1:]:
            wait_serving(target.url, target.headers, args.ready_timeout, target.process)

        body = json.dumps(CHAT_BODY).encode()
        (self.workdir / "body.json").write_bytes(body)
        use_wrk = shutil.which("wrk") is not None and not args.python_client
        if not use_wrk and not args.python_client:
            log(
                "wrk is not installed: `sudo apt-get install wrk` for real numbers; using the Python client "
                "(client-bound: it measures the client as much as the servers)"
            )
        tool = "wrk" if use_wrk else "python (client-bound)"

        def measure(target: Target, conc: int, seconds: int) -> dict:
            if use_wrk:
                return run_wrk(target.url, conc, seconds, target.headers, self.workdir)
            return run_async(python_load(target.url, conc, seconds, target.headers, body))

        def per_request(seconds: float, requests: int) -> float | None:
            return seconds / requests * 1e6 if requests else None

        for target in targets if args.warmup else ():  # warm-up: connection pools, lazy imports, the tokenizer
            measure(target, 8, args.warmup)
        cells: list[Cell] = []
        for conc in args.conc:
            for target in targets:  # interleaved: every configuration of one concurrency back to back
                if args.cell_warmup:
                    measure(target, conc, args.cell_warmup)
                gateway = target.process
                redis = self.redis if target.variant is not None and target.variant.uses_redis else None
                gateway_before = group_cpu_times(gateway.pid) if gateway else (0.0, 0.0)
                plane = target.management or management
                mock_before, management_before = group_cpu_seconds(mock.pid), group_cpu_seconds(plane.pid)
                redis_before = redis.cpu_seconds() if redis else 0.0
                profiler = self.start_profiler(target, conc)
                idle_rate = None
                if args.callgrind and gateway:
                    callgrind_control("-z", gateway.pid)  # the idle gateway's background work, per second
                    idle_started = time.monotonic()
                    time.sleep(args.duration)
                    idle = callgrind_control("-d", gateway.pid)
                    idle_rate = idle / (time.monotonic() - idle_started) if idle is not None else None
                    callgrind_control("-z", gateway.pid)  # count this cell only
                result = measure(target, conc, args.duration)
                instructions = callgrind_control("-d", gateway.pid) if args.callgrind and gateway else None
                if profiler is not None:
                    profiler.wait(timeout=args.duration + 60)
                redis_cpu = redis.cpu_seconds() - redis_before if redis else None
                gateway_after = group_cpu_times(gateway.pid) if gateway else (0.0, 0.0)
                gateway_cpu = sum(gateway_after) - sum(gateway_before) if gateway else None
                gateway_sys = gateway_after[1] - gateway_before[1] if gateway else None
                mock_cpu = group_cpu_seconds(mock.pid) - mock_before
                management_cpu = group_cpu_seconds(plane.pid) - management_before
                requests = result["requests"]
                cell = Cell(
                    "gateway" if gateway else "direct",
                    conc,
                    tool,
                    requests,
                    result["duration_us"] / 1e6,
                    result["p50_us"] / 1000,
                    result["p99_us"] / 1000,
                    result["errors"] + result["status_errors"],
                    per_request(gateway_cpu, requests) if gateway_cpu is not None else None,
                    per_request(mock_cpu, requests),
                    target.name if gateway else "",
                    per_request(management_cpu, requests) if gateway else None,
                    per_request(redis_cpu, requests) if redis_cpu is not None else None,
                    instructions / requests if instructions is not None and requests else None,
                )
                cell.gateway_sys_us = per_request(gateway_sys, requests) if gateway_sys is not None else None
                if instructions is not None and idle_rate is not None and requests:
                    cell.gateway_ir_net = (instructions - idle_rate * cell.seconds) / requests
                cells.append(cell)
                log(
                    f"{target.name:10} c={conc:<3} rps={cell.rps:9.1f} p50={cell.p50_ms:.3f}ms "
                    f"p99={cell.p99_ms:.3f}ms errors={cell.errors}"
                )
                time.sleep(0.3)
        streams = run_async(
            stream_ttfb({t.name: (t.url, t.headers) for t in targets}, args.stream_requests, args.stream_seconds)
        )
        for target in targets:
            if target.variant is not None and target.variant.uses_redis:
                self.governance_check = self.check_governance(target)
        report = render(cells, streams, self, tool)
        print(report)
        if args.save_baseline:
            Path(args.save_baseline).write_text(
                json.dumps(figures(cells, stream_summary(streams)), indent=1, ensure_ascii=False) + "\n"
            )
            log(f"wrote the baseline {args.save_baseline}")
        if args.out:
            Path(args.out).write_text(report + "\n")
            log(f"wrote {args.out}")
        return 0

    def start_profiler(self, target: Target, conc: int) -> subprocess.Popen | None:
        """With --profile, py-spy sampling the gateway for the cell at the highest concurrency (a flame graph)."""
        if not self.args.profile or target.process is None or conc != max(self.args.conc):
            return None
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        out = Path(self.args.profile).resolve()
        out.mkdir(parents=True, exist_ok=True)
        argv = [
            py_spy,
            "record",
            *(["--native"] if self.args.profile_native else ["--nonblocking"]),
            "-r",
            "250",
            "-d",
            str(self.args.duration),
            "-p",
            str(target.process.pid),
            "-f",
            self.args.profile_format,
            "-o",
            str(out / f"gateway-{target.name}-c{conc}.{'svg' if self.args.profile_format == 'flamegraph' else 'txt'}"),
        ]
        log(f"py-spy: {' '.join(argv[1:])}")
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603

    def check_governance(self, target: Target) -> dict[str, float]:
        """Evidence that the governance policies ran: usage records in the run's stream, token counters in Redis,
        token metrics on the gateway. Raises when one is missing (the numbers would not measure governance)."""
        assert self.redis is not None and target.variant is not None
        time.sleep(0.5)  # the usage sink sends every 50 ms
        metrics = http_text(f"{target.admin}/metrics")
        found = {
            "records": self.redis.stream_length(),
            "requests": metric_total(metrics, "sluice_requests_total", api=target.variant.api),
            "counters": len(self.redis.counter_keys()),
            "tokens": metric_total(metrics, f"{GOVERNANCE_METRIC_NAMESPACE}_total_tokens_total"),
        }
        log(f"governance check: {found}")
        missing = [name for name in ("records", "counters", "tokens") if not found[name]]
        if missing:
            raise RuntimeError(f"the governance policies left no trace ({', '.join(missing)} missing): {found}")
        return found


def callgrind_control(option: str, pid: int) -> float | None:
    """Zero (``-z``) or dump (``-d``) the counters of a gateway running under callgrind; a dump returns the
    instructions counted since the last zeroing (the ``totals:`` line of the newest dump file)."""
    subprocess.run(["callgrind_control", option, str(pid)], capture_output=True, timeout=120, check=True)  # noqa: S603,S607
    if option != "-d":
        return None
    argv = [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a.startswith(b"--callgrind-out-file=")]
    pattern = argv[0].split(b"=", 1)[1].decode().replace("%p", str(pid))
    dumps = sorted(Path(pattern).parent.glob(Path(pattern).name + "*"), key=lambda p: p.stat().st_mtime)
    for line in dumps[-1].read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return float(line.split()[1])
    return None


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


#
# Baselines: every figure of a run, keyed "<target> c=<conc> <figure>", and their ratio to an earlier run
#

HIGHER_IS_BETTER = ("RPS",)
WORSE_THRESHOLD = 0.10


def figures(cells: list[Cell], streams: dict[str, dict[str, float | None]]) -> dict[str, float]:
    """The run's figures by key; what a baseline file holds."""
    direct = {c.conc: c for c in cells if c.target == "direct"}
    found: dict[str, float | None] = {}
    for c in cells:
        prefix = f"{c.label} c={c.conc}"
        found[f"{prefix} RPS"] = c.rps
        found[f"{prefix} p50 ms"] = c.p50_ms
        found[f"{prefix} p99 ms"] = c.p99_ms
        if c.target == "gateway":
            found[f"{prefix} gateway CPU µs/req"] = c.gateway_cpu_us
            if c.gateway_sys_us is not None:
                found[f"{prefix} gateway kernel CPU µs/req"] = c.gateway_sys_us
            if c.gateway_ir is not None:
                found[f"{prefix} gateway instructions/req"] = c.gateway_ir
            if c.gateway_ir_net is not None:
                found[f"{prefix} gateway instructions/req net of idle"] = c.gateway_ir_net
            if c.conc in direct:
                found[f"{prefix} added p50 ms"] = c.p50_ms - direct[c.conc].p50_ms
    for name, row in streams.items():
        found[f"{name} stream TTFB p50 ms"] = row.get("ttfb_p50")
        if row.get("added") is not None:
            found[f"{name} stream added TTFB p50 ms"] = row["added"]
    return {key: value for key, value in found.items() if value is not None}


def worse(key: str, before: float, after: float) -> bool:
    """Whether ``after`` is more than 10 % worse than ``before`` (RPS: lower; every other figure: higher)."""
    if key.endswith(HIGHER_IS_BETTER):
        return after < before * (1 - WORSE_THRESHOLD)
    return after > before + abs(before) * WORSE_THRESHOLD


def render_baseline(current: dict[str, float], baseline: dict[str, float], name: str) -> list[str]:
    rows = [
        f"Against the baseline `{name}` (ratio = this run ÷ baseline; `WORSE` = more than "
        f"{WORSE_THRESHOLD:.0%} worse; RPS and latency are wall-clock figures on a shared machine, CPU µs/req is "
        "the steadier one):",
        "",
        "| figure | baseline | this run | ratio | |",
        "|---|---|---|---|---|",
    ]
    for key, value in current.items():
        before = baseline.get(key)
        if before is None:
            rows.append(f"| {key} | - | {value:.3f} | - | new |")
            continue
        ratio = f"x{value / before:.2f}" if before else "-"
        rows.append(
            f"| {key} | {before:.3f} | {value:.3f} | {ratio} | {'WORSE' if worse(key, before, value) else ''} |"
        )
    return rows


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def change(before: float | None, after: float | None, digits: int = 3) -> str:
    """``after`` against ``before``: the difference, and the ratio when ``before`` is positive."""
    if before is None or after is None:
        return "-"
    ratio = f" (x{after / before:.2f})" if before > 0 else ""
    return f"{after - before:+.{digits}f}{ratio}"


def target_title(label: str) -> str:
    return label if label == "direct" else f"gateway, {label}"


def stream_summary(streams: dict) -> dict[str, dict[str, float | None]]:
    """Per target: TTFB p50/p99 and total p50 in ms, and the TTFB p50 added over direct."""
    summary: dict[str, dict[str, float | None]] = {}
    for name, result in streams.items():
        ttfb = [x * 1000 for x in result["ttfb"]]
        total = [x * 1000 for x in result["total"]]
        summary[name] = {
            "streams": len(ttfb),
            "ttfb_p50": statistics.median(ttfb) if ttfb else None,
            "ttfb_p99": percentile(ttfb, 99) if ttfb else None,
            "total_p50": statistics.median(total) if total else None,
            "incomplete": len(result["bad"]),
        }
    base = summary.get("direct", {}).get("ttfb_p50")
    for name, row in summary.items():
        p50 = row["ttfb_p50"]
        row["added"] = p50 - base if name != "direct" and p50 is not None and base is not None else None
    return summary


def render_comparison(cells: list[Cell], streams: dict[str, dict[str, float | None]], labels: list[str]) -> list[str]:
    """Every configuration side by side, one row per figure. A last column compares each configuration with its
    --compare-root twin (`<policies> (base)`), or, without those, the two configurations when there are two."""
    by_key = {(c.label, c.conc): c for c in cells}
    configs = [label for label in labels if label != "direct"]
    pairs = [(label + BASE_SUFFIX, label) for label in configs if label + BASE_SUFFIX in configs]
    if not pairs and len(configs) == 2:
        pairs = [(configs[0], configs[1])]
    header = ["conc", "figure", *(target_title(label) for label in labels)]
    header += [f"{after} vs {before}" for before, after in pairs]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(conc: str, figure: str, values: dict[str, float | None], digits: int) -> None:
        cols = [conc, figure, *(fmt(values.get(label), digits) for label in labels)]
        cols += [change(values.get(before), values.get(after), digits) for before, after in pairs]
        rows.append("| " + " | ".join(cols) + " |")

    for conc in sorted({c.conc for c in cells}):
        got = {label: by_key.get((label, conc)) for label in labels}
        direct = got.get("direct")

        def pick(attr: str, got: dict = got) -> dict[str, float | None]:
            return {label: getattr(cell, attr) if cell else None for label, cell in got.items()}

        row(str(conc), "RPS", {label: cell.rps if cell else None for label, cell in got.items()}, 0)
        row(str(conc), "p50 ms", pick("p50_ms"), 3)
        row(str(conc), "p99 ms", pick("p99_ms"), 3)
        added = {
            label: cell.p50_ms - direct.p50_ms
            for label, cell in got.items()
            if label != "direct" and cell is not None and direct is not None
        }
        row(str(conc), "added p50 ms", added, 3)
        row(str(conc), "gateway CPU µs/req", pick("gateway_cpu_us"), 0)
        row(str(conc), "of which kernel (stime)", pick("gateway_sys_us"), 0)
        if any(cell is not None and cell.gateway_ir is not None for cell in got.values()):
            row(str(conc), "gateway instructions/req (callgrind)", pick("gateway_ir"), 0)
            row(str(conc), "of which per request (less idle background)", pick("gateway_ir_net"), 0)
    row("1, stream", "TTFB p50 ms", {label: streams.get(label, {}).get("ttfb_p50") for label in labels}, 3)
    row("1, stream", "added TTFB p50 ms", {label: streams.get(label, {}).get("added") for label in labels}, 3)
    return rows


def render(cells: list[Cell], streams: dict, bench: Bench, tool: str) -> str:
    args = bench.args
    labels = list(dict.fromkeys(["direct", *(c.label for c in cells), *streams]))
    stream_rows_by_target = stream_summary(streams)
    direct = {c.conc: c for c in cells if c.target == "direct"}
    rows = [
        "| target | conc | RPS | p50 ms | p99 ms | added p50 ms | errors | gateway CPU µs/req | "
        "management CPU µs/req | Redis CPU µs/req | mock CPU µs/req |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        added = c.p50_ms - direct[c.conc].p50_ms if c.target == "gateway" and c.conc in direct else None
        rows.append(
            f"| {target_title(c.label)} | {c.conc} | {c.rps:.0f} | {fmt(c.p50_ms)} | {fmt(c.p99_ms)} | {fmt(added)} | "
            f"{c.errors} | {fmt(c.gateway_cpu_us, 0)} | {fmt(c.management_cpu_us, 0)} | {fmt(c.redis_cpu_us, 0)} | "
            f"{fmt(c.mock_cpu_us, 0)} |"
        )
    stream_rows = [
        "| target | streams | TTFB p50 ms | TTFB p99 ms | total p50 ms | added TTFB p50 ms | incomplete |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in stream_rows_by_target.items():
        stream_rows.append(
            f"| {target_title(name)} | {s['streams']} | {fmt(s['ttfb_p50'])} | {fmt(s['ttfb_p99'])} | "
            f"{fmt(s['total_p50'])} | {fmt(s['added'])} | {s['incomplete']} |"
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
        f"client on CPU {bench.client_cpus}, mock + management + gateway(s) on CPU {bench.server_cpus}"
        if bench.server_cpus
        else "not pinned"
    )
    configs = [label for label in labels if label != "direct"]
    notes = [
        "## Sluice gateway overhead (loopback)",
        "",
        f"- load: {tool}, {args.duration}s per cell (+{args.cell_warmup}s warm-up), closed loop, keep-alive; "
        "the targets of one concurrency are measured back to back",
        f"- mock: {args.tokens} completion tokens per answer; machine: {cpu}, {os.cpu_count()} CPUs, {pinning}",
        "- `added p50` = gateway p50 - direct p50 at the same concurrency; CPU µs/req = utime+stime ÷ requests",
        "- policies `none`: subscription key + `set-backend-service`, usage records over HTTP to the management plane",
    ]
    if "governance" in configs:
        notes.append(
            f"- policies `governance`: + `llm-token-limit` (per subscription, {GOVERNANCE_TOKENS_PER_MINUTE:,} "
            "tokens/min, never refusing; prompt estimation on) + `llm-emit-token-metric` (2 dimensions), with "
            f"`REDIS_URL` = {redact(args.redis_url)}: token counters and usage records in Redis. Redis runs outside "
            "the benchmark, unpinned; its CPU (`INFO cpu`) is in the detail table"
        )
    if bench.governance_check:
        check = bench.governance_check
        notes.append(
            f"- governance check: {check['records']:.0f} usage records in the run's stream for "
            f"{check['requests']:.0f} requests counted by the gateway; {check['counters']:.0f} token counter "
            f"key(s) in Redis; `{GOVERNANCE_METRIC_NAMESPACE}_total_tokens_total` = {check['tokens']:.0f}"
        )
    baseline_rows = []
    if args.baseline:
        baseline = json.loads(Path(args.baseline).read_text())
        baseline_rows = ["", *render_baseline(figures(cells, stream_rows_by_target), baseline, args.baseline)]
    return "\n".join(
        [
            *notes,
            "",
            *render_comparison(cells, stream_rows_by_target, labels),
            "",
            "Detail:",
            "",
            *rows,
            "",
            f"Streaming chat completions at concurrency 1 ({args.tokens} content chunks, usage, [DONE]; "
            "Python aiohttp client, requests alternate between targets):",
            "",
            *stream_rows,
            *baseline_rows,
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
    parser.add_argument(
        "--policies",
        choices=POLICY_CHOICES,
        default="none",
        help="gateway configuration: none (default; subscription key and backend only), governance (token limit and "
        "token metrics, counters and usage records in Redis), or both, compared in one run",
    )
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help=f"loopback Redis for --policies governance/both (default {DEFAULT_REDIS_URL})",
    )
    parser.add_argument(
        "--compare-root",
        metavar="DIR",
        help="also run each gateway from the checkout in DIR (say, `git worktree add DIR main`), as the "
        f"configuration `<policies>{BASE_SUFFIX}`, cell by cell with this one: a before/after in one run",
    )
    parser.add_argument("--save-baseline", metavar="FILE", help="write every figure of this run to FILE (JSON)")
    parser.add_argument("--baseline", metavar="FILE", help="print each figure's ratio to the figures in FILE")
    parser.add_argument("--profile", metavar="DIR", help="py-spy flame graph of each gateway at the highest --conc")
    parser.add_argument(
        "--profile-format",
        choices=("flamegraph", "raw"),
        default="flamegraph",
        help="--profile output: an SVG flame graph, or raw collapsed stacks (.txt; bench/stacks.py summarises them)",
    )
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="--profile with C frames (py-spy --native; it must pause the gateway for each sample, which slows it)",
    )
    parser.add_argument("--cprofile", metavar="DIR", help="run each gateway under cProfile; DIR/gateway-*.prof")
    parser.add_argument(
        "--callgrind",
        metavar="DIR",
        help="run each gateway under valgrind's callgrind and report instructions per request, counted over each "
        "cell only (deterministic, unlike wall-clock figures on a shared machine; the gateway runs ~50x slower, so "
        "use short cells and a long --ready-timeout); the dumps in DIR open with callgrind_annotate",
    )
    args = parser.parse_args(argv)
    if args.duration < 1 or not args.conc or min(args.conc) < 1:
        parser.error("--duration and --conc must be positive")
    if args.policies != "none" and (problem := check_redis_url(args.redis_url)):
        parser.error(f"--redis-url {redact(args.redis_url)}: {problem}")
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
    except SetupError as exc:
        log(f"failed: {exc}")
        return 2
    except Exception as exc:
        log(f"failed: {exc}")
        bench.args.keep = True  # the logs of the children are in the work folder
        return 1
    finally:
        bench.stop()


if __name__ == "__main__":
    sys.exit(main())
