"""A bounded cache of one source stream's recent RTP packets, by sequence number.

Each packet is stored once (the parsed header and the original bytes) and
shared by all viewers; a viewer's NACK maps its sequence number back to the
host's and re-rewrites the cached packet for that viewer. Slots are indexed by
``seq % size`` and remember their sequence number, so 16-bit wraparound needs
no special handling and a stale slot is never returned for another seq.
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["PacketCache"]

T = TypeVar("T")


class PacketCache(Generic[T]):
    __slots__ = ("_items", "_mask", "_seqs")

    def __init__(self, size: int = 512) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError("size must be a power of two")
        self._mask = size - 1
        self._seqs: list[int] = [-1] * size
        self._items: list[T | None] = [None] * size

    @property
    def size(self) -> int:
        return self._mask + 1

    def store(self, seq: int, item: T) -> None:
        i = seq & self._mask
        self._seqs[i] = seq & 0xFFFF
        self._items[i] = item

    def get(self, seq: int) -> T | None:
        i = seq & self._mask
        if self._seqs[i] != seq & 0xFFFF:
            return None
        return self._items[i]

    def clear(self) -> None:
        n = self._mask + 1
        self._seqs = [-1] * n
        self._items = [None] * n

    def __len__(self) -> int:
        return sum(1 for s in self._seqs if s >= 0)
