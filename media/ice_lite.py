"""ICE-lite responder for the single media UDP port, sans-IO.

The server is an ICE *lite* agent (RFC 8445 section 2.5): it has one host
candidate (the shared port), answers the client's Binding requests and is
always in the controlled role (RFC 8445 section 6.1.1: a full peer MUST take
the controlling role). It sends Binding requests of its own only to prove an
address before media goes there, and for consent (below). Datagrams reach this
module once the media port saw a STUN first byte (RFC 7983).

- :class:`IceCredentials`: the local ufrag/pwd (RFC 8445 section 5.3, RFC 8839
  ice-char grammar).
- :class:`IceLiteSession`: one per peer connection. Answers checks
  (:meth:`IceLiteSession.handle_binding_request_untrusted`), proves addresses
  (:meth:`IceLiteSession.handle_binding_response_untrusted`), keeps the valid
  remote addresses, the selected one (where media goes) and consent freshness
  (:meth:`IceLiteSession.poll`, :meth:`IceLiteSession.check_consent`).
- :class:`IceLiteDirectory`: finds the session for a datagram: a request by the
  local ufrag in USERNAME (then by source address), a response by its
  transaction id, DTLS/RTP/RTCP by source address (only addresses that sent an
  authenticated check are known, and an address belongs to one session).

STUN messages are parsed and built with aioice's public ``aioice.stun`` module
(MESSAGE-INTEGRITY, FINGERPRINT, XOR-MAPPED-ADDRESS); a strict framing walk
runs first so aioice only ever sees well-formed TLVs. Nothing here opens a
socket or reads a clock: time is passed in as ``now`` (seconds, monotonic), and
the local socket an address was reached through is an opaque ``via`` handed
back with each request to send.

What happens to a datagram (RFC 8445 section 7.3, RFC 8489 sections 6.3 and
9.1.3). "Drop" means :class:`StunError` is raised and nothing is sent; a
response is returned inside a :class:`BindingResult`:

====================================================  ==========================
bad framing (length, cookie, top bits, TLV walk),      drop (RFC 8489 6.3: not a
over :data:`MAX_STUN_SIZE`, duplicate ICE attribute,   STUN message we process)
an attribute after FINGERPRINT, undecodable value
not the Binding method                                 drop (lite agent, not a
                                                       STUN/TURN server)
success or error response to no request of ours      drop (the transaction id
(or from another address, or not signed with the       is unknown or already
client's pwd)                                          answered)
Binding indication (keepalive, RFC 8445 section 11)    no response, ignored; it
                                                       is unauthenticated
request without FINGERPRINT, or FINGERPRINT wrong      drop (RFC 8445 7.3: MUST
                                                       use FINGERPRINT)
request without USERNAME or MESSAGE-INTEGRITY          400, FINGERPRINT only
USERNAME not ``local_ufrag:remote_ufrag``              401, FINGERPRINT only
(any remote part while the remote ufrag is unknown)
MESSAGE-INTEGRITY does not verify with the local pwd   401, FINGERPRINT only
authenticated, but no PRIORITY, or neither or both of  400, signed
ICE-CONTROLLING / ICE-CONTROLLED
authenticated, ICE-CONTROLLED (the peer thinks it is   487 Role Conflict, signed
controlled too)
authenticated, ICE-CONTROLLING                         success: XOR-MAPPED-ADDRESS,
                                                       MESSAGE-INTEGRITY, FINGERPRINT
its transaction id already answered from another       drop (a replayed check)
address
session already "failed"                               drop
====================================================  ==========================

400/401 for unauthenticated requests carry no MESSAGE-INTEGRITY (RFC 8489
9.1.3); errors to authenticated requests are signed, as browsers discard
unsigned ones (a 487 that is not signed would never repair the conflict).

Role conflicts (RFC 8445 7.3.1.1) are specified for full agents; a lite agent
cannot switch to controlling, so its tie-breaker is in effect the lowest: every
ICE-CONTROLLED request gets 487, which makes a full agent that missed our
``a=ice-lite`` switch to controlling (RFC 8445 7.2.5.1; aioice does). A request
with neither role attribute is not a role conflict (7.3.1.1 only lists the
cases where an attribute is present): it lacks an attribute that 7.1.3 makes
mandatory, so it gets 400 like a missing PRIORITY.

Nomination (RFC 8445 7.3.2, 8.2, 12.1.1): a lite agent has no valid list but
the pairs that the controlling agent nominates with USE-CANDIDATE, and MUST NOT
send data before it has one, so only a nominated check selects the address
media is sent to (regular or aggressive nomination work the same). A later
nominated check from another address switches the selected address (network
change, e.g. Wi-Fi to cellular): RFC 8445 8.1.1 forbids re-nomination for
ice2 agents, but libwebrtc puts USE-CANDIDATE only on its own selected
connection toward a lite peer and moves it when the network changes, so "the
latest nomination wins" is what keeps such a peer reachable.

**An address must prove it wants the media** before it is selected. A check is
authenticated with our pwd, which the client knows, but its source address is
not: a client can forge a check from a victim's address, and a plain lite
agent (mediasoup, Pion) would then send the room's media to the victim (a
reflection attack). So a nomination from an address that has not answered us
yet selects nothing at first: the session sends that address a Binding request
of its own (USERNAME ``remote_ufrag:local_ufrag``, signed with the client's
pwd from its SDP, ICE-CONTROLLED, and a transaction id with 64 random bits),
and selects the address when a signed success response with that transaction
id comes back from it. Only the real owner of the address sees the request, so
a forger cannot answer it. Full agents answer any authenticated check (RFC
8445 7.3; libwebrtc, Firefox, libnice and aioice do), so the proof costs one
round trip before the first media and at a network change; until then media
stays on the previous address. A request is retransmitted (RTO 0.5 s,
doubling, :data:`REQUEST_ATTEMPTS` sends) and at most one transaction per
address is in flight, so a forged nomination reflects a handful of ~100-byte
requests, never media.

Other rules that keep one client from taking what is not its own:

- A transaction id is answered from one address only: a check replayed from
  another address is dropped (a retransmission from the same address is
  answered again).
- An address belongs to one session (:class:`IceLiteDirectory`): a check from
  an address another session owns is answered, but DTLS/RTP/RTCP from it keep
  going to the owner until the new session proves the address (the owner's
  media is never redirected by another session's forged check).

Consent freshness (RFC 7675): the sending side must see the receiver's
consent, so the session sends a consent request to the selected address every
:data:`CONSENT_INTERVAL` seconds (randomised by +-20 %, RFC 7675 5.1) and
consent lasts :data:`CONSENT_TIMEOUT` seconds after the last answer *from
that address* (before any selection: after the session was created). The
client's own checks do not refresh it (a forger can send those). Once expired
the session is "failed" for good: sending again needs a new session.
"""

