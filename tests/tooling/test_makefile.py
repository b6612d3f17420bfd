"""The Makefile and .ci/run wire the documented commands (dry runs only)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def dry_run(target: str, *variables: str) -> str:
    # -W pyproject.toml would force a reinstall; -o keeps the install step out of the dry run
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}  # under `make test`
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", ".venv/.sluice-installed", target, *variables],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return "\n".join(line.rstrip() for line in done.stdout.splitlines())


def test_run_prepares_env_then_starts_runsluice():
    lines = dry_run("run", "ARGS=--no-demo").splitlines()
    assert lines[-2] == ".venv/bin/python scripts/ensure_env.py"
    assert lines[-1] == ".venv/bin/python manage.py runsluice --no-demo"


def test_test_runs_pytest():
    assert dry_run("test", "PYTEST_ARGS=-x").splitlines()[-1] == ".venv/bin/pytest -x"


def test_bench_and_lint():
    assert dry_run("bench").splitlines()[-1] == ".venv/bin/python bench/run.py"
    lint = [line for line in dry_run("lint").splitlines() if not line.startswith("#")]
    start = lint.index(".venv/bin/ruff check .")
    assert lint[start : start + 4] == [
        ".venv/bin/ruff check .",
        ".venv/bin/ruff format --check .",
        ".venv/bin/mypy",
        ".venv/bin/lint-imports",
    ]
    assert lint[start + 4].startswith("! grep -rnE --include='*.py' 'type: ignore")  # each ignore says why
    assert lint[-1].startswith("if command -v duplicates >/dev/null; then duplicates")


def test_lint_refuses_a_type_ignore_without_its_reason(tmp_path):
    """The grep `make lint` runs, on a file with and without a reason after the ignore."""
    command = next(line for line in dry_run("lint").splitlines() if line.startswith("! grep"))
    pattern = command.split("'")[3]
    (tmp_path / "a.py").write_text('x: int = "a"  # type: ignore[assignment]  # a reason\n')
    found = subprocess.run(["grep", "-rnE", pattern, str(tmp_path)], capture_output=True, text=True)
    assert found.returncode == 1  # nothing without a reason
    (tmp_path / "b.py").write_text('y: int = "b"  # type: ignore[assignment]\n')
    found = subprocess.run(["grep", "-rnE", pattern, str(tmp_path)], capture_output=True, text=True)
    assert found.returncode == 0 and "b.py:1:" in found.stdout


def test_ci_script_is_valid_bash_and_runs_make_lint_test_then_smoke():
    script = ROOT / ".ci" / "run"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=10)
    text = script.read_text()
    assert "set -euo pipefail" in text
    commands = [line for line in text.splitlines() if line.startswith("make ")]
    assert commands == ["make lint", "make test", "make smoke"]
    assert text.rstrip().splitlines()[-1] == "make smoke"


def test_smoke_runs_the_fresh_start_script_without_the_local_venv():
    assert (
        dry_run("smoke", "SMOKE_ARGS=--skip-test").splitlines()[-1]
        == "python3 scripts/smoke_fresh_start.py --skip-test"
    )
