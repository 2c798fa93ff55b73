"""All media of the process on one UDP port: the receive path, with no asyncio in it.

One non-blocking socket per host address, all bound to ``[ice] udp_port``
(mediasoup's WebRtcServer, LiveKit's ``udp_port``). A Trio task per socket
waits until the socket is readable, then drains every datagram that is ready
(up to ``DRAIN_BATCH`` before it lets other tasks run) and handles each one
synchronously, by its first byte (RFC 7983, :mod:`media.demux`):

- STUN: the ICE-lite directory (:mod:`media.ice_lite`) finds the session by
  the USERNAME's local ufrag, the session answers (sent at once on the same
  socket), and a nomination tells the connection where media goes;
- DTLS, RTP, RTCP: the connection is found by the source address (only
  addresses that sent an accepted check are known), DTLS goes to its
  handshake, SRTP/SRTCP is unprotected and handed to the router, which
  protects and ``sendto``\\ s to every viewer before the next datagram is read.

No queue, no task and no loop hand-off per packet. Timers (DTLS
retransmissions, the consent check) run in one more task: a heap of deadlines.

A datagram that makes handling raise is dropped and counted (logged the first
time, then at 10, 100, ...): one bad peer or one bug never ends the port.
"""

from __future__ import annotations

import errno
import heapq
import logging
import math
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import trio

from media.ice_lite import IceLiteDirectory, StunError

if TYPE_CHECKING:
    from transport.peer_connection import PeerConnection

log = logging.getLogger(__name__)

#: Datagrams handled per wake-up before other tasks get a turn.
DRAIN_BATCH = 256
#: Bigger than any datagram we accept (RTP over a 1500-byte MTU, DTLS flights are split).
MAX_DATAGRAM = 2048
#: Kernel socket buffers asked for (the kernel may cap them at net.core.[rw]mem_max).
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
#: How often connections' consent is checked.
CONSENT_SWEEP_SECONDS = 1.0

Address = tuple[str, int]


class PortStatistics:
    """Counts of the port, for /debug/runtime and logs."""

    __slots__ = (
        "datagrams_received",
        "handler_errors",
        "send_errors",
        "unknown_address",
        "unknown_stun",
    )

    def __init__(self) -> None:
        self.datagrams_received = 0
        self.unknown_address = 0  # DTLS/RTP/RTCP from an address no session knows
        self.unknown_stun = 0  # STUN that no session answers (unknown ufrag, malformed)
        self.send_errors = 0  # sendto refused (buffer full: dropped, or ICMP errors)
        self.handler_errors = 0  # bugs: a datagram whose handling raised


