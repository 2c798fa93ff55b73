"""The server's two kinds of peer connection, over aiortc.

:class:`PublisherConnection` receives the host's RTP raw (``on_rtp``), below
aiortc's receiver: nothing is decoded. :class:`ViewerConnection` sends RTP that
the forwarder hands to ``send_rtp``, synchronously, below aiortc's sender:
nothing is encoded. Both use aiortc only for ICE, DTLS, SRTP keys and SDP.

Threading and loops: everything runs on the one asyncio loop (trio-asyncio in
the server). The ``async`` methods are called from trio through
``aio_as_trio``; the synchronous methods and the callbacks run on the same
thread. Callbacks (``on_rtp``, ``on_rtcp``, ``on_state``) are called
synchronously from aiortc's tasks and must not block; an exception they raise
is counted in ``TransportCounters.callback_errors`` and swallowed (logged with
its traceback the first time, then at 10, 100, 1000... so a bug on the
per-packet path cannot flood the log).

Every asyncio task aiortc and aioice start for a connection belongs to the
connection's :class:`~transport.containment.TaskOwner` (the calls into aiortc
run inside ``owner.current()``): its errors are retrieved and logged with the
connection's label, and ``close()`` reaps them all, also mid-handshake.

Consent (RFC 7675, receive side): a connection from which nothing
authenticated (an ICE check with our credentials, SRTP or SRTCP that
unprotects) arrives for ``consent_timeout_seconds`` after the answer reports
``failed``.

Every private aiortc/aioice hook is in :mod:`transport.aiortc_adapter`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCDtlsTransport,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.frame import Frame
from av.packet import Packet

from media import sdp
from media.streams import SdpError, SinkStream, SourceStream, UnsupportedCodecError
from transport import aiortc_adapter as adapter
from transport.containment import TaskOwner
from transport.settings import IceSettings, MediaSettings, TransportCounters

logger = logging.getLogger(__name__)

#: How long close() waits for aiortc's own tasks to end before cancelling them.
CLOSE_REAP_TIMEOUT = 2.0
#: Candidates trickled before the answer exists are kept (at most this many).
MAX_EARLY_CANDIDATES = 64

StateCallback = Callable[[str], None]
PacketCallback = Callable[[bytes], None]


class IdleTrack(MediaStreamTrack):
    """A track for negotiation only: ``recv()`` waits until the track is stopped.

    (An empty sender would make aiortc's ``_run_rtp`` poll every 20 ms; the
    adapter does not even start ``_run_rtp``, so nothing ever awaits this.)
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._ended = asyncio.Event()

    async def recv(self) -> Frame | Packet[Any]:
        await self._ended.wait()
        raise MediaStreamError

    def stop(self) -> None:
        super().stop()
        self._ended.set()


