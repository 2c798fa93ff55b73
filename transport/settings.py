"""Settings and counters of the transport."""

from __future__ import annotations

import msgspec


class IceSettings(msgspec.Struct, frozen=True):
    """What a connection's ICE-lite session needs of the ``[ice]`` config section.

    ``consent_timeout_seconds``: a connected peer from which no datagram at all
    arrives for this long has lost consent (RFC 7675); the connection then
    reports ``failed``. (The addresses the port binds and announces are the
    :class:`~transport.media_port.MediaPort`'s.)
    """

    consent_timeout_seconds: float = 30.0


class MediaSettings(msgspec.Struct, frozen=True):
    """What the host is asked for in the answer (``[video]`` / ``[audio]``)."""

    video_bitrate_kbps: int
    max_framerate: int
    audio_bitrate_kbps: int
    video_codecs: tuple[str, ...] = ("VP8",)  # a host's, in the server's preference ([video] codecs)


#: The TransportCounters that count something going wrong, by name.
TRANSPORT_PROBLEMS = ("rtp_dropped", "rtcp_dropped", "srtp_errors", "callback_errors")


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
    ``on_state`` callbacks (logged and swallowed: a callback's bug never ends
    the connection or the media thread).
    ``srtp_errors``: datagrams from the peer's address that did not unprotect
    (dropped).
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
        self.srtp_errors = 0

    def problems(self) -> dict[str, int]:
        """The counters of what went wrong (``GET /metrics``: bitbasel_transport_problems)."""
        return {name: getattr(self, name) for name in TRANSPORT_PROBLEMS}

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)}" for name in self.__slots__)
        return f"TransportCounters({fields})"
