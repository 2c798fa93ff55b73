"""A small Redis client for trio: one connection, one command at a time, RESP2.

What the cluster needs and no more: `command` (an error reply is raised as `RespError`),
`pipeline` (several commands in one write; error replies come back as values) and `aclose`.
The connection is opened on first use (with AUTH and SELECT when the URL asks for them),
and dropped after any failure or cancellation mid-command, so that the next call starts on
a fresh connection and never reads a reply meant for an earlier one. Every call is bounded
by `timeout` (connect, send and receive together); a server that cannot be reached, closes
the connection, sends garbage or stays silent raises `RedisUnavailable`.

URLs: `redis://host[:port][/db]` and `redis://:password@host[:port][/db]` (port 6379, db 0
by default). The protocol is `cluster/resp.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import trio

from cluster.resp import NeedMore, RespError, RespParser, RespProtocolError, RespValue, encode_command

__all__ = [
    "RedisAddress",
    "RedisClient",
    "RedisUnavailable",
    "RespError",
    "RespValue",
    "open_redis",
    "parse_redis_url",
]

DEFAULT_PORT = 6379
_RECEIVE_SIZE = 65536

Arg = bytes | str | int | float


class RedisUnavailable(Exception):
    """Redis could not be reached or did not answer in time; the call's outcome is unknown."""


class _ConnectionClosed(Exception):
    """The server closed the connection."""


# What a call turns into `RedisUnavailable` (besides the timeout). A `RespError` here is a
# refused AUTH or SELECT on connecting: replies to the caller's commands are values.
_UNAVAILABLE = (OSError, trio.BrokenResourceError, RespProtocolError, _ConnectionClosed, RespError)


@dataclass(frozen=True)
class RedisAddress:
    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"


