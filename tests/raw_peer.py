"""A WebRTC peer made of raw parts, for probing the server from outside as an attacker would.

aiortc cannot send a crafted NACK, forge a check's source address or replay a datagram, so
the security tests use this instead: a plain UDP socket on loopback, STUN checks built with
aioice's ``stun`` module, DTLS-SRTP from the project's sans-IO :class:`DtlsSession` (the
server is the DTLS client, as it is for any ``actpass`` offer), and a hand-written recvonly
offer (Opus + VP8, one BUNDLE group). It answers the server's own STUN requests (the proof
of its address and consent) unless told not to.

A host may also offer what a browser's simulcast offer has (``simulcast_rids``: ``a=rid:<rid>
send`` lines, ``a=simulcast:send``, the RID header extension), either role the MID header
extension (``mid_extension``), and a peer may hand the RTP and RTCP it receives, unprotected,
to ``on_rtp`` and ``on_rtcp``: enough for ``bench/simulcast.py``'s hosts (which packetize their
layers themselves) and its lean viewers.

Forged sources: :class:`Forger` writes an IPv4 + UDP header itself on a raw socket
(IP_HDRINCL), which the suite's private network namespace allows (we are root in it).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import pylibsrtp
import trio
from aioice import stun

from media.ice_lite import IceCredentials
from media.rtp import MID_URI, RID_URI, parse_rtp_untrusted
from media_server_client.messages import Answer, Offer
from media_server_client.signaling import SessionClosed, SignalingSession, connect_signaling
from transport.dtls import DtlsCertificate, DtlsSession

Address = tuple[str, int]
MID_EXTENSION_ID = 1  # a=extmap ids of the offer's header extensions (Chromium's are other numbers)
RID_EXTENSION_ID = 10


class Forger:
    """Sends UDP datagrams that claim any IPv4 source: the IP and UDP headers are written by
    hand on a raw socket (IP_HDRINCL), which the suite's private network namespace allows."""

    def __init__(self) -> None:
        self._raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def __enter__(self) -> Forger:
        return self

    def __exit__(self, *_: object) -> None:
        self._raw.close()

    def send(self, source: Address, destination: Address, payload: bytes) -> None:
        udp = struct.pack("!HHHH", source[1], destination[1], 8 + len(payload), 0) + payload  # checksum 0: none
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(udp),
            0,
            0,
            64,
            socket.IPPROTO_UDP,
            0,  # the kernel fills in the header checksum
            socket.inet_aton(source[0]),
            socket.inet_aton(destination[0]),
        )
        self._raw.sendto(ip + udp, (destination[0], 0))


def send_forged(source: Address, destination: Address, payload: bytes) -> None:
    """Send one datagram that claims to come from `source` (IPv4)."""
    with Forger() as forger:
        forger.send(source, destination, payload)


@dataclass
class Received:
    """What arrived at a raw peer's socket, by kind (first byte, RFC 7983)."""

    stun_requests: int = 0
    media: int = 0  # SRTP/SRTCP datagrams
    media_bytes: int = 0
    #: every RTP packet that arrived: (time, ssrc, seq, clear size or -1 if it did not unprotect)
    rtp: list[tuple[float, int, int, int]] = field(default_factory=list)
    rtcp: int = 0


