"""libsrtp sessions with room for any datagram the media port accepts.

pylibsrtp 1.0's ``Session`` copies each packet into a buffer of 1,500 bytes and
refuses a packet longer than that buffer less the longest trailer it reserves
(``protect``: 144 bytes, a 16-byte tag and a 128-byte MKI, though WebRTC's
profiles add 10 or 16). So RTP of more than 1,356 bytes could not be protected
(``ValueError``): GStreamer's ``rtpvp8pay`` fills packets to 1,400 bytes by
default, and none of them reached a viewer. :func:`new_session` gives the
session a buffer of :data:`BUFFER_BYTES` instead, which holds any datagram of up
to :data:`MAX_MEDIA_DATAGRAM` bytes plus the largest trailer; a longer SRTP
datagram is malformed (counted, never unprotected).

That is a private hook of pylibsrtp (there is no public way to size the
buffer): it is listed in :data:`HOOKS`, and ``tests/test_srtp_hooks.py``
fails loudly if an upgrade moves it.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import pylibsrtp

__all__ = ["BUFFER_BYTES", "HOOKS", "MAX_MEDIA_DATAGRAM", "Hook", "new_session"]

#: The longest SRTP/SRTCP datagram accepted or sent: a 1,500-byte path MTU (RTP a host may
#: legally send; a longer one is dropped as malformed).
MAX_MEDIA_DATAGRAM: Final = 1500
#: A 1,500-byte datagram plus the 144 bytes of trailer pylibsrtp reserves, rounded up.
BUFFER_BYTES: Final = 2048


class Hook(NamedTuple):
    owner: str
    attribute: str
    why: str


HOOKS: Final = (
    Hook("pylibsrtp", "ffi", "allocates the bigger buffer (pylibsrtp's own cffi FFI, re-exported by the package)"),
    Hook("pylibsrtp.Session", "_cdata", "the C buffer every protect/unprotect copies the packet into"),
    Hook("pylibsrtp.Session", "_buffer", "the Python view of _cdata the result is read from"),
)


def new_session(policy: pylibsrtp.Policy) -> pylibsrtp.Session:
    """A ``pylibsrtp.Session`` for ``policy`` whose packets may be up to BUFFER_BYTES less
    the trailer it reserves."""
    session = pylibsrtp.Session(policy)
    ffi = pylibsrtp.ffi  # type: ignore[attr-defined]
    cdata = ffi.new("char[]", BUFFER_BYTES)
    session._cdata = cdata
    session._buffer = ffi.buffer(cdata)
    return session