class _PeerConnection:
    """What the publisher and the viewer side have in common."""

    _role: str = ""

    def __init__(self, ice: IceSettings, media: MediaSettings, counters: TransportCounters, *, label: str = "") -> None:
        self._ice = ice
        self._media = media
        self._counters = counters
        self.label = label or self._role
        self._tasks = TaskOwner(self.label)
        self._heard = adapter.Heard()
        self._consent_timer: asyncio.TimerHandle | None = None
        self._callback_errors = 0
        self._pc: RTCPeerConnection | None = None
        self._path: adapter.SendPath | None = None
        self._state = "new"
        self._answered = False
        self._close_started = False
        self._close_done: asyncio.Event | None = None
        self._early_candidates: list[tuple[str, str | None, int | None]] = []
        self._tracks: list[IdleTrack] = []
        self.on_state: StateCallback | None = None
        self.on_rtcp: PacketCallback | None = None

    # -- public ------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``new``, ``connected``, ``failed`` or ``closed`` (the last reported)."""
        return self._state

    @property
    def connected(self) -> bool:
        return self._path is not None

    def send_rtcp(self, data: bytes) -> None:
        """SRTCP-protect and send one (compound) RTCP packet; dropped (counted) if not connected."""
        path = self._path
        sent = path.send_rtcp(data) if path is not None else 0
        if sent:
            self._count_rtcp_sent(sent)
        else:
            self._counters.rtcp_dropped += 1

    async def add_remote_candidate(self, candidate: str, sdp_mid: str | None, sdp_mline_index: int | None) -> None:
        """Add a trickled candidate of the client; ``""`` = end of candidates.

        All media is bundled on one transport, so ``sdp_mid`` and
        ``sdp_mline_index`` are not needed to place it. Before the answer
        exists the candidate is kept and applied after it. Raises
        :class:`SdpError` for a malformed candidate.
        """
        if self._close_started:
            return
        parsed = None if candidate.strip() in ("", "a=end-of-candidates") else candidate
        if parsed is not None:
            adapter.parse_candidate(parsed)  # validate now, so the caller hears of it
        if not self._answered:
            if len(self._early_candidates) >= MAX_EARLY_CANDIDATES:
                raise SdpError("too many candidates before the offer")
            self._early_candidates.append((candidate, sdp_mid, sdp_mline_index))
            return
        with self._tasks.current():
            await self._apply_candidate(parsed)

    async def close(self) -> None:
        """Close the connection: sockets released, aiortc's tasks ended. Idempotent.

        Reports ``closed`` through ``on_state`` (once) if that was not reported yet.
        Shield it from cancellation, or sockets may stay open.
        """
        if self._close_started:
            if self._close_done is not None:
                await self._close_done.wait()
            return
        self._close_started = True
        self._close_done = asyncio.Event()
        self._path = None
        self._stop_consent_timer()
        try:
            pc = self._pc
            if pc is not None:
                with self._tasks.current():
                    await pc.close()
            await self._tasks.reap(CLOSE_REAP_TIMEOUT)
            for track in self._tracks:
                track.stop()
            self._report("closed")
        finally:
            self._close_done.set()

    # -- negotiation (shared) ----------------------------------------------------

    def _new_pc(self) -> RTCPeerConnection:
        # Always pass the configured STUN list: None would mean Google's STUN server.
        configuration = RTCConfiguration(
            iceServers=[RTCIceServer(urls=url) for url in self._ice.stun_servers],
            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        )
        pc = RTCPeerConnection(configuration)
        pc.on("connectionstatechange", self._on_pc_state)
        return pc

    def _check_can_offer(self) -> None:
        if self._close_started:
            raise RuntimeError(f"{self._role} connection is closed")
        if self._answered:
            raise RuntimeError(f"{self._role} connection already has an offer")
        if self._pc is not None:
            raise RuntimeError(f"{self._role} connection: accept_offer already running")

    async def _negotiate(self, offer: str, prepare: Callable[[RTCPeerConnection], None]) -> str:
        """setRemoteDescription, hooks, ``prepare``, answer; returns aiortc's answer SDP.

        On any failure the pc is closed and forgotten, so a new offer may follow.
        """
        with self._tasks.current():
            return await self._negotiate_owned(offer, prepare)

    async def _negotiate_owned(self, offer: str, prepare: Callable[[RTCPeerConnection], None]) -> str:
        pc = self._pc = self._new_pc()
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            except Exception as exc:  # aiortc's parser raises anything on bad input
                raise SdpError(f"offer rejected: {exc!r}") from exc
            dtls_list = adapter.dtls_transports(pc)
            if len(dtls_list) != 1:
                raise SdpError("could not bundle the offer's media on one transport")
            dtls = dtls_list[0]
            if self._ice.host_addresses:
                adapter.restrict_host_addresses(pc, self._ice.host_addresses)
            adapter.count_checks_heard(pc, self._heard)
            adapter.disable_media_pipeline(pc)
            adapter.tap_srtp_receive(dtls, self._on_rtp_data, self._on_rtcp_data)
            dtls.on("statechange", self._sync_send_path)
            prepare(pc)
            try:
                await pc.setLocalDescription(await pc.createAnswer())
            except Exception as exc:  # an offer aiortc parsed but cannot answer (e.g. an m-line with no direction)
                raise SdpError(f"cannot answer the offer: {exc!r}") from exc
            answer = pc.localDescription.sdp
            if not sdp.candidate_addresses(answer):
                logger.warning(
                    "%s answer has no candidates (host_addresses=%r)",
                    self.label,
                    self._ice.host_addresses,
                )
            return answer
        except BaseException:
            self._pc = None
            await self._discard(pc)
            raise

    async def _discard(self, pc: RTCPeerConnection) -> None:
        await pc.close()
        await self._tasks.reap(CLOSE_REAP_TIMEOUT)

    async def _finish_negotiation(self) -> None:
        self._answered = True
        self._watch_consent()
        early, self._early_candidates = self._early_candidates, []
        with self._tasks.current():
            for candidate, _, _ in early:
                text = candidate.strip()
                try:
                    await self._apply_candidate(None if text in ("", "a=end-of-candidates") else text)
                except SdpError as exc:  # the answer stands; this candidate is just useless
                    logger.info("%s: early candidate ignored: %s", self.label, exc)

    # -- consent (receive side) --------------------------------------------------

    def _watch_consent(self) -> None:
        timeout = self._ice.consent_timeout_seconds
        loop = asyncio.get_running_loop()
        interval = min(1.0, timeout / 4)
        heard_at = [self._heard.count, loop.time()]

        def check() -> None:
            now = loop.time()
            if self._heard.count != heard_at[0]:
                heard_at[0], heard_at[1] = self._heard.count, now
            elif now - heard_at[1] >= timeout:
                self._consent_timer = None
                logger.info(
                    "%s: nothing authenticated received for %.0f s: consent lost", self.label, now - heard_at[1]
                )
                self._path = None
                self._report("failed")
                return
            self._consent_timer = loop.call_later(interval, check)

        self._consent_timer = loop.call_later(interval, check)

    def _stop_consent_timer(self) -> None:
        if self._consent_timer is not None:
            self._consent_timer.cancel()
            self._consent_timer = None

    def _announce(self, answer: str) -> str:
        if self._ice.announced_address:
            return sdp.rewrite_host_candidates(answer, self._ice.announced_address)
        return answer

    async def _apply_candidate(self, candidate: str | None) -> None:
        pc = self._pc
        if pc is None or self._close_started:
            return
        ice_transport = adapter.dtls_transports(pc)[0].transport
        if candidate is None:
            await ice_transport.addRemoteCandidate(None)
            return
        parsed = adapter.parse_candidate(candidate)
        try:
            await ice_transport.addRemoteCandidate(parsed)
        except ValueError as exc:
            raise SdpError(f"candidate rejected: {exc}") from exc

    # -- state ---------------------------------------------------------------------

    def _sync_send_path(self) -> None:
        """Build the send path when DTLS is connected, drop it otherwise."""
        pc = self._pc
        if pc is None or self._close_started:
            self._path = None
            return
        dtls = adapter.dtls_transports(pc)[0]
        if dtls.state != "connected":
            self._path = None
        elif self._path is None:
            self._on_dtls_connected(dtls)
            self._path = adapter.SendPath(dtls)

    def _on_dtls_connected(self, dtls: RTCDtlsTransport) -> None:
        """Hook for subclasses, called once when DTLS connects (before any media)."""

    def _on_pc_state(self) -> None:
        pc = self._pc
        if pc is None:
            return
        # The pc's handler runs before ours on the DTLS statechange, so the send
        # path is brought up to date here too: send_rtp works inside on_state.
        self._sync_send_path()
        state = pc.connectionState
        if state in ("connected", "failed", "closed"):
            self._report(state)

    def _report(self, state: str) -> None:
        if state == self._state or self._state == "closed":
            return
        self._state = state
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

    # -- receive taps --------------------------------------------------------------

    def _on_rtp_data(self, data: bytes) -> None:
        """Raw RTP after SRTP unprotect (subclasses decide)."""

    def _on_rtcp_data(self, data: bytes) -> None:
        """Raw RTCP after SRTCP unprotect: to ``on_rtcp``."""
        self._heard.count += 1
        callback = self.on_rtcp
        if callback is None:
            return
        try:
            callback(data)
        except Exception:
            self._callback_failed("on_rtcp")

    def _count_rtcp_sent(self, size: int) -> None:
        """SRTCP bytes sent (subclasses decide whether they count)."""


