"""Child processes with a lifecycle: used by ``runsluice``, ``bench/run.py`` and the end-to-end tests.

Each child runs in its own session (process group id == pid) with its output in a log file, so it can be waited
for over HTTP, stopped together with anything it forked, and its last lines shown when it dies.
"""

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ("ManagedProcess", "ProcessError", "free_port", "http_status", "start_process")

PR_SET_PDEATHSIG = 1


class ProcessError(RuntimeError):
    """A child exited early or did not become ready in time; the message carries the end of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def http_status(url: str, *, timeout: float = 2.0, headers: Mapping[str, str] | None = None) -> int | None:
    """Status of a GET to ``url`` (no redirects followed), or ``None`` when nothing answers."""
    request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 - callers pass http URLs
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def served_revision(gateway_url: str, *, timeout: float = 2.0) -> int | None:
    """The configuration revision a gateway serves (its ``/__sluice/health`` document), or ``None``."""
    try:
        with urllib.request.urlopen(f"{gateway_url}/__sluice/health", timeout=timeout) as response:  # noqa: S310
            revision = json.loads(response.read()).get("revision")
    except (OSError, ValueError, AttributeError):
        return None
    return revision if isinstance(revision, int) else None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


def _die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to send SIGTERM if the parent dies without cleaning up."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """One child process in its own process group, logging to a file."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        cpus: str | None = None,
    ) -> None:
        self.name = name or Path(argv[0]).name
        self.argv = list(argv)
        if cpus and shutil.which("taskset"):
            self.argv = ["taskset", "-c", cpus, *self.argv]
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix=f"sluice-{self.name}-")[1])
        self.popen: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid} rc={self.returncode}>"

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen else None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> "ManagedProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(  # noqa: S603 - argv comes from our own callers
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        return self

    def wait_ready(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        interval: float = 0.1,
        headers: Mapping[str, str] | None = None,
        ok: Sequence[int] = (200,),
    ) -> float:
        """Poll ``url`` until it answers with a status in ``ok``; return the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        last: int | None = None
        while time.monotonic() < deadline:
            if not self.alive:
                raise ProcessError(
                    f"{self.name} exited with code {self.returncode} before {url} answered:\n{self.tail()}"
                )
            last = http_status(url, timeout=min(2.0, max(0.2, deadline - time.monotonic())), headers=headers)
            if last in ok:
                return time.monotonic() - started
            time.sleep(interval)
        raise ProcessError(
            f"{self.name} did not answer {url} within {timeout:.0f}s (last status {last}):\n{self.tail()}"
        )

    def wait_output(self, text: str, *, timeout: float = 30.0, interval: float = 0.1) -> float:
        """For a child without an HTTP endpoint: wait until ``text`` appears in its log; return the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        needle = text.encode()
        while time.monotonic() < deadline:
            if needle in self._read_log():
                return time.monotonic() - started
            if not self.alive:
                raise ProcessError(
                    f"{self.name} exited with code {self.returncode} before printing {text!r}:\n{self.tail()}"
                )
            time.sleep(interval)
        raise ProcessError(f"{self.name} did not print {text!r} within {timeout:.0f}s:\n{self.tail()}")

    def _read_log(self) -> bytes:
        try:
            return self.log_path.read_bytes()
        except OSError:
            return b""

    def tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 64 * 1024))
                data = log.read()
        except OSError:
            return ""
        return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])

    def signal_group(self, signum: int) -> bool:
        if self.popen is None:
            return False
        try:
            os.killpg(self.popen.pid, signum)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL what is left after ``grace`` seconds; return the exit code."""
        if self.popen is None:
            return None
        self.signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.popen.wait(timeout=5)
        # forked workers can outlive their leader for a moment
        deadline = time.monotonic() + grace
        while self.signal_group(0) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.signal_group(signal.SIGKILL)
        return self.popen.returncode

    def cleanup(self) -> None:
        """Remove the log file when it was a temporary one."""
        if self._own_log:
            with contextlib.suppress(OSError):
                self.log_path.unlink()

    def __enter__(self) -> "ManagedProcess":
        return self if self.popen else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_process(
    argv: Sequence[str],
    ready_url: str,
    *,
    timeout: float = 30.0,
    headers: Mapping[str, str] | None = None,
    **kwargs: object,
) -> ManagedProcess:
    """Start ``argv`` and wait until ``ready_url`` answers 200; on failure the child is stopped and the error raised."""
    process = ManagedProcess(argv, **kwargs).start()  # type: ignore[arg-type]
    try:
        process.wait_ready(ready_url, timeout=timeout, headers=headers)
    except BaseException:
        process.stop()
        raise
    return process
