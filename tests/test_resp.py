"""cluster/resp.py (the RESP2 codec, sans-IO) and cluster/redis_client.parse_redis_url."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.redis_client import RedisAddress, parse_redis_url
from cluster.resp import (
    MAX_ARRAY_LENGTH,
    MAX_BULK_LENGTH,
    NEED_MORE,
    NeedMore,
    RespError,
    RespParser,
    RespProtocolError,
    RespValue,
    encode_command,
)


def parse_all(*chunks: bytes) -> list[RespValue]:
    parser = RespParser()
    replies: list[RespValue] = []
    for chunk in chunks:
        parser.feed(chunk)
        while not isinstance(reply := parser.next_reply(), NeedMore):
            replies.append(reply)
    return replies


def plain(value: Any) -> Any:
    """RespError compares by identity: make it a comparable tuple (recursively)."""
    if isinstance(value, RespError):
        return ("error", value.message)
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


# encode_command


def test_encode_command_exact_bytes() -> None:
    assert encode_command("SET", b"k\r\n", 12, 1.5) == (b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n$3\r\n1.5\r\n")
    assert encode_command("PING") == b"*1\r\n$4\r\nPING\r\n"
    assert encode_command("SET", "é", b"") == b"*3\r\n$3\r\nSET\r\n$2\r\n\xc3\xa9\r\n$0\r\n\r\n"
    assert encode_command("INCRBY", "k", -3) == b"*3\r\n$6\r\nINCRBY\r\n$1\r\nk\r\n$2\r\n-3\r\n"


def test_encode_command_rejects_nothing_and_other_types() -> None:
    with pytest.raises(ValueError):
        encode_command()
    with pytest.raises(TypeError):
        encode_command("SET", "k", True)
    with pytest.raises(TypeError):
        encode_command("SET", "k", None)  # type: ignore[arg-type]


# every reply type


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"+OK\r\n", "OK"),
        (b"+\r\n", ""),
        (b":0\r\n", 0),
        (b":-42\r\n", -42),
        (b":9223372036854775807\r\n", 2**63 - 1),
        (b"$5\r\nhello\r\n", b"hello"),
        (b"$0\r\n\r\n", b""),
        (b"$4\r\na\r\nb\r\n", b"a\r\nb"),
        (b"$-1\r\n", None),
        (b"*-1\r\n", None),
        (b"*0\r\n", []),
        (b"*3\r\n:1\r\n$1\r\nx\r\n+y\r\n", [1, b"x", "y"]),
        (b"*2\r\n*2\r\n:1\r\n*0\r\n*1\r\n$-1\r\n", [[1, []], [None]]),
        (b"*3\r\n*-1\r\n$-1\r\n-ERR in array\r\n", [None, None, ("error", "ERR in array")]),
    ],
)
def test_reply_types(data: bytes, expected: Any) -> None:
    assert plain(parse_all(data)) == [expected]
    assert plain(parse_all(*(data[i : i + 1] for i in range(len(data))))) == [expected]


def test_error_reply_is_returned_not_raised() -> None:
    (reply,) = parse_all(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
    assert isinstance(reply, RespError)
    assert reply.message == "WRONGTYPE Operation against a key holding the wrong kind of value"
    assert reply.kind == "WRONGTYPE"
    assert str(reply) == reply.message


def test_need_more_until_complete() -> None:
    parser = RespParser()
    assert parser.next_reply() is NEED_MORE
    data = b"*2\r\n$3\r\nabc\r\n:7\r\n"
    for i, byte in enumerate(data):
        assert parser.next_reply() is NEED_MORE, i
        parser.feed(bytes([byte]))
    assert parser.next_reply() == [b"abc", 7]
    assert parser.next_reply() is NEED_MORE
    assert NeedMore() is NEED_MORE
    assert repr(NEED_MORE) == "NEED_MORE"


def test_several_replies_in_one_feed_and_across_feeds() -> None:
    data = b"+OK\r\n:1\r\n$-1\r\n*1\r\n$2\r\nab\r\n-ERR x\r\n$3\r\nxyz\r\n"
    expected = ["OK", 1, None, [b"ab"], ("error", "ERR x"), b"xyz"]
    assert plain(parse_all(data)) == expected
    for split in range(len(data) + 1):
        assert plain(parse_all(data[:split], data[split:])) == expected, split


def test_big_bulk_string_in_small_chunks() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, with CRs and LFs in it
    data = b"$%d\r\n" % len(body) + body + b"\r\n:1\r\n"
    chunks = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    assert parse_all(*chunks) == [body, 1]


def test_big_array_in_small_chunks() -> None:
    count = 20000
    data = b"*%d\r\n" % count + b"".join(b":%d\r\n" % i for i in range(count))
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]
    assert parse_all(*chunks) == [list(range(count))]


# malformed input


@pytest.mark.parametrize(
    "data",
    [
        b"?what\r\n",
        b"\r\n",
        b":12x\r\n",
        b":\r\n",
        b": 1\r\n",
        b":1_000\r\n",
        b":+1\r\n",
        b":99999999999999999999999\r\n",
        b"$abc\r\n",
        b"$-2\r\n",
        b"$%d\r\n" % (MAX_BULK_LENGTH + 1),
        b"*-2\r\n",
        b"*%d\r\n" % (MAX_ARRAY_LENGTH + 1),
        b"$3\r\nabcd\r\n",
        b"$3\r\nabc\n\r",
        b"+\xff\xfe\r\n",
        b"*2\r\n:1\r\n!\r\n",
    ],
)
def test_malformed_input_raises(data: bytes) -> None:
    parser = RespParser()
    parser.feed(data)
    with pytest.raises(RespProtocolError):
        parser.next_reply()


def test_limits_are_accepted_up_to_the_bound() -> None:
    parser = RespParser()
    parser.feed(b"$%d\r\n" % MAX_BULK_LENGTH)  # header only: waits for the body
    assert parser.next_reply() is NEED_MORE
    parser = RespParser()
    parser.feed(b"*%d\r\n" % MAX_ARRAY_LENGTH)
    assert parser.next_reply() is NEED_MORE


# property: anything encoded parses back, however it is split


def encode_value(value: Any) -> bytes:
    """A small RESP2 encoder for tests: None -> null bulk string, tuple ("error", msg) -> error."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, tuple):
        message: str = value[1]
        return b"-" + message.encode() + b"\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, str):
        return b"+" + value.encode() + b"\r\n"
    if isinstance(value, bytes):
        return b"$%d\r\n" % len(value) + value + b"\r\n"
    return b"*%d\r\n" % len(value) + b"".join(encode_value(item) for item in value)


