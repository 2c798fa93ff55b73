"""DTLS-SRTP (RFC 5764) as a sans-IO session: datagrams in, datagrams out, time passed in.

No sockets, no asyncio, no trio: the caller owns the UDP port and the clock. It feeds
every DTLS datagram (first byte 20..63, RFC 7983) to `DtlsSession.receive_untrusted`,
sends back what it returns, and calls `handle_timeout` at `next_timeout()`.

OpenSSL does the protocol through a memory BIO (pyOpenSSL), as aiortc does inside.
Two things it cannot do for us, done here:

- Datagram boundaries. A memory BIO is a byte stream, so outgoing bytes are split
  back into DTLS records and packed into datagrams of at most `mtu` bytes (OpenSSL
  already fragments handshake messages to that MTU).
- The clock. OpenSSL's retransmission timer runs on the real clock and cannot be
  driven from outside; `next_timeout()` translates it onto the caller's clock
  (`now` + OpenSSL's remaining time). So `now` must be a monotonic clock running at
  real speed (trio.current_time()). A `handle_timeout` that comes before OpenSSL's
  timer has really expired sends nothing and reschedules. The handshake bound
  (`handshake_timeout`, 15 s) runs on the caller's clock only.

Peer authentication has no CA: the peer's certificate must match a fingerprint
from its SDP (RFC 8122: the strongest hash algorithm offered is the one checked).
"""

from __future__ import annotations

import binascii
import contextlib
import datetime
import os
import re
from dataclasses import dataclass
from typing import Literal, NoReturn

import pylibsrtp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from OpenSSL import SSL, crypto

from transport.srtp import new_session

DtlsRole = Literal["client", "server"]
DtlsState = Literal["new", "connecting", "connected", "failed", "closed"]
KeyType = Literal["ecdsa", "rsa"]

# RFC 8827 section 6.5: ECDHE with ECDSA and with RSA certificates, AES-128-GCM first;
# then the other ECDHE suites aiortc offers, each for both certificate types.
CIPHER_LIST = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:"
    "ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA"
)
MTU = 1200  # bytes of UDP payload per outgoing datagram
HANDSHAKE_TIMEOUT = 15.0  # seconds from start() to connected, else "handshake timed out"
CERTIFICATE_VALIDITY = datetime.timedelta(days=30)  # as aiortc (and browsers)

_MAX_DATAGRAM = 16384  # below OpenSSL's read buffer, so one datagram is always read whole
_ALERT_RECEIVED = re.compile(r"(?:sslv3|tlsv1|ssl/tls) alert (.+)")
_RECORD_HEADER = 13  # DTLS record header: type, version(2), epoch(2), sequence(6), length(2)

# SDP hash function names (RFC 8122) in order of preference, strongest first.
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha-512": hashes.SHA512(),
    "sha-384": hashes.SHA384(),
    "sha-256": hashes.SHA256(),
    "sha-1": hashes.SHA1(),
}


