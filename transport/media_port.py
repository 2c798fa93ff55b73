"""All media of the process on one UDP port: the receive path, with no asyncio in it.

One socket per host address, all bound to ``[ice] udp_port`` (mediasoup's
WebRtcServer, LiveKit's ``udp_port``). A **media thread** per socket blocks in
``recvmsg``, then, holding the media lock, handles that datagram synchronously,
by its first byte (RFC 7983):

- STUN: the ICE-lite directory (:mod:`media.ice_lite`) finds the session by
  the USERNAME's local ufrag (a response to our own request: by its
  transaction id), the session answers (sent at once on the same socket), and
  a nominated address that proved it is the client's tells the connection
  where media goes;
- DTLS, RTP, RTCP: the connection is found by the source address (only
  addresses that sent an accepted check are known), DTLS goes to its
  handshake, SRTP/SRTCP is unprotected and handed to the router, which
  protects and ``sendto``\\ s to every viewer before the next datagram is read.

No queue, no task and no loop hand-off per packet. Why a thread and not a
Trio task: waking Trio for one lone datagram costs 80-110 us of CPU, a blocking
``recvfrom`` 27 us (``bench/wakeup_micro.py``), and in small rooms packets come
one at a time. Timers (DTLS retransmissions, ICE requests and consent) run in a
Trio task: a heap of deadlines.

**The media lock** (``MediaPort.lock``, reentrant) guards every piece of media
state: the ICE directory, the peer connections, and the rooms' routers. The
media thread holds it for one datagram at a time. Trio code holds it only around
single calls into that state (a connection registering, a timer firing, a
router call of a room actor), never around a whole handler, so the event loop
waits at most for one datagram's handling (a fan-out to a room's viewers), not
for a burst. Counters and histograms are read without it (each value is read
whole under the GIL). Nothing awaits while holding it. Callbacks that must reach
Trio (``on_state``) are handed over with ``run_sync_soon``. Time is
``time.monotonic()`` throughout.

A datagram that makes handling raise is dropped and counted (logged the first
time, then at 10, 100, ...): one bad peer or one bug never ends the port.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import logging
import math
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import trio

from media.delay_histogram import DelayHistogram
from media.ice_lite import IceCredentials, IceLiteDirectory, StunError
from transport.srtp import MAX_MEDIA_DATAGRAM

if TYPE_CHECKING:
    from transport.peer_connection import PeerConnection

log = logging.getLogger(__name__)

#: Bigger than any datagram we accept (RTP over a 1500-byte MTU, DTLS flights are split).
MAX_DATAGRAM = 2048
#: Kernel socket buffers asked for (the kernel may cap them at net.core.[rw]mem_max).
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
#: At shutdown, how long to wait for a woken media thread to leave its recvmsg.
THREAD_STOP_SECONDS = 1.0
#: Linux: the kernel's receive time of each datagram (a ``struct timespec``, CLOCK_REALTIME).
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)

Address = tuple[str, int]
#: Handles one datagram under the media lock: (the socket, the datagram, its source) -> whether
#: it was an RTP packet forwarded (its forwarding delay is then recorded).
DatagramHandler = Callable[[socket.socket, bytes, Any], bool]


class PortStatistics:
    """Counts of the port (``GET /debug/runtime``, api/runtime.py)."""

    __slots__ = (
        "datagrams_received",
        "forwarding_delay",
        "handler_errors",
        "malformed",
        "send_errors",
        "unknown_address",
        "unknown_stun",
    )

    def __init__(self) -> None:
        self.datagrams_received = 0
        self.malformed = 0  # no known first byte (RFC 7983), or SRTP over MAX_MEDIA_DATAGRAM bytes
        self.unknown_address = 0  # DTLS/RTP/RTCP from an address no session knows
        self.unknown_stun = 0  # STUN that no session answers (unknown ufrag, malformed)
        self.send_errors = 0  # sendto refused (buffer full: dropped, or ICMP errors)
        self.handler_errors = 0  # bugs: a datagram whose handling raised
        #: Kernel receive time to handled (forwarded to every viewer), per RTP packet.
        self.forwarding_delay = DelayHistogram()


class MediaPort:
    """The UDP sockets of the media port and the sessions reached through them."""

    def __init__(self, addresses: list[str], port: int, *, announced_address: str = "") -> None:
        if not addresses:
            raise ValueError("the media port needs at least one address to bind")
        self._sockets: list[socket.socket] = []
        try:
            for address in addresses:
                self._sockets.append(bind_udp(address, port))
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
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._trio_thread = 0
        self._stopping = threading.Event()
        #: Sockets of other kinds read the same way (their own media thread, the same lock):
        #: transport/relay_port.py's. Added before ``serve``.
        self._extra_sockets: list[tuple[socket.socket, DatagramHandler]] = []
        #: Guards the directory, the connections and the routers (see the module's docstring).
        self.lock = threading.RLock()

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

    def restart_ice(
        self, connection: PeerConnection, local: IceCredentials, remote_ufrag: str, remote_pwd: str
    ) -> None:
        """The connection's ICE restart: its session answers the new credentials only."""
        old_ufrag = connection.ice.local.ufrag
        self.directory.restart(connection.ice, local, remote_ufrag, remote_pwd)
        del self._connections[old_ufrag]
        self._connections[local.ufrag] = connection

    def connections(self) -> Iterator[PeerConnection]:
        return iter(tuple(self._connections.values()))

    def schedule(self, deadline: float, connection: PeerConnection) -> None:
        """Call ``connection.on_timer(now)`` at ``deadline`` (``time.monotonic()``), under the
        lock; extra calls are harmless. Callable from either thread (hold the lock)."""
        self._timer_sequence += 1
        heapq.heappush(self._timers, (deadline, self._timer_sequence, connection))
        if self._timers[0][2] is connection and self._timers[0][0] == deadline:
            self.call_in_trio(self._timers_changed.unpark_all)

    def call_in_trio(self, function: Any, *args: Any) -> None:
        """Run ``function(*args)`` on Trio's thread: now if this is it, else soon."""
        token = self._trio_token
        if token is None or threading.get_ident() == self._trio_thread:
            function(*args)
            return
        with contextlib.suppress(trio.RunFinishedError):  # the server has stopped: nobody to tell
            token.run_sync_soon(function, *args)

    def add_socket(self, sock: socket.socket, handle: DatagramHandler) -> None:
        """Read ``sock`` too, in a media thread of its own, ``handle(sock, data, address)``
        called under the lock for each datagram (True: an RTP packet, its delay counted), until
        the port stops; the port closes it. Before ``serve``."""
        self._extra_sockets.append((sock, handle))

    def sendto(self, sock: socket.socket, data: bytes, address: Address) -> bool:
        """Send without ever blocking (from either thread); a full buffer drops (counted)."""
        try:
            sock.sendto(data, socket.MSG_DONTWAIT, address)
        except OSError as exc:  # EAGAIN (buffer full: drop), ICMP errors reported on a later send
            self.statistics.send_errors += 1
            if exc.errno not in (errno.EAGAIN, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                log.debug("sendto %s failed: %r", address, exc)
            return False
        return True

    # ---- the tasks ----------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read every socket (a media thread each) and run the timers until cancelled; then
        stop the threads (woken, and awaited: the event loop never blocks on them) and close
        the sockets."""
        self._trio_token = trio.lowlevel.current_trio_token()
        self._trio_thread = threading.get_ident()
        try:
            async with trio.open_nursery() as nursery:
                for sock, handle in [(sock, self._handle) for sock in self._sockets] + self._extra_sockets:
                    name = f"media thread {sock.getsockname()}"
                    nursery.start_soon(self._run_media_thread, sock, handle, name=name)
                nursery.start_soon(self._run_timers)
                task_status.started()
        finally:
            self.close()

    def close(self) -> None:
        for sock in self._sockets + [sock for sock, _ in self._extra_sockets]:
            sock.close()

    async def _run_media_thread(self, sock: socket.socket, handle: DatagramHandler) -> None:
        """The thread, awaited until it returns. On cancellation the thread is told to stop
        and woken from its recvmsg (an empty datagram to its own socket), then awaited, at
        most THREAD_STOP_SECONDS (it only has one datagram's handling to finish)."""
        done = threading.Event()
        limiter = trio.CapacityLimiter(1)  # its own: never waits for (or holds) Trio's default thread tokens
        try:
            await trio.to_thread.run_sync(
                self._read_until_stopped, sock, handle, done, abandon_on_cancel=True, limiter=limiter
            )
        finally:
            self._stopping.set()
            with contextlib.suppress(OSError):  # wake it: a socket closed under a blocked recvmsg stays blocked
                sock.sendto(b"", socket.MSG_DONTWAIT, sock.getsockname()[:2])
            with trio.CancelScope(shield=True):  # waited for in a worker thread, never on Trio's
                await trio.to_thread.run_sync(done.wait, THREAD_STOP_SECONDS, limiter=trio.CapacityLimiter(1))

    def _read_until_stopped(self, sock: socket.socket, handle: DatagramHandler, done: threading.Event) -> None:
        """The media thread: block for a datagram, handle it under the lock, again.

        Each RTP packet's forwarding delay is measured from the kernel's receive timestamp
        to the end of its handling, so time spent waiting for the lock or the GIL counts."""
        try:
            self._read(sock, handle)
        finally:
            done.set()

    def _read(self, sock: socket.socket, handle: DatagramHandler) -> None:
        receive = sock.recvmsg
        statistics = self.statistics
        record_delay = statistics.forwarding_delay.record
        unpack_timespec = _TIMESPEC.unpack_from
        clock_ns = time.time_ns
        lock = self.lock
        stopping = self._stopping
        space = _ANCILLARY_SPACE
        while not stopping.is_set():  # set (and the thread woken with an empty datagram) on cancellation
            try:
                data, ancillary, _flags, address = receive(MAX_DATAGRAM, space)
            except OSError as exc:
                if stopping.is_set() or exc.errno == errno.EBADF:
                    return
                continue  # ICMP errors of earlier sends: nothing to read
            statistics.datagrams_received += 1
            with lock:
                try:
                    if handle(sock, data, address) and ancillary:  # an RTP packet, forwarded
                        seconds, nanoseconds = unpack_timespec(ancillary[0][2])
                        record_delay(clock_ns() - seconds * 1_000_000_000 - nanoseconds)
                except Exception:  # a bug: drop the datagram, keep the port
                    self._handler_failed(address)

    def _handle(self, sock: socket.socket, data: bytes, address: Any) -> bool:
        """Handle one datagram; True for an RTP packet of a known session (its delay is counted).

        What a datagram is, is its first byte (RFC 7983 section 7, as updated by RFC 9443):
        128-191 RTP or RTCP (the per-packet path, tested first), 0-3 STUN, 20-63 DTLS. Anything
        else (ZRTP 16-19, TURN channels 64-79, QUIC, unassigned) is counted ``malformed`` and
        dropped. The second byte tells RTCP from RTP (RFC 5761 section 4: packet types
        192-223); here it only keeps RTCP out of the forwarding delay. No length is checked here
        but the MTU: each class's parser refuses what is too short for it (the STUN framing,
        OpenSSL, the connection's 8-byte SRTP floor and libsrtp)."""
        if not data:
            return False
        address = address[:2]  # IPv6 gives (host, port, flow, scope); IPv4's pair is returned as is
        first = data[0]
        if 127 < first < 192:  # RTP / RTCP (RFC 7983): the per-packet path
            if len(data) > MAX_MEDIA_DATAGRAM:  # over the path MTU: no host may send it
                self.statistics.malformed += 1
                return False
            session = self.directory.by_address(address)
            connection = self._connections.get(session.local.ufrag) if session is not None else None
            if connection is None:
                self.statistics.unknown_address += 1
                return False
            connection.receive_srtp(data)
            return len(data) > 1 and not 191 < data[1] < 224  # RTCP packet types (RFC 5761)
        if first < 4:  # STUN
            self._handle_stun(sock, data, address)
        elif 19 < first < 64:  # DTLS
            session = self.directory.by_address(address)
            connection = self._connections.get(session.local.ufrag) if session is not None else None
            if connection is None:
                self.statistics.unknown_address += 1
                return False
            connection.receive_dtls(sock, data, address, time.monotonic())
        else:
            self.statistics.malformed += 1
        return False

    def _handle_stun(self, sock: socket.socket, data: bytes, address: Address) -> None:
        now = time.monotonic()
        owner = self.directory.by_address(address)
        try:
            session, result = self.directory.handle_stun_untrusted(data, address, now, via=sock)
        except StunError:
            self.statistics.unknown_stun += 1
            return
        if result.response is not None:
            self.sendto(sock, result.response, address)
        connection = self._connections.get(session.local.ufrag)
        if connection is not None:
            connection.on_ice(result, now)
        if result.proved is not None and owner is not None and owner is not session:
            displaced = self._connections.get(owner.local.ufrag)  # the address is no longer its client's
            if displaced is not None:
                displaced.on_path_lost()

    def _handler_failed(self, address: Any) -> None:
        self.statistics.handler_errors += 1
        count = self.statistics.handler_errors
        if count == 1:
            log.exception("media port: handling a datagram from %s raised (dropped; logged at 10, 100...)", address)
        elif count == 10 ** (len(str(count)) - 1):
            log.error("media port: %d datagrams dropped because handling raised", count)

    async def _run_timers(self) -> None:
        """Fire the connections' due timers, each under the lock on its own (a timer is one
        DTLS retransmission or one ICE request), then sleep until the next deadline."""
        while True:
            due: list[PeerConnection] = []
            with self.lock:  # the heap is pushed from the media thread too
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    due.append(heapq.heappop(self._timers)[2])
            for connection in due:  # what they schedule now waits for the next round
                with self.lock:
                    try:
                        connection.on_timer(now)
                    except Exception:
                        self._handler_failed("a timer")
            if due:
                await trio.lowlevel.checkpoint()
                continue
            with self.lock:
                wait = self._timers[0][0] - time.monotonic() if self._timers else math.inf
            with trio.move_on_after(max(0.0, wait)):
                await self._timers_changed.park()


def bind_udp(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(True)  # the media thread blocks in recvmsg; everything else passes MSG_DONTWAIT
        with contextlib.suppress(OSError):  # receive timestamps: the forwarding delay (none: not measured)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock
