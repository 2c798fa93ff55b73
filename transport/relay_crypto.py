"""SRTP for a relay between nodes (issue 21): media between machines is never in the clear.

A relay between workers of one node stays on loopback in the clear (transport/relay_port.py),
as mediasoup's pipe transports do. A relay from a room's origin on one node to an edge on
another crosses the network, so both ends protect every datagram after the relay header:

- RTP with SRTP, RTCP with SRTCP (AES_CM_128_HMAC_SHA1_80, RFC 3711), as the host sent them;
- control messages (actors/relays.py) inside an RTCP APP packet (RFC 3550 6.7, name ``BBRL``)
  under SRTCP, so they are authenticated and cannot be replayed either.

Keys. Each relay has a *relay key* (KEY_BYTES) that neither node sends: each node's front
derives it from the cluster's secret (in Redis, as for relayed requests) and the relay's id,
which is the one thing that crosses between nodes (:func:`relay_key`). Each direction of each
pair of link numbers then has its own SRTP master key (:func:`session_key`), so when an origin
comes back with a new link number (its worker restarted) no key is ever used twice from
packet index zero.

Sans-IO: :class:`LinkCipher` seals and opens payloads; the port does the sockets.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Final

import pylibsrtp

from transport.srtp import new_session

KEY_BYTES: Final = 32
_MASTER_BYTES: Final = 30  # AES_CM_128_HMAC_SHA1_80: a 16-byte key and a 14-byte salt
_REPLAY_WINDOW: Final = 1024  # packets: a NACKed resend arrives well within it
_APP: Final = struct.Struct("!BBHI4sH")  # V=2, PT=204 (APP), length, SSRC, name, our length
_APP_NAME: Final = b"BBRL"
_PT_APP: Final = 204
KIND_RTP, KIND_RTCP, KIND_CONTROL = 0, 1, 2


class Unauthentic(Exception):
    """A datagram that does not open with the link's key (forged, replayed or garbled)."""


def relay_key(cluster_secret: bytes, relay_id: str) -> bytes:
    """The key of relay ``relay_id``, as both nodes' fronts derive it."""
    return hmac.new(cluster_secret, b"bitbasel relay key\x00" + relay_id.encode(), hashlib.sha256).digest()


def session_key(key: bytes, sender: int, receiver: int) -> bytes:
    """The SRTP master key and salt for datagrams from link ``sender`` to link ``receiver``."""
    label = b"bitbasel relay srtp\x00" + struct.pack("!II", sender, receiver)
    return hmac.new(key, label, hashlib.sha256).digest()[:_MASTER_BYTES]


def _policy(master: bytes, ssrc_type: int) -> pylibsrtp.Policy:
    policy = pylibsrtp.Policy(
        key=master, ssrc_type=ssrc_type, srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    )
    policy.window_size = _REPLAY_WINDOW
    policy.allow_repeat_tx = True  # a NACK is served with the packet as first sent
    return policy


class LinkCipher:
    """Both directions of one pair of links: ``own`` sends with one key, hears ``peer`` with
    the other. Not thread-safe: the port calls it under the media lock."""

    __slots__ = ("_inbound", "_outbound", "_own")

    def __init__(self, key: bytes, own: int, peer: int) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a relay key is {KEY_BYTES} bytes, not {len(key)}")
        self._own = own
        self._outbound = new_session(_policy(session_key(key, own, peer), pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        self._inbound = new_session(_policy(session_key(key, peer, own), pylibsrtp.Policy.SSRC_ANY_INBOUND))

    def seal(self, kind: int, data: bytes) -> bytes:
        if kind == KIND_RTP:
            return self._outbound.protect(data)
        if kind == KIND_CONTROL:
            data = _wrap_control(self._own, data)
        return self._outbound.protect_rtcp(data)

    def open(self, kind: int, data: bytes) -> bytes:
        """The plain payload; raises :class:`Unauthentic`."""
        try:
            if kind == KIND_RTP:
                return self._inbound.unprotect(data)
            plain = self._inbound.unprotect_rtcp(data)
        except pylibsrtp.Error as exc:
            raise Unauthentic(str(exc)) from exc
        return _unwrap_control(plain) if kind == KIND_CONTROL else plain


def _wrap_control(ssrc: int, data: bytes) -> bytes:
    padding = -(_APP.size + len(data)) % 4
    length_words = (_APP.size + len(data) + padding) // 4 - 1
    return _APP.pack(0x80, _PT_APP, length_words, ssrc, _APP_NAME, len(data)) + data + bytes(padding)


def _unwrap_control(packet: bytes) -> bytes:
    if len(packet) < _APP.size:
        raise Unauthentic("a control packet shorter than its header")
    _first, packet_type, _words, _ssrc, name, length = _APP.unpack_from(packet)
    if packet_type != _PT_APP or name != _APP_NAME or _APP.size + length > len(packet):
        raise Unauthentic("not a relay control packet")
    return packet[_APP.size : _APP.size + length]
