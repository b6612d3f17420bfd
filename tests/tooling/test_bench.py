"""bench/run.py: its pure parts in-process, and very short real runs as subprocesses."""

import importlib.util
import os
import re
import subprocess
import sys
import urllib.parse

import pytest

from tests.fixtures_procs import REPO_ROOT

SCRIPT = REPO_ROOT / "bench" / "run.py"
REDIS_URL = os.environ.get("REDIS_URL", "")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("sluice_bench_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gwbench_sluice_scrubs_the_subscription_key_from_the_harness_files(tmp_path, monkeypatch):
    # bench/gwbench_sluice.py imports bench/run.py as "run", from its own folder
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("sluice_gwbench_sluice", SCRIPT.parent / "gwbench_sluice.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    key = "9f" * 32
    out = tmp_path / "run-1"
    (tmp_path / "run-1.json").write_text(f'{{"argv": ["-H", "Ocp-Apim-Subscription-Key: {key}"]}}', encoding="utf-8")
    (tmp_path / "run-1.md").write_text("| sluice | 16 | 3060 |\n", encoding="utf-8")

    module.scrub_key(out, key)

    scrubbed = (tmp_path / "run-1.json").read_text(encoding="utf-8")
    assert key not in scrubbed
    assert f"Ocp-Apim-Subscription-Key: {module.REDACTED}" in scrubbed
    assert (tmp_path / "run-1.md").read_text(encoding="utf-8") == "| sluice | 16 | 3060 |\n"
    module.scrub_key(tmp_path / "absent", key)  # no files: nothing to do, no error


def test_group_cpu_seconds_counts_this_process(bench):
    sum(i * i for i in range(200_000))
    assert bench.group_cpu_seconds(os.getpgid(0)) > 0


def test_percentile(bench):
    values = [float(x) for x in range(1, 101)]
    assert bench.percentile(values, 50) in (50.0, 51.0)
    assert bench.percentile(values, 99) == 99.0
    assert bench.percentile([], 50) == 0.0


#
# Arguments and configurations
#


def test_parse_args(bench):
    args = bench.parse_args(["--duration", "2", "--conc", "1,8,32"])
    assert (args.duration, args.conc) == (2, [1, 8, 32])
    assert (args.policies, args.redis_url) == ("none", "redis://127.0.0.1:6379/15")
    with pytest.raises(SystemExit):
        bench.parse_args(["--conc", "0"])


def test_parse_args_policies(bench):
    for choice in ("none", "governance", "both"):
        assert bench.parse_args(["--policies", choice]).policies == choice
    args = bench.parse_args(["--policies", "both", "--redis-url", "redis://localhost:6380/3"])
    assert args.redis_url == "redis://localhost:6380/3"
    with pytest.raises(SystemExit):
        bench.parse_args(["--policies", "all"])


@pytest.mark.parametrize(
    "url",
    ["redis://10.1.2.3:6379/0", "rediss://127.0.0.1:6379/0", "http://127.0.0.1:6379", "redis://127.0.0.1:port/0"],
)
def test_parse_args_refuses_a_redis_url_off_loopback(bench, url, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--policies", "governance", "--redis-url", url])
    assert "--redis-url" in capsys.readouterr().err
    assert bench.parse_args(["--redis-url", url]).policies == "none"  # only checked when Redis is used


def test_check_redis_url_and_redact(bench):
    assert bench.check_redis_url("redis://127.0.0.1:6379/15") is None
    assert bench.check_redis_url("redis://[::1]:6379") is None
    assert "loopback" in bench.check_redis_url("redis://example.com:6379")
    assert bench.redact("redis://:s3cret@127.0.0.1:6379/15") == "redis://:***@127.0.0.1:6379/15"
    assert bench.redact("redis://127.0.0.1:6379/15") == "redis://127.0.0.1:6379/15"


def test_variants_for_each_choice(bench):
    assert [v.policies for v in bench.variants_for("none", "ab12")] == ["none"]
    assert [v.policies for v in bench.variants_for("governance", "ab12")] == ["governance"]
    none, governance = bench.variants_for("both", "ab12")
    assert (none.api, none.path, none.uses_redis) == ("bench", "bench/v1", False)
    assert governance.uses_redis and governance.path != none.path
    assert governance.subscription == "bench-gov-ab12"  # its Redis counters are this run's own keys


@pytest.mark.django_db
def test_wizard_input_is_valid_and_adds_the_governance_policies(bench):
    from apis.api.serializers import ImportLanguageModelSerializer
    from apis.services import import_language_model

    none, governance = bench.variants_for("both", "ab12")
    plain = bench.wizard_input(none, "http://127.0.0.1:9/v1")
    assert "token_limit" not in plain and "token_metrics" not in plain
    serializer = ImportLanguageModelSerializer(data=bench.wizard_input(governance, "http://127.0.0.1:9/v1"))
    assert serializer.is_valid(), serializer.errors
    policy = import_language_model(serializer.validated_data).policy.value
    assert "<llm-token-limit counter-key=" in policy
    assert f'tokens-per-minute="{10**9}"' in policy and 'estimate-prompt-tokens="true"' in policy
    assert '<llm-emit-token-metric namespace="bench">' in policy
    assert '<dimension name="API ID"/><dimension name="Subscription ID"/>' in policy


#
# Report
#


def test_change_and_metric_total(bench):
    assert bench.change(100.0, 80.0, 0) == "-20 (x0.80)"
    assert bench.change(0.0, 0.5) == "+0.500"
    assert bench.change(None, 1.0) == "-"
    text = (
        "# TYPE sluice_requests counter\n"
        'sluice_requests_total{api="bench-gov",code="200",operation="chat-completions"} 40.0\n'
        'sluice_requests_total{api="bench-gov",code="401",operation="chat-completions"} 2.0\n'
        'sluice_requests_total{api="bench",code="200",operation="chat-completions"} 7.0\n'
    )
    assert bench.metric_total(text, "sluice_requests_total", api="bench-gov") == 42.0
    assert bench.metric_total(text, "sluice_requests_total") == 49.0
    assert bench.metric_total(text, "bench_total_tokens_total") == 0


STREAMS = {
    "direct": {"ttfb": [0.0004] * 3, "total": [0.001] * 3, "bad": []},
    "none": {"ttfb": [0.0006] * 3, "total": [0.0012] * 3, "bad": []},
    "governance": {"ttfb": [0.0007] * 3, "total": [0.0013] * 3, "bad": [1]},
}


def render(bench, argv, cells, streams):
    run = bench.Bench(bench.parse_args(argv))
    try:
        return bench.render(cells, streams, run, "wrk")
    finally:
        run.stop()


def test_render_reports_added_latency_and_cpu(bench):
    cells = [
        bench.Cell("direct", 1, "wrk", 1000, 1.0, 0.100, 0.300, 0, None, 50.0),
        bench.Cell("gateway", 1, "wrk", 800, 1.0, 0.250, 0.500, 0, 120.0, 55.0, "none", 20.0),
    ]
    streams = {name: STREAMS[name] for name in ("direct", "none")}
    report = render(bench, ["--duration", "5"], cells, streams)
    assert "| gateway, none | 1 | 800 | 0.250 | 0.500 | 0.150 | 0 | 120 | 20 | - | 55 |" in report
    assert "| gateway, none | 3 | 0.600 | 0.600 | 1.200 | 0.200 | 0 |" in report
    assert "| conc | figure | direct | gateway, none |\n" in report  # one configuration: no comparison column
    assert "| 1 | added p50 ms | - | 0.150 |" in report
    assert "governance" not in report


def test_render_puts_both_configurations_side_by_side(bench):
    cells = [
        bench.Cell("direct", 16, "wrk", 20000, 2.0, 0.700, 1.500, 0, None, 40.0),
        bench.Cell("gateway", 16, "wrk", 8000, 2.0, 1.900, 4.000, 0, 100.0, 45.0, "none", 30.0),
        bench.Cell("gateway", 16, "wrk", 6000, 2.0, 2.600, 5.000, 0, 160.0, 46.0, "governance", 4.0, 25.0),
    ]
    report = render(bench, ["--policies", "both", "--duration", "2"], cells, STREAMS)
    assert "| conc | figure | direct | gateway, none | gateway, governance | governance vs none |" in report
    assert "| 16 | RPS | 10000 | 4000 | 3000 | -1000 (x0.75) |" in report
    assert "| 16 | p50 ms | 0.700 | 1.900 | 2.600 | +0.700 (x1.37) |" in report
    assert "| 16 | p99 ms | 1.500 | 4.000 | 5.000 | +1.000 (x1.25) |" in report
    assert "| 16 | added p50 ms | - | 1.200 | 1.900 | +0.700 (x1.58) |" in report
    assert "| 16 | gateway CPU µs/req | - | 100 | 160 | +60 (x1.60) |" in report
    assert "| 1, stream | added TTFB p50 ms | - | 0.200 | 0.300 | +0.100 (x1.50) |" in report
    assert "| gateway, governance | 16 | 3000 | 2.600 | 5.000 | 1.900 | 0 | 160 | 4 | 25 | 46 |" in report
    assert "| gateway, governance | 3 | 0.700 | 0.700 | 1.300 | 0.300 | 1 |" in report
    assert "llm-token-limit" in report and "redis://127.0.0.1:6379/15" in report


def test_render_compares_each_configuration_with_its_compare_root_twin(bench):
    base = bench.BASE_SUFFIX
    cells = [
        bench.Cell("direct", 16, "wrk", 20000, 2.0, 0.700, 1.500, 0, None, 40.0),
        bench.Cell("gateway", 16, "wrk", 8000, 2.0, 1.900, 4.000, 0, 100.0, 45.0, "none" + base, 30.0),
        bench.Cell("gateway", 16, "wrk", 9000, 2.0, 1.800, 4.000, 0, 90.0, 45.0, "none", 30.0),
        bench.Cell("gateway", 16, "wrk", 6000, 2.0, 2.600, 5.000, 0, 160.0, 46.0, "governance" + base, 4.0, 25.0),
        bench.Cell("gateway", 16, "wrk", 6000, 2.0, 2.600, 5.000, 0, 150.0, 46.0, "governance", 4.0, 25.0),
    ]
    rows = bench.render_comparison(cells, {}, ["direct", *(c.label for c in cells[1:])])
    assert rows[0].endswith("| none vs none (base) | governance vs governance (base) |")
    assert "| 16 | gateway CPU µs/req | - | 100 | 90 | 160 | 150 | -10 (x0.90) | -10 (x0.94) |" in rows


def test_stacks_ranks_functions_by_self_and_inclusive_samples(tmp_path):
    stacks = tmp_path / "stacks.txt"
    stacks.write_text(
        "run (/x/site-packages/uvloop/__init__.py:92);handle (/work/wt/b/gateway/app.py:10) 3\n"
        "run (/x/site-packages/uvloop/__init__.py:92);handle (/work/wt/b/gateway/app.py:12);match (/r/routing.py:5) 1\n"
    )
    done = run_child([str(SCRIPT.parent / "stacks.py"), str(stacks), "--grep", "gateway/"])
    lines = done.stdout.splitlines()
    assert lines[0] == "4 samples"
    assert lines[2].split() == ["75.0", "100.0", "handle", "(gateway/app.py)"]  # one row for both call sites
    assert len(lines) == 3  # --grep keeps our code only


#
# Real runs
#


def run_child(argv):
    """Run a bench script without the suite's database and Redis settings (it makes its own); returns it done."""
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL")}
    done = subprocess.run(
        [sys.executable, *argv], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def run_bench(tmp_path, *options):
    out = tmp_path / "report.md"
    short = ["--duration", "1", "--conc", "2", "--warmup", "0", "--cell-warmup", "0", "--stream-requests", "5"]
    done = run_child([str(SCRIPT), *short, "--python-client", "--out", str(out), *options])
    return out.read_text(), done.stderr


def test_short_real_run(tmp_path):
    report, _ = run_bench(tmp_path)
    assert "python (client-bound)" in report
    assert "| gateway, none | 2 |" in report
    assert "| gateway, none | 5 |" in report  # five streams, all complete
    assert "| 0 |\n" in report.split("Streaming")[1]


@pytest.mark.skipif(not REDIS_URL, reason="REDIS_URL is not set (CI sets redis://127.0.0.1:6379/0)")
def test_short_real_run_with_governance_cleans_up_redis(tmp_path):
    import redis

    if urllib.parse.urlsplit(REDIS_URL).hostname not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("the benchmark only uses a loopback Redis")
    report, log = run_bench(tmp_path, "--policies", "governance", "--redis-url", REDIS_URL)
    assert "| gateway, governance | 2 |" in report
    assert "| gateway, governance | 5 |" in report  # five streams, all complete
    assert "| 0 |\n" in report.split("Streaming")[1]
    check = re.search(r"governance check: (\d+) usage records in the run's stream for (\d+) requests", report)
    assert check and int(check.group(1)) == int(check.group(2)) > 0
    assert re.search(r"`bench_total_tokens_total` = [1-9]", report)
    run_id = re.search(r"usage stream sluice:bench:([0-9a-f]+):usage", log).group(1)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert not client.exists(f"sluice:bench:{run_id}:usage")
        assert not list(client.scan_iter(match=f"sluice:tl:{{bench-gov-{run_id}}}:*"))
    finally:
        client.close()


#
# Baselines, CPU split, memory mode
#


def test_group_cpu_times_splits_user_and_kernel(bench):
    sum(i * i for i in range(200_000))
    user, system = bench.group_cpu_times(os.getpgid(0))
    assert user > 0 and system >= 0
    assert bench.group_cpu_seconds(os.getpgid(0)) >= user + system


def test_figures_and_worse(bench):
    cells = [
        bench.Cell("direct", 16, "wrk", 20000, 2.0, 0.700, 1.500, 0, None, 40.0),
        bench.Cell("gateway", 16, "wrk", 8000, 2.0, 1.900, 4.000, 0, 100.0, 45.0, "none", 30.0, None, None, 40.0),
    ]
    found = bench.figures(cells, {"none": {"ttfb_p50": 1.0, "added": 0.25}})
    assert found["direct c=16 RPS"] == 10000
    assert found["none c=16 RPS"] == 4000
    assert found["none c=16 gateway CPU µs/req"] == 100.0
    assert found["none c=16 gateway kernel CPU µs/req"] == 40.0
    assert abs(found["none c=16 added p50 ms"] - 1.2) < 1e-9
    assert found["none stream added TTFB p50 ms"] == 0.25
    assert "direct c=16 gateway CPU µs/req" not in found
    # RPS: lower is worse; every other figure: higher is worse; 10 % is the line
    assert bench.worse("none c=16 RPS", 4000, 3500) and not bench.worse("none c=16 RPS", 4000, 3700)
    assert bench.worse("none c=16 gateway CPU µs/req", 100, 115)
    assert not bench.worse("none c=16 gateway CPU µs/req", 100, 105)
    assert not bench.worse("none c=16 gateway CPU µs/req", 100, 80)


def test_render_baseline_marks_what_got_worse(bench):
    rows = "\n".join(
        bench.render_baseline(
            {"none c=16 RPS": 3000.0, "none c=16 gateway CPU µs/req": 90.0, "none c=16 p99 ms": 5.0},
            {"none c=16 RPS": 4000.0, "none c=16 gateway CPU µs/req": 100.0},
            "before.json",
        )
    )
    assert "| none c=16 RPS | 4000.000 | 3000.000 | x0.75 | WORSE |" in rows
    assert "| none c=16 gateway CPU µs/req | 100.000 | 90.000 | x0.90 |  |" in rows
    assert "| none c=16 p99 ms | - | 5.000 | - | new |" in rows


def test_short_real_run_saves_and_compares_a_baseline(tmp_path):
    import json

    base = tmp_path / "base.json"
    report, _ = run_bench(tmp_path, "--save-baseline", str(base))
    saved = json.loads(base.read_text())
    assert saved["none c=2 RPS"] > 0 and saved["none c=2 gateway CPU µs/req"] > 0
    assert "| 2 | of which kernel (stime) | - |" in report
    report, _ = run_bench(tmp_path, "--baseline", str(base))
    assert f"Against the baseline `{base}`" in report
    assert re.search(r"\| none c=2 gateway CPU µs/req \| [\d.]+ \| [\d.]+ \| x[\d.]+ \|", report)


def test_memory_mode_short_run():
    memory = str(REPO_ROOT / "bench" / "memory.py")
    options = ["--policies", "none", "--requests", "300", "--subscriptions", "30", "--conc", "4", "--checkpoints", "3"]
    done = run_child([memory, *options])
    assert "300 requests over 30 subscriptions" in done.stdout
    assert re.search(r"\| 300 \| [\d.]+ \|", done.stdout)
    assert "errors: 0" in done.stdout
    assert re.search(r"growth after the first pass over the subscriptions \(from 100 requests", done.stdout)
