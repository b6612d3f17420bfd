"""Regression (#7 item 10): an unauthenticated flood of large request bodies barely moves a real gateway's memory.

A ``python -m gateway`` process serves a snapshot from its cache file. Clients with a wrong subscription key open
CONNECTIONS connections at once, each declaring a BODY-byte body and sending it as fast as the gateway reads; each
gets its 401 and goes away. Before the fix the server read every body whole before the handler saw the request,
so the peak resident size grew by about CONNECTIONS x BODY; now the handler answers from the head, and a connection
holds at most 64 KiB of body until then.
"""

from __future__ import annotations

import asyncio
import os
import sys

import orjson

from tests.fixtures_procs import free_port, process_factory  # noqa: F401  (fixture)

from .helpers import TOKEN, base_snapshot

CONNECTIONS = 24
BODY = 8 * 1024 * 1024
ROUNDS = 2
PATH = b"/llm/chat/chat/completions"
ALLOWED_GROWTH = 32 * 1024 * 1024  # before the fix: about CONNECTIONS x BODY = 192 MiB


def gateway_env(tmp_path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "SLUICE_GATEWAY_TOKEN": TOKEN,
        "SLUICE_GATEWAY_PORT": str(port),
        "SLUICE_ADMIN_PORT": "0",
        "SLUICE_SNAPSHOT_CACHE": str(tmp_path / "snapshot.json"),
        "SLUICE_USAGE_SPOOL": str(tmp_path / "usage.spool"),
        "SLUICE_MANAGEMENT_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: serve from the cache
        "SLUICE_POLL_INTERVAL": "5",
        "SLUICE_LOG_LEVEL": "WARNING",
        "REDIS_URL": "",
    }


def reset_peak(pid: int) -> None:
    """Start VmHWM again from the current resident size (the start-up peak would hide a smaller growth)."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident size) of ``pid``, in bytes."""
    found = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) * 1024
    return found


async def flood_one(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: gw\r\nOcp-Apim-Subscription-Key: wrong-key\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (PATH, BODY)
    )

    async def send_body() -> None:
        chunk = b"x" * 65536
        for _ in range(BODY // len(chunk)):
            writer.write(chunk)
            await writer.drain()

    sender = asyncio.ensure_future(send_body())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        return int(head.split(b" ", 2)[1])
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()


async def flood(port: int) -> list[int]:
    statuses: list[int] = []
    for _ in range(ROUNDS):
        statuses += await asyncio.gather(*(flood_one(port) for _ in range(CONNECTIONS)))
    return statuses


def test_unauthenticated_flood_of_large_bodies_barely_moves_rss(tmp_path, process_factory):  # noqa: F811
    (tmp_path / "snapshot.json").write_bytes(orjson.dumps(base_snapshot()))
    port = free_port()
    gateway = process_factory(
        [sys.executable, "-m", "gateway"],
        f"http://127.0.0.1:{port}/__sluice/health",
        env=gateway_env(tmp_path, port),
        name="gateway",
    )
    pid = gateway.pid
    assert pid is not None
    assert asyncio.run(flood_one(port)) == 401  # warm: first request paths loaded
    reset_peak(pid)
    before = memory(pid)
    statuses = asyncio.run(flood(port))
    after = memory(pid)
    growth = after["VmHWM"] - before["VmRSS"]
    print(
        f"\npre-auth flood: {len(statuses)} requests of {BODY >> 20} MiB, {CONNECTIONS} at once; "
        f"RSS before {before['VmRSS'] >> 10} KiB, after {after['VmRSS'] >> 10} KiB, "
        f"peak {after['VmHWM'] >> 10} KiB (peak growth {growth >> 10} KiB)"
    )
    assert statuses == [401] * (ROUNDS * CONNECTIONS)
    assert growth < ALLOWED_GROWTH, f"peak RSS grew by {growth >> 20} MiB"
