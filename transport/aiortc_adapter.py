"""Every private aiortc / aioice hook of the server, and nothing else.

Pinned to aiortc 1.16.0 and aioice 0.13.0 (see pyproject.toml). The rest of
``transport/`` only uses aiortc's public API and the functions here.
``tests/test_transport_contract.py`` checks every entry of :data:`HOOKS`
against the installed aiortc/aioice and fails naming the hook that moved.

What the server needs that aiortc has no API for:

receive below the receiver
    :func:`tap_srtp_receive` replaces, on one ``RTCDtlsTransport`` instance,
    ``_handle_rtp_data`` / ``_handle_rtcp_data`` (called by ``_recv_next``
    with the datagram just SRTP/SRTCP-unprotected, before aiortc parses it).
    The raw bytes go to a callback; aiortc's router, receivers and senders
    never see them.
no decoder, no encoder, no RTCP of aiortc's own
    :func:`disable_media_pipeline` replaces ``RTCRtpReceiver.receive`` and
    ``RTCRtpSender.send`` on the instances with no-ops. ``receive`` is what
    starts the decoder thread (unbounded frame queue) and the receiver's RTCP
    task; ``send`` starts ``_run_rtp`` (encoder loop) and ``_run_rtcp``
    (sender reports with zero counts on our SSRC, and a BYE at stop). With
    neither started, ``stop()`` of both is a no-op, no thread exists and the
    jitter buffers stay empty.
send without four coroutine layers
    :class:`SendPath` SRTP-protects with ``RTCDtlsTransport._tx_srtp`` and
    calls ``sendto`` of the socket of the asyncio transport of the nominated
    aioice pair (``Connection._nominated[1]``), synchronously; when asyncio
    already queues datagrams for that socket, or the kernel refuses one, the
    transport's own ``sendto`` takes it (order kept, EAGAIN waited out). The
    pair is re-read per packet (one dict look-up): a controlling peer may
    re-nominate.
count received bytes
    :func:`count_received_bytes` wraps ``RTCDtlsTransport._rx_srtp`` (set just
    before the transport turns ``connected``), so every SRTP/SRTCP datagram is
    counted with its size on the wire.
choose the host addresses
    aioice gathers on every interface but 127.0.0.1 and has no setting.
    :func:`restrict_host_addresses` wraps, on the pc's own aioice
    ``Connection`` instances, ``get_component_candidates`` (a public aioice
    method that ``gather_candidates`` calls with the address list) so it gets
    the configured addresses instead. Nothing process-wide is patched.
instrument aiortc clients (bots, tests)
    :func:`observe_rtp_received` wraps ``_rx_srtp`` and :func:`observe_rtp_sent`
    wraps ``_send_rtp`` of a client pc's DTLS transports, to see (or drop)
    clear RTP; aiortc still handles every packet not dropped.
hear the peer's ICE checks (consent, receive side)
    :func:`count_checks_heard` wraps, on the pc's own aioice ``Connection``
    instances, ``request_received`` (every STUN request, which aioice's
    ``StunProtocol.datagram_received`` calls on ``self.receiver``) and counts
    the authenticated ones (our ufrag, valid MESSAGE-INTEGRITY). With the
    SRTP/SRTCP that unprotects (the receive taps), that is the peer's proof of life.

(Closing without leaks needs no hook: every task aiortc starts belongs to the
connection's ``TaskOwner``, see :mod:`transport.containment`.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pylibsrtp
from aiortc import RTCDtlsTransport, RTCIceGatherer, RTCPeerConnection
from aiortc.rtcicetransport import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp

from media.streams import SdpError

if TYPE_CHECKING:
    from aioice import Candidate, Connection
    from aioice.ice import CandidatePair

    from transport.settings import TransportCounters

logger = logging.getLogger(__name__)

PINNED_AIORTC = "1.16.0"
PINNED_AIOICE = "0.13.0"

ICE_COMPONENT_RTP = 1  # rtcp-mux: everything goes over component 1
#: When the kernel refuses a datagram (EAGAIN), asyncio's datagram transport
#: keeps it in an unbounded Python queue. SendPath drops instead once this many
#: bytes wait there.
MAX_SEND_BUFFER = 256 * 1024


# ---------------------------------------------------------------------------
# The hook table (read by the contract test)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hook:
    """One private (or undocumented) thing this module relies on."""

    owner: str  # dotted path of the class or module
    attribute: str
    kind: Literal["method", "instance attribute", "function", "property"]
    used_by: str  # function / class in this module
    why: str
    parameters: tuple[str, ...] = ()  # expected parameter names (methods: after self)
    caller: str = ""  # dotted path of a function whose source must contain ...
    caller_contains: tuple[str, ...] = ()  # ... these snippets (how aiortc calls the hook)


HOOKS: tuple[Hook, ...] = (
    Hook(
        "asyncio.selector_events._SelectorDatagramTransport",
        "sendto",
        "function",  # a plain (not async) method
        "SendPath",
        "with nothing queued, asyncio's sendto is `self._sock.sendto`: SendPath calls the socket directly",
        parameters=("data", "addr"),
        caller="asyncio.selector_events._SelectorDatagramTransport.sendto",
        caller_contains=("if not self._buffer:", "self._sock.sendto(data, addr)"),
    ),
    Hook(
        "aiortc.rtcdtlstransport.RTCDtlsTransport",
        "_handle_rtp_data",
        "method",
        "tap_srtp_receive",
        "raw RTP right after SRTP unprotect, before aiortc parses and routes it",
        parameters=("data", "arrival_time_ms"),
        caller="aiortc.rtcdtlstransport.RTCDtlsTransport._recv_next",
        caller_contains=(
            "data = self._rx_srtp.unprotect(data)",
            "await self._handle_rtp_data(data, arrival_time_ms=arrival_time_ms)",
        ),
    ),
    Hook(
        "aiortc.rtcdtlstransport.RTCDtlsTransport",
        "_handle_rtcp_data",
        "method",
        "tap_srtp_receive",
        "raw RTCP right after SRTCP unprotect, before aiortc parses and routes it",
        parameters=("data",),
        caller="aiortc.rtcdtlstransport.RTCDtlsTransport._recv_next",
        caller_contains=(
            "data = self._rx_srtp.unprotect_rtcp(data)",
            "await self._handle_rtcp_data(data)",
        ),
    ),
    Hook(
        "aiortc.rtcdtlstransport.RTCDtlsTransport",
        "_send_rtp",
        "method",
        "observe_rtp_sent",
        "every clear RTP/RTCP datagram an aiortc client sends, before SRTP protect",
        parameters=("data",),
        caller="aiortc.rtcrtpsender.RTCRtpSender._run_rtp",
        caller_contains=("await self.transport._send_rtp(packet_bytes)",),
    ),
    Hook(
        "aiortc.rtcdtlstransport.RTCDtlsTransport",
        "_rx_srtp",
        "instance attribute",
        "count_received_bytes, observe_rtp_received",
        "wrapped (bytes received; clients: clear RTP seen/dropped); set before 'connected'",
        caller="aiortc.rtcdtlstransport.RTCDtlsTransport.start",
        caller_contains=("self._setup_srtp()", "self._set_state(State.CONNECTED)"),
    ),
    Hook(
        "aiortc.rtcdtlstransport.RTCDtlsTransport",
        "_tx_srtp",
        "instance attribute",
        "SendPath",
        "pylibsrtp Session that protects what we send (protect / protect_rtcp)",
        caller="aiortc.rtcdtlstransport.RTCDtlsTransport._setup_srtp",
        caller_contains=("self._tx_srtp = Session(tx_policy)",),
    ),
    Hook(
        "aiortc.rtcrtpsender.RTCRtpSender",
        "_RTCRtpSender__rtp_task",
        "instance attribute",
        "sender_encoder_tasks",
        "the sender's encoder loop, awaited before a client pc.close() (cancelling it can hang)",
        caller="aiortc.rtcrtpsender.RTCRtpSender.send",
        caller_contains=("self.__rtp_task = asyncio.ensure_future(self._run_rtp(",),
    ),
    Hook(
        "aiortc.rtcicetransport.RTCIceGatherer",
        "_connection",
        "instance attribute",
        "ice_connection",
        "the aioice Connection behind an RTCIceGatherer / RTCIceTransport",
    ),
    Hook(
        "aioice.ice.Connection",
        "_nominated",
        "instance attribute",
        "SendPath",
        "dict component -> nominated CandidatePair (cleared on close)",
    ),
    Hook(
        "aioice.ice.CandidatePair",
        "remote_addr",
        "property",
        "SendPath",
        "where the nominated pair sends",
    ),
    Hook(
        "aioice.ice.CandidatePair",
        "protocol",
        "instance attribute",
        "SendPath",
        "the StunProtocol whose .transport (asyncio DatagramTransport) has sendto",
    ),
    Hook(
        "aioice.ice.Connection",
        "get_component_candidates",
        "method",
        "restrict_host_addresses",
        "gather_candidates passes it the host addresses; wrapped per instance",
        parameters=("component", "addresses", "timeout"),
        caller="aioice.ice.Connection.gather_candidates",
        caller_contains=(
            "get_host_addresses(",
            "self.get_component_candidates(component=component, addresses=addresses)",
        ),
    ),
    Hook(
        "aiortc.rtcrtpreceiver.RTCRtpReceiver",
        "receive",
        "method",
        "disable_media_pipeline",
        "starts the decoder thread and RTCP task: replaced per instance by a no-op",
        parameters=("parameters",),
        caller="aiortc.rtcpeerconnection.RTCPeerConnection._RTCPeerConnection__connect",
        caller_contains=("await transceiver.receiver.receive(",),
    ),
    Hook(
        "aiortc.rtcrtpsender.RTCRtpSender",
        "send",
        "method",
        "disable_media_pipeline",
        "starts _run_rtp (encoder) and _run_rtcp (zero-count SRs): replaced by a no-op",
        parameters=("parameters",),
        caller="aiortc.rtcpeerconnection.RTCPeerConnection._RTCPeerConnection__connect",
        caller_contains=("await transceiver.sender.send(self.__localRtp(transceiver))",),
    ),
    Hook(
        "aiortc.sdp",
        "candidate_from_sdp",
        "function",
        "parse_candidate",
        "parses a trickled 'candidate:...' string",
        parameters=("sdp",),
    ),
    Hook(
        "aioice.ice.Connection",
        "request_received",
        "function",  # a plain method, called synchronously
        "count_checks_heard",
        "every STUN request (the peer's ICE and consent checks); wrapped per instance",
        parameters=("message", "addr", "protocol"),
        caller="aioice.ice.StunProtocol.datagram_received",
        caller_contains=("self.receiver.request_received(message, addr, self)",),
    ),
)


# ---------------------------------------------------------------------------
# Reaching the transports (public attribute chain) and the aioice connection
# ---------------------------------------------------------------------------


def dtls_transports(pc: RTCPeerConnection) -> list[RTCDtlsTransport]:
    """The pc's DTLS transports, in m-line order, without repeats (bundled = one)."""
    out: list[RTCDtlsTransport] = []
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls not in out:
            out.append(dtls)
    sctp = pc.sctp
    if sctp is not None and sctp.transport not in out:
        out.append(sctp.transport)
    return out


