"""The cluster's Redis keys, in one place (every node and worker must agree on them).

    bitbasel:rooms             set of every room id the directory holds
    bitbasel:room:<room_id>    hash: room_id, post_id, host_user_id, created_at, record,
                               stopped_at, stop_reason ("" while active), node, worker (its owner;
                               node "" = released by a draining node, free to claim)
    bitbasel:post:<post_id>    the post's active room id
    bitbasel:nodes             set of node ids that have sent a heartbeat
    bitbasel:node:<node_id>    the node's latest heartbeat (JSON), expiring after node_ttl_seconds
    bitbasel:relay-secret      random bytes the first node wrote: the key of the nodes' relay proof

The scripts below build the post key from `PREFIX` themselves: one Redis server, not Redis
Cluster (whose scripts must name every key up front).
"""

from __future__ import annotations

PREFIX = "bitbasel:"
ROOMS = PREFIX + "rooms"
NODES = PREFIX + "nodes"
RELAY_SECRET = PREFIX + "relay-secret"


def room_key(room_id: str) -> str:
    return f"{PREFIX}room:{room_id}"


def post_key(post_id: str) -> str:
    return f"{PREFIX}post:{post_id}"


def node_key(node_id: str) -> str:
    return f"{PREFIX}node:{node_id}"
