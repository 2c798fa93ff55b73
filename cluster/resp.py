"""RESP2, the Redis wire protocol, sans-IO: commands to bytes, bytes to replies.

No sockets and no trio here (`cluster/redis_client.py` does the I/O). `encode_command`
builds a request (an array of bulk strings). `RespParser` is fed whatever bytes arrive
and hands back complete replies one at a time, or `NEED_MORE` until the buffer holds one:

    parser.feed(data)
    while (reply := parser.next_reply()) is not NEED_MORE:
        ...

Replies decode to: simple string (`+OK`) -> `str`; error (`-ERR ...`) -> a `RespError`
value (returned, not raised); integer -> `int`; bulk string -> `bytes`; array -> `list`;
the null bulk string and null array -> `None`. Bytes that are not RESP raise
`RespProtocolError`; the parser (and the connection) is then unusable.

The parser keeps its place: a bulk string is read once its bytes are all there, and an
array being filled is kept on a stack, so input that arrives in small pieces is not
re-parsed from the start of the reply.
"""

from __future__ import annotations

import re
from typing import Any, Final, TypeAlias, final

MAX_BULK_LENGTH: Final = 512 * 1024 * 1024  # Redis's own proto-max-bulk-len default
MAX_ARRAY_LENGTH: Final = 2**31

_CRLF: Final = b"\r\n"
_INTEGER = re.compile(rb"-?[0-9]{1,19}")  # a signed 64-bit integer at most


class RespError(Exception):
    """An error reply from Redis (`-ERR unknown command ...`, `-WRONGTYPE ...`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def kind(self) -> str:
        """The error's first word, by Redis convention its kind: `ERR`, `WRONGTYPE`, `NOAUTH`..."""
        return self.message.split(" ", 1)[0]


class RespProtocolError(Exception):
    """The server sent bytes that are not RESP2."""


@final
class NeedMore:
    """The type of `NEED_MORE`: the buffer does not hold a complete reply yet."""

    _instance: NeedMore | None = None

    def __new__(cls) -> NeedMore:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE: Final = NeedMore()

RespValue: TypeAlias = int | str | bytes | list[Any] | RespError | None


def encode_command(*args: bytes | str | int | float) -> bytes:
    """One command as RESP: an array of bulk strings (str as UTF-8, numbers via `str()`)."""
    if not args:
        raise ValueError("a Redis command needs at least its name")
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int | float) and not isinstance(arg, bool):
            data = str(arg).encode()
        else:
            raise TypeError(f"a Redis command argument must be bytes, str, int or float, not {type(arg).__name__}")
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(_CRLF)
    return b"".join(parts)


class _ArrayHeader:
    """An array of `length` (at least 1) elements has begun."""

    __slots__ = ("length",)

    def __init__(self, length: int) -> None:
        self.length = length


class RespParser:
    """Turns the bytes a Redis server sends into replies, in order (see the module docstring)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0  # where the unparsed bytes start
        self._scanned_to = 0  # no CRLF before this index after `_pos`: do not search there again
        self._bulk_length: int | None = None  # a `$n` header was read; its n bytes + CRLF are awaited
        self._arrays: list[tuple[int, list[Any]]] = []  # arrays being filled: (length, elements so far)

    def feed(self, data: bytes) -> None:
        """Append bytes received from the server."""
        if self._pos:
            del self._buffer[: self._pos]
            self._scanned_to = max(0, self._scanned_to - self._pos)
            self._pos = 0
        self._buffer += data

    def next_reply(self) -> RespValue | NeedMore:
        """The next complete reply, or `NEED_MORE`. Raises `RespProtocolError` on malformed input."""
        while True:
            item = self._next_item()
            if isinstance(item, NeedMore):
                return item
            if isinstance(item, _ArrayHeader):
                self._arrays.append((item.length, []))
                continue
            value: RespValue = item
            while self._arrays:
                length, elements = self._arrays[-1]
                elements.append(value)
                if len(elements) < length:
                    break
                self._arrays.pop()
                value = elements
            else:
                return value

    def _next_item(self) -> RespValue | _ArrayHeader | NeedMore:
        """A scalar, the start of a non-empty array, or `NEED_MORE`; consumes what it returns."""
        if self._bulk_length is not None:
            return self._bulk_body(self._bulk_length)
        line = self._line()
        if line is None:
            return NEED_MORE
        if not line:
            raise RespProtocolError("empty line where a reply was expected")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            try:
                return rest.decode()
            except UnicodeDecodeError as exc:
                raise RespProtocolError(f"simple string is not UTF-8: {rest[:80]!r}") from exc
        if kind == b"-":
            return RespError(rest.decode(errors="replace"))
        if kind == b":":
            return _integer(rest)
        if kind == b"$":
            length = _integer(rest)
            if length == -1:
                return None
            if not 0 <= length <= MAX_BULK_LENGTH:
                raise RespProtocolError(f"bad bulk string length {length}")
            self._bulk_length = length
            return self._bulk_body(length)
        if kind == b"*":
            length = _integer(rest)
            if length == -1:
                return None
            if not 0 <= length <= MAX_ARRAY_LENGTH:
                raise RespProtocolError(f"bad array length {length}")
            return _ArrayHeader(length) if length else []
        raise RespProtocolError(f"unknown reply type {kind!r} in {line[:80]!r}")

    def _line(self) -> bytes | None:
        """The bytes up to the next CRLF (consumed with it), or None if there is no CRLF yet."""
        end = self._buffer.find(_CRLF, max(self._pos, self._scanned_to))
        if end < 0:
            # A CR may be the last byte, its LF still to come: search from it next time.
            self._scanned_to = max(self._pos, len(self._buffer) - 1)
            return None
        line = bytes(self._buffer[self._pos : end])
        self._pos = end + 2
        self._scanned_to = 0
        return line

    def _bulk_body(self, length: int) -> bytes | NeedMore:
        end = self._pos + length
        if len(self._buffer) < end + 2:
            return NEED_MORE
        if self._buffer[end : end + 2] != _CRLF:
            raise RespProtocolError(f"bulk string of {length} bytes not followed by CRLF")
        data = bytes(self._buffer[self._pos : end])
        self._pos = end + 2
        self._bulk_length = None
        return data


def _integer(text: bytes) -> int:
    if not _INTEGER.fullmatch(text):
        raise RespProtocolError(f"not an integer: {text[:80]!r}")
    return int(text)