def ice_gatherers(pc: RTCPeerConnection) -> list[RTCIceGatherer]:
    return [dtls.transport.iceGatherer for dtls in dtls_transports(pc)]


def ice_connection(gatherer: RTCIceGatherer) -> Connection:
    """HOOK RTCIceGatherer._connection."""
    connection: Connection = gatherer._connection
    return connection


# ---------------------------------------------------------------------------
# Host addresses
# ---------------------------------------------------------------------------

_RESTRICTED = "_bbms_host_addresses"


def restrict_host_addresses(pc: RTCPeerConnection, addresses: Sequence[str]) -> None:
    """Gather host candidates on exactly ``addresses`` (e.g. ``["127.0.0.1"]``).

    Call after the pc has its transceivers (after ``setRemoteDescription`` on
    an answerer, after ``addTransceiver`` on an offerer) and before
    ``setLocalDescription`` (which gathers). Idempotent.
    HOOK aioice Connection.get_component_candidates, per instance.
    """
    ours = list(addresses)
    for gatherer in ice_gatherers(pc):
        _restrict_connection(ice_connection(gatherer), ours)


def _restrict_connection(connection: Connection, chosen: list[str]) -> None:
    if getattr(connection, _RESTRICTED, None) is not None:
        return
    original = connection.get_component_candidates

    async def get_component_candidates(
        component: int,
        addresses: list[str],
        timeout: int = 5,  # noqa: ASYNC109 (aioice's)
    ) -> list[Candidate]:
        return await original(component=component, addresses=chosen, timeout=timeout)

    setattr(connection, "get_component_candidates", get_component_candidates)  # noqa: B010
    setattr(connection, _RESTRICTED, chosen)


