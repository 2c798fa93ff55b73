"""Python client for the BitBasel Media Server.

REST (for the FastAPI backend; httpx, works under asyncio and Trio alike):

    from media_server_client import get_media_server_client
    media_client = get_media_server_client()          # MEDIA_SERVER_URL, MEDIA_SERVER_API_KEY
    room_id = await media_client.create_room(str(post_id), str(user_id))
    await media_client.stop_room(room_id)
    stats = await media_client.get_room_stats(room_id)

The signaling SDK (host and viewer bots on trio-websocket + aiortc) is in
`media_server_client.sdk`; it is not imported here so the REST client stays light.
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
