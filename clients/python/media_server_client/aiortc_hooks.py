"""Every private aiortc / aioice hook of the project's aiortc *clients*, and nothing else.

The server does not use aiortc (its media transport is its own). The Python
bots (:mod:`media_server_client.bots`), the server's tests and its benchmarks
drive aiortc peers, and these are the things they need that aiortc has no API
for. Pinned to aiortc 1.16.0 and aioice 0.13.0 (the `bots` extra of the client's
pyproject.toml); the server repository's ``tests/test_transport_contract.py``
checks every entry of :data:`HOOKS` against the installed aiortc/aioice and
fails naming the hook that moved.

choose the host addresses
    aioice gathers on every interface but 127.0.0.1 and has no setting.
    :func:`restrict_host_addresses` wraps, on the pc's own aioice
    ``Connection`` instances, ``get_component_candidates`` (a public aioice
    method that ``gather_candidates`` calls with the address list) so it gets
    the configured addresses instead. Nothing process-wide is patched.
count without decoding (benchmark viewers)
    :func:`tap_srtp_receive` replaces, on one ``RTCDtlsTransport`` instance,
    ``_handle_rtp_data`` / ``_handle_rtcp_data`` (called by ``_recv_next``
    with the datagram just SRTP/SRTCP-unprotected, before aiortc parses it).
see what a client sends and receives (bots, tests)
    :func:`observe_rtp_received` wraps ``_rx_srtp`` and :func:`observe_rtp_sent`
    wraps ``_send_rtp`` of a client pc's DTLS transports, to see (or drop)
    clear RTP; aiortc still handles every packet not dropped; :func:`lose_rtp_received`
    wraps ``_rx_srtp`` too, to lose packets before SRTP sees them.
pace what a bench host sends
    :func:`pace_rtp_sent` wraps ``_send_rtp`` too, spreading a frame's packets out as
    libwebrtc's pacer does.
close a sending client
    :func:`sender_encoder_tasks`: the senders' encoder loops, awaited before
    ``pc.close()`` (cancelling them can hang on trio-asyncio).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pylibsrtp
from aiortc import RTCDtlsTransport, RTCIceGatherer, RTCPeerConnection

if TYPE_CHECKING:
    from aioice import Candidate, Connection


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
        "observe_rtp_sent, pace_rtp_sent",
        "every clear RTP/RTCP datagram an aiortc client sends, before SRTP protect",
        parameters=("data",),
        caller="aiortc.rtcrtpsender.RTCRtpSender._run_rtp",
        caller_contains=("await self.transport._send_rtp(packet_bytes)",),
    ),
    Hook(
        "aiortc.rtcdtlstransport.RTCDtlsTransport",
        "_rx_srtp",
        "instance attribute",
        "observe_rtp_received, lose_rtp_received",
        "wrapped (clients: RTP lost before unprotect, clear RTP seen/dropped); set before 'connected'",
        caller="aiortc.rtcdtlstransport.RTCDtlsTransport.start",
        caller_contains=("self._setup_srtp()", "self._set_state(State.CONNECTED)"),
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
        _ObservedRx.install(dtls, callback, None)


def lose_rtp_received(pc: RTCPeerConnection, lose: Callable[[bytes], bool]) -> None:
    """For aiortc *clients* (tests): lose RTP packets as the network would.

    ``lose(header)`` gets each received RTP packet's fixed header (its first 12 bytes, which
    SRTP leaves in clear: payload type, sequence number, timestamp, SSRC) *before* SRTP
    unprotect; returning True drops the packet unseen, so SRTP's replay window never records
    it and a retransmission of it is accepted whatever its bytes (a server may rewrite header
    extensions such as abs-send-time on a resend). Call any time after negotiation.
    HOOK RTCDtlsTransport._rx_srtp.
    """
    for dtls in dtls_transports(pc):
        _ObservedRx.install(dtls, None, lose)


class _ObservedRx:
    """An rx SRTP session wrapper that may lose RTP before unprotect (``lose``) and shows clear
    RTP to a callback, which may drop it too (``callback``)."""

    __slots__ = ("_callback", "_dropped", "_lose", "_session")
    MAX_REMEMBERED = 512

    def __init__(
        self,
        session: pylibsrtp.Session,
        callback: Callable[[bytes], bool | None] | None,
        lose: Callable[[bytes], bool] | None,
    ) -> None:
        self._session = session
        self._callback = callback
        self._lose = lose
        self._dropped: dict[bytes, bytes] = {}  # SRTP datagram -> its clear packet

    @classmethod
    def install(
        cls,
        dtls: RTCDtlsTransport,
        callback: Callable[[bytes], bool | None] | None,
        lose: Callable[[bytes], bool] | None,
    ) -> None:
        def wrap() -> bool:
            session = dtls._rx_srtp
            if session is None:
                return False
            setattr(dtls, "_rx_srtp", cls(session, callback, lose))  # noqa: B010
            return True

        if not wrap():

            def on_statechange() -> None:
                if dtls.state == "connected":
                    wrap()
                    dtls.remove_listener("statechange", on_statechange)

            dtls.on("statechange", on_statechange)

    def unprotect(self, packet: bytes) -> bytes:
        if self._lose is not None and self._lose(packet[:12]):
            raise pylibsrtp.Error("lost by lose_rtp_received")
        try:
            clear = self._session.unprotect(packet)
        except pylibsrtp.Error:
            remembered = self._dropped.pop(packet, None)
            if remembered is None:
                raise
            clear = remembered  # the retransmission of a packet we dropped
        if self._callback is not None and self._callback(clear) is False:
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


def pace_rtp_sent(pc: RTCPeerConnection, bits_per_second: float) -> None:
    """For aiortc *hosts* of the benches: send RTP no faster than ``bits_per_second``, as
    libwebrtc's pacer does (a frame's packets spread over time, not one burst: aiortc sends a
    frame's packets back to back). RTCP is not held. Call after negotiation.
    HOOK RTCDtlsTransport._send_rtp."""
    for dtls in dtls_transports(pc):
        original = dtls._send_rtp
        free_at = [0.0]  # when the pacer is free again (loop time)

        async def send_rtp(
            data: bytes, original: Callable[[bytes], Awaitable[None]] = original, free_at: list[float] = free_at
        ) -> None:
            if len(data) >= 2 and not 192 <= data[1] <= 223:  # RTP: wait for its turn
                now = asyncio.get_running_loop().time()
                start = max(now, free_at[0])
                free_at[0] = start + len(data) * 8 / bits_per_second
                if start > now:
                    await asyncio.sleep(start - now)
            await original(data)

        setattr(dtls, "_send_rtp", send_rtp)  # noqa: B010
