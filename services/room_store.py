"""The supervisor's writes to the room directory (core/room_directory.py), in order, off
the supervisor's handlers.

The supervisor's handlers are synchronous, so they only queue what changed (`saved`,
`stopped`, `forgotten`); `run` applies each change in order, one at a time. A write that
fails is logged and counted; the room itself carries on (it would only be missing after a
restart). `flush` waits until everything queued is written.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from functools import partial

import trio

from core.room_directory import RoomDirectory, RoomDirectoryError, RoomRow

log = logging.getLogger("bitbasel.rooms.store")


class RoomStore:
    def __init__(self, directory: RoomDirectory) -> None:
        self.directory = directory
        self._send, self._receive = trio.open_memory_channel[Callable[[], Awaitable[None]]](math.inf)
        self._queued = 0
        self._idle = trio.Event()
        self._idle.set()
        self.failures = 0

    def saved(self, row: RoomRow) -> None:
        self._queue(partial(self.directory.save, row))

    def stopped(self, room_id: str, reason: str, at: float) -> None:
        self._queue(partial(self.directory.mark_stopped, room_id, reason, at))

    def forgotten(self, room_id: str) -> None:
        self._queue(partial(self.directory.forget, room_id))

    def _queue(self, write: Callable[[], Awaitable[None]]) -> None:
        self._queued += 1
        if self._idle.is_set():
            self._idle = trio.Event()
        self._send.send_nowait(write)

    async def flush(self) -> None:
        await self._idle.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for write in self._receive:
            try:
                await write()
            except RoomDirectoryError:
                self.failures += 1
                log.exception("room directory: a write failed (the room carries on; a restart would miss it)")
            self._queued -= 1
            if not self._queued:
                self._idle.set()
