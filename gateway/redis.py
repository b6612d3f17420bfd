"""A small pipelined Redis client (RESP2), shared by the token store and usage delivery.

One connection per process; every command written during one turn of the event loop leaves in a single write and
replies are matched to callers in order. ``send`` writes without waiting for the reply. A connection that owes
replies and stays silent for ``timeout`` seconds is dropped (failing what is pending); the next command reconnects.
URLs: ``redis://[[user]:password@]host[:port][/db]`` and ``rediss://`` (TLS).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final, cast
from urllib.parse import unquote, urlsplit

__all__ = ("RespClient", "RespError", "encode_args", "encode_command", "parse_reply")

logger = logging.getLogger("gateway.redis")

DEFAULT_PORT: Final = 6379
CRLF: Final = b"\r\n"

ReplyHandler = Callable[[Any], None]


class RespError(Exception):
    """An error reply (``-ERR …``, ``-NOSCRIPT …``)."""

    @property
    def code(self) -> str:
        return str(self).split(" ", 1)[0]


class _Incomplete(Exception):
    pass


def encode_command(args: tuple[Any, ...]) -> bytes:
    return b"*%d\r\n" % len(args) + encode_args(args)


def encode_args(args: Iterable[Any]) -> bytes:
    """``args`` as RESP bulk strings, without the array header: a piece of a command that is put together later."""
    parts = []
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode("utf-8", "surrogatepass")
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = str(arg).encode("utf-8")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def parse_reply(buf: bytearray | bytes, pos: int) -> tuple[Any, int]:
    """Parse one reply at ``pos``; return ``(value, next position)``. Raises _Incomplete when more bytes are needed."""
    if pos >= len(buf):
        raise _Incomplete
    end = buf.find(CRLF, pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    if kind == 58:  # ':'
        return int(buf[pos + 1 : end]), end + 2
    if kind == 36:  # '$'
        size = int(buf[pos + 1 : end])
        if size < 0:
            return None, end + 2
        start = end + 2
        if len(buf) < start + size + 2:
            raise _Incomplete
        return bytes(buf[start : start + size]), start + size + 2
    if kind == 42:  # '*'
        count = int(buf[pos + 1 : end])
        if count < 0:
            return None, end + 2
        items = []
        position = end + 2
        for _ in range(count):
            if position < len(buf) and buf[position] == 58:  # ':' an integer, read here: a call less per item
                end = buf.find(CRLF, position)
                if end < 0:
                    raise _Incomplete
                items.append(int(buf[position + 1 : end]))
                position = end + 2
            else:
                item, position = parse_reply(buf, position)
                items.append(item)
        return items, position
    if kind == 43:  # '+'
        return bytes(buf[pos + 1 : end]).decode("utf-8", "replace"), end + 2
    if kind == 45:  # '-'
        return RespError(bytes(buf[pos + 1 : end]).decode("utf-8", "replace")), end + 2
    raise ValueError(f"RESP protocol error: unexpected type byte {bytes([kind])!r}")


class _Protocol(asyncio.Protocol):
    def __init__(self, client: RespClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        deliver = self.client._deliver
        try:
            while pos < len(buf):
                value, pos = parse_reply(buf, pos)
                deliver(value)
        except _Incomplete:
            pass
        except ValueError as exc:
            logger.error("%s; dropping the Redis connection", exc)
            if self.transport is not None:
                self.transport.abort()
            return
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost(self, exc)


class RespClient:
    """Pipelined commands over one (re)connecting connection."""

    def __init__(self, url: str, *, connect_timeout: float = 2.0, timeout: float = 2.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r} (use redis:// or rediss://)")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or DEFAULT_PORT
        self.tls = parts.scheme == "rediss"
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        path = parts.path.strip("/")
        self.db = int(path) if path else 0
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        # the loop of the open connection, set and cleared with _protocol: asyncio.get_running_loop() checks the
        # process id (a getpid() system call) on every call, and a connection serves one loop anyway
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._handlers: deque[tuple[asyncio.Future[Any] | None, ReplyHandler | None]] = deque()
        self._outbox: list[bytes] = []
        self._flush_scheduled = False
        self._received = 0
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False

    # public API

    async def call(self, *args: Any, orphan: ReplyHandler | None = None) -> Any:
        """Send a command and return its reply; error replies raise RespError.

        ``orphan`` receives the reply instead when the caller was cancelled before it arrived.
        """
        future: asyncio.Future[Any] = self.running_loop().create_future()
        self._enqueue(encode_command(args), future, orphan)
        reply = await future
        if isinstance(reply, RespError):
            raise reply
        return reply

    async def call_encoded(self, command: bytes, orphan: ReplyHandler | None = None) -> Any:
        """``call`` with a command already in RESP form (``encode_command``); the hot path pre-encodes."""
        reply = await self.submit_encoded(command, orphan)
        if isinstance(reply, RespError):
            raise reply
        return reply

    def submit_encoded(self, command: bytes, orphan: ReplyHandler | None = None) -> asyncio.Future[Any]:
        """Queue a command already in RESP form and return the future of its reply, for a caller that awaits it in
        its own frame (the token store's admission): an error reply is the future's result, not raised; a lost
        connection or the client's timeout is its exception. ``orphan`` gets the reply when the future is already
        done (cancelled, or failed by the caller) when the reply arrives."""
        future: asyncio.Future[Any] = self.running_loop().create_future()
        self._enqueue(command, future, orphan)
        return future

    async def call_batch(self, commands: bytes, count: int) -> list[Any]:
        """Send ``count`` commands already in RESP form and joined (``encode_command``) in one write; return their
        replies in order. Error replies are returned as RespError values, not raised, so the caller sees which
        command failed; a lost connection or a timeout raises (ConnectionError / TimeoutError)."""
        if count <= 0:
            return []
        future: asyncio.Future[list[Any]] = self.running_loop().create_future()
        replies: list[Any] = []

        def last(reply: Any) -> None:
            # a lost connection or a timeout reaches every handler still queued, so this one too
            if future.done():  # a connection error already failed the batch, or the caller was cancelled
                return
            if isinstance(reply, Exception) and not isinstance(reply, RespError):
                future.set_exception(reply)
                return
            replies.append(reply)
            future.set_result(replies)

        # the replies before the last are appended as they come (no Python call each); a connection error among
        # them is appended too, then the last handler fails the batch with it
        self._enqueue(commands, None, last, count, replies.append)
        return await future

    def send_encoded(self, command: bytes, on_reply: ReplyHandler | None = None) -> None:
        self._enqueue(command, None, on_reply)

    def send(self, *args: Any, on_reply: ReplyHandler | None = None) -> None:
        """Send a command without waiting; ``on_reply`` gets the reply (a RespError, or a ConnectionError)."""
        self._enqueue(encode_command(args), None, on_reply)

    @property
    def pending(self) -> int:
        return len(self._handlers)

    def running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop of the open connection, else the running one (RuntimeError when there is none): for a caller
        that would otherwise ask ``asyncio.get_running_loop()``, a getpid(2) per call on Python 3.11."""
        loop = self._loop
        return loop if loop is not None else asyncio.get_running_loop()

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
        self._fail_all(ConnectionError("the Redis client is closed"))

    # internals

    def _enqueue(
        self,
        command: bytes,
        future: asyncio.Future[Any] | None,
        handler: ReplyHandler | None,
        replies: int = 1,
        each: ReplyHandler | None = None,
    ) -> None:
        """Queue ``command`` (``replies`` commands when several are joined: ``each`` gets the reply of each but the
        last, ``handler`` the last's, or every reply when ``each`` is None)."""
        if self._closed:
            error = ConnectionError("the Redis client is closed")
            if future is not None:
                future.set_exception(error)
            elif handler is not None:
                handler(error)
            return
        self._outbox.append(command)
        if replies == 1:
            self._handlers.append((future, handler))
        elif each is None:
            self._handlers.extend([(future, handler)] * replies)
        else:
            self._handlers.extend([(None, each)] * (replies - 1))
            self._handlers.append((future, handler))
        if self._protocol is None:
            if self._connecting is None:
                self._connecting = asyncio.get_running_loop().create_task(self._connect())
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        protocol = self._protocol
        if protocol is None or protocol.transport is None or not self._outbox:
            return
        data = b"".join(self._outbox) if len(self._outbox) > 1 else self._outbox[0]
        self._outbox.clear()
        protocol.transport.write(data)
        if self._watchdog is None:
            self._arm_watchdog()

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            context = ssl.create_default_context() if self.tls else None
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await loop.create_connection(lambda: _Protocol(self), self.host, self.port, ssl=context)
        except (OSError, TimeoutError) as exc:
            self._connecting = None
            self._fail_all(ConnectionError(f"cannot connect to Redis at {self.host}:{self.port}: {exc}"))
            return
        except asyncio.CancelledError:
            self._connecting = None
            self._fail_all(ConnectionError("connection attempt cancelled"))
            raise
        self._connecting = None
        if self._closed:
            protocol.transport.close()  # type: ignore[union-attr]  # set by connection_made, which create_connection has run
            return
        # AUTH / SELECT go first: their replies come before those of the commands queued while connecting.
        setup: list[bytes] = []
        if self.password is not None:
            auth = ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
            setup.append(encode_command(auth))
        if self.db:
            setup.append(encode_command(("SELECT", self.db)))
        for command in reversed(setup):
            self._outbox.insert(0, command)
            self._handlers.appendleft((None, _check_setup))
        self._protocol = protocol
        self._loop = loop
        self._flush()

    def _deliver(self, value: Any) -> None:
        self._received += 1
        if not self._handlers:
            logger.error("unexpected reply from Redis: %r", value)
            return
        future, handler = self._handlers.popleft()
        if future is not None and not future.done():
            future.set_result(value)
        elif handler is not None:
            try:
                handler(value)
            except Exception:
                logger.exception("Redis reply handler failed")

    def _lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if self._protocol is protocol:
            self._protocol = None
            self._loop = None
        self._fail_all(ConnectionError(f"Redis connection lost: {exc or 'closed'}"))

    def _fail_all(self, error: Exception) -> None:
        self._outbox.clear()
        handlers, self._handlers = self._handlers, deque()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for future, handler in handlers:
            if future is not None and not future.done():
                future.set_exception(error)
            elif handler is not None:
                try:
                    handler(error)
                except Exception:
                    logger.exception("Redis reply handler failed")

    def _arm_watchdog(self) -> None:
        seen = self._received
        loop = self.running_loop()
        self._watchdog = loop.call_later(self.timeout, self._check_stalled, seen)

    def _check_stalled(self, seen: int) -> None:
        self._watchdog = None
        if not self._handlers:
            return
        if self._received == seen:  # replies owed and none arrived for a whole timeout: drop the connection
            protocol = self._protocol
            logger.warning("Redis sent no reply for %.1f s; reconnecting", self.timeout)
            if protocol is not None and protocol.transport is not None:
                protocol.transport.abort()
            self._protocol = None
            self._loop = None
            self._fail_all(TimeoutError(f"Redis did not answer within {self.timeout:g} s"))
            return
        self._arm_watchdog()


def _check_setup(reply: Any) -> None:
    if isinstance(reply, Exception):
        logger.error("Redis connection setup failed: %s", reply)