class PublisherConnection(_PeerConnection):
    """The host's peer connection, server side: receives VP8 + Opus, decodes nothing.

    After :meth:`accept_offer`, :attr:`sources` describes what the host sends.
    ``on_rtp`` gets every RTP packet raw, right after SRTP unprotect (any
    payload type the host sends, any SSRC); ``on_rtcp`` the host's RTCP
    (compound, raw). aiortc sends the host no RTCP of its own (no RR, NACK,
    PLI or REMB): the forwarder does, with :meth:`send_rtcp`.
    """

    _role = "publisher"

    def __init__(self, ice: IceSettings, media: MediaSettings, counters: TransportCounters, *, label: str = "") -> None:
        super().__init__(ice, media, counters, label=label)
        self._sources: list[SourceStream] = []
        self.on_rtp: PacketCallback | None = None

    @property
    def sources(self) -> list[SourceStream]:
        """One per audio/video m-line the host sends on (empty before accept_offer)."""
        return list(self._sources)

    async def accept_offer(self, offer_sdp: str) -> str:
        """Answer the host's offer; returns the complete answer, with the server's candidates.

        Raises :class:`SdpError` (unparseable, nothing to send) or
        :class:`UnsupportedCodecError` (video without VP8, audio without Opus).
        After an error the connection is as new and may take another offer.
        """
        self._check_can_offer()
        offer = sdp.restrict_offer_untrusted(offer_sdp, role="host")
        answer = await self._negotiate(offer, lambda pc: None)
        media = self._media
        answer = sdp.decorate_host_answer(
            answer,
            offer,
            video_bitrate_kbps=media.video_bitrate_kbps,
            max_framerate=media.max_framerate,
            audio_bitrate_kbps=media.audio_bitrate_kbps,
        )
        answer = self._announce(answer)
        self._sources = sdp.sources_from_answer(answer)
        await self._finish_negotiation()
        return answer

    def _on_dtls_connected(self, dtls: RTCDtlsTransport) -> None:
        adapter.count_received_bytes(dtls, self._counters)

    def _on_rtp_data(self, data: bytes) -> None:
        self._heard.count += 1
        callback = self.on_rtp
        if callback is None:
            return
        try:
            callback(data)
        except Exception:
            self._callback_failed("on_rtp")


