"""scripts/smoke_fresh_start.py: its pieces (README block extraction, output parsing, process and port checks).

The whole script runs in CI (`make smoke` from .ci/run); here each piece is checked against the real README and
the real `runsluice` banner, so a change to either that the smoke test could no longer read fails here first.
"""

import importlib.util
import io
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("smoke_fresh_start", ROOT / "scripts" / "smoke_fresh_start.py")
smoke = importlib.util.module_from_spec(SPEC)
sys.modules["smoke_fresh_start"] = smoke  # dataclasses look their module up by name
SPEC.loader.exec_module(smoke)

BANNER_VALUES = {"TOKEN": "tok-123", "DEMO_KEY": "key-456", "ADMIN_PASSWORD": "pw"}
URLS = {8000: "http://127.0.0.1:41000", 8080: "http://127.0.0.1:42000", 18000: "http://127.0.0.1:43000"}


def real_banner(password: str | None = "s3cret-pw", key: str | None = "demo-key-1") -> str:  # noqa: S107
    """What `manage.py runsluice` prints once everything answers (the command's own banner method)."""
    from gateway_admin.management.commands.runsluice import Command

    out = io.StringIO()
    command = Command(stdout=out, no_color=True)
    command.banner(
        "http://127.0.0.1:41000", "http://127.0.0.1:42000", "admin", password, "api-token-9", key, Path("var/log")
    )
    return "• Applying database migrations\n" + out.getvalue()


#
# README blocks
#


def test_the_readme_quickstart_has_runnable_marked_blocks():
    blocks = smoke.extract_blocks((ROOT / "README.md").read_text())
    assert [block.lang for block in blocks].count("python") >= 1
    assert [block.lang for block in blocks].count("bash") >= 1
    readme_lines = (ROOT / "README.md").read_text().splitlines()
    for block in blocks:
        assert readme_lines[block.line - 2] == smoke.MARKER
        assert readme_lines[block.line - 1] == f"```{block.lang}"
        code = smoke.substitute(block.code, BANNER_VALUES, URLS)
        assert "=..." not in code
        assert "127.0.0.1:8000" not in code and "127.0.0.1:8080" not in code and "127.0.0.1:18000" not in code
        if block.lang == "bash":
            subprocess.run(["bash", "-n"], input=code, text=True, check=True, timeout=10)
        else:
            compile(code, f"README.md:{block.line}", "exec")


def test_extract_blocks_takes_only_marked_fences():
    markdown = (
        "intro\n```bash\nnot this\n```\n"
        "<!-- quickstart -->\n```bash\necho one\n```\n"
        "text\n<!-- quickstart -->\n```python\nprint(2)\n```\n"
    )
    blocks = smoke.extract_blocks(markdown)
    assert [(b.lang, b.code, b.line) for b in blocks] == [("bash", "echo one\n", 6), ("python", "print(2)\n", 11)]


def test_a_marker_without_a_block_right_after_it_is_an_error():
    with pytest.raises(smoke.SmokeError, match="2 <!-- quickstart --> markers but 1 blocks"):
        smoke.extract_blocks("<!-- quickstart -->\n```bash\necho\n```\n<!-- quickstart -->\n\nprose\n```bash\nx\n```\n")


def test_substitute_fills_placeholders_and_ports():
    code = (
        "TOKEN=...      # from make run\n"
        "export DEMO_KEY=...\n"
        "API=http://127.0.0.1:8000/api\n"
        "curl http://localhost:8080/x http://127.0.0.1:80801/y http://127.0.0.1:18000/v1\n"
        "NOT_A_PLACEHOLDER=...more\n"
    )
    assert smoke.substitute(code, {**BANNER_VALUES, "TOKEN": "it's"}, URLS) == (
        "TOKEN='it'\"'\"'s'      # from make run\n"
        "export DEMO_KEY='key-456'\n"
        "API=http://127.0.0.1:41000/api\n"
        "curl http://127.0.0.1:42000/x http://127.0.0.1:80801/y http://127.0.0.1:43000/v1\n"
        "NOT_A_PLACEHOLDER=...more\n"
    )


