"""Issue #6: a fresh clone has no var/ (git ignores it); whatever uses the folder creates it, private (0700).

The management commands run as real processes on a copy of the working tree without var/ and with a scrubbed
environment (no DATABASE_URL), as on a newcomer's machine; the gateway's cache, journal and spool are checked in
process on a folder that does not exist yet.
"""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.sync import write_cache
from gateway.usage.journal import Spool, UsageJournal

ROOT = Path(__file__).resolve().parents[2]
COPY_IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "var", ".env", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", "build", "dist"
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def scrubbed_env() -> dict[str, str]:
    return {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}


@pytest.fixture
def working_copy(tmp_path) -> Path:
    """The tracked tree as a fresh clone has it (no var/, no .env), with the .env `make run` writes first."""
    copy = tmp_path / "sluice"
    shutil.copytree(ROOT, copy, ignore=COPY_IGNORE)
    subprocess.run([sys.executable, "scripts/ensure_env.py", "--quiet"], cwd=copy, env=scrubbed_env(), check=True)
    assert not (copy / "var").exists()
    return copy


def manage(copy: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *argv],
        cwd=copy,
        env={**scrubbed_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrate_on_a_fresh_clone_creates_var(working_copy):
    done = manage(working_copy, "migrate", "--noinput")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "unable to open database file" not in done.stderr
    assert (working_copy / "var" / "sluice.sqlite3").is_file()
    assert mode(working_copy / "var") == 0o700


def test_createsuperuser_after_migrate_in_the_fresh_clone(working_copy):
    assert manage(working_copy, "migrate", "--noinput").returncode == 0
    done = manage(
        working_copy,
        *("createsuperuser", "--noinput", "--username", "ops", "--email", "ops@example.com"),
        env={"DJANGO_SUPERUSER_PASSWORD": "a-long-enough-password-1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Superuser created successfully." in done.stdout


def test_ensure_sqlite_dir_creates_only_for_sqlite_files(tmp_path):
    from gateway_admin.settings.base import ensure_sqlite_dir

    target = tmp_path / "a" / "b" / "db.sqlite3"
    ensure_sqlite_dir({"ENGINE": "django.db.backends.sqlite3", "NAME": str(target)})
    assert mode(target.parent) == 0o700
    ensure_sqlite_dir({"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"})
    ensure_sqlite_dir({"ENGINE": "django.db.backends.postgresql", "NAME": str(tmp_path / "pg" / "x")})
    assert not (tmp_path / "pg").exists()


def test_gateway_snapshot_cache_creates_a_private_folder(tmp_path):
    path = tmp_path / "var" / "gateway-snapshot.json"
    write_cache(str(path), b"{}")
    assert path.read_bytes() == b"{}"
    assert mode(path.parent) == 0o700
    assert mode(path) == 0o600


def test_usage_journal_creates_a_private_folder(tmp_path):
    spool = tmp_path / "var" / "gateway-usage.spool"
    journal = UsageJournal(str(spool))
    assert journal.open() == []
    assert mode(spool.parent) == 0o700
    journal._writer.close()


def test_usage_spool_creates_a_private_folder(tmp_path):
    spool = tmp_path / "spool" / "usage.spool"
    assert Spool(str(spool)).claim(adopt=True) == []  # a sink's start
    assert mode(spool.parent) == 0o700
