"""The media transport: the only server package that deals with ICE, DTLS and SRTP.

:class:`~transport.media_port.MediaPort` (all media of the process on one UDP
port, ICE-lite, the receive path) and
:class:`~transport.peer_connection.PeerConnection` (one client's connection:
answer, DTLS-SRTP via :mod:`transport.dtls` and :mod:`transport.srtp`, send
and receive), with their settings and counters (:mod:`transport.settings`).
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
