"""The media transport: the only server package that deals with ICE, DTLS and SRTP.

Server: :class:`~transport.media_port.MediaPort` (all media of the process on
one UDP port, ICE-lite, the receive path) and
:class:`~transport.peer_connection.PeerConnection` (one client's connection:
answer, DTLS-SRTP via :mod:`transport.dtls`, send and receive). No aiortc and
no asyncio on the server.

Clients (bots, tests, benchmarks) drive aiortc: every private aiortc/aioice
hook they need, and the contained trio-asyncio loop they run it on, are in the
client package (clients/python: ``media_server_client.aiortc_hooks``,
``media_server_client.containment``), which the server does not import.
"""

from transport.media_port import MediaPort
from transport.peer_connection import PeerConnection
from transport.settings import IceSettings, MediaSettings, TransportCounters

__all__ = [
    "IceSettings",
    "MediaPort",
    "MediaSettings",
    "PeerConnection",
    "TransportCounters",
]
