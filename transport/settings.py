"""Settings and counters of the transport (no aiortc import here)."""

from __future__ import annotations

import msgspec


class IceSettings(msgspec.Struct, frozen=True):
    """The ``[ice]`` config section.

    ``host_addresses``: addresses to gather host candidates on; ``[]`` = every
    interface, as aioice does (which skips 127.0.0.1). ``announced_address``:
    non-empty = put this address in the answer's host candidates (1:1 NAT),
    ports kept. ``stun_servers``: ``"stun:host:port"`` URLs; ``[]`` = no STUN
    server is ever contacted. ``consent_timeout_seconds``: a connected peer
    from which no datagram at all arrives for this long has lost consent
    (RFC 7675); the connection then reports ``failed``.
    """

    host_addresses: list[str]
    announced_address: str
    stun_servers: list[str]
    consent_timeout_seconds: float = 30.0


class MediaSettings(msgspec.Struct, frozen=True):
    """What the host is asked for in the answer (``[video]`` / ``[audio]``)."""

    video_bitrate_kbps: int
    max_framerate: int
    audio_bitrate_kbps: int


class TransportCounters:
    """Counters of one room: one instance per room (``RoomRecord.counters`` in
    actors/room.py, kept across restarts of the room actor), shared by the
    connections of that room's peers, its host's and every viewer's. The
    server's totals (``GET /stats``) add them up over the rooms
    (actors/supervisor.py). A connection made alone (tests, bench) gets its own.

    ``bytes_sent``: SRTP + SRTCP datagram bytes sent to the viewers.
    ``bytes_received``: SRTP + SRTCP datagram bytes received from the host (as
    they arrive, before unprotect).
    The ``*_dropped`` counters count packets handed to ``send_rtp`` /
    ``send_rtcp`` that were not sent (not connected yet, closed, or SRTP
    protect refused them).
    ``callback_errors``: exceptions raised by ``on_rtp`` / ``on_rtcp`` /
    ``on_state`` callbacks (logged and swallowed so aiortc's receive loop
    survives).
    """

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "callback_errors",
        "rtcp_dropped",
        "rtp_dropped",
        "srtp_errors",
    )

    def __init__(self) -> None:
        self.bytes_sent = 0
        self.bytes_received = 0
        self.rtp_dropped = 0
        self.rtcp_dropped = 0
        self.callback_errors = 0
        self.srtp_errors = 0  # datagrams from the peer's address that did not unprotect (dropped)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)}" for name in self.__slots__)
        return f"TransportCounters({fields})"
