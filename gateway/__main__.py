"""``python -m gateway`` / ``sluice-gateway``: run the data plane on uvloop.

With ``SLUICE_GATEWAY_WORKERS`` > 1 the process forks that many workers, each with its own event loop, poller
and listening socket bound with SO_REUSEPORT (the kernel spreads connections across them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

import uvloop

from gateway.app import create_app
from gateway.config import ConfigError, GatewayConfig
from gateway.http.server import ServerLimits, serve
from gateway.sync import SnapshotSync

__all__ = ("main", "run_worker")

logger = logging.getLogger("gateway")


async def run_worker(config: GatewayConfig, *, reuse_port: bool = False) -> None:
    """Serve until SIGINT/SIGTERM: cache first, then poll the management plane."""
    app = create_app(config)
    sync = SnapshotSync(app)
    sync.load_cache()
    sync.start()
    limits = ServerLimits(max_body_bytes=config.max_body_bytes)
    server = await serve(app, config.host, config.port, limits=limits, reuse_port=reuse_port)
    logger.info("gateway %s listening on %s:%s (pid %s)", config.gateway_id, config.host, config.port, os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        await sync.stop()
        await app.aclose()
        logger.info("gateway worker %s stopped", os.getpid())


def _run_one(config: GatewayConfig, reuse_port: bool) -> None:
    uvloop.run(run_worker(config, reuse_port=reuse_port))


def _run_many(config: GatewayConfig) -> int:
    children: list[int] = []
    for _ in range(config.workers):
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                _run_one(config, reuse_port=True)
            except BaseException:
                logger.exception("gateway worker failed")
                code = 1
            os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(code)
    return status


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("SLUICE_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )
    try:
        config = GatewayConfig.from_env()
    except ConfigError as exc:
        print(f"sluice-gateway: {exc}", file=sys.stderr)
        sys.exit(2)
    if config.workers > 1:
        sys.exit(_run_many(config))
    _run_one(config, reuse_port=False)


if __name__ == "__main__":
    main()
