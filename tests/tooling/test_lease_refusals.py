"""bench/lease_refusals.py: its checks in-process, and its core for one small configuration against real Redis."""

import os
import sys

import pytest

from tests.fixtures_procs import REPO_ROOT

BENCH = REPO_ROOT / "bench"
REDIS_URL = os.environ.get("REDIS_URL", "")


@pytest.fixture
def refusals(monkeypatch):
    # imported by its name from bench/, so the spawned workers import the same module (spawn passes sys.path on)
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.delitem(sys.modules, "lease_refusals", raising=False)
    import lease_refusals

    return lease_refusals


def test_check_fails_loudly_past_the_limit_or_when_not_lossless(refusals):
    config = refusals.Config(2, 50, 1000, 0.5)
    refusals.check(refusals.Run(config, 900, 850, 1000, 1000, 0.1))  # within: no error
    with pytest.raises(refusals.BoundViolated, match="BOUND VIOLATED"):
        refusals.check(refusals.Run(config, 900, 850, 1050, 1050, 0.1))
    with pytest.raises(refusals.BoundViolated, match="BOUND VIOLATED"):
        refusals.check(refusals.Run(config, 900, 850, 1000, 950, 0.1))  # a leftover not given back


def test_the_documented_bound_and_the_verdict(refusals):
    config = refusals.Config(4, 50, 10_000, 0.5, refusals.STOP)
    assert config.documented() == 3 * (9950 // 16)
    assert config.burst() == 10_000 // 4 // 3
    allowance = config.documented() + 4 * 50 - 1
    inside = refusals.Run(config, 10_000 - allowance, 0, 10_000, 10_000, 0.1)  # (sent: not judged)
    outside = refusals.Run(config, 10_000 - allowance - 1, 10_000 - allowance - 1, 10_000, 10_000, 0.1)
    assert refusals.within([inside]) == "yes"
    assert refusals.within([inside, outside]) == "**NO**"


def test_parse_args(refusals):
    args = refusals.parse_args([])
    assert (args.workers, args.sizes, args.limits, args.runs) == ([1, 2, 4], [50, 500], [10_000, 100_000], 20)
    assert (args.modes, args.patterns, args.lease_seconds) == (["on", "off"], ["race", "stop"], 0.5)
    configs = refusals.configurations(refusals.parse_args(["--workers", "1,2", "--sizes", "50", "--limits", "1000"]))
    assert {(c.workers, c.pattern, c.lease_seconds) for c in configs} == {
        (1, "race", 0.5),
        (1, "race", 0.0),  # stop needs holders: not with one worker
        (2, "race", 0.5),
        (2, "race", 0.0),
        (2, "stop", 0.5),
        (2, "stop", 0.0),
    }
    for bad in (["--workers", "0"], ["--modes", "maybe"], ["--patterns", "all"], ["--burst", "1"], ["--runs", "0"]):
        with pytest.raises(SystemExit):
            refusals.parse_args(bad)


@pytest.mark.skipif(not REDIS_URL, reason="REDIS_URL is not set (CI sets redis://127.0.0.1:6379/0)")
def test_two_workers_on_a_small_limit_stay_within_the_bound_and_report(refusals, tmp_path):
    out = tmp_path / "refusals.md"
    argv = ["--workers", "2", "--sizes", "50", "--limits", "2000", "--runs", "2", "--redis-url", REDIS_URL]
    assert refusals.main([*argv, "--out", str(out)]) == 0  # 1: the bound broken; 2: above the documented bound
    text = out.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| 2 |")]
    assert len(rows) == 4  # race and stop, leases on and off
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[5] == "2"  # runs
        finals = [int(value) for value in cells[8].split(" / ")]
        assert max(finals) <= 2000  # the bound (the script also checked the counter after the leftovers)
        assert cells[11] == "yes"  # within the documented early refusal
