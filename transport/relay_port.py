"""Media between the workers of one node: a room's relay links (issue 21).

A room whose viewers sit on several workers of a node has its host on one (the *origin*); each
other worker that has viewers of it (an *edge*) gets the host's RTP and RTCP from the origin,
unchanged and once, and sends back its keyframe requests and NACKs (media/router.py's relays).
Between processes of one machine that goes over loopback UDP in the clear, as mediasoup's pipe
transports do; between machines (a link opened with a relay key) every payload is SRTP/SRTCP
(transport/relay_crypto.py), and a link without a key hears loopback addresses only.

One socket per worker (on loopback, or on every address for a node of a cluster), read by a
media thread of the worker's media port (its lock held while a datagram is handled, as for
every datagram of the port). Each relay is a
*link* at both ends, each end with a number of its own; every datagram starts with a 12-byte
header naming both links and what follows::

    0xB5 | kind (0 RTP, 1 RTCP, 2 control) | 0x0000 | receiving link (32 bits) | sending link (32 bits)

A datagram for a link this port does not have, or from another address or link than the
link's peer, is dropped and counted: a link hears only the peer it was connected to. An edge's
link learns its peer from the first datagram naming it (``learn_peer``: the origin's, which
the front set up knowing the edge's number, a random 32-bit one), as mediasoup's comedia, and
takes a new one once the last has been silent RELEARN_AFTER_SECONDS (an origin whose worker
restarted comes back from another port). A keyed link learns only from a datagram that opens
with the keys of the new pair of links.
"""

from __future__ import annotations

import secrets
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, Final

import pylibsrtp

from transport.media_port import Address, MediaPort, bind_udp
from transport.relay_crypto import KIND_CONTROL, KIND_RTCP, KIND_RTP, LinkCipher, Unauthentic

__all__ = ["HEADER_SIZE", "KIND_CONTROL", "KIND_RTCP", "KIND_RTP", "MAGIC", "RelayLink", "RelayPort", "RelayStatistics"]

MAGIC: Final = 0xB5
_HEADER: Final = struct.Struct("!BBHII")
HEADER_SIZE: Final = _HEADER.size

Receiver = Callable[[bytes], None]
#: A learning link takes a new peer once its peer has been silent this long.
RELEARN_AFTER_SECONDS: Final = 1.0
#: A keyed link keeps the ciphers of this many peer numbers (an origin restarting comes back
#: with a new one each time).
MAX_PEER_CIPHERS: Final = 8


class RelayStatistics:
    """Counts of the relay port (``bitbasel_relay_datagrams`` in /metrics)."""

    __slots__ = (
        "datagrams_received",
        "datagrams_sent",
        "malformed",
        "send_errors",
        "unauthentic",
        "unknown_link",
        "wrong_peer",
    )

    def __init__(self) -> None:
        self.datagrams_received = 0
        self.datagrams_sent = 0
        self.malformed = 0  # too short, or not our header
        self.unknown_link = 0  # a link closed (or never opened) here
        self.wrong_peer = 0  # from another address than the link's peer, or before it was connected
        self.unauthentic = 0  # a keyed link's datagram that did not open with its key
        self.send_errors = 0


class RelayLink:
    """One end of a relay: what arrives goes to ``on_rtp`` / ``on_rtcp`` / ``on_control``
    (called under the media lock, in a media thread); ``send_*`` reach the other end once
    :meth:`RelayPort.connect` has named it (before, they send nothing)."""

    __slots__ = (
        "_port",
        "cipher",
        "ciphers",
        "key",
        "last_heard",
        "learn_peer",
        "number",
        "on_control",
        "on_rtcp",
        "on_rtp",
        "peer",
        "peer_number",
    )

    def __init__(
        self,
        port: RelayPort,
        number: int,
        on_rtp: Receiver,
        on_rtcp: Receiver,
        on_control: Receiver,
        learn_peer: bool,
        key: bytes | None,
    ) -> None:
        self._port = port
        self.number = number
        self.key = key  # a relay between nodes: SRTP with keys of this one (relay_crypto)
        self.cipher: LinkCipher | None = None  # a keyed link's, once its peer's number is known
        # every authentic peer number's cipher, kept for the link's life: a peer heard before
        # keeps its replay window and its send index (a replay never opens, no key is reused)
        self.ciphers: dict[int, LinkCipher] = {}
        self.learn_peer = learn_peer  # takes its peer from the datagrams naming it (an edge's)
        self.on_rtp = on_rtp
        self.on_rtcp = on_rtcp
        self.on_control = on_control
        self.peer: Address | None = None
        self.peer_number = 0
        self.last_heard = float("-inf")  # time.monotonic() of the last datagram from the peer

    def send_rtp(self, data: bytes) -> None:
        self._port.send(self, KIND_RTP, data)

    def send_rtcp(self, data: bytes) -> None:
        self._port.send(self, KIND_RTCP, data)

    def send_control(self, data: bytes) -> None:
        self._port.send(self, KIND_CONTROL, data)

    def close(self) -> None:
        self._port.close(self)