def parse_redis_url(url: str) -> RedisAddress:
    """`redis://[:password@]host[:port][/db]` -> `RedisAddress`; anything else raises `ValueError`.

    Error messages never repeat the URL (it may hold a password)."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(
            f"unsupported Redis URL scheme {parts.scheme!r}: expected redis://[:password@]host[:port][/db]"
        )
    if parts.query or parts.fragment:
        raise ValueError("a Redis URL takes no query string or fragment")
    if not parts.hostname:
        raise ValueError("the Redis URL has no host")
    if parts.username:
        raise ValueError("Redis URL user names (ACL users) are not supported: use redis://:password@host")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in the Redis URL: {exc}") from None
    path = parts.path.removeprefix("/")
    if path and not (path.isascii() and path.isdigit()):
        raise ValueError(f"the Redis URL's path must be a database number, not {path!r}")
    password = unquote(parts.password) if parts.password else None
    return RedisAddress(
        host=parts.hostname,
        port=DEFAULT_PORT if port is None else port,
        db=int(path) if path else 0,
        password=password,
    )


class RedisClient:
    """One lazily opened connection to Redis, shared by its callers one command at a time."""

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        self.address = parse_redis_url(url)
        self.timeout = timeout
        self._lock = trio.Lock()
        self._stream: trio.SocketStream | None = None
        self._parser = RespParser()
        self._closed = False

    async def command(self, *args: Arg) -> RespValue:
        """Send one command and return its reply; an error reply is raised as `RespError`."""
        (reply,) = await self._call(encode_command(*args), 1)
        if isinstance(reply, RespError):
            raise reply
        return reply

    async def pipeline(self, *commands: Sequence[Arg]) -> list[RespValue]:
        """Send the commands in one write and return their replies in order, error replies
        as `RespError` values (not raised). Not a transaction: wrap in MULTI/EXEC for that."""
        if not commands:
            return []
        payload = b"".join(encode_command(*command) for command in commands)
        return await self._call(payload, len(commands))

    async def aclose(self) -> None:
        """Close the connection; later calls raise `trio.ClosedResourceError`."""
        self._closed = True
        self._disconnect()
        await trio.lowlevel.checkpoint()

    async def _call(self, payload: bytes, count: int) -> list[RespValue]:
        if self._closed:
            raise trio.ClosedResourceError("the Redis client is closed")
        deadline = trio.current_time() + self.timeout  # the wait for the connection counts too
        acquired = False
        with trio.move_on_at(deadline):
            await self._lock.acquire()
            acquired = True
        if not acquired:
            raise RedisUnavailable(f"Redis at {self.address}: no turn on the connection within {self.timeout} s")
        try:
            try:
                with trio.fail_at(deadline):
                    if self._stream is not None:
                        try:
                            return await self._exchange(self._stream, payload, count)
                        except (trio.BrokenResourceError, _ConnectionClosed, OSError):
                            # the server (or a proxy) closed the idle connection: once more on a
                            # new one, as redis-py does (commands here are safe to repeat)
                            self._disconnect()
                    return await self._exchange(await self._connect(), payload, count)
            except BaseException as exc:
                # Whatever went wrong (cancellation included), replies may still be in flight:
                # never reuse this connection.
                self._disconnect()
                if isinstance(exc, trio.TooSlowError):
                    raise RedisUnavailable(f"Redis at {self.address}: no answer within {self.timeout} s") from exc
                if isinstance(exc, _UNAVAILABLE):
                    cause = str(exc) or type(exc).__name__
                    raise RedisUnavailable(f"Redis at {self.address}: {cause}") from exc
                raise
        finally:
            self._lock.release()

    async def _exchange(self, stream: trio.SocketStream, payload: bytes, count: int) -> list[RespValue]:
        await stream.send_all(payload)
        return [await self._receive(stream) for _ in range(count)]

    async def _connect(self) -> trio.SocketStream:
        """Open the connection, then AUTH and SELECT as the URL says. A refused AUTH or SELECT
        raises its `RespError` (turned into `RedisUnavailable` by the caller)."""
        self._parser = RespParser()
        try:
            stream = await trio.open_tcp_stream(self.address.host, self.address.port)
        except OSError as exc:
            raise OSError(f"cannot connect: {_reasons(exc)}") from exc
        self._stream = stream
        setup: list[tuple[str, Arg]] = []
        if self.address.password is not None:
            setup.append(("AUTH", self.address.password))
        if self.address.db:
            setup.append(("SELECT", self.address.db))
        if setup:
            await stream.send_all(b"".join(encode_command(*command) for command in setup))
            for name, _ in setup:
                reply = await self._receive(stream)
                if isinstance(reply, RespError):
                    raise RespError(f"{name} refused: {reply.message}")
        return stream

    async def _receive(self, stream: trio.SocketStream) -> RespValue:
        while isinstance(reply := self._parser.next_reply(), NeedMore):
            data = await stream.receive_some(_RECEIVE_SIZE)
            if not data:
                raise _ConnectionClosed("the server closed the connection")
            self._parser.feed(data)
        return reply

    def _disconnect(self) -> None:
        """Close the socket at once (no await: this runs while an exception propagates)."""
        if self._stream is not None:
            self._stream.socket.close()
            self._stream = None


def _reasons(exc: OSError) -> str:
    """Why a connection failed: trio puts each attempt's error in an ExceptionGroup as the cause."""
    group = exc.__cause__
    attempts = list(group.exceptions) if isinstance(group, BaseExceptionGroup) else [exc]
    reasons = {(a.strerror if isinstance(a, OSError) and a.strerror else str(a)) for a in attempts}
    return "; ".join(sorted(reasons))


@asynccontextmanager
async def open_redis(url: str, *, timeout: float = 2.0) -> AsyncIterator[RedisClient]:  # noqa: ASYNC109 (per call)
    """A `RedisClient` (`timeout` bounds each of its calls) that is closed when the block ends."""
    client = RedisClient(url, timeout=timeout)
    try:
        yield client
    finally:
        await client.aclose()
