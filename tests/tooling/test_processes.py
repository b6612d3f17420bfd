"""gateway_admin.management.processes: the child-process helper behind runsluice, bench and e2e tests."""

import os
import signal
import sys
import time

import pytest

from tests.fixtures_procs import ManagedProcess, ProcessError, free_port, http_status, start_process

HTTP_SERVER = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1"]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_wait_and_stop_whole_group(tmp_path):
    port = free_port()
    # the shell forks a sleeper that must be stopped with the group
    argv = ["bash", "-c", f"sleep 300 & exec {' '.join(HTTP_SERVER)} {port}"]
    process = start_process(argv, f"http://127.0.0.1:{port}/", log_path=tmp_path / "srv.log", cwd=tmp_path)
    try:
        assert process.alive
        assert http_status(f"http://127.0.0.1:{port}/") == 200
    finally:
        process.stop(grace=5)
    assert not process.alive
    assert not group_alive(process.pid)


def test_early_exit_reports_the_log_tail(tmp_path):
    process = ManagedProcess(
        [sys.executable, "-c", "print('boom happened'); raise SystemExit(3)"],
        name="boom",
        log_path=tmp_path / "boom.log",
    ).start()
    with pytest.raises(ProcessError, match="boom happened"):
        process.wait_ready(f"http://127.0.0.1:{free_port()}/", timeout=10)
    assert process.returncode == 3


def test_readiness_deadline_is_bounded(process_factory):
    process = process_factory([sys.executable, "-c", "import time; print('waiting', flush=True); time.sleep(60)"])
    started = time.monotonic()
    with pytest.raises(ProcessError, match="did not answer"):
        process.wait_ready(f"http://127.0.0.1:{free_port()}/", timeout=1.0)
    assert time.monotonic() - started < 5
    assert "waiting" in process.tail()


def test_stop_escalates_to_sigkill(tmp_path):
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    process = ManagedProcess([sys.executable, "-c", code], log_path=tmp_path / "stubborn.log").start()
    process.wait_output("ready", timeout=30)  # SIGTERM is ignored from here on (a SIGTERM before would end it)
    assert process.stop(grace=0.5) == -signal.SIGKILL


def test_http_status_when_nothing_listens():
    assert http_status(f"http://127.0.0.1:{free_port()}/", timeout=0.5) is None


def test_wait_output_for_a_child_without_http(tmp_path):
    code = "import time; time.sleep(0.3); print('worker ready.', flush=True); time.sleep(60)"
    process = ManagedProcess([sys.executable, "-c", code], log_path=tmp_path / "worker.log").start()
    try:
        assert 0.2 < process.wait_output(" ready.", timeout=10) < 10
        started = time.monotonic()
        with pytest.raises(ProcessError, match="did not print 'never'"):
            process.wait_output("never", timeout=0.5)
        assert time.monotonic() - started < 3
    finally:
        process.stop(grace=5)


def test_wait_output_reports_an_early_exit(tmp_path):
    process = ManagedProcess(
        [sys.executable, "-c", "print('broker unreachable'); raise SystemExit(1)"], log_path=tmp_path / "w.log"
    ).start()
    with pytest.raises(ProcessError, match="broker unreachable"):
        process.wait_output(" ready.", timeout=10)
    assert process.returncode == 1