class DtlsError(Exception):
    """A fatal DTLS failure. `reason` is human readable; `datagrams` holds the alert
    OpenSSL wants the peer to see, if any (sending it is optional)."""

    def __init__(self, reason: str, datagrams: list[bytes] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.datagrams: list[bytes] = datagrams or []


# --- certificate -----------------------------------------------------------------


class DtlsCertificate:
    """A self-signed certificate and its private key, as WebRTC uses them."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, certificate: x509.Certificate):
        self.private_key = private_key
        self.certificate = certificate
        self._context: SSL.Context | None = None

    @classmethod
    def generate(cls, key_type: KeyType = "ecdsa", *, now: datetime.datetime | None = None) -> DtlsCertificate:
        """ECDSA P-256 (the default, as browsers and aiortc) or RSA-2048, SHA-256 signed."""
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
        if key_type == "ecdsa":
            key = ec.generate_private_key(ec.SECP256R1())
        else:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, binascii.hexlify(os.urandom(16)).decode())])
        start = now or datetime.datetime.now(tz=datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - datetime.timedelta(days=1))
            .not_valid_after(start + CERTIFICATE_VALIDITY)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @property
    def expires(self) -> datetime.datetime:
        return self.certificate.not_valid_after_utc

    def fingerprint(self, algorithm: str = "sha-256") -> str:
        """The SDP form, e.g. "AB:CD:...", for a hash name of RFC 8122 ("sha-256")."""
        return _fingerprint(self.certificate, algorithm)

    def fingerprint_sha256(self) -> str:
        """For `a=fingerprint:sha-256 <this>`."""
        return self.fingerprint("sha-256")

    def ssl_context(self) -> SSL.Context:
        """The OpenSSL context shared by every session using this certificate."""
        if self._context is None:
            ctx = SSL.Context(SSL.DTLS_METHOD)
            ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_QUERY_MTU | SSL.OP_NO_RENEGOTIATION)
            ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
            ctx.use_certificate(self.certificate)
            ctx.use_privatekey(self.private_key)
            ctx.check_privatekey()
            ctx.set_cipher_list(CIPHER_LIST.encode())
            ctx.set_tlsext_use_srtp(b":".join(p.name.encode() for p in SRTP_PROFILES))
            self._context = ctx
        return self._context


_process_certificate: DtlsCertificate | None = None


def process_certificate() -> DtlsCertificate:
    """The server's ECDSA certificate: generated once per process (again a day
    before it expires; sessions read the fingerprint when they are created)."""
    global _process_certificate
    now = datetime.datetime.now(tz=datetime.UTC)
    if _process_certificate is None or _process_certificate.expires - now < datetime.timedelta(days=1):
        _process_certificate = DtlsCertificate.generate("ecdsa", now=now)
    return _process_certificate


def _fingerprint(certificate: x509.Certificate, algorithm: str) -> str:
    return certificate.fingerprint(_HASHES[algorithm.lower()]).hex(":").upper()


# --- SRTP ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SrtpProfile:
    name: str  # as OpenSSL and RFC 5764 / RFC 7714 name it
    libsrtp_profile: int
    key_length: int
    salt_length: int


# Preference order, as aiortc's (which also offers AES-256-GCM first).
SRTP_PROFILES: tuple[SrtpProfile, ...] = (
    SrtpProfile("SRTP_AEAD_AES_128_GCM", pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12),
    SrtpProfile("SRTP_AES128_CM_SHA1_80", pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14),
)


@dataclass(frozen=True)
class SrtpKeys:
    """Keying material of a connected session; each key is master key || master salt."""

    profile: SrtpProfile
    rx_key: bytes  # the peer's write key: unprotects what the peer sends
    tx_key: bytes  # our write key: protects what we send


def _srtp_policy(key: bytes, ssrc_type: int, profile: SrtpProfile) -> pylibsrtp.Policy:
    policy = pylibsrtp.Policy(key=key, ssrc_type=ssrc_type, srtp_profile=profile.libsrtp_profile)
    policy.allow_repeat_tx = True  # retransmissions (NACK) resend the same sequence number
    policy.window_size = 1024
    return policy


# --- session -----------------------------------------------------------------------


class DtlsSession:
    """One DTLS-SRTP association, sans IO. Every method returns the datagrams to send."""

    def __init__(
        self,
        certificate: DtlsCertificate,
        role: DtlsRole,
        remote_fingerprints: list[tuple[str, str]],
        *,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        mtu: int = MTU,
    ) -> None:
        """`remote_fingerprints`: (algorithm, value) of the peer's `a=fingerprint` lines.
        Raises ValueError if none uses a known hash (sha-1/256/384/512)."""
        if role not in ("client", "server"):
            raise ValueError(f"bad DTLS role {role!r}")
        self.role: DtlsRole = role
        self._algorithm, self._fingerprints = _usable_fingerprints(remote_fingerprints)
        self._handshake_timeout = handshake_timeout
        self._mtu = mtu
        self._state: DtlsState = "new"
        self._failure: str | None = None
        self._fingerprint_mismatch = False
        self._deadline: float | None = None  # handshake bound, caller's clock
        self._timer: float | None = None  # OpenSSL's retransmission timer, caller's clock
        self._keys: SrtpKeys | None = None
        self.discarded_application_bytes = 0  # no data channels: application data is dropped

        self._conn = SSL.Connection(certificate.ssl_context(), None)
        self._conn.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._verify)
        self._conn.set_ciphertext_mtu(mtu)
        if role == "client":
            self._conn.set_connect_state()
        else:
            self._conn.set_accept_state()

    @property
    def state(self) -> DtlsState:
        return self._state

    @property
    def failure(self) -> str | None:
        """Why the state is "failed", e.g. "fingerprint mismatch", "handshake timed out"."""
        return self._failure

    @property
    def cipher(self) -> str | None:
        """The negotiated cipher suite (OpenSSL name), once known."""
        return self._conn.get_cipher_name()

    def start(self, now: float) -> list[bytes]:
        """Begin the handshake (call it when ICE connects): a client's ClientHello, a server's nothing."""
        if self._state != "new":
            return []
        self._state = "connecting"
        self._deadline = now + self._handshake_timeout
        return self._advance(now)

    def receive_untrusted(self, datagram: bytes, now: float) -> list[bytes]:
        """Process one datagram from the peer. Non-DTLS and malformed input is ignored;
        raises DtlsError (state "failed") on a fatal failure. A close_notify from the peer
        makes the state "closed" (answered with our own close_notify)."""
        out = self.start(now) if self._state == "new" else []
        if self._state not in ("connecting", "connected"):
            return out
        if not 0 < len(datagram) <= _MAX_DATAGRAM or not 20 <= datagram[0] <= 63:
            return out
        self._conn.bio_write(datagram)
        return out + self._advance(now)

    def next_timeout(self) -> float | None:
        """When `handle_timeout` is due (caller's clock), or None."""
        if self._state == "connected":
            return self._timer  # DTLS 1.3 may retransmit its last flight after the handshake
        if self._state != "connecting":
            return None
        assert self._deadline is not None
        return self._deadline if self._timer is None else min(self._timer, self._deadline)

    def handle_timeout(self, now: float) -> list[bytes]:
        """Retransmit the last flight if OpenSSL's timer expired. Raises DtlsError
        "handshake timed out" once the handshake bound has passed."""
        if self._state == "connecting" and self._deadline is not None and now >= self._deadline:
            self._fail("handshake timed out")
        if self._state not in ("connecting", "connected"):
            return []
        try:
            self._conn.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            self._fail(self._reason(exc))
        return self._flush(now)

    def srtp_keys(self) -> SrtpKeys:
        """The negotiated SRTP profile and keys (RFC 5764 section 4.2); only once connected."""
        if self._keys is None:
            raise RuntimeError("DTLS session not connected")
        return self._keys

    def srtp_sessions(self) -> tuple[pylibsrtp.Session, pylibsrtp.Session]:
        """New (rx, tx) libsrtp sessions: rx unprotects what the peer sends, tx protects ours."""
        keys = self.srtp_keys()
        return (
            new_session(_srtp_policy(keys.rx_key, pylibsrtp.Policy.SSRC_ANY_INBOUND, keys.profile)),
            new_session(_srtp_policy(keys.tx_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, keys.profile)),
        )

    def close(self) -> list[bytes]:
        """Close the session; returns the close_notify to send (if connected)."""
        out: list[bytes] = []
        if self._state == "connected":
            self._send_close_notify()
            out = self._flush(None)
        if self._state != "failed":
            self._state = "closed"
        self._timer = None
        return out

    # --- internals -------------------------------------------------------------------

    def _advance(self, now: float) -> list[bytes]:
        """Let OpenSSL consume what was written to it: handshake, then application records."""
        try:
            if self._state == "connecting":
                try:
                    self._conn.do_handshake()
                except SSL.WantReadError:
                    pass
                else:
                    self._handshake_done()
            while self._state == "connected":
                try:
                    data = self._conn.recv(65536)
                except SSL.WantReadError:
                    break
                self.discarded_application_bytes += len(data)
        except SSL.ZeroReturnError:  # close_notify from the peer
            self._state = "closed"
            self._send_close_notify()
        except SSL.Error as exc:
            self._fail(self._reason(exc))
        return self._flush(now)

    def _send_close_notify(self) -> None:
        with contextlib.suppress(SSL.Error):  # only fails if the session is already broken
            self._conn.shutdown()

    def _handshake_done(self) -> None:
        peer = self._conn.get_peer_certificate(as_cryptography=True)
        if peer is None or not self._matches(peer):
            self._fail("fingerprint mismatch")
        name = self._conn.get_selected_srtp_profile().decode()
        profile = next((p for p in SRTP_PROFILES if p.name == name), None)
        if profile is None:
            self._fail("no SRTP profile negotiated")
        # RFC 5764 4.2: client key | server key | client salt | server salt
        k, s = profile.key_length, profile.salt_length
        m = self._conn.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (k + s))
        client = m[:k] + m[2 * k : 2 * k + s]
        server = m[k : 2 * k] + m[2 * k + s :]
        tx, rx = (client, server) if self.role == "client" else (server, client)
        self._keys = SrtpKeys(profile=profile, rx_key=rx, tx_key=tx)
        self._state = "connected"
        self._deadline = None

    def _verify(self, conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        """OpenSSL's verify callback: no CA, only the leaf's fingerprint counts."""
        if depth != 0:
            return True
        if self._matches(cert.to_cryptography()):
            return True
        self._fingerprint_mismatch = True
        return False

    def _matches(self, certificate: x509.Certificate) -> bool:
        return _fingerprint(certificate, self._algorithm) in self._fingerprints

    def _reason(self, exc: SSL.Error) -> str:
        if self._fingerprint_mismatch:
            return "fingerprint mismatch"
        errors = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
        reasons = [str(e[-1]) for e in errors if isinstance(e, tuple) and e and e[-1]]
        reason = "; ".join(reasons) or str(exc) or type(exc).__name__
        if reason == "read timeout expired":  # OpenSSL's own bound on retransmissions
            return "handshake timed out"
        alert = _ALERT_RECEIVED.fullmatch(reason)  # OpenSSL's "tlsv1 alert unknown ca"
        return f"alert from peer: {alert[1]}" if alert else reason

    def _fail(self, reason: str) -> NoReturn:
        datagrams = self._flush(None)
        self._state = "failed"
        self._failure = reason
        self._timer = None
        raise DtlsError(reason, datagrams)

    def _flush(self, now: float | None) -> list[bytes]:
        """Take everything OpenSSL wrote and update the retransmission timer."""
        stream = b""
        while True:
            try:
                chunk = self._conn.bio_read(65536)
            except SSL.Error:  # WantReadError: nothing more
                break
            if not chunk:
                break
            stream += chunk
        if now is not None:
            remaining = self._conn.DTLSv1_get_timeout()
            self._timer = None if remaining is None else now + remaining
        return _datagrams(stream, self._mtu)


def _datagrams(stream: bytes, mtu: int) -> list[bytes]:
    """Cut a stream of DTLS records at record boundaries into datagrams of at most `mtu`."""
    out: list[bytes] = []
    current = b""
    i = 0
    while i < len(stream):
        end = (
            i + _RECORD_HEADER + int.from_bytes(stream[i + 11 : i + 13])
            if len(stream) - i >= _RECORD_HEADER
            else len(stream)
        )
        record = stream[i:end]
        if current and len(current) + len(record) > mtu:
            out.append(current)
            current = b""
        current += record
        i = end
    if current:
        out.append(current)
    return out


def _usable_fingerprints(remote: list[tuple[str, str]]) -> tuple[str, frozenset[str]]:
    """The strongest offered hash algorithm we know and its fingerprint values (RFC 8122 section 5)."""
    by_algorithm: dict[str, set[str]] = {}
    for algorithm, value in remote:
        if algorithm.lower() in _HASHES:
            by_algorithm.setdefault(algorithm.lower(), set()).add(value.strip().upper())
    for algorithm in _HASHES:
        if algorithm in by_algorithm:
            return algorithm, frozenset(by_algorithm[algorithm])
    raise ValueError("no remote fingerprint with a supported hash (sha-1, sha-256, sha-384, sha-512)")