from __future__ import annotations

import random
import re
import secrets
import string
import struct
from collections.abc import Iterator
from typing import Any, Final, Literal, NamedTuple

import msgspec
from aioice import stun

from media.errors import MalformedPacket

__all__ = [
    "CONSENT_INTERVAL",
    "CONSENT_TIMEOUT",
    "DEFAULT_MAX_ADDRESSES",
    "MAX_STUN_SIZE",
    "REQUEST_ATTEMPTS",
    "Address",
    "BindingResult",
    "IceCredentials",
    "IceLiteDirectory",
    "IceLiteSession",
    "IceState",
    "Outgoing",
    "StunError",
    "stun_username_untrusted",
    "validate_ufrag",
]

Address = tuple[str, int]
IceState = Literal["new", "connected", "failed"]

CONSENT_TIMEOUT: Final = 30.0  # RFC 7675 section 5.1
CONSENT_INTERVAL: Final = 5.0  # RFC 7675 section 5.1: a consent request every 5 s (+-20 %)
REQUEST_RTO: Final = 0.5  # first retransmission of our requests (RFC 8489 6.2.1), doubling
REQUEST_ATTEMPTS: Final = 4  # sends per request: 0, 0.5, 1.5, 3.5 s, given up at 7.5 s
MAX_TRANSACTIONS: Final = 4  # our requests in flight per session (one per address)
REMEMBERED_REQUESTS: Final = 32  # the client's transaction ids kept against replays
DEFAULT_MAX_ADDRESSES: Final = 8  # valid remote addresses remembered per session
MAX_STUN_SIZE: Final = 1500  # an ICE check is ~100-200 bytes; anything bigger is dropped unparsed
#: PRIORITY of our requests (RFC 8445 5.1.2.1: a host candidate, component 1).
REQUEST_PRIORITY: Final = (126 << 24) | (65535 << 8) | 255

ICE_CHARS: Final = string.ascii_letters + string.digits + "+/"  # RFC 8839 ice-char
_UFRAG_RE = re.compile(r"[A-Za-z0-9+/]{4,256}")
_PWD_RE = re.compile(r"[A-Za-z0-9+/]{22,256}")

