"""Python client for the BitBasel Media Server.

REST (for the FastAPI backend; httpx, works under asyncio and Trio alike):

    from media_server_client import get_media_server_client
    media_client = get_media_server_client()          # MEDIA_SERVER_URL, MEDIA_SERVER_API_KEY
    room_id = await media_client.create_room(str(post_id), str(user_id))
    await media_client.stop_room(room_id)
    stats = await media_client.get_room_stats(room_id)

Webhook receivers check each delivery with `verify_webhook(body, header, secret)`.
This module and those it imports need httpx alone (`pip install bitbasel-media-client`).

With the `bots` extra (`pip install "bitbasel-media-client[bots]"`: trio, trio-websocket,
trio-asyncio, msgspec, aiortc): `media_server_client.messages` (the signaling messages of
PROTOCOL.md), `.signaling` (a session over trio-websocket), `.bots` (host and viewer bots,
real aiortc peers), `.sources` (test tracks), `.aiortc_hooks` and `.containment`. They are
not imported here, so the REST client stays light.
"""

from media_server_client.errors import (
    BadRequestError,
    CapacityError,
    MediaServerError,
    RoomNotFoundError,
    UnauthorizedError,
)
from media_server_client.rest import (
    CreatedRoom,
    JoinToken,
    MediaServerClient,
    Peer,
    RoomStats,
    ServerStats,
    get_media_server_client,
)
from media_server_client.webhooks import WebhookSignatureError, verify_webhook

__all__ = [
    "BadRequestError",
    "CapacityError",
    "CreatedRoom",
    "JoinToken",
    "MediaServerClient",
    "MediaServerError",
    "Peer",
    "RoomNotFoundError",
    "RoomStats",
    "ServerStats",
    "UnauthorizedError",
    "WebhookSignatureError",
    "get_media_server_client",
    "verify_webhook",
]