class RelayPort:
    """The worker's relay socket and its links."""

    def __init__(self, media_port: MediaPort, host: str = "127.0.0.1", announced_host: str = "") -> None:
        self._media_port = media_port
        self._sock = bind_udp(host, 0)
        media_port.add_socket(self._sock, self._handle)
        port = self._sock.getsockname()[1]
        #: where the workers of this node send (loopback), and the other nodes (``announced_host``)
        self.address: Address = ("127.0.0.1", port)
        self.public_address: Address = (announced_host or "127.0.0.1", port)
        self.statistics = RelayStatistics()
        self._links: dict[int, RelayLink] = {}

    @property
    def lock(self) -> Any:
        return self._media_port.lock

    def call_in_trio(self, function: Any, *args: Any) -> None:
        """Run ``function(*args)`` on Trio's thread (from a link's callback: soon)."""
        self._media_port.call_in_trio(function, *args)

    def open(
        self,
        on_rtp: Receiver,
        on_rtcp: Receiver,
        on_control: Receiver,
        *,
        learn_peer: bool = False,
        key: bytes | None = None,
    ) -> RelayLink:
        """A new link (a number never used here: random, so a stale peer cannot hit a new
        link); it hears nothing until connected, or with ``learn_peer`` until a first datagram
        names it (that datagram's source is its peer from then on). With ``key`` (a relay
        between nodes) its datagrams are SRTP; without, it hears loopback addresses only."""
        with self.lock:
            number = secrets.randbits(32) or 1
            while number in self._links:
                number = secrets.randbits(32) or 1
            link = RelayLink(self, number, on_rtp, on_rtcp, on_control, learn_peer, key)
            self._links[number] = link
            return link

    def connect(self, link: RelayLink, peer: Address, peer_number: int) -> None:
        """Name the link's other end: its address and its number there."""
        with self.lock:
            link.peer = (peer[0], int(peer[1]))
            link.peer_number = peer_number
            link.cipher = self._cipher(link, peer_number) if link.key is not None else None
            if link.cipher is not None:
                link.ciphers[peer_number] = link.cipher

    def close(self, link: RelayLink) -> None:
        with self.lock:
            if self._links.get(link.number) is link:
                del self._links[link.number]
            link.peer = None

    @staticmethod
    def _cipher(link: RelayLink, peer_number: int) -> LinkCipher:
        """The link's cipher for ``peer_number``: the one it had, else a new one."""
        assert link.key is not None
        return link.ciphers.get(peer_number) or LinkCipher(link.key, link.number, peer_number)

    def send(self, link: RelayLink, kind: int, data: bytes) -> None:
        """Never blocks (a full buffer drops, counted): from the media thread or Trio's."""
        peer = link.peer
        if peer is None:
            return
        if link.key is not None:
            with self.lock:  # libsrtp's sessions are not thread-safe (re-entered from the media thread)
                cipher = link.cipher
                if cipher is None:
                    return
                try:
                    data = cipher.seal(kind, data)
                except (pylibsrtp.Error, ValueError):  # libsrtp refused (too old to resend?): this one only
                    self.statistics.send_errors += 1
                    return
        try:
            header = _HEADER.pack(MAGIC, kind, 0, link.peer_number, link.number)
            self._sock.sendto(header + data, socket.MSG_DONTWAIT, peer)
        except OSError:
            self.statistics.send_errors += 1
            return
        self.statistics.datagrams_sent += 1

    def _handle(self, sock: socket.socket, data: bytes, address: Any) -> bool:
        """One datagram, under the media lock. True for RTP (its forwarding delay counted)."""
        statistics = self.statistics
        statistics.datagrams_received += 1
        if len(data) <= HEADER_SIZE or data[0] != MAGIC:
            statistics.malformed += 1
            return False
        _magic, kind, _reserved, number, sender = _HEADER.unpack_from(data)
        link = self._links.get(number)
        if link is None:
            statistics.unknown_link += 1
            return False
        now = time.monotonic()
        payload = data[HEADER_SIZE:]
        cipher = link.cipher
        if link.peer != address[:2] or link.peer_number != sender:
            # a learning link's first peer, or a new one once the last went silent
            if not link.learn_peer or (link.peer is not None and now - link.last_heard < RELEARN_AFTER_SECONDS):
                statistics.wrong_peer += 1
                return False
            if link.key is None and not _is_loopback(address[0]):
                statistics.wrong_peer += 1
                return False
            cipher = self._cipher(link, sender) if link.key is not None else None
            try:
                payload = cipher.open(kind, payload) if cipher is not None else payload
            except Unauthentic:
                statistics.unauthentic += 1
                return False
            link.peer, link.peer_number, link.cipher = address[:2], sender, cipher
            if cipher is not None and sender not in link.ciphers:
                if len(link.ciphers) >= MAX_PEER_CIPHERS:  # the oldest peer's goes
                    del link.ciphers[next(iter(link.ciphers))]
                link.ciphers[sender] = cipher
        elif cipher is not None:
            try:
                payload = cipher.open(kind, payload)
            except Unauthentic:
                statistics.unauthentic += 1
                return False
        link.last_heard = now
        if kind == KIND_RTP:
            link.on_rtp(payload)
            return True
        if kind == KIND_RTCP:
            link.on_rtcp(payload)
        elif kind == KIND_CONTROL:
            link.on_control(payload)
        else:
            statistics.malformed += 1
        return False


def _is_loopback(host: str) -> bool:
    return host.startswith("127.") or host == "::1"
