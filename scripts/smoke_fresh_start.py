#!/usr/bin/env python3
"""Fresh-start smoke test (issue #6): start the product from a fresh clone the way a newcomer does.

Steps, each printed with how long it took:

1. clone the commit under test (HEAD of this repository) into a new temporary folder;
2. `make run` there under a scrubbed environment (only PATH, HOME and LANG), on free ports, until both the
   management plane and the gateway answer; parse the URLs, the admin password, the API token and the demo key
   from its output;
3. run the README's quickstart blocks themselves (fenced blocks right after a ``<!-- quickstart -->`` line), with
   the printed values put in for the ``NAME=...`` placeholders and the default ports;
4. Ctrl-C (SIGINT to make's process group): every process it started must be gone and every port free;
5. `make run` again in the same clone (existing var/ and .env): same admin password, token and data;
6. `make test` in the clone, scrubbed environment.

Standard library only. Exit status 0 when every step passed, 1 otherwise (the clone is then kept for a look).

    python scripts/smoke_fresh_start.py [--rev HEAD] [--skip-test] [--keep]
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = (
    "Banner",
    "Block",
    "SmokeError",
    "extract_blocks",
    "parse_banner",
    "scrubbed_env",
    "substitute",
)

REPO_ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- quickstart -->"
KEPT_VARIABLES = ("PATH", "HOME", "LANG")
DEFAULT_PORTS = {"management": 8000, "gateway": 8080, "mock": 18000, "embeddings": 18100}
READY_LINE = "Press Ctrl-C to stop."
FIRST_START_TIMEOUT = 900.0  # creates .venv and installs the project (pip cache / wheelhouse warm: about a minute)
START_TIMEOUT = 180.0
STOP_TIMEOUT = 60.0
BLOCK_TIMEOUT = 120.0
TEST_TIMEOUT = 3600.0
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
PLACEHOLDER_RE = re.compile(r"^(?P<indent>\s*)(?P<export>export\s+)?(?P<name>[A-Z_][A-Z0-9_]*)=\.\.\.(?=\s|$)", re.M)
ASSIGNMENT_RE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=", re.M)
BLOCK_RE = re.compile(
    r"^" + re.escape(MARKER) + r"[ \t]*\n```(?P<lang>[\w+-]*)[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.M | re.S
)
BANNER_FIELDS = {
    "management_url": r"^\s*Web UI\s+(\S+?)/ui/\s",
    "password": r"^\s*Admin login\s+\S+ / (.+?)\s*$",
    "username": r"^\s*Admin login\s+(\S+) / ",
    "token": r"^\s*API token\s+(\S+)",
    "gateway_url": r"^\s*Gateway\s+(http\S+)\s*$",
    "demo_key": r"^\s*Demo key\s+(\S+)\s*$",
}


class SmokeError(Exception):
    """A step failed; the message says what was expected and what happened."""


#
# Pieces (tested in tests/tooling/test_smoke_fresh_start.py)
#


@dataclass(frozen=True)
class Block:
    """A fenced code block of README.md marked as part of the quickstart."""

    lang: str
    code: str
    line: int  # of the opening fence, 1-based


@dataclass(frozen=True)
class Banner:
    """What `make run` printed once everything answered."""

    management_url: str
    gateway_url: str
    username: str
    password: str
    token: str
    demo_key: str

    @property
    def values(self) -> dict[str, str]:
        """Values for the README's ``NAME=...`` placeholders."""
        return {"TOKEN": self.token, "DEMO_KEY": self.demo_key, "ADMIN_PASSWORD": self.password}


def extract_blocks(markdown: str) -> list[Block]:
    """The fenced blocks that directly follow a ``<!-- quickstart -->`` line, in order."""
    blocks = []
    for match in BLOCK_RE.finditer(markdown):
        line = markdown.count("\n", 0, match.start("lang")) + 1
        blocks.append(Block(match.group("lang") or "text", match.group("code"), line))
    if markdown.count(MARKER) != len(blocks):
        raise SmokeError(f"README.md has {markdown.count(MARKER)} {MARKER} markers but {len(blocks)} blocks after one")
    return blocks