_HEADER = struct.Struct("!HHI")
_ATTR = struct.Struct("!HH")
_COOKIE = 0x2112A442
_METHOD_MASK = 0x3EEF
_CLASS_MASK = 0x0110
_BINDING = 0x0001
_REQUEST = 0x0000
_INDICATION = 0x0010
_SUCCESS = 0x0100

_USERNAME = 0x0006
_MESSAGE_INTEGRITY = 0x0008
_PRIORITY = 0x0024
_USE_CANDIDATE = 0x0025
_FINGERPRINT = 0x8028
_ICE_CONTROLLED = 0x8029
_ICE_CONTROLLING = 0x802A
# Attributes whose repetition would make the first and the last occurrence
# disagree between this walk and aioice's parser (which keeps the last).
_SINGLE = frozenset({_USERNAME, _MESSAGE_INTEGRITY, _PRIORITY, _USE_CANDIDATE, _ICE_CONTROLLED, _ICE_CONTROLLING})
_TAG_SIZE = 4  # the first bytes of our transaction ids name the session; the other 8 are random


class DirectoryFull(ValueError):
    """The directory holds `max_sessions` sessions: no more until one leaves."""


class StunError(MalformedPacket):
    """A datagram the ICE-lite agent drops without answering (see the module docstring)."""


# ---------------------------------------------------------------- credentials


class IceCredentials(msgspec.Struct, frozen=True):
    """Local ICE username fragment and password, as put in the SDP (a=ice-ufrag, a=ice-pwd).

    RFC 8445 section 5.3 asks for at least 24 bits of randomness in the ufrag and
    128 in the pwd; with 64 ice-chars that is 4 and 22 characters, the RFC 8839
    minimum lengths. :meth:`generate` uses 8 and 24: the ufrag is also the
    directory key, and 48 bits keep collisions negligible.
    """

    ufrag: str
    pwd: str

    def __post_init__(self) -> None:
        if not _UFRAG_RE.fullmatch(self.ufrag):
            raise ValueError("ice-ufrag must be 4 to 256 ice-chars")
        if not _PWD_RE.fullmatch(self.pwd):
            raise ValueError("ice-pwd must be 22 to 256 ice-chars")

    @classmethod
    def generate(cls, ufrag_length: int = 8, pwd_length: int = 24) -> IceCredentials:
        """Fresh random credentials from ``secrets``."""
        return cls(
            "".join(secrets.choice(ICE_CHARS) for _ in range(ufrag_length)),
            "".join(secrets.choice(ICE_CHARS) for _ in range(pwd_length)),
        )


def validate_ufrag(ufrag: str) -> str:
    """``ufrag`` if it is 4 to 256 ice-chars (a remote ufrag from an offer), else ValueError."""
    if not _UFRAG_RE.fullmatch(ufrag):
        raise ValueError("ice-ufrag must be 4 to 256 ice-chars")
    return ufrag


def validate_pwd(pwd: str) -> str:
    """``pwd`` if it is 22 to 256 ice-chars (a remote pwd from an offer), else ValueError."""
    if not _PWD_RE.fullmatch(pwd):
        raise ValueError("ice-pwd must be 22 to 256 ice-chars")
    return pwd


# ---------------------------------------------------------------- framing


class _Frame(NamedTuple):
    method: int
    klass: int
    username: bytes | None  # USERNAME value before MESSAGE-INTEGRITY
    fingerprint: bool


def _frame_untrusted(data: bytes) -> _Frame:
    """Check the STUN header and walk the attributes, without decoding values."""
    n = len(data)
    if n < 20:
        raise StunError("STUN message shorter than its header")
    if n > MAX_STUN_SIZE:
        raise StunError("STUN message too large")
    mtype, length, cookie = _HEADER.unpack_from(data, 0)
    if mtype & 0xC000 or cookie != _COOKIE:
        raise StunError("not a STUN message (top bits or magic cookie)")
    if length != n - 20 or length & 3:
        raise StunError("STUN length does not match the datagram")
    username: bytes | None = None
    integrity = fingerprint = False
    seen: set[int] = set()
    pos = 20
    while pos < n:
        if fingerprint:
            raise StunError("STUN attribute after FINGERPRINT")
        atype, alen = _ATTR.unpack_from(data, pos)
        end = pos + 4 + alen
        if end > n:
            raise StunError("STUN attribute truncated")
        if atype == _FINGERPRINT:
            if alen != 4:
                raise StunError("bad FINGERPRINT length")
            fingerprint = True
        elif not integrity:  # attributes after MESSAGE-INTEGRITY are ignored (RFC 8489 14.5)
            if atype in _SINGLE:
                if atype in seen:
                    raise StunError("repeated STUN attribute")
                seen.add(atype)
            if atype == _MESSAGE_INTEGRITY:
                if alen != 20:
                    raise StunError("bad MESSAGE-INTEGRITY length")
                integrity = True
            elif atype == _USERNAME:
                username = data[pos + 4 : end]
        pos = end + (-alen & 3)
    if pos != n:
        raise StunError("STUN attribute padding truncated")
    return _Frame(mtype & _METHOD_MASK, mtype & _CLASS_MASK, username, fingerprint)


