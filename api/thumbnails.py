"""`GET /room/{room_id}/thumbnail.jpg`: the host's latest keyframe as a JPEG, for the feed.

Nothing is decoded while nobody asks: a request takes the newest whole keyframe from the
room's packet cache (actors.supervisor, `Router.latest_keyframe`), decodes it once in a
worker thread (media/thumbnail.py) and keeps the JPEG for `CACHE_SECONDS`; requests for
the same room meanwhile share it (one decode at a time per room). With no keyframe in the
cache a keyframe is asked of the host and the request waits up to `WAIT_SECONDS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from actors.supervisor import SupervisorClient
from api.responses import ApiError
from media.thumbnail import ThumbnailError, keyframe_to_jpeg

CACHE_SECONDS = 3.0
WAIT_SECONDS = 2.5
POLL_SECONDS = 0.1
MAX_CACHED_ROOMS = 1000


@dataclass
class Thumbnail:
    jpeg: bytes
    width: int
    height: int
    made_at: float  # trio clock


@dataclass
class Thumbnails:
    supervisor: SupervisorClient
    decodes: int = 0  # keyframes decoded (how often the cache missed)
    _cached: dict[str, Thumbnail] = field(default_factory=dict)
    _locks: dict[str, trio.Lock] = field(default_factory=dict)

    async def jpeg(self, room_id: str) -> Thumbnail:
        lock = self._locks.setdefault(room_id, trio.Lock())
        try:
            async with lock:  # a second request waits for the first one's decode, then shares it
                return await self._cached_or_new(room_id)
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._locks.pop(room_id, None)

    async def _cached_or_new(self, room_id: str) -> Thumbnail:
        cached = self._cached.get(room_id)
        if cached is not None and trio.current_time() - cached.made_at < CACHE_SECONDS:
            return cached
        frame = await self._keyframe(room_id)
        try:
            jpeg, width, height = await trio.to_thread.run_sync(keyframe_to_jpeg, frame)
        except ThumbnailError as exc:
            raise ApiError("not_found", f"room {room_id}: no picture yet ({exc})") from exc
        self.decodes += 1
        if len(self._cached) >= MAX_CACHED_ROOMS:
            self._cached.pop(next(iter(self._cached)))
        thumbnail = self._cached[room_id] = Thumbnail(jpeg, width, height, trio.current_time())
        return thumbnail

    async def _keyframe(self, room_id: str) -> bytes:
        with trio.move_on_after(WAIT_SECONDS):
            while True:
                frame = await self.supervisor.keyframe(room_id)  # RoomNotFound: 404
                if frame is not None:
                    return frame
                await trio.sleep(POLL_SECONDS)  # a keyframe was asked of the host
        raise ApiError("not_found", f"room {room_id}: no video from the host yet")