# ---------------------------------------------------------------------------
# Hearing from the peer (consent, receive side)
# ---------------------------------------------------------------------------


class Heard:
    """How many authenticated things arrived from the peer (ICE checks; SRTP/SRTCP
    are counted by the connection's receive taps)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


_HEARD = "_bbms_heard"


def count_checks_heard(pc: RTCPeerConnection, heard: Heard) -> None:
    """Count into ``heard`` each authenticated STUN request (ICE or consent check) the
    pc's ICE connections receive. Call after the pc has its transceivers. Idempotent.
    HOOK aioice Connection.request_received, per instance.
    """
    for gatherer in ice_gatherers(pc):
        connection = ice_connection(gatherer)
        if getattr(connection, _HEARD, None) is not None:
            continue
        request_received = connection.request_received

        def counted(
            message: Any,
            addr: tuple[str, int],
            protocol: Any,
            connection: Any = connection,
            original: Any = request_received,
        ) -> None:
            username = message.attributes.get("USERNAME", "")
            if (
                isinstance(username, str)
                and username.startswith(f"{connection.local_username}:")
                and message.check_message_integrity(connection.local_password.encode("utf8"))
            ):
                heard.count += 1
            original(message, addr, protocol)

        setattr(connection, "request_received", counted)  # noqa: B010
        setattr(connection, _HEARD, heard)


# ---------------------------------------------------------------------------
# No decoder thread, no encoder loop, no aiortc RTCP
# ---------------------------------------------------------------------------


async def _receive_disabled(parameters: object) -> None:
    """Stands in for RTCRtpReceiver.receive: no decoder thread, no RTCP task."""


async def _send_disabled(parameters: object) -> None:
    """Stands in for RTCRtpSender.send: no _run_rtp, no _run_rtcp."""


def disable_media_pipeline(pc: RTCPeerConnection) -> None:
    """Make every transceiver's receiver and sender inert (call before connecting).

    HOOKS RTCRtpReceiver.receive and RTCRtpSender.send, per instance.
    """
    for transceiver in pc.getTransceivers():
        setattr(transceiver.receiver, "receive", _receive_disabled)  # noqa: B010
        setattr(transceiver.sender, "send", _send_disabled)  # noqa: B010


# ---------------------------------------------------------------------------
# Receive taps
# ---------------------------------------------------------------------------


def tap_srtp_receive(
    dtls: RTCDtlsTransport,
    on_rtp: Callable[[bytes], None],
    on_rtcp: Callable[[bytes], None],
) -> None:
    """Hand every unprotected RTP / RTCP datagram of ``dtls`` to the callbacks, raw.

    The callbacks run synchronously inside aiortc's receive task; they must not
    block. HOOKS RTCDtlsTransport._handle_rtp_data / _handle_rtcp_data.
    """

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        on_rtp(data)

    async def handle_rtcp_data(data: bytes) -> None:
        on_rtcp(data)

    setattr(dtls, "_handle_rtp_data", handle_rtp_data)  # noqa: B010
    setattr(dtls, "_handle_rtcp_data", handle_rtcp_data)  # noqa: B010


def observe_rtp_received(pc: RTCPeerConnection, callback: Callable[[bytes], bool | None]) -> None:
    """For aiortc *clients* (bots, tests): see each clear RTP packet before aiortc does.

    ``callback(data)`` gets every RTP packet right after SRTP unprotect.
    Returning ``False`` drops it (simulated loss); anything else lets aiortc
    handle it as usual. The drop happens after SRTP has recorded the packet's
    index, so a retransmission with the same index would be refused as a
    replay: a retransmission that is byte-identical on the wire (same clear
    packet, same index, so the same SRTP datagram) of a dropped packet is
    accepted. Call any time after negotiation (bundling replaces transports).
    HOOK RTCDtlsTransport._rx_srtp.
    """
    for dtls in dtls_transports(pc):
        _ObservedRx.install(dtls, callback)


class _ObservedRx:
    """An rx SRTP session wrapper that shows clear RTP to a callback, which may drop it."""

    __slots__ = ("_callback", "_dropped", "_session")
    MAX_REMEMBERED = 512

    def __init__(self, session: pylibsrtp.Session, callback: Callable[[bytes], bool | None]) -> None:
        self._session = session
        self._callback = callback
        self._dropped: dict[bytes, bytes] = {}  # SRTP datagram -> its clear packet

    @classmethod
    def install(cls, dtls: RTCDtlsTransport, callback: Callable[[bytes], bool | None]) -> None:
        def wrap() -> bool:
            session = dtls._rx_srtp
            if session is None:
                return False
            setattr(dtls, "_rx_srtp", cls(session, callback))  # noqa: B010
            return True

        if not wrap():

            def on_statechange() -> None:
                if dtls.state == "connected":
                    wrap()
                    dtls.remove_listener("statechange", on_statechange)

            dtls.on("statechange", on_statechange)

    def unprotect(self, packet: bytes) -> bytes:
        try:
            clear = self._session.unprotect(packet)
        except pylibsrtp.Error:
            remembered = self._dropped.pop(packet, None)
            if remembered is None:
                raise
            clear = remembered  # the retransmission of a packet we dropped
        if self._callback(clear) is False:
            if len(self._dropped) >= self.MAX_REMEMBERED:
                del self._dropped[next(iter(self._dropped))]
            self._dropped[packet] = clear
            raise pylibsrtp.Error("dropped by observe_rtp_received")
        return clear

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        return self._session.unprotect_rtcp(packet)


def sender_encoder_tasks(pc: RTCPeerConnection) -> list[asyncio.Future[Any]]:
    """For aiortc *clients*: the senders' running encoder loops (``_run_rtp``).

    aiortc encodes in ``run_in_executor``; on trio-asyncio, cancelling that
    future (what ``RTCRtpSender.stop`` does inside ``pc.close()``) was seen to
    hang under CPU load. Stop the tracks, await these, then close.
    HOOK RTCRtpSender.__rtp_task.
    """
    tasks = [vars(sender).get("_RTCRtpSender__rtp_task") for sender in pc.getSenders()]
    return [task for task in tasks if task is not None and not task.done()]


def observe_rtp_sent(pc: RTCPeerConnection, callback: Callable[[bytes], object]) -> None:
    """For aiortc *clients* (bots, tests): see each clear RTP packet the pc sends.

    RTCP is not shown. Call after negotiation. HOOK RTCDtlsTransport._send_rtp.
    """
    for dtls in dtls_transports(pc):
        original = dtls._send_rtp

        async def send_rtp(data: bytes, original: Callable[[bytes], Awaitable[None]] = original) -> None:
            if len(data) >= 2 and not 192 <= data[1] <= 223:  # RTCP packet types (RFC 5761)
                callback(data)
            await original(data)

        setattr(dtls, "_send_rtp", send_rtp)  # noqa: B010


class _CountingSrtpSession:
    """Counts the bytes of every datagram given to unprotect, then delegates."""

    __slots__ = ("_counters", "_session")

    def __init__(self, session: pylibsrtp.Session, counters: TransportCounters) -> None:
        self._session = session
        self._counters = counters

    def unprotect(self, packet: bytes) -> bytes:
        self._counters.bytes_received += len(packet)
        return self._session.unprotect(packet)

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        self._counters.bytes_received += len(packet)
        return self._session.unprotect_rtcp(packet)


def count_received_bytes(dtls: RTCDtlsTransport, counters: TransportCounters) -> bool:
    """Count SRTP/SRTCP bytes received on ``dtls`` into ``counters.bytes_received``.

    Call when ``dtls.state`` turns ``connected`` (its statechange handler runs
    before the receive task starts). Returns False if there is no SRTP session
    yet. HOOK RTCDtlsTransport._rx_srtp.
    """
    session = dtls._rx_srtp
    if session is None:
        return False
    if not isinstance(session, _CountingSrtpSession):
        setattr(dtls, "_rx_srtp", _CountingSrtpSession(session, counters))  # noqa: B010
    return True


# ---------------------------------------------------------------------------
# The send path
# ---------------------------------------------------------------------------


class SendPath:
    """Synchronous SRTP/SRTCP protect + ``sendto`` on one DTLS transport's nominated pair.

    Build it once the transport is ``connected``. ``send_rtp`` / ``send_rtcp``
    return the datagram size sent, or 0 when nothing was sent (no nominated
    pair any more, more than MAX_SEND_BUFFER bytes already queued in asyncio,
    or SRTP refused the packet).
    HOOKS RTCDtlsTransport._tx_srtp, aioice Connection._nominated,
    CandidatePair.protocol / remote_addr.
    """

    __slots__ = ("_addr", "_buffered", "_nominated", "_pair", "_raw_sendto", "_sendto", "_srtp")

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        srtp = dtls._tx_srtp
        if srtp is None:
            raise RuntimeError("the DTLS transport has no SRTP session (not connected)")
        self._srtp: pylibsrtp.Session = srtp
        connection = ice_connection(dtls.transport.iceGatherer)
        self._nominated: dict[int, CandidatePair] = connection._nominated
        self._pair: CandidatePair | None = None
        self._sendto: Callable[[bytes, tuple[str, int]], None] = _not_connected
        self._raw_sendto: Callable[[bytes, tuple[str, int]], object] = _not_connected
        self._buffered: Callable[[], int] = _nothing_buffered
        self._addr: tuple[str, int] = ("", 0)

    def _select_pair(self) -> bool:
        pair = self._nominated.get(ICE_COMPONENT_RTP)
        self._pair = pair
        if pair is None:
            self._sendto = self._raw_sendto = _not_connected
            return False
        transport = pair.protocol.transport
        self._sendto = transport.sendto
        # the socket itself: asyncio's sendto, with nothing queued, is a few checks and this call
        raw_socket = getattr(transport, "_sock", None)
        self._raw_sendto = raw_socket.sendto if raw_socket is not None else transport.sendto
        # a selector datagram transport has it (typeshed only puts it on WriteTransport)
        self._buffered = getattr(transport, "get_write_buffer_size", _nothing_buffered)
        self._addr = pair.remote_addr
        return True

    def send_rtp(self, data: bytes) -> int:
        return self._transmit(data, self._srtp.protect)

    def send_rtcp(self, data: bytes) -> int:
        return self._transmit(data, self._srtp.protect_rtcp)

    def _transmit(self, data: bytes, protect: Callable[[bytes], bytes]) -> int:
        pair = self._nominated.get(ICE_COMPONENT_RTP)
        if (pair is not self._pair or pair is None) and not self._select_pair():
            return 0
        queued = self._buffered()
        if queued > MAX_SEND_BUFFER:
            return 0  # the socket is full and asyncio queues without bound: drop
        try:
            out = protect(data)
        except pylibsrtp.Error:
            return 0
        if queued:  # asyncio already holds datagrams for this socket: queue behind them, in order
            self._sendto(out, self._addr)
            return len(out)
        try:
            self._raw_sendto(out, self._addr)
        except OSError:  # EAGAIN (asyncio queues it and waits for the socket), ICMP errors (it reports them)
            self._sendto(out, self._addr)
        return len(out)


def _not_connected(data: bytes, addr: tuple[str, int]) -> None:
    raise ConnectionError("no nominated ICE pair")


def _nothing_buffered() -> int:
    return 0


# ---------------------------------------------------------------------------
# Candidates
# ---------------------------------------------------------------------------


def parse_candidate(text: str) -> RTCIceCandidate:
    """Parse a trickled candidate (``candidate:...`` with or without ``a=``).

    Raises :class:`SdpError`. HOOK aiortc.sdp.candidate_from_sdp.
    """
    body = text.strip()
    if body.startswith("a="):
        body = body[2:]
    if body.startswith("candidate:"):
        body = body[len("candidate:") :]
    bits = body.split()
    if len(bits) < 8 or bits[6] != "typ" or len(body) > 1024:
        raise SdpError(f"malformed candidate {text[:80]!r}")
    try:
        return candidate_from_sdp(body)
    except (AssertionError, ValueError, IndexError) as exc:
        raise SdpError(f"malformed candidate {text[:80]!r}") from exc
