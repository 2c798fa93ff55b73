"""A node's view of the cluster in Redis (cluster/keys.py): its heartbeat, the live nodes,
where each room lives, and the atomic moves of a room between nodes.

Used by the node's front (front/app.py); the rooms' rows themselves are written by the workers
(cluster/redis_directory.py).
"""

from __future__ import annotations

import logging
import secrets

import msgspec

from cluster.keys import NODES, RELAY_SECRET, ROOMS, node_key, post_key, room_key
from cluster.redis_client import RedisClient
from cluster.redis_directory import hash_fields, row_from_hash, text
from cluster.resp import RespError
from core.room_directory import RoomRow

log = logging.getLogger("bitbasel.cluster")

# KEYS: room. ARGV: expected owner node, new node, new worker, node key prefix. 1 = claimed.
# Never from a node whose heartbeat is still there (it may be slow, not dead).
CLAIM = """
if redis.call('HGET', KEYS[1], 'node') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'stopped_at') ~= '' then return 0 end
if ARGV[1] ~= '' and ARGV[1] ~= ARGV[2] and ARGV[2] ~= '' and redis.call('EXISTS', ARGV[4] .. ARGV[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'node', ARGV[2], 'worker', ARGV[3])
return 1
"""

# KEYS: rooms. ARGV: node, key prefix of a room. Every active room of the node is released
# (node "" = free for the next node a client reaches). Returns how many.
RELEASE = """
local released = 0
for _, room_id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[2] .. room_id
  if redis.call('HGET', key, 'node') == ARGV[1] and redis.call('HGET', key, 'stopped_at') == '' then
    redis.call('HSET', key, 'node', '')
    released = released + 1
  end
end
return released
"""


class WorkerLoad(msgspec.Struct, frozen=True):
    index: int
    pid: int
    restarts: int
    rooms: int
    sessions: int


class NodeInfo(msgspec.Struct, frozen=True):
    """A node's heartbeat: who it is, where to reach it, how loaded it is."""

    node_id: str
    url: str  # base URL of its front: REST and /ws, for the other nodes and for clients
    draining: bool
    rooms: int
    sessions: int
    workers: list[WorkerLoad]
    at: float  # unix seconds

    @property
    def load(self) -> tuple[int, int]:
        return (self.sessions, self.rooms)


class RoomPlace(msgspec.Struct, frozen=True):
    row: RoomRow
    node: str  # "" = released (its node drained)
    worker: int


class ClusterRegistry:
    def __init__(self, redis: RedisClient, node_id: str, *, ttl_seconds: float) -> None:
        self.redis = redis
        self.node_id = node_id
        self.ttl_ms = int(ttl_seconds * 1000)

    async def relay_secret(self) -> bytes:
        """The key every node signs its relayed requests with: made by the first node to ask,
        kept in Redis (clients never see it; nodes may reach Redis at different addresses)."""
        await self.redis.command("SET", RELAY_SECRET, secrets.token_hex(32), "NX")
        secret = await self.redis.command("GET", RELAY_SECRET)
        if not isinstance(secret, bytes):
            raise RespError(f"ERR {RELAY_SECRET} could not be read")
        return secret

    async def heartbeat(self, info: NodeInfo) -> None:
        replies = await self.redis.pipeline(
            ("SET", node_key(self.node_id), msgspec.json.encode(info), "PX", self.ttl_ms),
            ("SADD", NODES, self.node_id),
        )
        for reply in replies:
            if isinstance(reply, RespError):
                raise reply

    async def leave(self) -> None:
        await self.redis.pipeline(("DEL", node_key(self.node_id)), ("SREM", NODES, self.node_id))

    async def live_nodes(self) -> dict[str, NodeInfo]:
        """Every node whose heartbeat has not expired (this one included)."""
        ids = await self.redis.command("SMEMBERS", NODES)
        if not isinstance(ids, list) or not ids:
            return {}
        names = [text(node_id) for node_id in ids]
        beats = await self.redis.command("MGET", *[node_key(name) for name in names])
        nodes = {}
        for name, beat in zip(names, beats if isinstance(beats, list) else [], strict=False):
            if not isinstance(beat, bytes):
                continue  # expired (the name stays: node ids are few and stable)
            try:
                nodes[name] = msgspec.json.decode(beat, type=NodeInfo)
            except msgspec.MsgspecError:
                log.warning("cluster: node %s sent a heartbeat this node cannot read (another version?)", name)
        return nodes

    async def is_live(self, node_id: str) -> bool:
        return bool(node_id) and await self.redis.command("EXISTS", node_key(node_id)) == 1

    async def room(self, room_id: str) -> RoomPlace | None:
        fields = hash_fields(await self.redis.command("HGETALL", room_key(room_id)))
        if not fields:
            return None
        return RoomPlace(row_from_hash(fields), fields.get("node", ""), int(fields.get("worker") or 0))

    async def active_room_of_post(self, post_id: str) -> str | None:
        room_id = await self.redis.command("GET", post_key(post_id))
        return text(room_id) if room_id is not None else None

    async def claim(self, room_id: str, *, owner: str, worker: int, to_node: str | None = None) -> bool:
        """Move an active room from `owner` (a dead node, or "" = released) to this node's `worker`
        (or to `to_node`: "" releases it), if `owner` still holds it."""
        node = self.node_id if to_node is None else to_node
        claimed = await self.redis.command("EVAL", CLAIM, 1, room_key(room_id), owner, node, worker, node_key(""))
        return claimed == 1

    async def release_rooms(self) -> int:
        """This node is draining: its active rooms are free for the node a client reaches next."""
        released = await self.redis.command("EVAL", RELEASE, 1, ROOMS, self.node_id, room_key(""))
        return released if isinstance(released, int) else 0
