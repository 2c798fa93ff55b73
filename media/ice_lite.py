"""ICE-lite responder for the single media UDP port, sans-IO.

The server is an ICE *lite* agent (RFC 8445 section 2.5): it has one host
candidate (the shared port), never sends connectivity checks, only answers the
client's Binding requests, and is always in the controlled role (RFC 8445
section 6.1.1: a full peer MUST take the controlling role). Datagrams reach
this module once :func:`media.demux.classify` said "stun".

- :class:`IceCredentials`: the local ufrag/pwd (RFC 8445 section 5.3, RFC 8839
  ice-char grammar).
- :class:`IceLiteSession`: one per peer connection. Answers checks
  (:meth:`IceLiteSession.handle_binding_request_untrusted`), keeps the valid
  remote addresses, the selected one (where media goes) and consent freshness.
- :class:`IceLiteDirectory`: finds the session for a datagram: STUN by the
  local ufrag in USERNAME (then by source address), DTLS/RTP/RTCP by source
  address (only addresses that sent an authenticated check are known).

STUN messages are parsed and built with aioice's public ``aioice.stun`` module
(MESSAGE-INTEGRITY, FINGERPRINT, XOR-MAPPED-ADDRESS); a strict framing walk
runs first so aioice only ever sees well-formed TLVs. Nothing here opens a
socket or reads a clock: time is passed in as ``now`` (seconds, monotonic).

What happens to a datagram (RFC 8445 section 7.3, RFC 8489 sections 6.3 and
9.1.3). "Drop" means :class:`StunError` is raised and nothing is sent; a
response is returned inside a :class:`BindingResult`:

====================================================  ==========================
bad framing (length, cookie, top bits, TLV walk),      drop (RFC 8489 6.3: not a
over :data:`MAX_STUN_SIZE`, duplicate ICE attribute,   STUN message we process)
an attribute after FINGERPRINT, undecodable value
not the Binding method                                 drop (lite agent, not a
                                                       STUN/TURN server)
success or error response                              drop (we never send
                                                       requests)
Binding indication (keepalive, RFC 8445 section 11)    no response, ignored; it
                                                       is unauthenticated, so no
                                                       consent either
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
send data before it has one, so by default only an accepted check carrying
USE-CANDIDATE selects the address media is sent to (regular nomination, as
aioice does toward a lite peer; aggressive nomination puts USE-CANDIDATE on
every check and works the same). ``early_selection=True`` instead selects the
first accepted check's address until a nomination arrives (mediasoup's
"connected" state), for peers that send media before nominating. A later
nominated check from another address switches the selected address (network
change, e.g. Wi-Fi to cellular): RFC 8445 8.1.1 forbids re-nomination for
ice2 agents and says to keep the highest-priority pair when an RFC 5245 agent
nominates several, but libwebrtc puts USE-CANDIDATE only on its own selected
connection toward a lite peer and moves it when the network changes, so "the
latest nomination wins" is what keeps such a peer reachable (mediasoup's
IceServer and Pion's lite agent do the same). Every check is authenticated
with the local pwd before it can move anything.

Consent freshness (RFC 7675) seen from the lite side: the client's checks are
the only signal. Consent to send to the selected address is refreshed by every
accepted check *from that address* (nominated or not; browsers and aioice send
one about every 5 s), and expires :data:`CONSENT_TIMEOUT` seconds after the last
one, or after the session was created if nothing was ever selected (ICE never
completed). Once expired the session is "failed" for good: sending again needs
an ICE restart, which here is a new session with new credentials.
"""

from __future__ import annotations

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
    "CONSENT_TIMEOUT",
    "DEFAULT_MAX_ADDRESSES",
    "MAX_STUN_SIZE",
    "Address",
    "BindingResult",
    "IceCredentials",
    "IceLiteDirectory",
    "IceLiteSession",
    "IceState",
    "StunError",
    "stun_username_untrusted",
    "validate_ufrag",
]

Address = tuple[str, int]
IceState = Literal["new", "connected", "failed"]

CONSENT_TIMEOUT: Final = 30.0  # RFC 7675 section 5.1
DEFAULT_MAX_ADDRESSES: Final = 8  # valid remote addresses remembered per session
MAX_STUN_SIZE: Final = 1500  # an ICE check is ~100-200 bytes; anything bigger is dropped unparsed

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


class BindingResult(msgspec.Struct, frozen=True):
    """What one STUN datagram did to a session.

    ``response`` is the datagram to send back to the source address (None:
    send nothing). ``error_code`` is set when it is an error response.
    ``accepted``: an authenticated check was answered with success, so the
    source is now a valid address of the session. ``nominated``: it carried
    USE-CANDIDATE. ``address_changed``: the selected address changed.
    ``evicted``: valid addresses the session forgot to stay within its bound.
    """

    response: bytes | None
    error_code: int | None = None
    accepted: bool = False
    nominated: bool = False
    address_changed: bool = False
    evicted: tuple[Address, ...] = ()


_IGNORED = BindingResult(None)


