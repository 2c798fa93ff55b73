"""The one error type raised by the ``*_untrusted`` parsers of this package."""

from __future__ import annotations


class MalformedPacket(ValueError):
    """Bytes from the network that are not a well-formed RTP/RTCP packet or VP8 descriptor."""
