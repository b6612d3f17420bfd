"""The management plane reads usage records through `gateway.usage.record` alone: no gateway runtime comes along."""

import ast
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUNTIME = ("aiohttp", "fcntl", "uvloop", "httptools", "orjson")

PROBE = """
import json, sys
import gateway.usage.record
print(json.dumps(sorted(sys.modules)))
"""


def test_importing_the_record_loads_no_gateway_runtime():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert "gateway.usage.record" in loaded
    assert [name for name in RUNTIME if name in loaded] == []
    assert sorted(name for name in loaded if name.startswith("gateway")) == [
        "gateway",
        "gateway.usage",
        "gateway.usage.record",
    ]


def test_the_management_plane_imports_only_the_record_from_the_gateway():
    imported = set()
    for path in (ROOT / "usage").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gateway":
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names if alias.name.split(".")[0] == "gateway")
    assert imported == {"gateway.usage.record"}