class IceLiteSession:
    """ICE-lite state of one peer connection (one component: RTP and RTCP are muxed)."""

    def __init__(
        self,
        now: float,
        local: IceCredentials | None = None,
        remote_ufrag: str | None = None,
        *,
        consent_timeout: float = CONSENT_TIMEOUT,
        early_selection: bool = False,
        max_addresses: int = DEFAULT_MAX_ADDRESSES,
    ) -> None:
        if max_addresses < 2:
            raise ValueError("max_addresses must be at least 2")
        if consent_timeout <= 0:
            raise ValueError("consent_timeout must be positive")
        self.local = local if local is not None else IceCredentials.generate()
        self.remote_ufrag: str | None = None
        if remote_ufrag is not None:
            self.set_remote_ufrag(remote_ufrag)
        self.consent_timeout: Final = consent_timeout
        self.early_selection: Final = early_selection
        self.max_addresses: Final = max_addresses
        self.created_at: Final = now
        self.state: IceState = "new"
        #: Where media is sent; None until a check selects an address.
        self.selected_address: Address | None = None
        #: Whether ``selected_address`` came from a USE-CANDIDATE check.
        self.nominated = False
        #: Time of the last accepted check, from any address.
        self.last_check_at: float | None = None
        self._consent_at = now  # last accepted check from the selected address (creation before that)
        self._key = self.local.pwd.encode("utf-8")
        self._addresses: dict[Address, float] = {}  # valid address -> last accepted check, oldest first

    def __repr__(self) -> str:
        return f"IceLiteSession(ufrag={self.local.ufrag!r}, state={self.state!r}, selected={self.selected_address})"

    # ---- signalling

    def set_remote_ufrag(self, ufrag: str) -> None:
        """The peer's ufrag from its SDP. Changing it is an ICE restart (:meth:`restart`)."""
        validate_ufrag(ufrag)
        if self.remote_ufrag is not None and self.remote_ufrag != ufrag:
            raise ValueError("remote ufrag changed: that is an ICE restart")
        self.remote_ufrag = ufrag

    def restart(self, local: IceCredentials, remote_ufrag: str) -> None:
        """An ICE restart (RFC 8445 section 9): new credentials on both sides.

        Only checks with the new credentials are accepted from now on. The
        selected address stays (media keeps flowing on the old path) until a
        check on the new credentials selects one; it is no longer "nominated".
        Use :meth:`IceLiteDirectory.restart` for a registered session.
        """
        validate_ufrag(remote_ufrag)
        if local.ufrag == self.local.ufrag:
            raise ValueError("an ICE restart needs a new local ufrag")
        self.local = local
        self._key = local.pwd.encode("utf-8")
        self.remote_ufrag = remote_ufrag
        self.nominated = False

    # ---- addresses and consent

    @property
    def addresses(self) -> tuple[Address, ...]:
        """Remote addresses that sent an accepted check, least recently checked first."""
        return tuple(self._addresses)

    def is_valid_address(self, addr: Address) -> bool:
        return addr in self._addresses

    @property
    def consent_expires_at(self) -> float:
        """When consent to send to the selected address lapses without another check."""
        return self._consent_at + self.consent_timeout

    def expired(self, now: float, timeout: float | None = None) -> bool:
        """No accepted check from the selected address for ``timeout`` seconds
        (default ``consent_timeout``); counted from creation if none ever came."""
        return now - self._consent_at >= (self.consent_timeout if timeout is None else timeout)

    def check_consent(self, now: float) -> bool:
        """Move to "failed" if consent expired; True only on that transition."""
        if self.state != "failed" and self.expired(now):
            self.state = "failed"
            return True
        return False

    def close(self) -> None:
        """Stop answering: the session is "failed" for good."""
        self.state = "failed"

    def forget_address(self, addr: Address) -> None:
        """Drop a valid address (another session proved it owns it, or it went stale)."""
        self._addresses.pop(addr, None)
        if self.selected_address == addr:
            self.selected_address = None
            self.nominated = False

    def prune(self, now: float, max_age: float) -> tuple[Address, ...]:
        """Forget non-selected addresses without an accepted check for ``max_age`` seconds."""
        stale = tuple(a for a, t in self._addresses.items() if now - t >= max_age and a != self.selected_address)
        for a in stale:
            del self._addresses[a]
        return stale

    def _remember(self, addr: Address, now: float) -> tuple[Address, ...]:
        self._addresses.pop(addr, None)
        self._addresses[addr] = now  # most recent last
        evicted: list[Address] = []
        while len(self._addresses) > self.max_addresses:
            victim = next(a for a in self._addresses if a != addr and a != self.selected_address)
            del self._addresses[victim]
            evicted.append(victim)
        return tuple(evicted)

    # ---- checks

    def _username_ok(self, username: Any) -> bool:
        if not isinstance(username, str):
            return False
        local, colon, remote = username.partition(":")
        return bool(colon) and local == self.local.ufrag and self.remote_ufrag in (None, remote)

    def handle_binding_request_untrusted(self, data: bytes, remote_addr: Address, now: float) -> BindingResult:
        """Answer one STUN datagram from ``remote_addr`` (host, port).

        Returns the response to send (success or error, see the module
        docstring) and what changed; raises :class:`StunError` when the
        datagram is dropped without an answer.
        """
        if self.state == "failed":
            raise StunError("ICE session failed")
        frame = _frame_untrusted(data)
        if frame.method != _BINDING:
            raise StunError("not a STUN Binding message")
        if frame.klass == _INDICATION:
            return _IGNORED
        if frame.klass != _REQUEST:
            raise StunError("unsolicited STUN response")
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

        nominated = "USE-CANDIDATE" in attrs
        evicted = self._remember(addr, now)
        previous = self.selected_address
        if nominated:
            self.selected_address = addr
            self.nominated = True
        elif previous is None and self.early_selection:
            self.selected_address = addr
        if self.selected_address == addr:
            self._consent_at = now
        self.last_check_at = now
        if self.state == "new" and self.selected_address is not None:
            self.state = "connected"

        response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=message.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        response.add_message_integrity(self._key)  # adds FINGERPRINT too
        return BindingResult(
            bytes(response),
            accepted=True,
            nominated=nominated,
            address_changed=self.selected_address != previous,
            evicted=evicted,
        )

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

    STUN goes by the local ufrag before the colon in USERNAME (read before
    integrity is checked; the session then checks it with its pwd), falling
    back to the source address for a request without a usable USERNAME, so the
    session can answer 400. DTLS, RTP and RTCP go by source address: an address
    is mapped once it sent a check the session accepted, to the session that
    accepted it last, and unmapped when that session forgets it.

    Bounded: at most ``max_sessions`` sessions, each with at most its own
    ``max_addresses`` addresses. Lookups of anything unknown return None.
    """

    def __init__(self, max_sessions: int = 4096) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be positive")
        self.max_sessions: Final = max_sessions
        self._by_ufrag: dict[str, IceLiteSession] = {}
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
        self._by_ufrag[ufrag] = session
        for addr in session.addresses:
            self._claim(addr, session)

    def remove(self, session: IceLiteSession) -> bool:
        """Unregister a session and its addresses; False if it was not registered."""
        if self._by_ufrag.get(session.local.ufrag) is not session:
            return False
        del self._by_ufrag[session.local.ufrag]
        for addr in session.addresses:
            if self._by_address.get(addr) is session:
                del self._by_address[addr]
        return True

    def restart(self, session: IceLiteSession, local: IceCredentials, remote_ufrag: str) -> None:
        """:meth:`IceLiteSession.restart` of a registered session, re-keyed under its new ufrag
        (ValueError if that ufrag is taken; nothing changes then)."""
        if self._by_ufrag.get(session.local.ufrag) is not session:
            raise ValueError("ICE session not registered")
        if local.ufrag in self._by_ufrag:
            raise ValueError("ICE ufrag already registered")
        old_ufrag = session.local.ufrag
        session.restart(local, remote_ufrag)
        del self._by_ufrag[old_ufrag]
        self._by_ufrag[local.ufrag] = session

    def by_ufrag(self, ufrag: str) -> IceLiteSession | None:
        return self._by_ufrag.get(ufrag)

    def by_address(self, addr: Address) -> IceLiteSession | None:
        """The session a DTLS/RTP/RTCP datagram from ``addr`` (host, port) belongs to."""
        return self._by_address.get(addr)

    def find_for_stun(self, data: bytes, remote_addr: Address) -> IceLiteSession | None:
        """The session a STUN datagram is for: by USERNAME's local ufrag, else by source address."""
        try:
            username = stun_username_untrusted(data)
        except StunError:
            return self._by_address.get((remote_addr[0], remote_addr[1]))
        return self._by_ufrag.get(username.partition(":")[0])

    def handle_stun_untrusted(
        self, data: bytes, remote_addr: Address, now: float
    ) -> tuple[IceLiteSession, BindingResult]:
        """Route a STUN datagram to its session, answer it and update the address map.

        Raises :class:`StunError` if no session matches or the session drops it.
        """
        session = self.find_for_stun(data, remote_addr)
        if session is None:
            raise StunError("no ICE session for this STUN message")
        result = session.handle_binding_request_untrusted(data, remote_addr, now)
        for old in result.evicted:
            if self._by_address.get(old) is session:
                del self._by_address[old]
        if result.accepted:
            self._claim((remote_addr[0], remote_addr[1]), session)
        return session, result

    def sweep(self, now: float) -> list[IceLiteSession]:
        """Expire consent (sessions become "failed" and are removed, and returned
        so the caller can close them) and unmap stale non-selected addresses."""
        failed: list[IceLiteSession] = []
        for session in tuple(self._by_ufrag.values()):
            session.check_consent(now)
            if session.state == "failed":
                self.remove(session)
                failed.append(session)
                continue
            for addr in session.prune(now, session.consent_timeout):
                if self._by_address.get(addr) is session:
                    del self._by_address[addr]
        return failed

    def _claim(self, addr: Address, session: IceLiteSession) -> None:
        previous = self._by_address.get(addr)
        if previous is session:
            return
        if previous is not None:
            previous.forget_address(addr)
        self._by_address[addr] = session
