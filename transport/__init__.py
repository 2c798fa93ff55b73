"""The aiortc adapter: the only server package that touches aiortc.

Public API: :class:`PublisherConnection`, :class:`ViewerConnection`,
:class:`IceSettings`, :class:`MediaSettings`, :class:`TransportCounters`.
Every private aiortc/aioice hook lives in :mod:`transport.aiortc_adapter`.
"""

from transport.connections import IdleTrack, PublisherConnection, ViewerConnection
from transport.settings import IceSettings, MediaSettings, TransportCounters

__all__ = [
    "IceSettings",
    "IdleTrack",
    "MediaSettings",
    "PublisherConnection",
    "TransportCounters",
    "ViewerConnection",
]