def parse_banner(output: str) -> Banner:
    """Read the URLs and credentials from `make run`'s output (the last banner when there are several)."""
    text = ANSI_RE.sub("", output)
    found = {}
    for name, pattern in BANNER_FIELDS.items():
        matches = re.findall(pattern, text, re.M)
        if not matches:
            raise SmokeError(f"`make run` printed no {name.replace('_', ' ')} (a line like {pattern!r})")
        found[name] = matches[-1]
    if found["password"].startswith("("):
        raise SmokeError("`make run` printed no admin password: " + found["password"])
    return Banner(**found)


def substitute(code: str, values: Mapping[str, str], urls: Mapping[int, str]) -> str:
    """``code`` with each ``NAME=...`` placeholder set to ``values[NAME]`` and each default port's URL
    (``http://127.0.0.1:8000``) replaced by the URL actually in use."""

    def fill(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in values:
            raise SmokeError(f"the README placeholder {name}=... has no value in `make run`'s output")
        return f"{match.group('indent')}{match.group('export') or ''}{name}={_shell_quote(values[name])}"

    code = PLACEHOLDER_RE.sub(fill, code)
    for port, url in urls.items():
        code = re.sub(rf"http://(?:127\.0\.0\.1|localhost):{port}(?![0-9])", url, code)
    return code


def scrubbed_env(environ: Mapping[str, str]) -> dict[str, str]:
    """PATH, HOME and LANG only, as `env -i` would leave them; PATH without this project's virtualenv."""
    env = {name: environ[name] for name in KEPT_VARIABLES if name in environ}
    venvs = [Path(environ["VIRTUAL_ENV"])] if environ.get("VIRTUAL_ENV") else []
    venvs.append(Path(sys.prefix))
    if sys.prefix != sys.base_prefix and "PATH" in env:
        keep = [part for part in env["PATH"].split(os.pathsep) if not any(_inside(Path(part), v) for v in venvs)]
        env["PATH"] = os.pathsep.join(keep)
    env.setdefault("LANG", "C.UTF-8")
    return env


def failure_report(lines: list[str], limit: int = 200) -> list[str]:
    """What to show of a failed pytest log: its FAILURES/ERRORS sections (capped), then its last 40 lines."""
    start = next((i for i, line in enumerate(lines) if re.match(r"^=+ (FAILURES|ERRORS) =+$", line)), None)
    if start is None:
        return lines[-40:]
    end = next((i for i in range(start, len(lines)) if "short test summary info" in lines[i]), len(lines))
    details = lines[start:end]
    if len(details) > limit:
        details = [*details[: limit // 2], f"... {len(details) - limit} lines left out ...", *details[-limit // 2 :]]
    return [*details, *lines[max(end, len(lines) - 40) :]]


def _inside(path: Path, folder: Path) -> bool:
    with contextlib.suppress(OSError, ValueError):
        return path.resolve().is_relative_to(folder.resolve())
    return False


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


#
# Processes and ports (Linux /proc)
#


@dataclass(frozen=True)
class Proc:
    pid: int
    start: str  # start time in clock ticks: tells a live process from a new one that reuses the pid
    cmdline: str

    def alive(self) -> bool:
        info = _stat(self.pid)
        return info is not None and info[1] == self.start and info[2] != "Z"


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, start time, state) of ``pid``, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[19], fields[0]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def all_processes() -> dict[int, tuple[int, str, str]]:
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (info := _stat(int(entry.name))) is not None:
            table[int(entry.name)] = info
    return table


def descendants(root: int) -> list[Proc]:
    table = all_processes()
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start, state) in table.items():
            if ppid == parent and state != "Z":
                found.append(Proc(pid, start, _cmdline(pid)))
                frontier.append(pid)
    return found


def processes_under(folder: Path) -> list[Proc]:
    """Live processes whose working directory or command line is inside ``folder`` (this one excluded)."""
    found = []
    for pid, (_, start, state) in all_processes().items():
        if pid == os.getpid() or state == "Z":
            continue
        cmdline = _cmdline(pid)
        with contextlib.suppress(OSError):
            cwd = os.readlink(f"/proc/{pid}/cwd")
            if _inside(Path(cwd), folder) or str(folder) in cmdline:
                found.append(Proc(pid, start, cmdline))
    return found


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free; a listener is not
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_ports(count: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def http(
    url: str, *, method: str = "GET", headers: Mapping[str, str] | None = None, timeout: float = 5.0
) -> tuple[int | None, bytes]:
    request = urllib.request.Request(url, method=method, headers=dict(headers or {}))  # noqa: S310 - loopback URLs
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, urllib.error.URLError):
        return None, b""


#
# `make run` as a child
#


class MakeRun:
    """`make run` in its own process group (a terminal's foreground job), its output copied to a log file."""

    def __init__(self, clone: Path, env: Mapping[str, str], ports: Mapping[str, int], log_path: Path) -> None:
        args = (
            f"--port {ports['management']} --gateway-port {ports['gateway']} --mock-port {ports['mock']} "
            f"--embeddings-port {ports['embeddings']}"
        )
        self.argv = ["make", "--no-print-directory", "run", f"ARGS={args}"]
        self.log_path = log_path
        self.lines: list[str] = []
        self.popen = subprocess.Popen(  # noqa: S603
            self.argv,
            cwd=clone,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        with open(self.log_path, "a", encoding="utf-8") as log:
            for raw in self.popen.stdout:
                line = raw.decode(errors="replace")
                self.lines.append(line)
                log.write(line)
                log.flush()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def tail(self, count: int = 40) -> str:
        return "".join(self.lines[-count:])

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            output = self.output
            if text in output:
                return output
            if self.popen.poll() is not None:
                self._reader.join(timeout=5)
                raise SmokeError(f"`make run` exited with status {self.popen.returncode}:\n{self.tail()}")
            time.sleep(0.2)
        raise SmokeError(f"`make run` did not print {text!r} within {timeout:.0f}s:\n{self.tail()}")

    def interrupt(self) -> None:
        """What Ctrl-C does in a terminal: SIGINT to every process of the foreground group."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGINT)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


#
# The smoke test
#


@dataclass
class Smoke:
    source: Path
    rev: str
    keep: bool
    skip_test: bool
    timings: list[tuple[str, float, str]] = field(default_factory=list)
    workdir: Path = field(init=False)
    clone: Path = field(init=False)

    def __post_init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="sluice-smoke-"))
        self.clone = self.workdir / "sluice"
        self.env = scrubbed_env(os.environ)
        self.ports = dict(zip(DEFAULT_PORTS, free_ports(len(DEFAULT_PORTS)), strict=True))
        self.runs: list[MakeRun] = []
        self.shell_names: set[str] = set()  # variables the README's shell blocks set, carried to the next block

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        print(f"[smoke] ▶ {name}", flush=True)
        started = time.monotonic()
        try:
            yield
        except BaseException:
            elapsed = time.monotonic() - started
            self.timings.append((name, elapsed, "FAILED"))
            print(f"[smoke] ✘ {name} FAILED after {elapsed:.1f}s", flush=True)
            raise
        elapsed = time.monotonic() - started
        self.timings.append((name, elapsed, "ok"))
        print(f"[smoke] ✔ {name} ({elapsed:.1f}s)", flush=True)

    def say(self, message: str) -> None:
        print(f"[smoke]   {message}", flush=True)

    def run(self) -> int:
        started = time.monotonic()
        try:
            self._run()
        except SmokeError as exc:
            self.say("")
            for line in str(exc).splitlines():
                print(f"[smoke] FAIL: {line}", flush=True)
            self._cleanup_after_failure()
            self._summary(time.monotonic() - started, ok=False)
            print(f"[smoke] the clone is kept for a look: {self.clone}", flush=True)
            return 1
        if not self.keep:
            with self.step("remove the clone"):
                shutil.rmtree(self.workdir, ignore_errors=True)
        self._summary(time.monotonic() - started, ok=True)
        if self.keep:
            print(f"[smoke] the clone is kept: {self.clone}", flush=True)
        return 0

    def _run(self) -> None:
        with self.step("clone the commit under test"):
            self._clone()
        blocks = self._readme_blocks()
        with self.step("make run (first start: creates .venv, .env and var/)"):
            first, banner = self._start(FIRST_START_TIMEOUT, "run-1.log")
        exports: dict[str, str] = {}
        state = self.workdir / "shell-state.sh"
        state.write_text("")
        for number, block in enumerate(blocks, 1):
            with self.step(f"README quickstart block {number}/{len(blocks)} ({block.lang}, README.md:{block.line})"):
                exports = self._run_block(number, block, banner, state, exports)
        data = self._data(banner)
        self.say(f"management data: {len(data['apis'])} APIs, {len(data['subscriptions'])} subscriptions")
        with self.step("Ctrl-C: every child gone, every port free"):
            self._interrupt(first)
        with self.step("make run again in the same clone (existing var/ and .env)"):
            second, again = self._start(START_TIMEOUT, "run-2.log")
            self._compare(banner, again, data)
        with self.step("Ctrl-C after the second start"):
            self._interrupt(second)
        if self.skip_test:
            self.say("make test skipped (--skip-test)")
            return
        with self.step("make test in the clone (scrubbed environment)"):
            self._make_test()

    #
    # Steps
    #

    def _clone(self) -> None:
        top = self._git(self.source, "rev-parse", "--show-toplevel")
        common = Path(self._git(self.source, "rev-parse", "--path-format=absolute", "--git-common-dir"))
        sha = self._git(self.source, "rev-parse", "--verify", f"{self.rev}^{{commit}}")
        if self._git(self.source, "status", "--porcelain", "--untracked-files=no"):
            self.say(f"note: {top} has uncommitted changes; they are not part of this test")
        self._git(self.workdir, "clone", "--quiet", "--no-checkout", str(common), str(self.clone))
        self._git(self.clone, "checkout", "--quiet", "--detach", sha)
        self.say(f"{sha[:12]} cloned into {self.clone}; ports {self.ports}")
        self.say("environment: " + " ".join(f"{name}={value}" for name, value in self.env.items()))
        for name in ("var", ".venv", ".env"):
            if (self.clone / name).exists():
                raise SmokeError(f"the fresh clone already has {name}")

    def _readme_blocks(self) -> list[Block]:
        blocks = extract_blocks((self.clone / "README.md").read_text())
        if not any(block.lang == "bash" for block in blocks) or not any(block.lang == "python" for block in blocks):
            raise SmokeError("README.md: the quickstart needs marked bash and python blocks")
        for block in blocks:
            if block.lang not in ("bash", "sh", "python"):
                raise SmokeError(f"README.md:{block.line}: cannot run a {block.lang!r} quickstart block")
        return blocks

    def _start(self, timeout: float, log_name: str) -> tuple[MakeRun, Banner]:
        for name, port in self.ports.items():
            if not port_free(port):
                raise SmokeError(f"the {name} port {port} is taken before `make run`")
        run = MakeRun(self.clone, self.env, self.ports, self.workdir / log_name)
        self.runs.append(run)
        self.say(f"$ {' '.join(run.argv)}   (log: {run.log_path})")
        output = run.wait_for(READY_LINE, timeout)
        banner = parse_banner(output)
        for url in (f"{banner.management_url}/admin/login/", f"{banner.gateway_url}/__sluice/health"):
            status = self._wait_url(url, run)
            self.say(f"{url} answers {status}")
        self.say(f"admin password {banner.password[:4]}…, token {banner.token[:6]}…, demo key {banner.demo_key[:6]}…")
        return run, banner

    def _wait_url(self, url: str, run: MakeRun, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            status, _ = http(url, timeout=2)
            if status == 200:
                return status
            if run.popen.poll() is not None:
                break
            time.sleep(0.2)
        raise SmokeError(f"{url} answers {status}, expected 200:\n{run.tail()}")

    def _run_block(
        self, number: int, block: Block, banner: Banner, state: Path, exports: dict[str, str]
    ) -> dict[str, str]:
        urls = {
            DEFAULT_PORTS["management"]: banner.management_url,
            DEFAULT_PORTS["gateway"]: banner.gateway_url,
            DEFAULT_PORTS["mock"]: f"http://127.0.0.1:{self.ports['mock']}",
            DEFAULT_PORTS["embeddings"]: f"http://127.0.0.1:{self.ports['embeddings']}",
        }
        code = substitute(block.code, banner.values, urls)
        if block.lang == "python":
            path = self.workdir / f"quickstart-{number}.py"
            path.write_text(code)
            argv = [str(self.clone / ".venv" / "bin" / "python"), str(path)]
            env = {**self.env, **exports}
        else:
            path = self.workdir / f"quickstart-{number}.sh"
            self.shell_names.update(ASSIGNMENT_RE.findall(code))
            names = " ".join(sorted(self.shell_names))
            keep_state = f"declare -p {names} > {_shell_quote(str(state))} 2>/dev/null || true" if names else ""
            env_file = self.workdir / f"quickstart-{number}.env"
            # One shell session across blocks, as a reader pasting them one after the other: the variables a block
            # sets (exported or not) are there in the next one; what it exports reaches the python blocks.
            path.write_text(
                "set -euo pipefail\n"
                # name the README line of a failing command (the block's first line is this script's line 4)
                f"trap 'echo \"README.md:$((LINENO + {block.line - 3})): exit $? from: $BASH_COMMAND\" >&2' ERR\n"
                f"source {_shell_quote(str(state))}\n"
                f"{code}\n"
                f"{keep_state}\n"
                f"env -0 > {_shell_quote(str(env_file))}\n"
            )
            argv = ["bash", str(path)]
            env = dict(self.env)
        done = subprocess.run(  # noqa: S603
            argv, cwd=self.clone, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
        )
        output = "\n".join(part.strip() for part in (done.stdout, done.stderr) if part.strip())
        for line in output.splitlines()[-12:]:
            self.say(f"| {line[:160]}")
        if done.returncode != 0:
            raise SmokeError(
                f"README.md:{block.line}: the {block.lang} quickstart block exited with {done.returncode} "
                f"(script {path}):\n{output[-3000:]}"
            )
        if not done.stdout.strip():
            raise SmokeError(f"README.md:{block.line}: the {block.lang} quickstart block printed nothing")
        if block.lang == "python":
            return exports
        pairs = (item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
        return {name: value for name, value in pairs if name not in self.env and name not in ("PWD", "SHLVL", "_")}

    def _data(self, banner: Banner) -> dict[str, list[str]]:
        headers = {"Authorization": f"Token {banner.token}"}
        data = {}
        for kind in ("apis", "subscriptions"):
            status, body = http(f"{banner.management_url}/api/{kind}/", headers=headers)
            if status != 200:
                raise SmokeError(f"GET /api/{kind}/ answers {status}: {body[:300]!r}")
            items = json.loads(body)
            items = items["results"] if isinstance(items, dict) else items
            data[kind] = sorted(item["name"] for item in items)
        return data

    def _interrupt(self, run: MakeRun) -> None:
        if run.popen.poll() is not None:
            raise SmokeError(f"`make run` exited with status {run.popen.returncode} before Ctrl-C:\n{run.tail()}")
        before = [Proc(run.popen.pid, _stat(run.popen.pid)[1], " ".join(run.argv)), *descendants(run.popen.pid)]
        self.say(f"{len(before)} processes before Ctrl-C:")
        for proc in before:
            self.say(f"  pid {proc.pid}: {proc.cmdline[:140]}")
        run.interrupt()
        try:
            status = run.popen.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise SmokeError(f"`make run` still runs {STOP_TIMEOUT:.0f}s after Ctrl-C:\n{run.tail()}") from None
        run._reader.join(timeout=5)
        self.say(f"make exited with status {status}; last line: {run.lines[-1].strip() if run.lines else ''!r}")
        left = {proc.pid: proc for proc in before if proc.alive()}
        left.update({proc.pid: proc for proc in processes_under(self.clone)})
        # make may exit before runsluice has stopped its children (each has a grace period); a leftover stays.
        deadline = time.monotonic() + STOP_TIMEOUT
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = {pid: proc for pid, proc in left.items() if proc.alive()}
        busy = [f"{name} {port}" for name, port in self.ports.items() if not port_free(port)]
        problems = [f"process {proc.pid} still runs after Ctrl-C: {proc.cmdline}" for proc in left.values()]
        problems += [f"port still in use after Ctrl-C: {item}" for item in busy]
        if problems:
            raise SmokeError("\n".join(problems))
        self.say(f"all {len(before)} processes gone; ports {sorted(self.ports.values())} free")

    def _compare(self, first: Banner, again: Banner, data: dict[str, list[str]]) -> None:
        for name in ("password", "token", "demo_key"):
            if getattr(first, name) != getattr(again, name):
                raise SmokeError(f"the second start printed another {name.replace('_', ' ')}")
        self.say("same admin password, API token and demo key")
        now = self._data(again)
        if now != data:
            raise SmokeError(f"the data changed across the restart: {data} before, {now} after")
        self.say(f"same APIs {data['apis']} and subscriptions {data['subscriptions']}")
        status, body = http(
            f"{again.gateway_url}/demo/v1/models", headers={"Ocp-Apim-Subscription-Key": again.demo_key}
        )
        if status != 200:
            raise SmokeError(f"the demo API answers {status} after the restart: {body[:300]!r}")
        self.say("the demo key still works through the gateway")

    def _make_test(self) -> None:
        log_path = self.workdir / "make-test.log"
        self.say(f"$ make test   (log: {log_path})")
        with open(log_path, "wb") as log:
            done = subprocess.run(
                ["make", "--no-print-directory", "test"],  # noqa: S607 - make from the scrubbed PATH
                cwd=self.clone,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=TEST_TIMEOUT,
            )
        lines = log_path.read_text(errors="replace").splitlines()
        summary = next((line for line in reversed(lines) if " passed" in line or " failed" in line), "")
        self.say(summary.strip("= ") or "(no pytest summary line)")
        if done.returncode != 0:
            raise SmokeError(f"`make test` exited with {done.returncode}:\n" + "\n".join(failure_report(lines)))

    #
    # Helpers
    #

    def _git(self, cwd: Path, *argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=cwd, capture_output=True, text=True, timeout=120)  # noqa: S603 S607
        if done.returncode != 0:
            raise SmokeError(f"git {' '.join(argv)} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def _cleanup_after_failure(self) -> None:
        for run in self.runs:
            if run.popen.poll() is None:
                run.interrupt()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    run.popen.wait(timeout=STOP_TIMEOUT)
                run.kill()
        leftovers = processes_under(self.clone)
        for proc in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        if leftovers:
            self.say(f"killed {len(leftovers)} leftover processes: {[proc.pid for proc in leftovers]}")

    def _summary(self, total: float, ok: bool) -> None:
        print("[smoke]", flush=True)
        print("[smoke] step timings:", flush=True)
        for name, seconds, result in self.timings:
            print(f"[smoke]   {seconds:7.1f}s  {result:6}  {name}", flush=True)
        print(f"[smoke]   {total:7.1f}s  total: {'PASSED' if ok else 'FAILED'}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="repository to clone (default: this one)")
    parser.add_argument("--rev", default="HEAD", help="commit under test (default: HEAD)")
    parser.add_argument("--skip-test", action="store_true", help="do not run `make test` in the clone")
    parser.add_argument("--keep", action="store_true", help="keep the clone after a success too")
    args = parser.parse_args(argv)
    if sys.platform != "linux":
        print("smoke_fresh_start.py reads /proc: Linux only", file=sys.stderr)
        return 2
    return Smoke(args.repo, args.rev, args.keep, args.skip_test).run()


if __name__ == "__main__":
    sys.exit(main())
