"""scripts/ensure_env.py: fresh secrets for `make run`, never overwriting a value."""

import stat
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure_env.py"
NAMES = ("DJANGO_SECRET_KEY", "SLUICE_SECRET_KEYS", "SLUICE_GATEWAY_TOKEN")


def run(path: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--path", str(path)], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout


def values(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and line[0] != "#")
    return {name: value for name, value in pairs}


def test_creates_private_file_with_all_secrets(tmp_path):
    env = tmp_path / ".env"
    assert "generated" in run(env)
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    found = values(env)
    assert set(found) == set(NAMES)
    Fernet(found["SLUICE_SECRET_KEYS"].encode())  # a valid key
    assert len(found["DJANGO_SECRET_KEY"]) >= 50


def test_second_run_changes_nothing(tmp_path):
    env = tmp_path / ".env"
    run(env)
    before = env.read_text()
    assert "nothing changed" in run(env)
    assert env.read_text() == before


def test_keeps_existing_values_and_adds_missing_ones(tmp_path):
    env = tmp_path / ".env"
    env.write_text("# mine\nexport DJANGO_SECRET_KEY=keep-me\nDATABASE_URL=postgres://x/y")
    env.chmod(0o644)
    run(env)
    found = values(env)
    assert found["export DJANGO_SECRET_KEY"] == "keep-me"
    assert found["DATABASE_URL"] == "postgres://x/y"
    assert "DJANGO_SECRET_KEY" not in found
    assert {"SLUICE_SECRET_KEYS", "SLUICE_GATEWAY_TOKEN"} <= set(found)
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert env.read_text().startswith("# mine\nexport DJANGO_SECRET_KEY=keep-me\nDATABASE_URL=postgres://x/y\n")
