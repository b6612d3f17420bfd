"""Keeping the served ``Snapshot`` in step with the management plane: poll with ``If-None-Match``, validate, swap
atomically, cache the last good snapshot on disk and serve from it at start-up. See docs/architecture.md ("The
snapshot").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from gateway.snapshot import SnapshotError, load_snapshot

if TYPE_CHECKING:
    from gateway.app import GatewayApp
    from gateway.metrics import Metrics
    from gateway.snapshot import Snapshot

__all__ = ("SnapshotSync", "write_cache")

logger = logging.getLogger("gateway.sync")


def write_cache(path: str, raw: bytes) -> None:
    """Write ``raw`` to ``path`` atomically with mode 0600."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class SnapshotSync:
    """Polls the management plane and swaps validated snapshots into ``app``."""

    def __init__(self, app: GatewayApp, *, session: aiohttp.ClientSession | None = None) -> None:
        self.app = app
        self.config = app.config
        self.etag: str | None = None
        self._session = session
        self._own_session = session is None
        self._task: asyncio.Task[None] | None = None
        self._failing: str | None = None  # the last logged problem, to log each episode once
        self._last_heartbeat: tuple[float, object] | None = None  # (monotonic time, health) of the last one sent

    # cache file

    def load_cache(self) -> bool:
        """Serve the cached snapshot, if there is a valid one. Returns whether one was loaded."""
        path = self.config.snapshot_cache
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return False
        except OSError as exc:
            logger.warning("cannot read the snapshot cache %s: %s", path, exc)
            return False
        try:
            config = self._load(orjson.loads(raw))
        except (orjson.JSONDecodeError, SnapshotError) as exc:
            logger.warning("ignoring the snapshot cache %s: %s", path, exc)
            return False
        self.app.snapshot = config
        self.etag = f'"{config.revision}"'
        self._report_quarantine(config)
        logger.info("serving cached snapshot revision %s from %s", config.revision, path)
        return True

    # polling

    async def poll_once(self) -> bool:
        """Fetch the snapshot once; returns True when a new configuration was swapped in."""
        session = self._get_session()
        headers = {"Authorization": f"Gateway {self.config.gateway_token}", "Accept": "application/json"}
        if self.etag is not None:
            headers["If-None-Match"] = self.etag
        try:
            async with session.get(self.config.snapshot_url, headers=headers) as response:
                if response.status == 304:
                    self._recovered()
                    return False
                if response.status != 200:
                    self._problem(f"management plane answered {response.status} for the snapshot")
                    return False
                raw = await response.read()
                etag = response.headers.get("ETag")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._problem(f"management plane unreachable: {exc.__class__.__name__}: {exc}")
            return False
        data: Any = None
        try:
            data = orjson.loads(raw)
            config = self._load(data)
        except (orjson.JSONDecodeError, SnapshotError) as exc:
            self._rejected(_revision_of(data, etag), str(exc))
            # remember the bad ETag so the same snapshot is not fetched and validated again and again
            self.etag = etag or self.etag
            self._problem(f"rejected snapshot {etag or ''}: {exc}", level=logging.ERROR)
            return False
        self.app.snapshot = config  # the atomic swap
        self.app.rejected = None
        self.etag = etag or f'"{config.revision}"'
        self._recovered()
        self._report_quarantine(config)
        logger.info("loaded snapshot revision %s", config.revision)
        try:
            await asyncio.to_thread(write_cache, self.config.snapshot_cache, raw)
        except OSError as exc:
            logger.warning("cannot write the snapshot cache %s: %s", self.config.snapshot_cache, exc)
        return True

    async def heartbeat(self, now: float | None = None) -> bool:
        """Report this gateway (id, region, health: revision, status, refused configuration) to the management
        plane, when ``heartbeat_interval`` has passed since the last report or the health changed. Returns whether
        one was sent. A failure is only logged at debug level: the snapshot poll reports an unreachable plane."""
        interval = self.config.heartbeat_interval
        if interval <= 0:
            return False
        now = time.monotonic() if now is None else now
        health = self.app.health()
        last = self._last_heartbeat
        if last is not None and now - last[0] < interval and last[1] == health:
            return False
        body = {**health, "region": self.config.region, "interval": interval}
        headers = {"Authorization": f"Gateway {self.config.gateway_token}", "Content-Type": "application/json"}
        try:
            async with self._get_session().post(self.config.heartbeat_url, data=orjson.dumps(body),
                                                headers=headers) as response:  # fmt: skip
                if response.status >= 300:
                    logger.debug("heartbeat answered %s", response.status)
                    return False
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            logger.debug("heartbeat failed: %s", exc)
            return False
        self._last_heartbeat = (now, health)
        return True

    async def run(self) -> None:
        while True:
            try:
                await self.poll_once()
                await self.heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the poller die
                logger.exception("snapshot poll failed")
            await asyncio.sleep(self.config.poll_interval)

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="sluice-snapshot-sync")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # helpers

    def _load(self, data: Any) -> Snapshot:
        return load_snapshot(data, gateway_token=self.config.gateway_token, quarantine=True)

    def _rejected(self, revision: int | str | None, reason: str) -> None:
        self.app.rejected = {"revision": revision, "reason": reason}
        metrics = self._metrics()
        if metrics is not None:
            metrics.snapshot_rejected.inc()

    def _report_quarantine(self, config: Snapshot) -> None:
        for problem in config.quarantined:
            logger.error("revision %s: quarantined %s '%s': %s", config.revision, problem.kind, problem.name,
                         problem.message)  # fmt: skip
        metrics = self._metrics()
        if metrics is not None:
            metrics.snapshot_quarantined.set(len(config.quarantined))

    def _metrics(self) -> Metrics | None:
        telemetry = self.app.telemetry
        return telemetry.metrics if telemetry is not None else None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=max(10.0, self.config.poll_interval * 5))
            self._session = aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    def _problem(self, message: str, level: int = logging.WARNING) -> None:
        if message != self._failing:
            self._failing = message
            revision = self.app.revision
            logger.log(level, "%s; still serving revision %s", message, revision)

    def _recovered(self) -> None:
        if self._failing is not None:
            self._failing = None
            logger.info("management plane reachable again")


def _revision_of(data: Any, etag: str | None) -> int | str | None:
    """The revision a refused snapshot claims: its body's, else its ETag's."""
    revision = data.get("revision") if isinstance(data, dict) else None
    if isinstance(revision, int) and not isinstance(revision, bool):
        return revision
    return etag.strip('"') if etag else None
