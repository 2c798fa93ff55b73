"""The per-stream packet cache (media/packet_cache.py)."""

from __future__ import annotations

import pytest

from media.packet_cache import PacketCache


def test_store_get_and_overwrite() -> None:
    c: PacketCache[bytes] = PacketCache(8)
    c.store(1, b"a")
    assert c.get(1) == b"a"
    assert c.get(9) is None  # same slot, other seq
    c.store(9, b"b")
    assert c.get(1) is None
    assert c.get(9) == b"b"
    assert len(c) == 1


def test_wraparound() -> None:
    c: PacketCache[int] = PacketCache(512)
    for i in range(65000, 65536 + 300):
        c.store(i & 0xFFFF, i)
    assert c.get(65535) == 65535
    assert c.get(0) == 65536
    assert c.get(299) == 65536 + 299
    assert c.get((65536 + 300 - 512) & 0xFFFF) == 65536 + 300 - 512
    assert c.get((65536 + 300 - 513) & 0xFFFF) is None
    assert len(c) == 512


def test_clear_and_size() -> None:
    c: PacketCache[int] = PacketCache(4)
    c.store(3, 3)
    c.clear()
    assert c.get(3) is None
    assert c.size == 4
    with pytest.raises(ValueError):
        PacketCache(6)