class RawPeer:
    """A recvonly viewer (or a sendonly host) on `sock`; `answers_requests=False` makes it
    ignore the server's STUN requests (then its address never proves itself)."""

    def __init__(
        self,
        *,
        role: Literal["viewer", "host"] = "viewer",
        answers_requests: bool = True,
        simulcast_rids: Sequence[str] = (),
        mid_extension: bool = False,
    ) -> None:
        self.role = role
        self.simulcast_rids = tuple(simulcast_rids)  # a host's layers, as its offer names them
        self.mid_extension = mid_extension or bool(simulcast_rids)  # simulcast needs the MID too
        self.on_rtcp: Callable[[bytes], None] | None = None  # every RTCP datagram, unprotected
        #: every RTP packet, unprotected, instead of its record in `received.rtp` (a long run)
        self.on_rtp: Callable[[bytes], None] | None = None
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.credentials = IceCredentials.generate()
        self.certificate = DtlsCertificate.generate()
        self.answers_requests = answers_requests
        self.received = Received()
        self.server: Address = ("127.0.0.1", 0)
        self.server_ufrag = self.server_pwd = ""
        self.answer = ""  # the server's SDP
        self.dtls: DtlsSession | None = None
        self.tx: pylibsrtp.Session | None = None
        self.rx: pylibsrtp.Session | None = None
        self.connected = trio.Event()
        self.sent_checks: list[bytes] = []
        self.video_ssrc: int | None = None  # a viewer's, from the answer
        self.closed: SessionClosed | None = None  # how the server ended its signaling session
        self._changed = trio.Event()

    def video_seqs(self) -> list[int]:
        """The sequence numbers of the video packets received, in arrival order."""
        return [seq for _, ssrc, seq, _ in self.received.rtp if ssrc == self.video_ssrc]

    async def wait_for_video(self, packets: int) -> None:
        """Until `packets` video packets arrived (bound it with `trio.fail_after`)."""
        while len(self.video_seqs()) < packets:
            await self._changed.wait()

    @property
    def address(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def offer(self) -> str:
        common = [
            "c=IN IP4 0.0.0.0",
            "a=recvonly" if self.role == "viewer" else "a=sendonly",
            "a=rtcp-mux",
            f"a=ice-ufrag:{self.credentials.ufrag}",
            f"a=ice-pwd:{self.credentials.pwd}",
            f"a=fingerprint:sha-256 {self.certificate.fingerprint_sha256()}",
            "a=setup:actpass",
        ]
        lines = [
            "v=0",
            f"o=- {secrets.randbits(31)} 1 IN IP4 0.0.0.0",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0 1",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "a=mid:0",
            *common,
            *self._extmaps(simulcast=False),
            "a=rtpmap:111 opus/48000/2",
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "a=mid:1",
            *common,
            *self._extmaps(simulcast=bool(self.simulcast_rids)),
            "a=rtpmap:96 VP8/90000",
            "a=rtcp-fb:96 nack",
            "a=rtcp-fb:96 nack pli",
            *self._simulcast_lines(),
        ]
        return "\r\n".join(lines) + "\r\n"

    def _extmaps(self, *, simulcast: bool) -> list[str]:
        """A section's header extensions: the MID (if asked for), and the RID on a simulcast one."""
        lines = [f"a=extmap:{MID_EXTENSION_ID} {MID_URI}"] if self.mid_extension else []
        if simulcast:
            lines.append(f"a=extmap:{RID_EXTENSION_ID} {RID_URI}")
        return lines

    def _simulcast_lines(self) -> list[str]:
        """RFC 8853's lines of a host sending the layers ``simulcast_rids`` (none without them)."""
        if not self.simulcast_rids:
            return []
        return [f"a=rid:{rid} send" for rid in self.simulcast_rids] + [
            "a=simulcast:send " + ";".join(self.simulcast_rids)
        ]

    def apply_answer(self, sdp: str) -> None:
        self.answer = sdp
        self.server_ufrag = _sdp_value(sdp, "ice-ufrag")
        self.server_pwd = _sdp_value(sdp, "ice-pwd")
        algorithm, fingerprint = _sdp_value(sdp, "fingerprint").split()
        candidate = re.search(r"a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", sdp, re.IGNORECASE)
        assert candidate is not None, "the answer has no host candidate"
        self.server = (candidate.group(1), int(candidate.group(2)))
        assert "a=setup:active" in sdp  # the server is the DTLS client
        video = sdp[sdp.index("m=video") :]
        ssrc = re.search(r"^a=ssrc:(\d+) ", video, re.MULTILINE)
        self.video_ssrc = int(ssrc.group(1)) if ssrc else None
        self.dtls = DtlsSession(self.certificate, "server", [(algorithm, fingerprint)])
        self.dtls.start(time.monotonic())

    def check(self, *, nominate: bool, tid: bytes | None = None) -> bytes:
        """A connectivity check with this peer's credentials, as a controlling full agent sends it."""
        message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, transaction_id=tid or secrets.token_bytes(12))
        message.attributes["USERNAME"] = f"{self.server_ufrag}:{self.credentials.ufrag}"
        message.attributes["PRIORITY"] = 1853824767
        message.attributes["ICE-CONTROLLING"] = secrets.randbits(64)
        if nominate:
            message.attributes["USE-CANDIDATE"] = None
        message.add_message_integrity(self.server_pwd.encode())
        data = bytes(message)
        self.sent_checks.append(data)
        return data

    async def send_check(self, *, nominate: bool) -> bytes:
        data = self.check(nominate=nominate)
        await self.sock.sendto(data, self.server)
        return data

    async def connect(self, within: float = 10) -> None:
        """Nominate this peer's address until DTLS is done (``run`` must be running)."""
        with trio.fail_after(within):
            while not self.connected.is_set():
                await self.send_check(nominate=True)
                with trio.move_on_after(0.2):
                    await self.connected.wait()

    async def send_rtp(self, packet: bytes) -> None:
        assert self.tx is not None, "not connected"
        await self.sock.sendto(self.tx.protect(packet), self.server)

    async def send_rtcp(self, packet: bytes) -> None:
        assert self.tx is not None, "not connected"
        await self.sock.sendto(self.tx.protect_rtcp(packet), self.server)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Receive until cancelled: answer STUN requests, do DTLS, count and unprotect media."""
        task_status.started()
        while True:
            timeout = self.dtls.next_timeout() if self.dtls is not None and self.tx is None else None
            data = b""
            with trio.move_on_after(max(0.0, timeout - time.monotonic()) if timeout else 0.5):
                data, _ = await self.sock.recvfrom(2048)
            if not data:
                if self.dtls is not None and self.tx is None and timeout is not None:
                    await self._send_all(self.dtls.handle_timeout(time.monotonic()))
                continue
            await self._handle(data)

    async def _handle(self, data: bytes) -> None:
        first = data[0]
        if first < 4:
            message = stun.parse_message(data)
            if message.message_class == stun.Class.REQUEST:
                self.received.stun_requests += 1
                if self.answers_requests and message.check_message_integrity(self.credentials.pwd.encode()):
                    response = stun.Message(
                        stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=message.transaction_id
                    )
                    response.attributes["XOR-MAPPED-ADDRESS"] = self.server
                    response.add_message_integrity(self.credentials.pwd.encode())
                    await self.sock.sendto(bytes(response), self.server)
        elif 19 < first < 64 and self.dtls is not None:
            await self._send_all(self.dtls.receive_untrusted(data, time.monotonic()))
            if self.dtls.state == "connected" and self.tx is None:
                self.rx, self.tx = self.dtls.srtp_sessions()
                self.connected.set()
        elif 127 < first < 192:
            self.received.media += 1
            self.received.media_bytes += len(data)
            if self.rx is None:
                return
            if 191 < data[1] < 224:
                self.received.rtcp += 1
                if self.on_rtcp is not None:
                    self._hand_rtcp(self.on_rtcp, data)
                return
            if self.on_rtp is not None:
                with contextlib.suppress(pylibsrtp.Error):
                    self.on_rtp(self.rx.unprotect(data))
                return
            try:
                size = len(self.rx.unprotect(data))
            except pylibsrtp.Error:  # a resent packet is a replay to libsrtp: counted all the same
                size = -1
            header = parse_rtp_untrusted(data, parse_extensions=False)  # SRTP leaves the header clear
            self.received.rtp.append((time.monotonic(), header.ssrc, header.sequence_number, size))
            self._changed.set()
            self._changed = trio.Event()

    def _hand_rtcp(self, on_rtcp: Callable[[bytes], None], data: bytes) -> None:
        assert self.rx is not None
        try:
            clear = self.rx.unprotect_rtcp(data)
        except pylibsrtp.Error:
            return
        on_rtcp(clear)

    async def _send_all(self, datagrams: list[bytes]) -> None:
        for datagram in datagrams:
            await self.sock.sendto(datagram, self.server)


def _sdp_value(sdp: str, attribute: str) -> str:
    found = re.search(rf"^a={attribute}:(.+?)\s*$", sdp, re.MULTILINE)
    assert found is not None, f"the answer has no a={attribute}"
    return found.group(1)


@asynccontextmanager
async def raw_peer(
    ws_url: str,
    room_id: str,
    *,
    role: Literal["viewer", "host"] = "viewer",
    user_id: str | None = None,
    answers_requests: bool = True,
    connect: bool = True,
    simulcast_rids: Sequence[str] = (),
    mid_extension: bool = False,
) -> AsyncIterator[tuple[RawPeer, SignalingSession]]:
    """A raw peer joined to `room_id`, its answer applied; with `connect` it has nominated its
    own address and finished DTLS. Its signaling session stays open (a peer of the room).
    `simulcast_rids`, `mid_extension`: what its offer has (see :class:`RawPeer`)."""
    peer = RawPeer(
        role=role, answers_requests=answers_requests, simulcast_rids=simulcast_rids, mid_extension=mid_extension
    )
    await peer.sock.bind(("127.0.0.1", 0))
    with peer.sock:
        async with connect_signaling(ws_url) as session, trio.open_nursery() as nursery:
            await session.join(room_id, role, user_id=user_id)
            await session.send(Offer(sdp=peer.offer()))
            peer.apply_answer((await session.expect(Answer)).sdp)
            await nursery.start(peer.run)
            nursery.start_soon(_keep_reading, session, peer)
            if connect:
                await peer.connect()
            yield peer, session
            nursery.cancel_scope.cancel()


async def _keep_reading(session: SignalingSession, peer: RawPeer) -> None:
    """Drain the peer's signaling (room updates) so the server's queue never fills, until the
    server closes it (`peer.closed`)."""
    try:
        while True:
            await session.receive()
    except SessionClosed as closed:
        peer.closed = closed
