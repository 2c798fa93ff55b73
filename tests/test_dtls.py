"""transport/dtls.py: DTLS-SRTP as a sans-IO session, tested with no sockets: the two
ends (or one end and aiortc's DTLS stack) hand datagrams to each other in memory."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

import pylibsrtp
import pytest
from aiortc.rtcdtlstransport import (
    SRTP_AES128_CM_SHA1_80,
    RTCCertificate,
    RTCDtlsFingerprint,
    RTCDtlsParameters,
    RTCDtlsTransport,
    SRTPProtectionProfile,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from OpenSSL import SSL

from tests.rtp_packets import build_rtp_packet
from transport.dtls import DtlsCertificate, DtlsError, DtlsSession, KeyType, process_certificate

Port = Callable[[list[bytes]], list[bytes]]  # datagrams in, datagrams out


@functools.cache
def _cert(kind: KeyType, n: int) -> DtlsCertificate:
    return DtlsCertificate.generate(kind)


def cert(kind: KeyType = "ecdsa", n: int = 0) -> DtlsCertificate:
    """Certificate number `n` of a kind, generated once per test run."""
    return _cert(kind, n)


def fp(certificate: DtlsCertificate) -> list[tuple[str, str]]:
    return [("sha-256", certificate.fingerprint_sha256())]


def pair(client_kind: KeyType = "ecdsa", server_kind: KeyType = "ecdsa") -> tuple[DtlsSession, DtlsSession]:
    c, s = cert(client_kind, 0), cert(server_kind, 1)
    return DtlsSession(c, "client", fp(s)), DtlsSession(s, "server", fp(c))


def port(session: DtlsSession, now: float = 0.0) -> Port:
    return lambda datagrams: [out for d in datagrams for out in session.receive_untrusted(d, now)]


def pump(to_b: list[bytes], a: Port, b: Port, to_a: list[bytes] | None = None, rounds: int = 20) -> None:
    """Carry datagrams between a and b until neither has anything to say."""
    to_a = to_a or []
    for _ in range(rounds):
        if not to_a and not to_b:
            return
        to_a, to_b = b(to_b), a(to_a)
    raise AssertionError("the two ends keep talking")


def handshake(client: DtlsSession, server: DtlsSession, now: float = 0.0) -> None:
    pump(client.start(now), port(client, now), port(server, now), server.start(now))


def rtp(seq: int = 1) -> bytes:
    return build_rtp_packet(payload_type=96, sequence_number=seq, timestamp=1000, ssrc=0x1234, payload=b"hello" * 20)


def rtcp_sender_report() -> bytes:
    return bytes([0x80, 200, 0, 6]) + (0x1234).to_bytes(4) + bytes(20)


def assert_srtp_both_ways(a: DtlsSession, b: DtlsSession) -> None:
    a_rx, a_tx = a.srtp_sessions()
    b_rx, b_tx = b.srtp_sessions()
    for tx, rx in ((a_tx, b_rx), (b_tx, a_rx)):
        protected = tx.protect(rtp())
        assert protected != rtp()
        assert rx.unprotect(protected) == rtp()
        assert rx.unprotect_rtcp(tx.protect_rtcp(rtcp_sender_report())) == rtcp_sender_report()


# --- handshakes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_kind", "server_kind", "cipher"),
    [
        ("ecdsa", "ecdsa", "ECDHE-ECDSA-AES128-GCM-SHA256"),
        ("ecdsa", "rsa", "ECDHE-RSA-AES128-GCM-SHA256"),
        ("rsa", "ecdsa", "ECDHE-ECDSA-AES128-GCM-SHA256"),
        ("rsa", "rsa", "ECDHE-RSA-AES128-GCM-SHA256"),
    ],
)
def test_handshake_and_srtp_both_directions(client_kind: KeyType, server_kind: KeyType, cipher: str) -> None:
    client, server = pair(client_kind, server_kind)
    assert (client.state, server.state) == ("new", "new")
    handshake(client, server)
    assert (client.state, server.state) == ("connected", "connected")
    assert client.failure is None and server.failure is None
    assert client.cipher == server.cipher == cipher
    ck, sk = client.srtp_keys(), server.srtp_keys()
    assert ck.profile.name == sk.profile.name == "SRTP_AEAD_AES_128_GCM"
    assert ck.tx_key == sk.rx_key and ck.rx_key == sk.tx_key and ck.tx_key != ck.rx_key
    assert len(ck.tx_key) == 16 + 12
    assert client.next_timeout() is None and server.next_timeout() is None
    assert_srtp_both_ways(client, server)


def test_every_datagram_fits_the_mtu() -> None:
    c, s = cert("rsa"), cert("rsa", 1)
    client, server = DtlsSession(c, "client", fp(s), mtu=600), DtlsSession(s, "server", fp(c), mtu=600)
    sizes: list[int] = []

    def watch(p: Port) -> Port:
        def wrapped(datagrams: list[bytes]) -> list[bytes]:
            sizes.extend(len(d) for d in datagrams)
            return p(datagrams)

        return wrapped

    pump(client.start(0.0), watch(port(client)), watch(port(server)))
    assert client.state == server.state == "connected"
    assert sizes and max(sizes) <= 600


def test_process_certificate_is_made_once_and_is_ecdsa_p256() -> None:
    first = process_certificate()
    assert process_certificate() is first
    assert first.certificate.signature_hash_algorithm is not None
    assert first.private_key.key_size == 256
    value = first.fingerprint_sha256()
    assert len(value) == 32 * 3 - 1 and value == value.upper() and value.count(":") == 31


def test_srtp_keys_before_connected_is_an_error() -> None:
    client, _ = pair()
    with pytest.raises(RuntimeError):
        client.srtp_keys()


def test_fingerprints_need_a_known_hash_and_the_strongest_counts() -> None:
    with pytest.raises(ValueError):
        DtlsSession(cert(), "client", [("md5", "AA:BB")])
    s = cert("ecdsa", 1)
    # a wrong sha-1 beside a right sha-512: sha-512 is the one checked (RFC 8122 section 5)
    client = DtlsSession(cert(), "client", [("SHA-1", "00:11"), ("sha-512", s.fingerprint("sha-512").lower())])
    server = DtlsSession(s, "server", fp(cert()))
    handshake(client, server)
    assert client.state == server.state == "connected"


@pytest.mark.parametrize("liar", ["client", "server"])
def test_fingerprint_mismatch_fails_both_ends(liar: str) -> None:
    c, s, other = cert(), cert("ecdsa", 1), cert("ecdsa", 2)
    # `liar`'s certificate is not the one its peer was told about
    client = DtlsSession(c, "client", fp(other if liar == "server" else s))
    server = DtlsSession(s, "server", fp(other if liar == "client" else c))
    detector, victim = (client, server) if liar == "server" else (server, client)
    with pytest.raises(DtlsError) as caught:
        handshake(client, server)
    assert caught.value.reason == "fingerprint mismatch"
    assert (detector.state, detector.failure) == ("failed", "fingerprint mismatch")
    assert caught.value.datagrams, "an alert for the peer"
    with pytest.raises(DtlsError) as alerted:
        for d in caught.value.datagrams:
            victim.receive_untrusted(d, 0.0)
    assert victim.state == "failed" and victim.failure == "alert from peer: unknown ca"
    assert alerted.value.reason == victim.failure
    # a failed session stays failed and quiet
    assert detector.receive_untrusted(b"\x16\xfe\xfd" + bytes(20), 1.0) == []
    assert detector.handle_timeout(100.0) == [] and detector.next_timeout() is None
    assert detector.close() == [] and detector.state == "failed"


# --- retransmission and timeouts ------------------------------------------------------
# OpenSSL's retransmission timer runs on the real clock (1 s first), so these tests sleep
# that second; the handshake bound runs on the caller's clock and needs no sleeping.


def sleep_until(instant: float) -> None:
    time.sleep(max(0.0, instant - time.monotonic()))


def test_lost_client_flight_is_retransmitted() -> None:
    client, server = pair()
    lost = client.start(0.0)
    armed = time.monotonic()  # OpenSSL's timer started before this
    assert lost and client.state == "connecting"
    due = client.next_timeout()
    assert due is not None and 0.9 < due <= 1.0
    assert client.handle_timeout(0.5) == []  # too early: nothing
    sleep_until(armed + 1.0)
    again = client.handle_timeout(due)
    assert [len(d) for d in again] == [len(d) for d in lost]
    assert (client.next_timeout() or 0) > due  # backed off
    pump(again, port(client, due), port(server, due))
    assert client.state == server.state == "connected"
    assert_srtp_both_ways(client, server)


def test_lost_server_flight_is_retransmitted() -> None:
    client, server = pair()
    lost = port(server)(client.start(0.0))
    armed = time.monotonic()
    assert lost
    sleep_until(armed + 1.0)
    again = server.handle_timeout(1.02)
    assert again
    pump(again, port(server, 1.02), port(client, 1.02), client.handle_timeout(1.02))
    assert client.state == server.state == "connected"


def test_lost_final_flight_is_recovered_after_the_server_connected() -> None:
    client, server = pair()
    to_client = port(server)(client.start(0.0))
    to_server = port(client)(to_client)
    armed = time.monotonic()
    final = port(server)(to_server)  # the server's ChangeCipherSpec + Finished: lost
    assert final and server.state == "connected" and client.state == "connecting"
    sleep_until(armed + 1.0)
    again = client.handle_timeout(1.02)  # the client repeats its last flight...
    assert again
    pump(again, port(client, 1.02), port(server, 1.02))  # ...and the connected server its own
    assert {client.state, server.state} == {"connected"}  # (a set: mypy narrowed client.state above)
    assert_srtp_both_ways(client, server)


@pytest.mark.parametrize("role", ["client", "server"])
def test_a_peer_that_never_answers_fails_after_the_bound(role: str) -> None:
    session = DtlsSession(cert(), "client" if role == "client" else "server", fp(cert("ecdsa", 1)))
    session.start(100.0)
    calls = 0
    with pytest.raises(DtlsError) as caught:
        while True:
            due = session.next_timeout()
            assert due is not None and due <= 115.0
            session.handle_timeout(due)
            calls += 1
            assert calls < 100
    assert caught.value.reason == session.failure == "handshake timed out"
    assert session.state == "failed" and session.next_timeout() is None


# --- close -----------------------------------------------------------------------------


def test_close_notify_closes_the_other_side() -> None:
    client, server = pair()
    handshake(client, server)
    bye = client.close()
    assert bye and client.state == "closed"
    replies = port(server)(bye)
    assert server.state == "closed" and server.failure is None
    assert port(client)(replies) == [] and client.state == "closed"
    assert server.next_timeout() is None and server.close() == []


def test_close_before_connected() -> None:
    client, _ = pair()
    client.start(0.0)
    assert client.close() == [] and client.state == "closed" and client.next_timeout() is None


def test_application_data_is_read_and_dropped() -> None:
    client, server = pair()
    handshake(client, server)
    client._conn.send(b"x" * 100)  # as an SCTP packet from a peer that thinks it has data channels
    assert port(server)(client._flush(None)) == []
    assert server.state == "connected" and server.discarded_application_bytes == 100


# --- aiortc's OpenSSL setup as the peer ---------------------------------------------------


class RawPeer:
    """A bare pyOpenSSL endpoint over a given context: aiortc's, so offers are aiortc's."""

    def __init__(self, context: SSL.Context, role: str) -> None:
        self.conn = SSL.Connection(context, None)
        self.done = False
        if role == "client":
            self.conn.set_connect_state()
        else:
            self.conn.set_accept_state()

    def __call__(self, datagrams: list[bytes]) -> list[bytes]:
        for d in datagrams or [b""]:
            if d:
                self.conn.bio_write(d)
            if not self.done:
                try:
                    self.conn.do_handshake()
                    self.done = True
                except SSL.WantReadError:
                    pass
        out = b""
        while True:
            try:
                out += self.conn.bio_read(65536)
            except SSL.WantReadError:
                return [out] if out else []

    def srtp_material(self, key: int, salt: int) -> tuple[bytes, bytes]:
        """(client key || salt, server key || salt) as RFC 5764 4.2 lays them out."""
        m = self.conn.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (key + salt))
        return m[:key] + m[2 * key : 2 * key + salt], m[key : 2 * key] + m[2 * key + salt :]


def aiortc_context(profiles: list[SRTPProtectionProfile] | None = None) -> tuple[SSL.Context, list[tuple[str, str]]]:
    certificate = RTCCertificate.generateCertificate()
    context = certificate._create_ssl_context(srtp_profiles=profiles or [SRTP_AES128_CM_SHA1_80])
    return context, [(f.algorithm, f.value) for f in certificate.getFingerprints()]


@pytest.mark.parametrize("our_role", ["client", "server"])
def test_aiortc_offer_with_sha1_80_only(our_role: str) -> None:
    context, their_fingerprints = aiortc_context()
    peer = RawPeer(context, "server" if our_role == "client" else "client")
    ours = DtlsSession(cert(), "client" if our_role == "client" else "server", their_fingerprints)
    if our_role == "client":
        pump(ours.start(0.0), port(ours), peer)
    else:
        ours.start(0.0)
        pump(peer([]), peer, port(ours))
    assert ours.state == "connected" and peer.done
    keys = ours.srtp_keys()
    assert keys.profile.name == "SRTP_AES128_CM_SHA1_80"
    client_key, server_key = peer.srtp_material(16, 14)
    assert (keys.tx_key, keys.rx_key) == (
        (client_key, server_key) if our_role == "client" else (server_key, client_key)
    )


def test_no_shared_cipher_with_an_ecdsa_only_client() -> None:
    context, their_fingerprints = aiortc_context()  # aiortc offers ECDHE-ECDSA suites only
    server = DtlsSession(cert("rsa"), "server", their_fingerprints)
    peer = RawPeer(context, "client")
    with pytest.raises(DtlsError) as caught:
        pump(peer([]), peer, port(server))
    assert server.state == "failed" and server.failure == caught.value.reason
    assert "no shared cipher" in caught.value.reason
    assert caught.value.datagrams  # the handshake_failure alert


def test_no_srtp_offered_fails() -> None:
    context = SSL.Context(SSL.DTLS_METHOD)
    context.set_verify(SSL.VERIFY_PEER, lambda *args: True)
    theirs = cert("ecdsa", 3)
    context.use_certificate(theirs.certificate)
    context.use_privatekey(theirs.private_key)
    server = DtlsSession(cert(), "server", fp(theirs))
    peer = RawPeer(context, "client")
    with pytest.raises(DtlsError, match="no SRTP profile negotiated"):
        pump(peer([]), peer, port(server))
    assert server.state == "failed"


# --- aiortc's RTCDtlsTransport as the peer (asyncio, an in-memory ICE transport) -------


class MemoryIce:
    """Just what RTCDtlsTransport uses of an RTCIceTransport."""

    role = "controlled"

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()

    async def _send(self, data: bytes) -> None:
        self.sent.append(data)

    async def _recv(self) -> bytes:
        return await self.inbox.get()


async def aiortc_interop(our_role: str) -> None:
    loop = asyncio.get_running_loop()
    ice = MemoryIce()
    their_certificate = RTCCertificate.generateCertificate()
    theirs = RTCDtlsTransport(ice, [their_certificate])  # type: ignore[arg-type]
    theirs._set_role("server" if our_role == "client" else "client")
    ours = DtlsSession(
        cert(),
        "client" if our_role == "client" else "server",
        [(f.algorithm, f.value) for f in their_certificate.getFingerprints()],
    )
    started = asyncio.ensure_future(
        theirs.start(RTCDtlsParameters(fingerprints=[RTCDtlsFingerprint("sha-256", cert().fingerprint_sha256())]))
    )

    def send(datagrams: list[bytes]) -> None:
        for d in datagrams:
            ice.inbox.put_nowait(d)

    def deliver() -> None:
        while ice.sent:
            send(ours.receive_untrusted(ice.sent.pop(0), loop.time()))

    send(ours.start(loop.time()))
    deadline = loop.time() + 10
    while not (started.done() and ours.state == "connected"):
        assert loop.time() < deadline, (theirs.state, ours.state)
        await asyncio.sleep(0.001)
        deliver()
        due = ours.next_timeout()
        if due is not None and loop.time() >= due:
            send(ours.handle_timeout(loop.time()))
    assert theirs.state == "connected"

    our_rx, our_tx = ours.srtp_sessions()
    assert theirs._rx_srtp.unprotect(our_tx.protect(rtp(7))) == rtp(7)
    assert our_rx.unprotect(theirs._tx_srtp.protect(rtp(8))) == rtp(8)
    assert our_rx.unprotect_rtcp(theirs._tx_srtp.protect_rtcp(rtcp_sender_report())) == rtcp_sender_report()

    await theirs.stop()
    deliver()
    assert ours.state in ("closed",)  # (not ==: mypy narrowed ours.state to "connected" above)


@pytest.mark.parametrize("our_role", ["client", "server"])
def test_interop_with_aiortc_dtls_transport(our_role: str) -> None:
    asyncio.run(aiortc_interop(our_role))


# --- untrusted input ----------------------------------------------------------------------


def dtls_record(content_type: int, epoch: int, seq: int, body: bytes) -> bytes:
    return bytes([content_type]) + b"\xfe\xfd" + epoch.to_bytes(2) + seq.to_bytes(6) + len(body).to_bytes(2) + body


@functools.cache
def real_client_hello() -> bytes:
    client, _ = pair()
    return client.start(0.0)[0]


records = st.builds(
    dtls_record, st.integers(20, 25), st.integers(0, 2), st.integers(0, 2**48 - 1), st.binary(max_size=300)
)


@st.composite
def mutated_client_hello(draw: st.DrawFn) -> bytes:
    hello = bytearray(real_client_hello())
    for _ in range(draw(st.integers(1, 4))):
        hello[draw(st.integers(0, len(hello) - 1))] ^= draw(st.integers(1, 255))
    return bytes(hello[: draw(st.integers(1, len(hello)))] if draw(st.booleans()) else hello)


garbage = st.lists(
    st.one_of(
        st.binary(max_size=1500), st.lists(records, min_size=1, max_size=4).map(b"".join), mutated_client_hello()
    ),
    min_size=1,
    max_size=5,
)


def feed(session: DtlsSession, datagrams: list[bytes]) -> None:
    for d in datagrams:
        try:
            out = session.receive_untrusted(d, 0.0)
        except DtlsError as exc:
            assert session.state == "failed" and session.failure == exc.reason and exc.reason
            event(f"DtlsError: {exc.reason}"[:60])  # see them with --hypothesis-show-statistics
            return
        assert isinstance(out, list) and all(isinstance(o, bytes) and o for o in out)
        assert session.state in ("connecting", "connected")
        if out:
            event("answered")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage, st.sampled_from(["client", "server"]))
def test_garbage_while_connecting_raises_only_dtls_error(datagrams: list[bytes], role: str) -> None:
    client, server = pair()
    client.start(0.0)
    server.start(0.0)
    feed(client if role == "client" else server, datagrams)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage)
def test_garbage_when_connected_is_ignored_or_dtls_error(datagrams: list[bytes]) -> None:
    client, server = pair()
    handshake(client, server)
    feed(server, datagrams)
    if server.state == "connected":
        assert_srtp_both_ways(client, server)


def test_non_dtls_datagrams_are_ignored() -> None:
    client, server = pair()
    server.start(0.0)
    for d in (b"", rtp(), b"\x00\x01" + bytes(18), bytes([64]) * 50, b"\x16" * 20000):
        assert server.receive_untrusted(d, 0.0) == []
    handshake(client, server)
    assert server.state == "connected"


def test_srtp_sessions_are_fresh_each_call() -> None:
    client, server = pair()
    handshake(client, server)
    rx1, _ = server.srtp_sessions()
    _, tx = client.srtp_sessions()
    packet = tx.protect(rtp(5))
    assert rx1.unprotect(packet) == rtp(5)
    with pytest.raises(pylibsrtp.Error):
        rx1.unprotect(packet)  # replay
    rx2, _ = server.srtp_sessions()
    assert rx2.unprotect(packet) == rtp(5)