class MediaPort:
    """The UDP sockets of the media port and the sessions reached through them."""

    def __init__(self, addresses: list[str], port: int, *, announced_address: str = "") -> None:
        if not addresses:
            raise ValueError("the media port needs at least one address to bind")
        self._sockets: list[socket.socket] = []
        try:
            for address in addresses:
                self._sockets.append(_bind(address, port))
                port = port or self._sockets[0].getsockname()[1]  # 0: the first socket's free port for all
        except OSError:
            self.close()
            raise
        self.port = port
        self.addresses = list(addresses)
        self.announced_address = announced_address
        self.directory = IceLiteDirectory()
        self.statistics = PortStatistics()
        self._connections: dict[str, PeerConnection] = {}  # by local ICE ufrag
        self._timers: list[tuple[float, int, PeerConnection]] = []
        self._timer_sequence = 0
        self._timers_changed = trio.lowlevel.ParkingLot()
        self._errors_logged = 0

    # ---- what connections use ---------------------------------------------------------

    @property
    def candidates(self) -> list[tuple[str, int]]:
        """(address, port) of the host candidates to put in answers."""
        if self.announced_address:
            return [(self.announced_address, self.port)]
        return [(address, self.port) for address in self.addresses]

    def register(self, connection: PeerConnection) -> None:
        self.directory.add(connection.ice)
        self._connections[connection.ice.local.ufrag] = connection

    def unregister(self, connection: PeerConnection) -> None:
        self.directory.remove(connection.ice)
        self._connections.pop(connection.ice.local.ufrag, None)

    def connections(self) -> Iterator[PeerConnection]:
        return iter(tuple(self._connections.values()))

    def schedule(self, deadline: float, connection: PeerConnection) -> None:
        """Call ``connection.on_timer(now)`` at ``deadline`` (trio clock); extra calls are harmless."""
        self._timer_sequence += 1
        heapq.heappush(self._timers, (deadline, self._timer_sequence, connection))
        if self._timers[0][2] is connection and self._timers[0][0] == deadline:
            self._timers_changed.unpark_all()

    def sendto(self, sock: socket.socket, data: bytes, address: Address) -> bool:
        try:
            sock.sendto(data, address)
        except OSError as exc:  # EAGAIN (buffer full: drop), ICMP errors reported on a later send
            self.statistics.send_errors += 1
            if exc.errno not in (errno.EAGAIN, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                log.debug("sendto %s failed: %r", address, exc)
            return False
        return True

    # ---- the tasks ----------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read every socket, run the timers and the consent sweep, until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                for sock in self._sockets:
                    nursery.start_soon(self._read, sock, name=f"media port {sock.getsockname()}")
                nursery.start_soon(self._run_timers)
                nursery.start_soon(self._sweep_consent)
                task_status.started()
        finally:
            self.close()

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()

    async def _read(self, sock: socket.socket) -> None:
        receive = sock.recvfrom
        handle = self._handle
        statistics = self.statistics
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(DRAIN_BATCH):
                try:
                    data, address = receive(MAX_DATAGRAM)
                except BlockingIOError:
                    break
                except OSError:  # ICMP port unreachable etc. of an earlier send: nothing to read
                    continue
                statistics.datagrams_received += 1
                try:
                    handle(sock, data, address)
                except Exception:  # a bug: drop the datagram, keep the port
                    self._handler_failed(address)
            else:
                await trio.lowlevel.checkpoint()  # more may be waiting: let the others run first

    def _handle(self, sock: socket.socket, data: bytes, address: Any) -> None:
        if not data:
            return
        address = address[:2]  # IPv6 gives (host, port, flow, scope); IPv4's pair is returned as is
        first = data[0]
        if 127 < first < 192:  # RTP / RTCP (RFC 7983): the per-packet path
            session = self.directory.by_address(address)
            connection = self._connections.get(session.local.ufrag) if session is not None else None
            if connection is None:
                self.statistics.unknown_address += 1
                return
            connection.receive_srtp(data)
        elif first < 4:  # STUN
            self._handle_stun(sock, data, address)
        elif 19 < first < 64:  # DTLS
            session = self.directory.by_address(address)
            connection = self._connections.get(session.local.ufrag) if session is not None else None
            if connection is None:
                self.statistics.unknown_address += 1
                return
            connection.receive_dtls(sock, data, address, trio.current_time())

    def _handle_stun(self, sock: socket.socket, data: bytes, address: Address) -> None:
        try:
            session, result = self.directory.handle_stun_untrusted(data, address, trio.current_time())
        except StunError:
            self.statistics.unknown_stun += 1
            return
        if result.response is not None:
            self.sendto(sock, result.response, address)
        connection = self._connections.get(session.local.ufrag)
        if connection is not None and result.accepted:
            connection.on_check(sock, result, trio.current_time())

    def _handler_failed(self, address: Any) -> None:
        self.statistics.handler_errors += 1
        count = self.statistics.handler_errors
        if count == 1:
            log.exception("media port: handling a datagram from %s raised (dropped; logged at 10, 100...)", address)
        elif count == 10 ** (len(str(count)) - 1):
            log.error("media port: %d datagrams dropped because handling raised", count)

    async def _run_timers(self) -> None:
        while True:
            now = trio.current_time()
            due: list[PeerConnection] = []
            while self._timers and self._timers[0][0] <= now:
                due.append(heapq.heappop(self._timers)[2])
            for connection in due:  # what they schedule now waits for the next round
                try:
                    connection.on_timer(now)
                except Exception:
                    self._handler_failed("a timer")
            if due:
                await trio.lowlevel.checkpoint()
                continue
            deadline = self._timers[0][0] if self._timers else math.inf
            with trio.move_on_at(deadline):
                await self._timers_changed.park()

    async def _sweep_consent(self) -> None:
        while True:
            await trio.sleep(CONSENT_SWEEP_SECONDS)
            now = trio.current_time()
            for connection in self.connections():
                connection.check_consent(now)


def _bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock
