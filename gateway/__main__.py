"""``python -m gateway`` / ``sluice-gateway``: run the data plane on uvloop.

With ``SLUICE_GATEWAY_WORKERS`` > 1 the process forks that many workers, each with its own event loop, poller
and listening socket bound with SO_REUSEPORT (the kernel spreads connections across them). Their metrics are then
kept in prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, default ``gateway-metrics/`` next to
the snapshot cache, emptied at start), so any worker's ``/metrics`` answers with the totals of all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

import uvloop

from gateway.app import AdminApp, GatewayApp, create_app
from gateway.http.server import ServerLimits, serve
from gateway.metrics import MULTIPROC_ENV, Metrics, enable_multiprocess
from gateway.settings import GatewaySettings, SettingsError
from gateway.sync import SnapshotSync
from gateway.tokens import get_tokenizer
from gateway.usage.journal import UsageJournal
from gateway.usage.sinks import make_sink

__all__ = ("main", "run_worker")

logger = logging.getLogger("gateway")

LOG_ADMIN_FAILED = "admin listener not started on %s:%s: %s (set SLUICE_ADMIN_PORT to a free port, or 0 for none)"
_ADMIN_MAX_CONNECTIONS = 64


async def run_worker(config: GatewaySettings, *, reuse_port: bool = False) -> None:
    """Serve until SIGINT/SIGTERM: cache first, then poll the management plane."""
    metrics = Metrics(max_label_sets=config.metrics_max_label_sets)  # Gateway ID and Location come from config
    sink = make_sink(
        config.redis_url or None,
        config.management_url,
        config.gateway_token,
        config.usage_spool_path,
        stream=config.usage_stream,
    )
    await sink.start()  # replays what an earlier run left in the spool
    journal = UsageJournal(config.usage_spool_path) if config.usage_journal else None
    if journal is not None:
        for record in journal.open():  # the records of a gateway that was killed on this spool path
            sink.emit(record)
        journal.start(sink)
    app = create_app(config, metrics=metrics, usage_sink=sink, usage_journal=journal)
    app.start()
    sync = SnapshotSync(app)
    sync.load_cache()
    sync.start()
    limits = ServerLimits(max_body_bytes=config.max_body_bytes, max_connections=config.max_connections)
    server = await serve(app, config.host, config.port, limits=limits, reuse_port=reuse_port)
    logger.info("gateway %s listening on %s:%s (pid %s)", config.gateway_id, config.host, config.port, os.getpid())
    admin = await _serve_admin(app, config, reuse_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        if admin is not None:
            admin.close()
        await sync.stop()
        await app.aclose()
        if journal is not None:
            await journal.close(sink)
        await sink.close()  # delivers or spools what is still buffered
        logger.info("gateway worker %s stopped", os.getpid())


async def _serve_admin(app: GatewayApp, config: GatewaySettings, reuse_port: bool) -> asyncio.Server | None:
    """The admin listener (metrics, health). One that cannot bind is logged, and the gateway serves on without it:
    traffic matters more than a scrape."""
    if not config.admin_port:
        return None
    limits = ServerLimits(max_body_bytes=0, max_connections=_ADMIN_MAX_CONNECTIONS)
    try:
        admin = await serve(AdminApp(app), config.admin_host, config.admin_port, limits=limits, reuse_port=reuse_port)
    except OSError as exc:
        logger.error(LOG_ADMIN_FAILED, config.admin_host, config.admin_port, exc)
        return None
    logger.info("admin listener (metrics, health) on %s:%s", config.admin_host, config.admin_port)
    return admin


def _run_one(config: GatewaySettings, reuse_port: bool) -> None:
    uvloop.run(run_worker(config, reuse_port=reuse_port))


def _run_many(config: GatewaySettings) -> int:
    metrics_dir = os.environ.get(MULTIPROC_ENV) or os.path.join(
        os.path.dirname(config.snapshot_cache) or ".", "gateway-metrics"
    )
    enable_multiprocess(metrics_dir)  # before forking: every worker writes its values there
    get_tokenizer()  # the BPE tables are loaded once and shared (copy-on-write) by the forked workers
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
        config = GatewaySettings.from_env()
    except SettingsError as exc:
        print(f"sluice-gateway: {exc}", file=sys.stderr)
        sys.exit(2)
    if config.workers > 1:
        sys.exit(_run_many(config))
    _run_one(config, reuse_port=False)


if __name__ == "__main__":
    main()
