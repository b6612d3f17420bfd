#!/usr/bin/env python3
"""The gateway's system calls and context switches per request under load, by kind.

Runs ``bench/run.py --conc 16`` (one gateway, pinned as run.py pins it, beside the mock and the management plane)
and, during the gateway's own cell, counts for ``--seconds`` the gateway's system calls by kind with ``perf stat`` on
the kernel's syscall tracepoints (counting in the kernel: unlike ``strace`` or ``perf trace`` it barely slows the
process), reads that fail with EAGAIN, ``epoll_pwait`` calls that return 0 or 1 event or do not wait (timeout 0),
and the same window's requests (``sluice_requests_total``, read inside the window), the voluntary and involuntary
context switches of the three processes (``/proc/<pid>/status``) and the mock's own system calls. Then a short
``strace`` sample of the gateway's call sequence. Needs ``perf`` with tracepoint access (root) and ``strace``.

    python bench/syscounts.py --out bench/results/F.md [--root DIR] [--seconds 10] [-- --policies none ...]

``--root`` runs the gateway of another checkout (``bench/run.py`` of that checkout, with this interpreter).
Arguments after ``--`` go to ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CALLS = (
    *("read", "write", "writev", "sendto", "sendmsg", "recvfrom", "recvmsg", "epoll_pwait", "epoll_wait", "epoll_ctl"),
    *("getpid", "futex", "clock_gettime", "gettimeofday", "ioctl", "setsockopt", "getsockopt", "getsockname"),
    *("getpeername", "fcntl", "accept4", "close", "openat", "brk", "mmap", "munmap", "madvise", "lseek"),
    *("newfstatat", "shutdown", "connect", "socket", "unlink", "flock", "fsync"),
)
# (label, tracepoint, filter)
FILTERED = (
    ("read returning EAGAIN", "syscalls:sys_exit_read", "ret == -11"),
    ("write failing", "syscalls:sys_exit_write", "ret < 0"),
    ("epoll_pwait returning 0 events", "syscalls:sys_exit_epoll_pwait", "ret == 0"),
    ("epoll_pwait returning 1 event", "syscalls:sys_exit_epoll_pwait", "ret == 1"),
    # 0: the loop had callbacks ready (or a timer due) and only looked; such a poll does not sleep or switch
    ("epoll_pwait entered with timeout 0", "syscalls:sys_enter_epoll_pwait", "timeout == 0"),
)
TOTALS = (("all syscalls", "raw_syscalls:sys_enter"), ("context-switches", "context-switches"))
# Inside the perf window: the gateway's answered requests at its start and end.
WINDOW = """
import sys, time, urllib.request
def total():
    text = urllib.request.urlopen(sys.argv[1] + "/metrics", timeout=5).read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith("sluice_requests_total{"))
a = total(); time.sleep(float(sys.argv[2])); print(total() - a)
"""


def children_of(root: int) -> list[int]:
    """Every descendant of ``root``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def find(root: int, needle: str) -> list[int]:
    found = []
    for pid in children_of(root):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if needle in argv:
            found.append(pid)
    return sorted(found)


def switches(pid: int) -> tuple[int, int]:
    text = Path(f"/proc/{pid}/status").read_text()
    voluntary = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", text, re.M)
    involuntary = re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", text, re.M)
    assert voluntary is not None and involuntary is not None
    return int(voluntary.group(1)), int(involuntary.group(1))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


def wait_load(pid: int, busy: bool) -> None:
    """Until a second in which the gateway is busy (or idle)."""
    while True:
        before = cpu_seconds(pid)
        time.sleep(1.0)
        if (cpu_seconds(pid) - before > 0.15) == busy:
            return


