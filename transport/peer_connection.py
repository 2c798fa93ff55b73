"""A server-side peer connection on the media port: ICE-lite, DTLS-SRTP, nothing decoded.

One class for both sides. A host's connection (``role="host"``) receives:
after :meth:`accept_offer`, :attr:`sources` says what the host sends, and
``on_rtp`` gets every RTP packet raw right after SRTP unprotect (``on_rtcp``
the host's RTCP). A viewer's connection (``role="viewer"``) sends what the
forwarder hands to :meth:`send_rtp` (SRTP protect + ``sendto``, synchronous);
:attr:`sinks` says, per m-line, the SSRC, payload type, header extension ids
and mid the answer announced, and ``on_rtcp`` gets the viewer's RTCP raw.

The life of a connection (all synchronous, driven by the :class:`MediaPort`'s
tasks; nothing here awaits):

1. :meth:`accept_offer` writes the answer (ICE-lite, our certificate's
   fingerprint, ``setup:active`` unless the offer is ``active``) and registers
   the connection's ICE session on the port. A later offer renegotiates: the
   same m-lines, codecs and DTLS fingerprint; with new ICE credentials it is an
   ICE restart (new local credentials, DTLS and SRTP go on; media moves to
   the path the client's new checks select).
2. The client, a full ICE agent and controlling, sends checks; the ICE-lite
   session answers them; a nominated address, once it answered our own check
   (it proved to be the client's, :mod:`media.ice_lite`), is where media goes.
   As DTLS client the connection then starts the handshake; as DTLS server it
   answers the client's flight there (held until then).
3. DTLS connected: SRTP sessions from its keys; state ``connected``.
4. ``failed`` on a DTLS failure (:attr:`failure` says why, :attr:`failure_kind`
   is ``"dtls"``) or (``"consent"``) when the selected address has not answered
   our consent requests for ``consent_timeout_seconds`` (RFC 7675); ``closed``
   on a close_notify from the peer or :meth:`close`.

Threads: the connection is driven by the port's media thread (datagrams) and
by Trio (the offer, timers, consent, close), always under the port's media
lock: its public methods take it. ``on_rtp`` and ``on_rtcp`` run synchronously
on the media thread, under the lock, and must not block; ``on_state`` is
always called on Trio's thread. An exception a callback raises is counted in
``TransportCounters.callback_errors`` and swallowed (logged with its traceback
the first time, then at 10, 100, 1000...).
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Callable
from typing import Literal

import msgspec
import pylibsrtp

from media.ice_lite import BindingResult, IceCredentials, IceLiteSession, Outgoing
from media.sdp_answer import Answer, AnswerParams, answer_offer_untrusted, parse_candidate_untrusted, random_ssrcs
from media.streams import SdpError, SinkStream, SourceStream
from transport.dtls import DtlsCertificate, DtlsError, DtlsSession
from transport.media_port import MediaPort
from transport.settings import IceSettings, MediaSettings, TransportCounters

logger = logging.getLogger(__name__)

#: DTLS datagrams held for a client whose address is not proved yet (a flight is a few).
MAX_HELD_DATAGRAMS = 8

Role = Literal["host", "viewer"]
FailureKind = Literal["dtls", "consent"]
StateCallback = Callable[[str], None]
PacketCallback = Callable[[bytes], None]


class PeerConnection:
    def __init__(
        self,
        port: MediaPort,
        certificate: DtlsCertificate,
        role: Role,
        ice: IceSettings,
        media: MediaSettings,
        counters: TransportCounters,
        *,
        label: str = "",
    ) -> None:
        self._port = port
        self._certificate = certificate
        self.role: Role = role
        self._media = media
        self._counters = counters
        self.label = label or role
        self.ice = IceLiteSession(
            time.monotonic(), IceCredentials.generate(), consent_timeout=ice.consent_timeout_seconds
        )
        self._dtls: DtlsSession | None = None
        self._rx: pylibsrtp.Session | None = None
        self._tx: pylibsrtp.Session | None = None
        self._sock: socket.socket | None = None
        self._remote: tuple[str, int] | None = None
        self._sources: list[SourceStream] = []
        self._sinks: list[SinkStream] = []
        self._state = "new"
        self._failure: str | None = None
        self._failure_kind: FailureKind | None = None
        self._answered: tuple[AnswerParams, Answer] | None = None  # of the accepted offer
        self._registered = False
        self._held: list[bytes] = []  # DTLS flights for the client before its address is proved
        self._wake_at = math.inf  # the earliest on_timer asked of the port (later entries are stale)
        self._callback_errors = 0
        self.on_state: StateCallback | None = None
        self.on_rtp: PacketCallback | None = None
        self.on_rtcp: PacketCallback | None = None

    # ---- public ---------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``new``, ``connected``, ``failed`` or ``closed`` (the last reported)."""
        return self._state

    @property
    def failure(self) -> str | None:
        """Why the connection failed (DTLS alert, fingerprint mismatch, consent lost...)."""
        return self._failure

    @property
    def failure_kind(self) -> FailureKind | None:
        """``"dtls"`` (the handshake failed or a fatal alert) or ``"consent"`` (silence)."""
        return self._failure_kind

    @property
    def connected(self) -> bool:
        return self._tx is not None and self._remote is not None

    @property
    def sources(self) -> list[SourceStream]:
        """Host: one per audio/video m-line the host sends on (empty before accept_offer)."""
        return list(self._sources)

    @property
    def sinks(self) -> list[SinkStream]:
        """Viewer: one per audio/video m-line the server sends on (empty before accept_offer)."""
        return list(self._sinks)

    def accept_offer(self, offer: str) -> str:
        """Answer the client's offer; returns the complete answer with the port's candidates.

        Raises :class:`SdpError` (or :class:`UnsupportedCodecError` for a host
        offer without VP8/Opus; :class:`DirectoryFull` when the media port holds as many
        sessions as it may). After an error the connection is as before:
        new, or still answering its previous offer. A later offer renegotiates
        (see the module's docstring).
        """
        if self._state in ("failed", "closed"):
            raise RuntimeError(f"{self.label}: the connection has {self._state}")
        if self._answered is not None:
            return self._renegotiate(offer)
        media = self._media
        params = AnswerParams(
            role=self.role,
            ice_ufrag=self.ice.local.ufrag,
            ice_pwd=self.ice.local.pwd,
            fingerprint=("sha-256", self._certificate.fingerprint_sha256()),
            candidates=self._port.candidates,
            video_bitrate_kbps=media.video_bitrate_kbps,
            max_framerate=media.max_framerate,
            audio_bitrate_kbps=media.audio_bitrate_kbps,
            ssrcs=random_ssrcs() if self.role == "viewer" else {},
            video_codecs=media.video_codecs,
        )
        answer = answer_offer_untrusted(offer, params)
        try:
            dtls = DtlsSession(
                self._certificate,
                "client" if answer.setup == "active" else "server",
                answer.remote_fingerprints,
            )
        except ValueError as exc:
            raise SdpError(f"the offer's fingerprint cannot be used: {exc}") from exc
        with self._port.lock:  # from here on the media thread may drive it
            self.ice.set_remote_credentials(answer.remote_ufrag, answer.remote_pwd)
            self._port.register(self)  # DirectoryFull: nothing has changed
            self._dtls = dtls
            self._sources, self._sinks = answer.sources, answer.sinks
            self._answered = (params, answer)
            self._registered = True
            self._arm_timer()  # consent runs from now
        return answer.sdp

    def _renegotiate(self, offer: str) -> str:
        """A later offer: nothing may change but the ICE credentials (new ones: an ICE restart)."""
        assert self._answered is not None
        params, previous = self._answered
        fresh = IceCredentials.generate()
        restarted = msgspec.structs.replace(params, ice_ufrag=fresh.ufrag, ice_pwd=fresh.pwd)
        answer = answer_offer_untrusted(offer, restarted)
        restart = answer.remote_ufrag != previous.remote_ufrag
        if restart == (answer.remote_pwd == previous.remote_pwd):
            raise SdpError("a new offer changes both ice-ufrag and ice-pwd (an ICE restart) or neither")
        if answer.remote_fingerprints != previous.remote_fingerprints or answer.setup != previous.setup:
            raise SdpError("a new offer must keep the DTLS fingerprint and role (DTLS restarts are not supported)")
        negotiated = (answer.sources, answer.sinks, answer.bundle_mids)
        if negotiated != (previous.sources, previous.sinks, previous.bundle_mids):
            raise SdpError("a new offer must keep the same m-lines and codecs (only an ICE restart is supported)")
        if not restart:  # the same answer again: nothing changes
            return answer_offer_untrusted(offer, params).sdp
        with self._port.lock:
            if self._state in ("failed", "closed"):
                raise RuntimeError(f"{self.label}: the connection has {self._state}")
            self._port.restart_ice(self, fresh, answer.remote_ufrag, answer.remote_pwd)
        logger.info("%s: ICE restart (new ufrag %s)", self.label, fresh.ufrag)
        self._answered = (restarted, answer)
        return answer.sdp

    def add_remote_candidate(self, candidate: str, sdp_mid: str | None, sdp_mline_index: int | None) -> None:
        """Check a trickled candidate of the client (``""`` = end of candidates).

        An ICE-lite agent never sends checks, so the client's candidates are not
        used: its own checks show where it is (peer-reflexive addresses, mDNS
        names included). A malformed candidate raises :class:`SdpError`."""
        text = candidate.strip()
        if text in ("", "a=end-of-candidates"):
            return
        text = text.removeprefix("a=")
        try:
            parse_candidate_untrusted(text.removeprefix("candidate:"))
        except ValueError as exc:
            raise SdpError(f"malformed candidate {candidate[:80]!r}: {exc}") from exc

    def send_rtp(self, data: bytes) -> None:
        """SRTP-protect and send one RTP packet; dropped (counted) if not connected or if it
        cannot be protected. Never raises: the router's fan-out goes on to the next viewer."""
        tx, remote, sock = self._tx, self._remote, self._sock
        if tx is not None and remote is not None and sock is not None:
            try:
                out = tx.protect(data)
            except (pylibsrtp.Error, ValueError):  # ValueError: longer than libsrtp's buffer
                self._counters.rtp_dropped += 1
                return
            if self._port.sendto(sock, out, remote):
                self._counters.bytes_sent += len(out)
                return
        self._counters.rtp_dropped += 1

    def send_rtcp(self, data: bytes) -> None:
        """SRTCP-protect and send one (compound) RTCP packet; dropped (counted) if not connected."""
        tx, remote, sock = self._tx, self._remote, self._sock
        if tx is not None and remote is not None and sock is not None:
            try:
                out = tx.protect_rtcp(data)
            except (pylibsrtp.Error, ValueError):
                self._counters.rtcp_dropped += 1
                return
            if self._port.sendto(sock, out, remote):
                if self.role == "viewer":
                    self._counters.bytes_sent += len(out)
                return
        self._counters.rtcp_dropped += 1

    def close(self) -> None:
        """Send close_notify (if connected), leave the port. Idempotent; reports ``closed``."""
        with self._port.lock:
            if self._state == "closed":
                return
            if self._dtls is not None:
                self._send_all(self._dtls.close())
            self._leave_port()
            self._rx = self._tx = None
            self._report("closed")

    # ---- driven by the media port -------------------------------------------------------------

    def on_ice(self, result: BindingResult, now: float) -> None:
        """A STUN datagram of this connection's ICE session was handled (any answer already
        sent by the port): send our requests, follow the selected address."""
        if result.requests:
            self._send_requests(result.requests)
            self._arm_timer()
        if result.address_changed:
            self._follow_selected(now)

    def on_path_lost(self) -> None:
        """Another session proved the selected address is its client's: send nothing there."""
        self._follow_selected(time.monotonic())

    def receive_dtls(self, sock: socket.socket, data: bytes, address: tuple[str, int], now: float) -> None:
        dtls = self._dtls
        if dtls is None or self._state in ("failed", "closed"):
            return
        try:
            out = dtls.receive_untrusted(data, now)
        except DtlsError as exc:
            self._send_all(exc.datagrams or [])
            self._fail("dtls", f"DTLS: {exc.reason}")
            return
        self._send_all(out)
        if dtls.state == "connected" and self._tx is None:
            self._rx, self._tx = dtls.srtp_sessions()
            logger.info("%s: DTLS connected (%s) with %s", self.label, dtls.cipher, self._remote)
            self._report("connected")
        elif dtls.state == "closed":
            self._leave_port()
            self._rx = self._tx = None
            self._report("closed")
            return
        self._arm_timer()

    def receive_srtp(self, data: bytes) -> None:
        """SRTP or SRTCP from the peer's address (the per-packet path)."""
        rx = self._rx
        if rx is None:
            return
        counters = self._counters
        if len(data) < 8:  # shorter than any RTCP header (the port drops what is over the MTU)
            counters.srtp_errors += 1
            return
        try:
            if 191 < data[1] < 224:  # RTCP packet types (RFC 5761)
                clear = rx.unprotect_rtcp(data)
                callback = self.on_rtcp
            else:
                clear = rx.unprotect(data)
                callback = self.on_rtp
        except pylibsrtp.Error:
            counters.srtp_errors += 1
            return
        if self.role == "host":
            counters.bytes_received += len(data)
        if callback is not None:
            try:
                callback(clear)
            except Exception:
                self._callback_failed("on_rtcp" if callback is self.on_rtcp else "on_rtp")

    def on_timer(self, now: float) -> None:
        """The port's timer: DTLS retransmissions, our ICE requests, consent expiry."""
        if now < self._wake_at:  # an entry an earlier wake-up has already served
            return
        self._wake_at = math.inf
        if not self._registered or self._state in ("failed", "closed"):
            return
        if self.ice.check_consent(now):
            where = f"{self._remote} has not" if self._remote else "no address of the peer has"
            self._fail("consent", f"consent lost: {where} answered our checks for {self.ice.consent_timeout:.0f} s")
            return
        self._send_requests(self.ice.poll(now))
        dtls = self._dtls
        deadline = dtls.next_timeout() if dtls is not None else None
        if dtls is not None and deadline is not None and deadline <= now:
            try:
                self._send_all(dtls.handle_timeout(now))
            except DtlsError as exc:
                self._send_all(exc.datagrams or [])
                self._fail("dtls", f"DTLS: {exc.reason}")
                return
            self._arm_timer(after=now)
        else:
            self._arm_timer()

    # ---- internals --------------------------------------------------------------------------

    def _follow_selected(self, now: float) -> None:
        """Media goes to the ICE session's selected address (none: nowhere); DTLS starts
        there when it has not yet."""
        selected, sock = self.ice.selected_address, self.ice.selected_via
        if selected is None or sock is None:
            self._remote = self._sock = None
            return
        self._remote, self._sock = selected, sock
        held, self._held = self._held, []
        self._send_all(held)
        dtls = self._dtls
        if dtls is not None and dtls.state == "new":  # a client sends its ClientHello; a server's clock starts
            self._send_all(dtls.start(now))
            self._arm_timer()

    def _send_requests(self, requests: list[Outgoing] | tuple[Outgoing, ...]) -> None:
        for request in requests:
            self._port.sendto(request.via, request.data, request.address)

    def _arm_timer(self, *, after: float = -math.inf) -> None:
        """Have the port call on_timer when DTLS or ICE next want it (a DTLS deadline not
        after `after` is stale: OpenSSL has nothing to retransmit). One entry in the port's
        heap is live at a time: the earliest asked for."""
        deadline = self.ice.next_timeout()
        dtls = self._dtls
        dtls_deadline = dtls.next_timeout() if dtls is not None else None
        if dtls_deadline is not None and dtls_deadline > after:
            deadline = min(deadline, dtls_deadline)
        if deadline < self._wake_at:
            self._wake_at = deadline
            self._port.schedule(deadline, self)

    def _send_all(self, datagrams: list[bytes]) -> None:
        """DTLS to the client's proved address; held (the last flight, bounded) until there is one."""
        sock, remote = self._sock, self._remote
        if sock is None or remote is None:
            self._held = datagrams[-MAX_HELD_DATAGRAMS:] if datagrams else self._held
            return
        for datagram in datagrams:
            self._port.sendto(sock, datagram, remote)

    def _fail(self, kind: FailureKind, reason: str) -> None:
        if self._state in ("failed", "closed"):
            return
        self._failure, self._failure_kind = reason, kind
        logger.info("%s: failed: %s", self.label, reason)
        self._leave_port()
        self._rx = self._tx = None
        self._report("failed")

    def _leave_port(self) -> None:
        self.ice.close()
        if self._registered:
            self._port.unregister(self)
            self._registered = False

    def _report(self, state: str) -> None:
        if state == self._state or self._state == "closed":
            return
        self._state = state
        self._port.call_in_trio(self._call_on_state, state)

    def _call_on_state(self, state: str) -> None:
        callback = self.on_state
        if callback is None:
            return
        try:
            callback(state)
        except Exception:
            self._callback_failed(f"on_state({state!r})")

    def _callback_failed(self, what: str) -> None:
        """Count a callback's exception (called inside its ``except``); log it with its
        traceback the first time, then once at each power of ten."""
        self._counters.callback_errors += 1
        self._callback_errors += 1
        count = self._callback_errors
        if count == 1:
            logger.exception("%s: %s raised (counted; logged again at 10, 100, ...)", self.label, what)
        elif count == 10 ** (len(str(count)) - 1):
            logger.error("%s: callbacks have raised %d times (last: %s)", self.label, count, what)
