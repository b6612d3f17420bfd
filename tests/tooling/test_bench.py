"""bench/run.py: its pure parts in-process, and one very short real run as a subprocess."""

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.fixtures_procs import REPO_ROOT

SCRIPT = REPO_ROOT / "bench" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("sluice_bench_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_group_cpu_seconds_counts_this_process(bench):
    sum(i * i for i in range(200_000))
    assert bench.group_cpu_seconds(os.getpgid(0)) > 0


def test_percentile(bench):
    values = [float(x) for x in range(1, 101)]
    assert bench.percentile(values, 50) in (50.0, 51.0)
    assert bench.percentile(values, 99) == 99.0
    assert bench.percentile([], 50) == 0.0


def test_parse_args(bench):
    args = bench.parse_args(["--duration", "2", "--conc", "1,8,32"])
    assert (args.duration, args.conc) == (2, [1, 8, 32])
    with pytest.raises(SystemExit):
        bench.parse_args(["--conc", "0"])


def test_render_reports_added_latency_and_cpu(bench):
    run = bench.Bench(bench.parse_args(["--duration", "5"]))
    try:
        cells = [
            bench.Cell("direct", 1, "wrk", 1000, 1.0, 0.100, 0.300, 0, None, 50.0),
            bench.Cell("gateway", 1, "wrk", 800, 1.0, 0.250, 0.500, 0, 120.0, 55.0),
        ]
        streams = {
            "direct": {"ttfb": [0.0004] * 3, "total": [0.001] * 3, "bad": []},
            "gateway": {"ttfb": [0.0006] * 3, "total": [0.0012] * 3, "bad": []},
        }
        report = bench.render(cells, streams, run, "wrk")
    finally:
        run.stop()
    assert "| gateway | 1 | 800 | 0.250 | 0.500 | 0.150 | 0 | 120 | 55 |" in report
    assert "| gateway | 3 | 0.600 | 0.600 | 1.200 | 0.200 | 0 |" in report


def test_short_real_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL")}
    out = tmp_path / "report.md"
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--duration",
            "1",
            "--conc",
            "2",
            "--warmup",
            "0",
            "--cell-warmup",
            "0",
            "--stream-requests",
            "5",
            "--python-client",
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = out.read_text()
    assert "python (client-bound)" in report
    assert "| gateway | 2 |" in report
    assert "| gateway | 5 |" in report  # five streams, all complete
    assert "| 0 |\n" in report.split("Streaming")[1]