def stun_username_untrusted(data: bytes) -> str:
    """The USERNAME of a STUN message, without checking integrity (to find the session).

    Raises :class:`StunError` if the framing is bad or there is no USERNAME.
    """
    frame = _frame_untrusted(data)
    if frame.username is None:
        raise StunError("STUN message without USERNAME")
    try:
        return frame.username.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StunError("USERNAME is not UTF-8") from exc


def _parse_untrusted(data: bytes) -> stun.Message:
    try:
        return stun.parse_message(data)
    except (ValueError, struct.error) as exc:  # includes a FINGERPRINT mismatch
        raise StunError(f"bad STUN message: {exc}") from exc


# ---------------------------------------------------------------- session


class Outgoing(NamedTuple):
    """A request of ours to send: ``data`` to ``address`` through ``via`` (the local socket
    the address reached us on, as given with its check)."""

    data: bytes
    address: Address
    via: Any


class BindingResult(msgspec.Struct, frozen=True):
    """What one STUN datagram did to a session.

    ``response`` is the datagram to send back to the source address (None:
    send nothing). ``error_code`` is set when it is an error response (ours, or
    the client's answer to our request). ``accepted``: an authenticated check
    was answered with success, so the source is now a valid address of the
    session. ``nominated``: it carried USE-CANDIDATE. ``proved``: the address
    that answered our request (it is the client's). ``address_changed``: the
    selected address changed. ``evicted``: valid addresses the session forgot
    to stay within its bound. ``requests``: our requests to send now.
    """

    response: bytes | None
    error_code: int | None = None
    accepted: bool = False
    nominated: bool = False
    proved: Address | None = None
    address_changed: bool = False
    evicted: tuple[Address, ...] = ()
    requests: tuple[Outgoing, ...] = ()


_IGNORED = BindingResult(None)


class _Remote:
    """A valid remote address: where it reached us, its last check, its last answer to us."""

    __slots__ = ("checked_at", "proved_at", "via")

    def __init__(self, checked_at: float, via: Any) -> None:
        self.checked_at = checked_at
        self.proved_at: float | None = None
        self.via = via


class _Transaction:
    """A request of ours waiting for its answer."""

    __slots__ = ("address", "attempts", "data", "next_at", "via")

    def __init__(self, address: Address, via: Any, data: bytes, now: float) -> None:
        self.address = address
        self.via = via
        self.data = data
        self.attempts = 1
        self.next_at = now + REQUEST_RTO