line_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=20)
scalars = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.binary(max_size=40),
    line_text,
    st.tuples(st.just("error"), line_text),
)
values = st.recursive(scalars, lambda children: st.lists(children, max_size=5), max_leaves=30)


@given(replies=st.lists(values, min_size=1, max_size=4), data=st.data())
def test_encoded_values_parse_back_in_any_chunks(replies: list[Any], data: st.DataObject) -> None:
    stream = b"".join(encode_value(reply) for reply in replies)
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=10)))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[start:end] for start, end in pairwise(bounds)]
    assert plain(parse_all(*chunks)) == replies


# parse_redis_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost", RedisAddress("localhost", 6379, 0, None)),
        ("redis://localhost/", RedisAddress("localhost", 6379, 0, None)),
        ("redis://127.0.0.1:6380/3", RedisAddress("127.0.0.1", 6380, 3, None)),
        ("redis://:s3cret@redis.internal:7000/15", RedisAddress("redis.internal", 7000, 15, "s3cret")),
        ("redis://:p%40ss%3Aword@host/1", RedisAddress("host", 6379, 1, "p@ss:word")),
        ("redis://[::1]:6379/2", RedisAddress("::1", 6379, 2, None)),
    ],
)
def test_parse_redis_url(url: str, expected: RedisAddress) -> None:
    assert parse_redis_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("rediss://host:6379/0", "scheme 'rediss'"),
        ("unix:///run/redis.sock", "scheme 'unix'"),
        ("redis+unix:///run/redis.sock", "scheme"),
        ("http://host/", "scheme 'http'"),
        ("localhost:6379", "scheme"),
        ("redis://", "no host"),
        ("redis://:pw@/0", "no host"),
        ("redis://host:notaport/0", "port"),
        ("redis://host:70000/0", "port"),
        ("redis://host/abc", "database number"),
        ("redis://host/1/2", "database number"),
        ("redis://host/0?timeout=1", "query"),
        ("redis://user:pw@host/0", "user names"),
    ],
)
def test_parse_redis_url_rejects(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_redis_url(url)


def test_address_hides_the_password() -> None:
    address = parse_redis_url("redis://:hunter2@host:1/2")
    assert "hunter2" not in repr(address)
    assert "hunter2" not in str(address)
    assert str(address) == "redis://host:1/2"
    assert str(parse_redis_url("redis://[::1]/0")) == "redis://[::1]:6379/0"
