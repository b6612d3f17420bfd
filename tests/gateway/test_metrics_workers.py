"""Several worker processes share one port: /metrics answers with the totals of all of them (multiprocess mode).

The scrapes go to the admin listener (``SLUICE_ADMIN_PORT``, also shared by the workers)."""

from __future__ import annotations

import asyncio
import os
import sys
import urllib.request

import aiohttp
import orjson

from tests.fixtures_procs import free_port, mock_llm, process_factory  # noqa: F401  (fixtures)

from .exposition import families
from .helpers import KEYS, TOKEN, base_snapshot

KEY = {"Ocp-Apim-Subscription-Key": KEYS["master"][0]}
REQUESTS = 60
WORKERS_UP = 30.0  # the bound on the wait for the second worker: generous for a loaded CI machine
TOKEN_METRIC = '<llm-emit-token-metric><dimension name="API ID"/></llm-emit-token-metric>'


def scrape(port: int) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # a new connection
        text = response.read().decode()
    return families(text)


def total(samples: list, name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_every_worker_serves_the_totals(tmp_path, mock_llm, process_factory):  # noqa: F811
    data = base_snapshot(mock_llm.root_url)
    data["apis"][0]["api_type"] = "openai"
    data["apis"][0]["policy"] = f"<policies><inbound><base/>{TOKEN_METRIC}</inbound></policies>"
    (tmp_path / "snapshot.json").write_bytes(orjson.dumps(data))
    port, admin_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")},
        "SLUICE_GATEWAY_TOKEN": TOKEN,
        "SLUICE_GATEWAY_PORT": str(port),
        "SLUICE_GATEWAY_WORKERS": "2",
        "SLUICE_ADMIN_PORT": str(admin_port),
        "SLUICE_SNAPSHOT_CACHE": str(tmp_path / "snapshot.json"),
        "SLUICE_MANAGEMENT_URL": f"http://127.0.0.1:{free_port()}",
        "SLUICE_USAGE_SETTLE_TIMEOUT": "0",  # the management plane is not there to take usage records
        "SLUICE_LOG_LEVEL": "WARNING",
    }
    process_factory([sys.executable, "-m", "gateway"], f"http://127.0.0.1:{port}/__sluice/health", env=env)

    async def traffic() -> tuple[set[str], int]:
        prefixes: set[str] = set()
        tokens = 0
        connector = aiohttp.TCPConnector(force_close=True)  # one connection per request: spread over the workers
        async with aiohttp.ClientSession(connector=connector) as session:
            seen: set[str] = set()
            # the health check answered once one worker was up: wait for the other one too (each new connection goes
            # to either listening worker, so the second answers soon after it listens)
            deadline = asyncio.get_running_loop().time() + WORKERS_UP
            while len(seen) < 2 and asyncio.get_running_loop().time() < deadline:
                async with session.get(f"http://127.0.0.1:{port}/__sluice/health") as response:
                    seen.add(response.headers["x-request-id"].rsplit("-", 1)[0])
                if len(seen) < 2:
                    await asyncio.sleep(0.05)  # the polling interval of a bounded wait
            assert len(seen) == 2, f"the second worker did not answer within {WORKERS_UP:.0f} s"
            for n in range(REQUESTS):
                body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hello {n}"}]}
                url = f"http://127.0.0.1:{port}/llm/chat/chat/completions"
                async with session.post(url, data=orjson.dumps(body), headers=KEY) as response:
                    assert response.status == 200
                    tokens += (await response.json())["usage"]["total_tokens"]
                    prefixes.add(response.headers["x-request-id"].rsplit("-", 1)[0])  # one prefix per process
        return prefixes, tokens

    prefixes, tokens = asyncio.run(traffic())
    assert len(prefixes) == 2, "both workers should have served requests"
    for _ in range(6):  # whichever worker answers the scrape
        families = scrape(admin_port)
        requests = families["sluice_requests"]
        assert total(requests, "sluice_requests_total", api="chat", code="200") == REQUESTS
        duration = families["sluice_request_duration_seconds"]
        assert total(duration, "sluice_request_duration_seconds_count", api="chat") == REQUESTS
        assert total(families["api_management_total_tokens"], "api_management_total_tokens_total") == tokens
    assert any(name.endswith(".db") for name in os.listdir(tmp_path / "gateway-metrics"))