class IceLiteSession:
    """ICE-lite state of one peer connection (one component: RTP and RTCP are muxed)."""

    def __init__(
        self,
        now: float,
        local: IceCredentials | None = None,
        remote_ufrag: str | None = None,
        remote_pwd: str | None = None,
        *,
        consent_timeout: float = CONSENT_TIMEOUT,
        consent_interval: float | None = None,
        max_addresses: int = DEFAULT_MAX_ADDRESSES,
    ) -> None:
        if max_addresses < 2:
            raise ValueError("max_addresses must be at least 2")
        if consent_interval is None:  # RFC 7675's 5 s, or six chances within a shorter timeout
            consent_interval = min(CONSENT_INTERVAL, consent_timeout / 6)
        if consent_timeout <= 0 or consent_interval <= 0:
            raise ValueError("consent_timeout and consent_interval must be positive")
        self.local = local if local is not None else IceCredentials.generate()
        self.remote_ufrag: str | None = None
        self._remote_key: bytes | None = None
        if remote_ufrag is not None:
            self.set_remote_credentials(remote_ufrag, remote_pwd)
        self.consent_timeout: Final = consent_timeout
        self.consent_interval: Final = consent_interval
        self.max_addresses: Final = max_addresses
        self.created_at: Final = now
        #: The first bytes of our transaction ids: the directory routes responses by them.
        self.tag = secrets.token_bytes(_TAG_SIZE)
        self.state: IceState = "new"
        #: Where media is sent; None until a nominated address proved it is the client's.
        self.selected_address: Address | None = None
        #: Whether ``selected_address`` came from a USE-CANDIDATE check (not after an ICE restart).
        self.nominated = False
        #: Time of the last accepted check, from any address.
        self.last_check_at: float | None = None
        self._consent_at = now  # last answer to us from the selected address (creation before that)
        self._next_consent_request = float("inf")
        self._key = self.local.pwd.encode("utf-8")
        self._remotes: dict[Address, _Remote] = {}  # valid addresses, least recently checked first
        self._wanted: Address | None = None  # nominated, not proved yet
        self._transactions: dict[bytes, _Transaction] = {}
        self._answered: dict[bytes, Address] = {}  # the client's recent transaction ids, oldest first
        self._jitter = random.Random(secrets.randbits(64))

    def __repr__(self) -> str:
        return f"IceLiteSession(ufrag={self.local.ufrag!r}, state={self.state!r}, selected={self.selected_address})"

    # ---- signalling

    def set_remote_credentials(self, ufrag: str, pwd: str | None) -> None:
        """The peer's ufrag and pwd from its SDP (the pwd signs our requests). Changing the
        ufrag is an ICE restart (:meth:`restart`)."""
        validate_ufrag(ufrag)
        if self.remote_ufrag is not None and self.remote_ufrag != ufrag:
            raise ValueError("remote ufrag changed: that is an ICE restart")
        if pwd is not None:
            validate_pwd(pwd)
            self._remote_key = pwd.encode("utf-8")
        self.remote_ufrag = ufrag

    def restart(self, local: IceCredentials, remote_ufrag: str, remote_pwd: str) -> None:
        """An ICE restart (RFC 8445 section 9): new credentials on both sides.

        Only checks with the new credentials are accepted from now on, and our
        requests in flight are forgotten. The selected address stays (media keeps
        flowing on the old path, its consent goes on with the new credentials)
        until a nominated check on the new ones selects another; it is no longer
        "nominated". Use :meth:`IceLiteDirectory.restart` for a registered session.
        """
        validate_ufrag(remote_ufrag)
        validate_pwd(remote_pwd)
        if local.ufrag == self.local.ufrag:
            raise ValueError("an ICE restart needs a new local ufrag")
        self.local = local
        self._key = local.pwd.encode("utf-8")
        self.remote_ufrag = remote_ufrag
        self._remote_key = remote_pwd.encode("utf-8")
        self.nominated = False
        self._transactions.clear()
        self._answered.clear()
        self._wanted = None

    def retag(self) -> None:
        """A new transaction-id tag (the directory's was taken)."""
        self.tag = secrets.token_bytes(_TAG_SIZE)

    # ---- addresses and consent

    @property
    def addresses(self) -> tuple[Address, ...]:
        """Remote addresses that sent an accepted check, least recently checked first."""
        return tuple(self._remotes)

    def is_valid_address(self, addr: Address) -> bool:
        return addr in self._remotes

    @property
    def selected_via(self) -> Any:
        """The local socket the selected address reached us on (None if nothing is selected)."""
        remote = self._remotes.get(self.selected_address) if self.selected_address is not None else None
        return None if remote is None else remote.via

    @property
    def consent_expires_at(self) -> float:
        """When consent to send to the selected address lapses without another answer."""
        return self._consent_at + self.consent_timeout

    def expired(self, now: float) -> bool:
        """No answer from the selected address for ``consent_timeout`` seconds (counted
        from creation if nothing was ever selected)."""
        return now - self._consent_at >= self.consent_timeout

    def check_consent(self, now: float) -> bool:
        """Move to "failed" if consent expired; True only on that transition."""
        if self.state != "failed" and self.expired(now):
            self.close()
            return True
        return False

    def close(self) -> None:
        """Stop answering and asking: the session is "failed" for good."""
        self.state = "failed"
        self._transactions.clear()

    def forget_address(self, addr: Address) -> None:
        """Drop a valid address (another session proved it owns it)."""
        self._remotes.pop(addr, None)
        if self._wanted == addr:
            self._wanted = None
        for tid in [tid for tid, t in self._transactions.items() if t.address == addr]:
            del self._transactions[tid]
        if self.selected_address == addr:
            self.selected_address = None
            self.nominated = False

    def _remember(self, addr: Address, now: float, via: Any) -> tuple[Address, ...]:
        remote = self._remotes.pop(addr, None)
        if remote is None:
            remote = _Remote(now, via)
        remote.checked_at, remote.via = now, via
        self._remotes[addr] = remote  # most recent last
        evicted: list[Address] = []
        while len(self._remotes) > self.max_addresses:
            victim = next(a for a in self._remotes if a != addr and a != self.selected_address)
            self.forget_address(victim)
            evicted.append(victim)
        return tuple(evicted)

    def _proved(self, addr: Address, now: float) -> bool:
        remote = self._remotes.get(addr)
        return remote is not None and remote.proved_at is not None and now - remote.proved_at < self.consent_timeout

    def _select(self, addr: Address, now: float) -> None:
        remote = self._remotes[addr]
        assert remote.proved_at is not None
        self.selected_address = addr
        self.nominated = True
        self._wanted = None
        self._consent_at = remote.proved_at
        self._next_consent_request = max(now, remote.proved_at + self._consent_wait())
        if self.state == "new":
            self.state = "connected"

    def _consent_wait(self) -> float:
        return self.consent_interval * self._jitter.uniform(0.8, 1.2)

    # ---- our requests

    def _request(self, addr: Address, now: float) -> tuple[Outgoing, ...]:
        """Ask ``addr`` to prove it is the client's: nothing if a request to it is in flight,
        or if the client's credentials are not known yet."""
        remote = self._remotes.get(addr)
        if self._remote_key is None or remote is None:
            return ()
        if any(t.address == addr for t in self._transactions.values()):
            return ()
        if len(self._transactions) >= MAX_TRANSACTIONS:  # the oldest gives way
            del self._transactions[next(iter(self._transactions))]
        tid = self.tag + secrets.token_bytes(12 - _TAG_SIZE)
        message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, transaction_id=tid)
        message.attributes["USERNAME"] = f"{self.remote_ufrag}:{self.local.ufrag}"
        message.attributes["PRIORITY"] = REQUEST_PRIORITY
        message.attributes["ICE-CONTROLLED"] = 0  # the lowest tie-breaker: a lite agent stays controlled
        message.add_message_integrity(self._remote_key)  # adds FINGERPRINT too
        data = bytes(message)
        self._transactions[tid] = _Transaction(addr, remote.via, data, now)
        return (Outgoing(data, addr, remote.via),)

    def poll(self, now: float) -> list[Outgoing]:
        """Our requests due now: retransmissions, and the selected address's consent request."""
        if self.state == "failed":
            return []
        out: list[Outgoing] = []
        for tid, t in list(self._transactions.items()):
            if t.next_at > now:
                continue
            if t.attempts >= REQUEST_ATTEMPTS:  # no answer: given up
                del self._transactions[tid]
                continue
            t.attempts += 1
            t.next_at = now + REQUEST_RTO * (1 << (t.attempts - 1))
            out.append(Outgoing(t.data, t.address, t.via))
        selected = self.selected_address
        if selected is not None and now >= self._next_consent_request:
            self._next_consent_request = now + self._consent_wait()
            out.extend(self._request(selected, now))
        return out

    def next_timeout(self) -> float:
        """When :meth:`poll` or :meth:`check_consent` next has something to do (inf: never)."""
        if self.state == "failed":
            return float("inf")
        deadlines = [t.next_at for t in self._transactions.values()]
        deadlines += [self._next_consent_request, self.consent_expires_at]
        return min(deadlines)

    # ---- checks

    def _username_ok(self, username: Any) -> bool:
        if not isinstance(username, str):
            return False
        local, colon, remote = username.partition(":")
        return bool(colon) and local == self.local.ufrag and self.remote_ufrag in (None, remote)

    def handle_binding_request_untrusted(
        self, data: bytes, remote_addr: Address, now: float, via: Any = None
    ) -> BindingResult:
        """Answer one STUN request (or indication) from ``remote_addr`` (host, port) that
        reached us through ``via``.

        Returns the response to send (success or error, see the module
        docstring), our requests to send, and what changed; raises
        :class:`StunError` when the datagram is dropped without an answer.
        """
        if self.state == "failed":
            raise StunError("ICE session failed")
        frame = _frame_untrusted(data)
        if frame.method != _BINDING:
            raise StunError("not a STUN Binding message")
        if frame.klass == _INDICATION:
            return _IGNORED
        if frame.klass != _REQUEST:
            raise StunError("a STUN response where a request was expected")
        if not frame.fingerprint:
            raise StunError("STUN request without FINGERPRINT")
        message = _parse_untrusted(data)
        attrs = message.attributes
        addr: Address = (remote_addr[0], remote_addr[1])

        # Authentication, short-term credentials (RFC 8489 9.1.3).
        if "USERNAME" not in attrs or "MESSAGE-INTEGRITY" not in attrs:
            return self._error(message, 400, "Bad Request", signed=False)
        if not (self._username_ok(attrs["USERNAME"]) and message.check_message_integrity(self._key)):
            return self._error(message, 401, "Unauthenticated", signed=False)

        # ICE attributes (RFC 8445 7.1) and role (7.3.1.1; we are always controlled).
        controlling = "ICE-CONTROLLING" in attrs
        controlled = "ICE-CONTROLLED" in attrs
        if "PRIORITY" not in attrs or controlling == controlled:
            return self._error(message, 400, "Bad Request", signed=True)
        if controlled:
            return self._error(message, 487, "Role Conflict", signed=True)

        tid = message.transaction_id
        first_from = self._answered.get(tid)
        if first_from is None:
            self._answered[tid] = addr
            if len(self._answered) > REMEMBERED_REQUESTS:
                del self._answered[next(iter(self._answered))]
        elif first_from != addr:
            raise StunError("a check replayed from another address")

        nominated = "USE-CANDIDATE" in attrs
        evicted = self._remember(addr, now, via)
        previous = self.selected_address
        requests: tuple[Outgoing, ...] = ()
        if nominated:
            if addr == previous:
                self.nominated = True
            elif self._proved(addr, now):
                self._select(addr, now)
            else:  # prove it first: media stays where it is meanwhile
                self._wanted = addr
                requests = self._request(addr, now)
        self.last_check_at = now

        response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=tid)
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        response.add_message_integrity(self._key)  # adds FINGERPRINT too
        return BindingResult(
            bytes(response),
            accepted=True,
            nominated=nominated,
            address_changed=self.selected_address != previous,
            evicted=evicted,
            requests=requests,
        )

    def handle_binding_response_untrusted(self, data: bytes, remote_addr: Address, now: float) -> BindingResult:
        """The client's answer to one of our requests, from ``remote_addr``.

        A success signed with the client's pwd, from the address the request went
        to, proves that address: it is selected if the client nominated it, and it
        renews consent if it is selected. Raises :class:`StunError` for anything
        else but an error response to our request (which ends that transaction).
        """
        if self.state == "failed":
            raise StunError("ICE session failed")
        frame = _frame_untrusted(data)
        if frame.method != _BINDING or frame.klass in (_REQUEST, _INDICATION):
            raise StunError("not a STUN Binding response")
        if not frame.fingerprint:
            raise StunError("STUN response without FINGERPRINT")
        message = _parse_untrusted(data)
        addr: Address = (remote_addr[0], remote_addr[1])
        transaction = self._transactions.get(message.transaction_id)
        if transaction is None:
            raise StunError("a STUN response to no request of ours")
        if transaction.address != addr:
            raise StunError("a STUN response from another address than the request went to")
        if self._remote_key is None or not message.check_message_integrity(self._remote_key):
            raise StunError("a STUN response not signed with the client's pwd")
        del self._transactions[message.transaction_id]
        if frame.klass != _SUCCESS:
            code = message.attributes.get("ERROR-CODE")
            return BindingResult(None, error_code=code[0] if isinstance(code, tuple) else 0)
        evicted: tuple[Address, ...] = ()
        remote = self._remotes.get(addr)
        if remote is None:  # evicted while the request was out: it is valid again
            evicted = self._remember(addr, now, transaction.via)
            remote = self._remotes[addr]
        remote.proved_at = now
        previous = self.selected_address
        if addr == previous:
            self._consent_at = now
        elif addr == self._wanted:
            self._select(addr, now)
        return BindingResult(None, proved=addr, address_changed=self.selected_address != previous, evicted=evicted)

    def _error(self, request: stun.Message, code: int, reason: str, *, signed: bool) -> BindingResult:
        response = stun.Message(stun.Method.BINDING, stun.Class.ERROR, transaction_id=request.transaction_id)
        response.attributes["ERROR-CODE"] = (code, reason)
        if signed:
            response.add_message_integrity(self._key)
        else:
            response.add_fingerprint()
        return BindingResult(bytes(response), error_code=code)