class ViewerConnection(_PeerConnection):
    """A viewer's peer connection, server side: sends what the forwarder gives it.

    After :meth:`accept_offer`, :attr:`sinks` says, per m-line, the SSRC the
    server announced, the viewer's payload type, header extension ids and mid.
    :meth:`send_rtp` is the fast path: SRTP protect + ``sendto``, synchronous.
    ``on_rtcp`` gets the viewer's RTCP raw (RR, NACK, PLI, FIR, REMB); aiortc's
    sender neither handles it nor sends reports of its own.
    """

    _role = "viewer"

    def __init__(self, ice: IceSettings, media: MediaSettings, counters: TransportCounters, *, label: str = "") -> None:
        super().__init__(ice, media, counters, label=label)
        self._sinks: list[SinkStream] = []

    @property
    def sinks(self) -> list[SinkStream]:
        """One per audio/video m-line the server sends on (empty before accept_offer)."""
        return list(self._sinks)

    async def accept_offer(self, offer_sdp: str) -> str:
        """Answer a viewer's recvonly/sendrecv offer with sendonly VP8/Opus.

        Raises :class:`SdpError` (unparseable, nothing to receive, or a
        section without VP8/Opus). After an error the connection is as new.
        """
        self._check_can_offer()
        try:
            offer = sdp.restrict_offer_untrusted(offer_sdp, role="viewer")
        except UnsupportedCodecError as exc:
            raise SdpError(str(exc)) from exc
        answer = await self._negotiate(offer, self._make_senders)
        answer = sdp.decorate_viewer_answer(answer, offer)
        answer = self._announce(answer)
        self._sinks = sdp.sinks_from_answer(answer)
        await self._finish_negotiation()
        return answer

    def _make_senders(self, pc: RTCPeerConnection) -> None:
        # Without sendonly + a track before createAnswer, the answer says inactive.
        for transceiver in pc.getTransceivers():
            track = IdleTrack(transceiver.kind)
            self._tracks.append(track)
            transceiver.sender.replaceTrack(track)
            transceiver.direction = "sendonly"

    def send_rtp(self, data: bytes) -> None:
        """SRTP-protect and send one RTP packet to the viewer. Dropped (counted) if not connected.

        The packet must already carry the sink's SSRC and payload type.
        """
        path = self._path
        if path is not None:
            sent = path.send_rtp(data)
            if sent:
                self._counters.bytes_sent += sent
                return
        self._counters.rtp_dropped += 1

    def _count_rtcp_sent(self, size: int) -> None:
        self._counters.bytes_sent += size