def test_an_unknown_placeholder_is_an_error():
    with pytest.raises(smoke.SmokeError, match=r"placeholder PRIMARY_KEY=\.\.\. has no value"):
        smoke.substitute("PRIMARY_KEY=...  # from list-secrets\n", BANNER_VALUES, URLS)


#
# make run's output
#


def test_parse_banner_reads_the_real_runsluice_banner():
    banner = smoke.parse_banner(real_banner())
    assert banner == smoke.Banner(
        management_url="http://127.0.0.1:41000",
        gateway_url="http://127.0.0.1:42000",
        username="admin",
        password="s3cret-pw",
        token="api-token-9",
        demo_key="demo-key-1",
    )
    assert banner.values["TOKEN"] == "api-token-9"
    assert banner.values["DEMO_KEY"] == "demo-key-1"


def test_parse_banner_ignores_colours_and_takes_the_last_banner():
    coloured = real_banner().replace("Sluice is running.", "\x1b[32;1mSluice is running.\x1b[0m")
    assert smoke.parse_banner(coloured + real_banner(password="second")).password == "second"


@pytest.mark.parametrize(
    ("banner", "message"),
    [
        (real_banner(key=None), "no demo key"),
        (real_banner(password=None), "no admin password"),
        ("• Applying database migrations\n", "no management url"),
    ],
)
def test_parse_banner_fails_on_missing_values(banner, message):
    with pytest.raises(smoke.SmokeError, match=message):
        smoke.parse_banner(banner)


#
# Environment, processes, ports
#


def test_scrubbed_env_keeps_only_path_home_lang():
    environ = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/u",
        "LANG": "C.UTF-8",
        "DATABASE_URL": "postgres://x",
        "REDIS_URL": "redis://x",
        "SLUICE_GATEWAY_TOKEN": "t",
        "DJANGO_SETTINGS_MODULE": "x",
        "PYTHONUNBUFFERED": "1",
        "VIRTUAL_ENV": str(ROOT / ".venv"),
    }
    assert smoke.scrubbed_env(environ) == {"PATH": "/usr/bin:/bin", "HOME": "/home/u", "LANG": "C.UTF-8"}


def test_scrubbed_env_drops_this_virtualenv_from_path():
    venv_bin = str(Path(sys.prefix) / "bin")
    env = smoke.scrubbed_env({"PATH": f"{venv_bin}:/usr/bin", "HOME": "/h"})
    if sys.prefix != sys.base_prefix:
        assert env["PATH"] == "/usr/bin"
    assert env["LANG"] == "C.UTF-8"


def test_process_checks_see_a_child_until_it_is_gone(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], cwd=tmp_path, stdin=subprocess.PIPE
    )
    try:
        [found] = smoke.processes_under(tmp_path)
        assert found.pid == child.pid and found.alive()
        assert child.pid in {proc.pid for proc in smoke.descendants(smoke.os.getpid())}
    finally:
        child.communicate(b"", timeout=10)
    assert not found.alive()
    assert smoke.processes_under(tmp_path) == []


def test_port_free_tells_a_listener_from_a_closed_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not smoke.port_free(port)
    assert smoke.port_free(port)


def test_failure_report_shows_the_failures_section_and_the_summary():
    log = [
        "collected 3 items",
        "..F",
        "=================================== FAILURES ===================================",
        "___ test_x ___",
        "E   AssertionError: closed without an answer: b'GET / HTTP/1.1'",
        "=========================== short test summary info ============================",
        "FAILED tests/test_a.py::test_x - AssertionError...",
        "========================= 1 failed, 2 passed in 0.1s =========================",
    ]
    report = smoke.failure_report(log)
    assert "E   AssertionError: closed without an answer: b'GET / HTTP/1.1'" in report
    assert report[-1].startswith("=") and "1 failed" in report[-1]
    assert "..F" not in report


def test_failure_report_caps_a_long_failures_section():
    log = ["= FAILURES =", *[f"line {n}" for n in range(1000)], "= short test summary info =", "= 1 failed ="]
    report = smoke.failure_report(log, limit=20)
    assert "line 0" in report and "line 999" in report and "line 500" not in report
    assert any("lines left out" in line for line in report)


def test_failure_report_without_a_failures_section_is_the_tail():
    log = [f"line {n}" for n in range(100)]
    assert smoke.failure_report(log) == log[-40:]