# ---------------------------------------------------------------- directory


class IceLiteDirectory:
    """Finds the session of a datagram on the shared port.

    A STUN request goes by the local ufrag before the colon in USERNAME (read
    before integrity is checked; the session then checks it with its pwd),
    falling back to the source address for a request without a usable USERNAME,
    so the session can answer 400. A STUN response goes by the tag at the start
    of its transaction id. DTLS, RTP and RTCP go by source address.

    An address belongs to one session: the first whose check from it was
    accepted, until another session proves it (the client there answered that
    session's request), or the owner forgets it or leaves.

    Bounded: at most ``max_sessions`` sessions, each with at most its own
    ``max_addresses`` addresses. Lookups of anything unknown return None.
    """

    def __init__(self, max_sessions: int = 4096) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be positive")
        self.max_sessions: Final = max_sessions
        self._by_ufrag: dict[str, IceLiteSession] = {}
        self._by_tag: dict[bytes, IceLiteSession] = {}
        self._by_address: dict[Address, IceLiteSession] = {}

    def __len__(self) -> int:
        return len(self._by_ufrag)

    def __iter__(self) -> Iterator[IceLiteSession]:
        return iter(tuple(self._by_ufrag.values()))

    def add(self, session: IceLiteSession) -> None:
        """Register a session under its local ufrag (ValueError if taken or full)."""
        ufrag = session.local.ufrag
        if ufrag in self._by_ufrag:
            raise ValueError("ICE ufrag already registered")
        if len(self._by_ufrag) >= self.max_sessions:
            raise DirectoryFull(f"too many ICE sessions ({self.max_sessions})")
        while session.tag in self._by_tag:
            session.retag()
        self._by_ufrag[ufrag] = session
        self._by_tag[session.tag] = session
        for addr in session.addresses:
            self._by_address.setdefault(addr, session)

    def remove(self, session: IceLiteSession) -> bool:
        """Unregister a session and its addresses; False if it was not registered."""
        if self._by_ufrag.get(session.local.ufrag) is not session:
            return False
        del self._by_ufrag[session.local.ufrag]
        del self._by_tag[session.tag]
        for addr in session.addresses:
            if self._by_address.get(addr) is session:
                del self._by_address[addr]
        return True

    def restart(self, session: IceLiteSession, local: IceCredentials, remote_ufrag: str, remote_pwd: str) -> None:
        """:meth:`IceLiteSession.restart` of a registered session, re-keyed under its new ufrag
        (ValueError if that ufrag is taken; nothing changes then)."""
        if self._by_ufrag.get(session.local.ufrag) is not session:
            raise ValueError("ICE session not registered")
        if local.ufrag in self._by_ufrag:
            raise ValueError("ICE ufrag already registered")
        old_ufrag = session.local.ufrag
        session.restart(local, remote_ufrag, remote_pwd)
        del self._by_ufrag[old_ufrag]
        self._by_ufrag[local.ufrag] = session

    def by_ufrag(self, ufrag: str) -> IceLiteSession | None:
        return self._by_ufrag.get(ufrag)

    def by_address(self, addr: Address) -> IceLiteSession | None:
        """The session a DTLS/RTP/RTCP datagram from ``addr`` (host, port) belongs to."""
        return self._by_address.get(addr)

    def find_for_stun(self, data: bytes, remote_addr: Address) -> IceLiteSession | None:
        """The session a STUN datagram is for: a response by its transaction id's tag, a
        request by USERNAME's local ufrag, else (no usable USERNAME) by source address."""
        try:
            frame = _frame_untrusted(data)
        except StunError:
            return self._by_address.get((remote_addr[0], remote_addr[1]))
        if frame.klass not in (_REQUEST, _INDICATION):
            return self._by_tag.get(data[8 : 8 + _TAG_SIZE])
        try:
            username = frame.username.decode("utf-8") if frame.username is not None else None
        except UnicodeDecodeError:
            username = None
        if username is None:
            return self._by_address.get((remote_addr[0], remote_addr[1]))
        return self._by_ufrag.get(username.partition(":")[0])

    def handle_stun_untrusted(
        self, data: bytes, remote_addr: Address, now: float, via: Any = None
    ) -> tuple[IceLiteSession, BindingResult]:
        """Route a STUN datagram to its session, let it answer or take the answer, and keep
        the address map.

        Raises :class:`StunError` if no session matches or the session drops it.
        """
        session = self.find_for_stun(data, remote_addr)
        if session is None:
            raise StunError("no ICE session for this STUN message")
        addr: Address = (remote_addr[0], remote_addr[1])
        if len(data) >= 20 and data[0] & 0x01:  # a response: its class bits (0x0100) are in the first byte
            result = session.handle_binding_response_untrusted(data, addr, now)
        else:
            result = session.handle_binding_request_untrusted(data, addr, now, via)
        for old in result.evicted:
            if self._by_address.get(old) is session:
                del self._by_address[old]
        if result.accepted:
            self._by_address.setdefault(addr, session)  # another session's address stays its own
        if result.proved is not None:
            owner = self._by_address.get(addr)
            if owner is not session:
                if owner is not None:
                    owner.forget_address(addr)
                self._by_address[addr] = session
        return session, result
