"""Room and peer ids: random (not sequential), never reused within a process."""

from __future__ import annotations

import secrets


class RoomIdAllocator:
    """Draws `room_<digits>` ids at random and never hands out the same one twice.

    The set of ids ever issued is kept for the life of the process, so a token
    minted for a stopped and forgotten room can never open a new one.
    """

    DIGITS = 12

    def __init__(self) -> None:
        self._issued: set[str] = set()

    def reserve(self, room_id: str) -> None:
        """An id issued before (by this server before a restart): never hand it out again."""
        self._issued.add(room_id)

    def new(self) -> str:
        while True:
            candidate = f"room_{secrets.randbelow(10**self.DIGITS):0{self.DIGITS}d}"
            if candidate not in self._issued:
                self._issued.add(candidate)
                return candidate


def new_peer_id() -> str:
    return f"peer_{secrets.token_hex(6)}"