def perf_counts(output: str) -> list[int]:
    return [int(row.split(",")[0]) for row in output.strip().splitlines() if row.split(",")[0].strip().isdigit()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the markdown report")
    parser.add_argument("--root", default=str(ROOT), help="the checkout whose bench/run.py and gateway run")
    parser.add_argument("--seconds", type=float, default=10.0, help="the counted window (default 10)")
    parser.add_argument("run_args", nargs="*", help="more bench/run.py arguments (after --)")
    args = parser.parse_args()
    run_argv = [sys.executable, "bench/run.py", "--conc", "16", "--duration", str(int(args.seconds) + 15)]
    run_argv += ["--stream-requests", "1", "--stream-seconds", "2", *args.run_args]
    run = subprocess.Popen(  # noqa: S603 - our own argv
        run_argv, cwd=args.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        return probe(args, run)
    finally:
        _, err = run.communicate()
        sys.stderr.write(err)


def probe(args: argparse.Namespace, run: subprocess.Popen[str]) -> int:
    while not (gateways := find(run.pid, "-m gateway")):
        time.sleep(0.5)
    gateway = gateways[0]
    environ = dict(
        item.split("=", 1) for item in Path(f"/proc/{gateway}/environ").read_text().split("\0") if "=" in item
    )
    admin = f"http://127.0.0.1:{environ['SLUICE_ADMIN_PORT']}"
    management = find(run.pid, "gunicorn")[-1]  # the worker
    processes = {"gateway": gateway, "mock": find(run.pid, "-m mockllm")[0], "management": management}
    # busy in its warm-up, idle during the direct cell, busy again in its own cell
    wait_load(gateway, True)
    wait_load(gateway, False)
    time.sleep(3.0)
    wait_load(gateway, False)
    wait_load(gateway, True)
    time.sleep(2.0)

    events: list[str] = []
    for call in CALLS:
        events += ["-e", f"syscalls:sys_enter_{call}"]
    for _, tracepoint, condition in FILTERED:
        events += ["-e", tracepoint, "--filter", condition]
    for _, event in TOTALS:
        events += ["-e", event]
    mock_events = ["raw_syscalls:sys_enter", "syscalls:sys_enter_getpid", "syscalls:sys_enter_epoll_pwait"]
    before = {name: (switches(pid), cpu_seconds(pid)) for name, pid in processes.items()}
    mock_argv = ["perf", "stat", "-x", ",", *(x for e in mock_events for x in ("-e", e)), "-p", str(processes["mock"])]
    mock = subprocess.Popen(  # noqa: S603 - our own argv
        [*mock_argv, "--", "sleep", str(args.seconds)], stderr=subprocess.PIPE, text=True
    )
    window = [sys.executable, "-c", WINDOW, admin, str(args.seconds)]
    counted = subprocess.run(  # noqa: S603 - our own argv
        ["perf", "stat", "-x", ",", *events, "-p", str(gateway), "--", *window],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    )
    mock_counts = perf_counts(mock.communicate()[1])
    after = {name: (switches(pid), cpu_seconds(pid)) for name, pid in processes.items()}
    requests = float(counted.stdout.strip())
    sample = Path(args.out).with_suffix(".strace")
    strace = ["timeout", "-s", "INT", "0.5", "strace", "-p", str(gateway), "-s", "40", "-o", str(sample)]
    subprocess.run(strace, check=False)  # noqa: S603

    lines = [
        f"# System calls of the gateway under `bench/run.py --conc 16` ({args.root}), {args.seconds:g} s of its cell",
        "",
        f"Requests answered in the window: {requests:.0f} ({requests / args.seconds:.0f}/s).",
        "",
        "| process | voluntary switches / request | involuntary / request | CPU µs / request (the window) |",
        "|---|---|---|---|",
    ]
    for name in processes:
        (v0, i0), c0 = before[name]
        (v1, i1), c1 = after[name]
        lines.append(
            f"| {name} | {(v1 - v0) / requests:.3f} | {(i1 - i0) / requests:.3f} | {(c1 - c0) / requests * 1e6:.0f} |"
        )
    lines += ["", "| gateway event | count | per request |", "|---|---|---|"]
    labels = [*CALLS, *(label for label, _, _ in FILTERED), *(label for label, _ in TOTALS)]
    for label, count in zip(labels, perf_counts(counted.stderr), strict=True):
        if count:
            lines.append(f"| {label} | {count} | {count / requests:.3f} |")
    lines += ["", "| mock event (its own `perf stat`, same length) | count | per gateway request |", "|---|---|---|"]
    for label, count in zip(mock_events, mock_counts, strict=True):
        lines.append(f"| {label} | {count} | {count / requests:.3f} |")
    lines += ["", "The gateway's calls in order, an `strace -p` sample of 0.5 s after the window (lines 41-100):", ""]
    lines += ["```", *sample.read_text().splitlines()[40:100], "```"]
    sample.unlink()
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
