"""The room directory on Redis (`[cluster] redis_url`): core/room_directory.py's interface for
one worker of one node, in the rows every node shares (cluster/keys.py).

Each row names its owner (node, worker). A worker writes only rows it owns, or new ones: a
script checks the owner and writes in one step, so a worker whose room was taken over by
another node (its node was thought dead, or drained) cannot overwrite the new owner's row.
`load` returns this worker's rows (what a restarted worker restores).
"""

from __future__ import annotations

import logging

from cluster.keys import PREFIX, ROOMS, post_key, room_key
from cluster.redis_client import RedisClient, RedisUnavailable
from cluster.resp import RespError, RespValue
from core.room_directory import RoomDirectoryError, RoomRow

log = logging.getLogger("bitbasel.rooms.redis")

# KEYS: room, rooms, post. ARGV: room_id, node, worker, post_id, host_user_id, created_at,
# record, stopped_at, stop_reason. 1 = written, 0 = the row belongs to another owner.
SAVE = """
local node = redis.call('HGET', KEYS[1], 'node')
if node and (node ~= ARGV[2] or redis.call('HGET', KEYS[1], 'worker') ~= ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'room_id', ARGV[1], 'node', ARGV[2], 'worker', ARGV[3], 'post_id', ARGV[4],
  'host_user_id', ARGV[5], 'created_at', ARGV[6], 'record', ARGV[7], 'stopped_at', ARGV[8], 'stop_reason', ARGV[9])
redis.call('SADD', KEYS[2], ARGV[1])
if ARGV[8] == '' then redis.call('SET', KEYS[3], ARGV[1]) end
return 1
"""

# KEYS: room. ARGV: room_id, node, worker, stopped_at, stop_reason, key prefix.
MARK_STOPPED = """
if redis.call('HGET', KEYS[1], 'node') ~= ARGV[2] or redis.call('HGET', KEYS[1], 'worker') ~= ARGV[3] then return 0 end
if redis.call('HGET', KEYS[1], 'stopped_at') ~= '' then return 1 end
redis.call('HSET', KEYS[1], 'stopped_at', ARGV[4], 'stop_reason', ARGV[5])
local post = ARGV[6] .. 'post:' .. redis.call('HGET', KEYS[1], 'post_id')
if redis.call('GET', post) == ARGV[1] then redis.call('DEL', post) end
return 1
"""

# KEYS: room, rooms. ARGV: room_id, node, worker, key prefix.
FORGET = """
if redis.call('HGET', KEYS[1], 'node') ~= ARGV[2] or redis.call('HGET', KEYS[1], 'worker') ~= ARGV[3] then return 0 end
local post = ARGV[4] .. 'post:' .. redis.call('HGET', KEYS[1], 'post_id')
if redis.call('GET', post) == ARGV[1] then redis.call('DEL', post) end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""


def text(value: RespValue) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)


def row_from_hash(fields: dict[str, str]) -> RoomRow:
    stopped_at = fields.get("stopped_at", "")
    return RoomRow(
        room_id=fields["room_id"],
        post_id=fields["post_id"],
        host_user_id=fields["host_user_id"],
        created_at=float(fields["created_at"]),
        record=fields.get("record") == "1",
        stopped_at=float(stopped_at) if stopped_at else None,
        stop_reason=fields.get("stop_reason") or None,
    )


def hash_fields(reply: RespValue) -> dict[str, str]:
    """HGETALL's flat [field, value, ...] as a dict ({} for a missing key)."""
    items = [text(item) for item in reply] if isinstance(reply, list) else []
    return dict(zip(items[::2], items[1::2], strict=True))


class RedisRoomDirectory:
    def __init__(self, redis: RedisClient, node_id: str, worker: int) -> None:
        self._redis = redis
        self._node = node_id
        self._worker = str(worker)

    async def _call(self, *args: str | int | float) -> RespValue:
        try:
            return await self._redis.command(*args)
        except (RedisUnavailable, RespError) as exc:
            raise RoomDirectoryError(f"redis: {exc}") from exc

    async def load(self) -> list[RoomRow]:
        ids = await self._call("SMEMBERS", ROOMS)
        if not isinstance(ids, list) or not ids:
            return []
        try:
            replies = await self._redis.pipeline(*[("HGETALL", room_key(text(room_id))) for room_id in ids])
        except RedisUnavailable as exc:
            raise RoomDirectoryError(f"redis: {exc}") from exc
        rows = []
        for reply in replies:
            fields = hash_fields(reply)
            if fields.get("node") == self._node and fields.get("worker") == self._worker:
                rows.append(row_from_hash(fields))
        return sorted(rows, key=lambda row: row.created_at)

    def _refused(self, written: RespValue, what: str, room_id: str) -> None:
        if written != 1:
            log.info("room %s: %s not written: another node or worker holds it now", room_id, what)

    async def save(self, row: RoomRow) -> None:
        written = await self._call(
            "EVAL", SAVE, 3, room_key(row.room_id), ROOMS, post_key(row.post_id),
            row.room_id, self._node, self._worker, row.post_id, row.host_user_id, repr(row.created_at),
            int(row.record), "" if row.stopped_at is None else repr(row.stopped_at), row.stop_reason or "",
        )  # fmt: skip
        self._refused(written, "save", row.room_id)

    async def mark_stopped(self, room_id: str, reason: str, at: float) -> None:
        written = await self._call(
            "EVAL", MARK_STOPPED, 1, room_key(room_id), room_id, self._node, self._worker, repr(at), reason, PREFIX
        )
        self._refused(written, "stop", room_id)

    async def forget(self, room_id: str) -> None:
        written = await self._call(
            "EVAL", FORGET, 2, room_key(room_id), ROOMS, room_id, self._node, self._worker, PREFIX
        )
        self._refused(written, "forget", room_id)

    async def aclose(self) -> None:
        await self._redis.aclose()
