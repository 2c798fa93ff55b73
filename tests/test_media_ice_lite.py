"""The ICE-lite responder (media/ice_lite.py): bytes in, bytes out, time passed in."""

from __future__ import annotations

import contextlib
import secrets
import struct
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aioice import stun
from aioice.candidate import Candidate
from aioice.ice import CandidatePair, Connection
from hypothesis import event, given, settings
from hypothesis import strategies as st

from media.errors import MalformedPacket
from media.ice_lite import (
    CONSENT_INTERVAL,
    CONSENT_TIMEOUT,
    MAX_STUN_SIZE,
    REQUEST_ATTEMPTS,
    BindingResult,
    IceCredentials,
    IceLiteDirectory,
    IceLiteSession,
    Outgoing,
    StunError,
    stun_username_untrusted,
    validate_ufrag,
)

LOCAL = IceCredentials("LoCa", "l0calpassw0rdl0calpass")
REMOTE_UFRAG = "R3mt"
REMOTE_PWD = "r3m0tepassw0rdr3m0tepa"
OTHER = IceCredentials("Oth3", "0therpassw0rd0therpass")
OTHER_REMOTE = ("Rm2x", "0therr3m0tepassw0rd0th")
TID = b"0123456789ab"
A = ("192.0.2.1", 5000)
B = ("198.51.100.7", 6000)
C = ("203.0.113.9", 7000)
V6 = ("2001:db8::1", 9000)


def request(
    *,
    username: str | None = "LoCa:R3mt",
    key: bytes | None = LOCAL.pwd.encode(),
    controlling: bool = True,
    controlled: bool = False,
    priority: bool = True,
    use_candidate: bool = False,
    fingerprint: bool = True,
    klass: stun.Class = stun.Class.REQUEST,
    method: stun.Method = stun.Method.BINDING,
    tid: bytes | None = None,
) -> bytes:
    """A Binding request as a full controlling agent sends it (RFC 8445 7.1), with a fresh
    transaction id unless one is given."""
    msg = stun.Message(method, klass, transaction_id=tid or secrets.token_bytes(12))
    if username is not None:
        msg.attributes["USERNAME"] = username
    if priority:
        msg.attributes["PRIORITY"] = 1853824767
    if controlling:
        msg.attributes["ICE-CONTROLLING"] = 0x1122334455667788
    if controlled:
        msg.attributes["ICE-CONTROLLED"] = 0x1122334455667788
    if use_candidate:
        msg.attributes["USE-CANDIDATE"] = None
    if key is not None:
        msg.add_message_integrity(key)  # and FINGERPRINT
        if not fingerprint:
            del msg.attributes["FINGERPRINT"]
    elif fingerprint:
        msg.add_fingerprint()
    return bytes(msg)


def session(now: float = 0.0, **kwargs: Any) -> IceLiteSession:
    kwargs.setdefault("remote_ufrag", REMOTE_UFRAG)
    kwargs.setdefault("remote_pwd", REMOTE_PWD)
    return IceLiteSession(now, LOCAL, **kwargs)


def other_session(now: float = 0.0) -> IceLiteSession:
    return IceLiteSession(now, OTHER, *OTHER_REMOTE)


def answer(
    out: Outgoing,
    *,
    key: str = REMOTE_PWD,
    username: str = f"{REMOTE_UFRAG}:{LOCAL.ufrag}",
    klass: stun.Class = stun.Class.RESPONSE,
    tid: bytes | None = None,
    sign_with: str | None = None,
) -> bytes:
    """What the client's full agent (pwd `key`) sends back for our request, after checking it
    as aioice does; `sign_with` another pwd: what a forger would send."""
    req = stun.parse_message(out.data)
    assert req.message_class == stun.Class.REQUEST and req.message_method == stun.Method.BINDING
    assert req.attributes["USERNAME"] == username
    assert req.check_message_integrity(key.encode())
    key = sign_with or key
    assert "ICE-CONTROLLED" in req.attributes and "PRIORITY" in req.attributes
    resp = stun.Message(stun.Method.BINDING, klass, transaction_id=tid or req.transaction_id)
    if klass == stun.Class.ERROR:
        resp.attributes["ERROR-CODE"] = (487, "Role Conflict")
    else:
        resp.attributes["XOR-MAPPED-ADDRESS"] = ("192.0.2.200", 3478)
    resp.add_message_integrity(key.encode())
    return bytes(resp)


def select(s: IceLiteSession, addr: Any, now: float) -> BindingResult:
    """The client nominates `addr` and answers our request from there: it is selected."""
    r = s.handle_binding_request_untrusted(request(use_candidate=True), addr, now)
    assert r.accepted and r.nominated
    if s.selected_address == addr:  # proved before: selected at once
        return r
    (out,) = r.requests
    assert out.address == addr
    result = s.handle_binding_response_untrusted(answer(out), addr, now)
    assert result.proved == addr and s.selected_address == addr
    return result


def parse_signed(data: bytes, key: bytes = LOCAL.pwd.encode()) -> stun.Message:
    """What aioice's Transaction does with a response: parse (FINGERPRINT checked) and authenticate."""
    msg = stun.parse_message(data)
    assert "FINGERPRINT" in msg.attributes
    assert msg.check_message_integrity(key)
    return msg


def parse_unsigned(data: bytes) -> stun.Message:
    msg = stun.parse_message(data)
    assert "FINGERPRINT" in msg.attributes
    assert "MESSAGE-INTEGRITY" not in msg.attributes
    return msg


# ---------------------------------------------------------------- credentials


def test_generated_credentials() -> None:
    creds = IceCredentials.generate()
    assert len(creds.ufrag) == 8 and len(creds.pwd) == 24
    assert IceCredentials(creds.ufrag, creds.pwd) == creds
    assert len({IceCredentials.generate().ufrag for _ in range(50)}) == 50
    short = IceCredentials.generate(4, 22)
    assert len(short.ufrag) == 4 and len(short.pwd) == 22


@pytest.mark.parametrize(
    ("ufrag", "pwd"),
    [("abc", "a" * 22), ("abcd", "a" * 21), ("ab:d", "a" * 22), ("abcd", "a" * 21 + "!"), ("a" * 257, "a" * 22)],
)
def test_bad_credentials(ufrag: str, pwd: str) -> None:
    with pytest.raises(ValueError):
        IceCredentials(ufrag, pwd)


def test_remote_ufrag() -> None:
    assert validate_ufrag("ab+/") == "ab+/"
    with pytest.raises(ValueError):
        validate_ufrag("ab\n")
    s = IceLiteSession(0.0, LOCAL)
    assert s.remote_ufrag is None
    s.set_remote_credentials("R3mt", REMOTE_PWD)
    s.set_remote_credentials("R3mt", REMOTE_PWD)
    with pytest.raises(ValueError):
        s.set_remote_credentials("0ther", REMOTE_PWD)
    with pytest.raises(ValueError):
        s.set_remote_credentials("R3mt", "short")
    with pytest.raises(ValueError):
        IceLiteSession(0.0, LOCAL, "x")
    assert len(IceLiteSession(0.0).local.pwd) == 24  # generated when not given


# ---------------------------------------------------------------- valid checks


def test_valid_check_answered() -> None:
    s = session()
    result = s.handle_binding_request_untrusted(request(tid=TID), A, 1.0)
    assert result.accepted and not result.nominated and result.error_code is None and result.requests == ()
    assert result.response is not None
    msg = parse_signed(result.response)
    assert msg.message_method == stun.Method.BINDING
    assert msg.message_class == stun.Class.RESPONSE
    assert msg.transaction_id == TID
    assert msg.attributes["XOR-MAPPED-ADDRESS"] == A
    assert not parse_signed_ok(result.response, b"wrong password........")
    # regular nomination: nothing selected before USE-CANDIDATE
    assert s.state == "new" and s.selected_address is None and not result.address_changed
    assert s.addresses == (A,) and s.is_valid_address(A)
    assert s.last_check_at == 1.0


def parse_signed_ok(data: bytes, key: bytes) -> bool:
    return stun.parse_message(data).check_message_integrity(key)


def test_ipv6_and_four_tuple_address() -> None:
    s = session()
    result = s.handle_binding_request_untrusted(request(use_candidate=True), cast(Any, (*V6, 0, 0)), 0.0)
    assert result.response is not None
    assert parse_signed(result.response).attributes["XOR-MAPPED-ADDRESS"] == V6
    (out,) = result.requests
    assert out.address == V6
    assert s.handle_binding_response_untrusted(answer(out), cast(Any, (*V6, 0, 0)), 0.1).proved == V6
    assert s.selected_address == V6


def test_nomination_selects_once_the_address_answers_our_request() -> None:
    s = session()
    r = s.handle_binding_request_untrusted(request(use_candidate=True), A, 2.0, via="socket 1")
    assert r.accepted and r.nominated and not r.address_changed
    assert s.state == "new" and s.selected_address is None  # not before the address proved it is the client's
    (out,) = r.requests
    assert out.address == A and out.via == "socket 1"
    # a request of ours, as RFC 8445 7.1 wants it, signed with the client's pwd (from its SDP)
    req = stun.parse_message(out.data)
    assert req.attributes["USERNAME"] == "R3mt:LoCa" and req.attributes["ICE-CONTROLLED"] == 0
    assert req.check_message_integrity(REMOTE_PWD.encode()) and "FINGERPRINT" in req.attributes
    # one request in flight per address: the client's next nominated check sends no other
    assert s.handle_binding_request_untrusted(request(use_candidate=True), A, 2.1, via="socket 1").requests == ()
    proved = s.handle_binding_response_untrusted(answer(out), A, 2.2)
    assert proved.proved == A and proved.address_changed and proved.response is None
    assert s.state == "connected" and s.selected_address == A and s.nominated and s.selected_via == "socket 1"
    again = s.handle_binding_request_untrusted(request(use_candidate=True), A, 3.0)
    assert again.nominated and not again.address_changed and again.requests == ()


def test_nomination_switches_address() -> None:
    s = session()
    select(s, A, 0.0)
    # a plain check from elsewhere makes a valid address but does not move media
    r = s.handle_binding_request_untrusted(request(), B, 1.0)
    assert r.accepted and not r.address_changed and s.selected_address == A and r.requests == ()
    # a nominated check from elsewhere does (mobility), once B answers
    r = s.handle_binding_request_untrusted(request(use_candidate=True), B, 2.0)
    assert not r.address_changed and s.selected_address == A
    assert s.handle_binding_response_untrusted(answer(r.requests[0]), B, 2.01).address_changed
    assert s.selected_address == B and set(s.addresses) == {A, B}
    # A answered recently: back to it at once
    r = s.handle_binding_request_untrusted(request(use_candidate=True), A, 3.0)
    assert r.address_changed and r.requests == () and s.selected_address == A


def test_forged_nomination_sends_the_victim_requests_never_media() -> None:
    """A client nominates a victim's address with its own credentials (a forged source):
    the victim gets our few requests, cannot answer them, and is never selected."""
    s = session()
    select(s, A, 0.0)
    victim = C
    sent: list[Outgoing] = []
    for k in range(40):  # a forged nomination every 0.25 s for 10 s
        now = 1.0 + k * 0.25
        r = s.handle_binding_request_untrusted(request(use_candidate=True), victim, now)
        sent += list(r.requests) + s.poll(now)
    to_victim = [out for out in sent if out.address == victim]
    assert to_victim and all(len(out.data) < 120 for out in to_victim)
    assert len(to_victim) <= 2 * REQUEST_ATTEMPTS  # ~8 s of forging: two rounds of retransmissions
    assert s.selected_address == A
    # answers that are not the client's, from the victim: refused
    out = to_victim[-1]
    for forged, source in (
        (answer(out, sign_with="wrong-password-wrong-pwd"), victim),  # signed with another pwd
        (answer(out, tid=secrets.token_bytes(12)), victim),  # a guessed transaction id
        (answer(out), B),  # the right answer from another address
    ):
        with pytest.raises(StunError):
            s.handle_binding_response_untrusted(forged, source, 11.0)
    assert s.selected_address == A


def test_replayed_check_from_another_address_dropped() -> None:
    s = session()
    nominated = request(use_candidate=True, tid=TID)
    r = s.handle_binding_request_untrusted(nominated, A, 0.0)
    # a retransmission from the same address is answered again
    assert s.handle_binding_request_untrusted(nominated, A, 0.1).accepted
    with pytest.raises(StunError, match="replayed"):
        s.handle_binding_request_untrusted(nominated, B, 0.2)
    assert not s.is_valid_address(B)
    s.handle_binding_response_untrusted(answer(r.requests[0]), A, 0.3)
    assert s.selected_address == A


def test_error_answer_ends_the_transaction_without_proof() -> None:
    s = session()
    r = s.handle_binding_request_untrusted(request(use_candidate=True), A, 0.0)
    err = s.handle_binding_response_untrusted(answer(r.requests[0], klass=stun.Class.ERROR), A, 0.1)
    assert err.error_code == 487 and err.proved is None and s.selected_address is None
    with pytest.raises(StunError):  # that transaction is over
        s.handle_binding_response_untrusted(answer(r.requests[0]), A, 0.2)
    # the next nominated check asks again
    assert s.handle_binding_request_untrusted(request(use_candidate=True), A, 0.3).requests


def test_lenient_remote_ufrag_until_known() -> None:
    s = IceLiteSession(0.0, LOCAL)
    assert s.handle_binding_request_untrusted(request(username="LoCa:whatever"), A, 0.0).accepted
    # nominated before the offer was applied: no pwd to sign a request with, so nothing selects
    assert s.handle_binding_request_untrusted(request(username="LoCa:x1x1", use_candidate=True), A, 0.0).requests == ()
    s.set_remote_credentials(REMOTE_UFRAG, REMOTE_PWD)
    r = s.handle_binding_request_untrusted(request(username="LoCa:whatever"), A, 0.0)
    assert r.error_code == 401 and not r.accepted
    assert s.handle_binding_request_untrusted(request(), A, 0.0).accepted


def test_binding_indication_ignored() -> None:
    s = session()
    keepalive = request(username=None, key=None, controlling=False, priority=False, klass=stun.Class.INDICATION)
    r = s.handle_binding_request_untrusted(keepalive, A, 5.0)
    assert r == BindingResult(None)
    assert s.last_check_at is None and s.addresses == ()


# ---------------------------------------------------------------- error responses


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"username": None}, 400),
        ({"key": None}, 400),
        ({"username": "LoCa"}, 401),
        ({"username": "XXXX:R3mt"}, 401),
        ({"username": "LoCa:XXXX"}, 401),
        ({"username": ":LoCa"}, 401),
        ({"key": b"not the local password!"}, 401),
    ],
)
def test_unauthenticated_errors_are_unsigned(kwargs: dict[str, Any], code: int) -> None:
    s = session()
    r = s.handle_binding_request_untrusted(request(**kwargs, tid=TID), A, 0.0)
    assert r.error_code == code and not r.accepted and r.response is not None
    msg = parse_unsigned(r.response)
    assert msg.message_class == stun.Class.ERROR
    assert msg.error_code == code
    assert msg.transaction_id == TID
    assert s.addresses == () and s.last_check_at is None


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"priority": False}, 400),
        ({"controlling": False}, 400),  # no role attribute at all
        ({"controlled": True}, 400),  # both roles
        ({"controlling": False, "controlled": True}, 487),
        ({"controlling": False, "controlled": True, "use_candidate": True}, 487),
    ],
)
def test_authenticated_errors_are_signed(kwargs: dict[str, Any], code: int) -> None:
    s = session()
    r = s.handle_binding_request_untrusted(request(**kwargs), A, 0.0)
    assert r.error_code == code and not r.accepted and r.response is not None
    msg = parse_signed(r.response)
    assert msg.message_class == stun.Class.ERROR and msg.error_code == code
    assert s.selected_address is None and s.addresses == ()


# ---------------------------------------------------------------- dropped


def test_dropped_without_answer() -> None:
    s = session()
    valid = request()
    cases = [
        b"",
        b"\x00\x01",
        b"garbage" * 5,
        request(fingerprint=False),  # RFC 8445 7.3: FINGERPRINT is mandatory
        valid[:-1] + bytes([valid[-1] ^ 1]),  # FINGERPRINT mismatch
        valid[:4] + b"\x21\x12\xa4\x43" + valid[8:],  # magic cookie
        bytes([valid[0] | 0x40]) + valid[1:],  # top bits
        valid + b"\x00\x00\x00\x00",  # length mismatch
        request(klass=stun.Class.RESPONSE),
        request(klass=stun.Class.ERROR),
        request(method=stun.Method.ALLOCATE),
        bytes(2000),
    ]
    for data in cases:
        with pytest.raises(StunError):
            s.handle_binding_request_untrusted(data, A, 0.0)
    for n in range(len(valid)):  # every truncation
        with pytest.raises(StunError):
            s.handle_binding_request_untrusted(valid[:n], A, 0.0)
    assert s.addresses == () and s.last_check_at is None
    assert issubclass(StunError, MalformedPacket)


def _attr(atype: int, value: bytes) -> bytes:
    return struct.pack("!HH", atype, len(value)) + value + bytes(-len(value) % 4)


def raw_stun(
    mtype: int,
    attrs: list[tuple[int, bytes]],
    *,
    key: bytes | None = None,
    fingerprint: bool = True,
    tid: bytes = b"0123456789ab",
) -> bytes:
    """A STUN message from raw attributes, with correct MESSAGE-INTEGRITY/FINGERPRINT on request."""
    body = b"".join(_attr(t, v) for t, v in attrs)

    def header(length: int) -> bytes:
        return struct.pack("!HHI", mtype, length, 0x2112A442) + tid

    data = header(len(body)) + body
    if key is not None:
        body += _attr(0x0008, stun.message_integrity(data, key))
        data = header(len(body)) + body
    if fingerprint:
        body += _attr(0x8028, struct.pack("!I", stun.message_fingerprint(data)))
        data = header(len(body)) + body
    return data


def test_framing_rules() -> None:
    s = session()
    key = LOCAL.pwd.encode()
    base = [(0x0006, b"LoCa:R3mt"), (0x0024, struct.pack("!I", 1)), (0x802A, bytes(8))]
    assert s.handle_binding_request_untrusted(raw_stun(0x0001, base, key=key), A, 0.0).accepted
    # unknown comprehension-optional attributes (e.g. GOOG-NETWORK-INFO) are ignored
    extra = [*base, (0xC057, b"\x00\x01\x00\x0a")]
    assert s.handle_binding_request_untrusted(raw_stun(0x0001, extra, key=key), A, 0.0).accepted
    bad = [
        raw_stun(0x0001, [*base, (0x0006, b"LoCa:R3mt")], key=key),  # repeated USERNAME
        raw_stun(0x0001, [*base, (0x0024, struct.pack("!I", 2))], key=key),  # repeated PRIORITY
        raw_stun(0x0001, [*base, (0x0024, b"\x01")], key=key),  # repeated and short
        raw_stun(0x0001, [(0x0006, b"LoCa:\xff\xfe"), *base[1:]], key=key),  # USERNAME not UTF-8
        raw_stun(0x0001, [*base[:1], (0x0024, b"\x01\x02"), base[2]], key=key),  # PRIORITY too short
        raw_stun(0x0001, [*base, (0x8028, b"\x00\x00\x00\x00")], key=key, fingerprint=False),  # zero FP
        raw_stun(0x0001, base, key=key) + _attr(0x0006, b"late"),  # attribute after FINGERPRINT
    ]
    for data in bad:
        with pytest.raises(StunError):
            s.handle_binding_request_untrusted(data, A, 0.0)
    # an attribute after MESSAGE-INTEGRITY (other than FINGERPRINT) is ignored, as RFC 8489 says
    unauth = raw_stun(0x0001, base, key=key, fingerprint=False) + _attr(0x0025, b"")  # USE-CANDIDATE
    unauth = unauth[:2] + struct.pack("!H", len(unauth) - 20 + 8) + unauth[4:]
    unauth += _attr(0x8028, struct.pack("!I", stun.message_fingerprint(unauth)))
    r = s.handle_binding_request_untrusted(unauth, A, 0.0)
    assert r.accepted and not r.nominated


def test_oversize_dropped() -> None:
    s = session()
    padding = [(0xC057, bytes(MAX_STUN_SIZE))]
    with pytest.raises(StunError):
        s.handle_binding_request_untrusted(raw_stun(0x0001, padding, key=LOCAL.pwd.encode()), A, 0.0)


def test_failed_session_drops() -> None:
    s = session()
    s.close()
    assert s.state == "failed"
    with pytest.raises(StunError):
        s.handle_binding_request_untrusted(request(use_candidate=True), A, 0.0)


def test_username_peek() -> None:
    assert stun_username_untrusted(request()) == "LoCa:R3mt"
    for data in (request(username=None), b"junk", raw_stun(0x0001, [(0x0006, b"\xff")])):
        with pytest.raises(StunError):
            stun_username_untrusted(data)


# ---------------------------------------------------------------- consent freshness


def test_consent_expiry_without_any_selection() -> None:
    s = session(now=100.0)
    assert s.consent_expires_at == 100.0 + CONSENT_TIMEOUT
    assert s.next_timeout() == 130.0 and s.poll(120.0) == []
    s.handle_binding_request_untrusted(request(), A, 110.0)  # checks alone are no consent
    assert not s.expired(129.9) and s.expired(130.0)
    assert not s.check_consent(129.9)
    assert s.check_consent(130.0) and s.state == "failed"
    assert not s.check_consent(200.0)  # only the transition reports
    assert s.next_timeout() == float("inf") and s.poll(300.0) == []


def test_consent_interval_fits_the_timeout() -> None:
    assert session().consent_interval == CONSENT_INTERVAL  # RFC 7675: 5 s for 30 s
    assert session(consent_timeout=3.0).consent_interval == 0.5  # six requests before a short timeout


def test_consent_is_the_selected_address_answering_our_requests() -> None:
    s = session(consent_timeout=10.0, consent_interval=CONSENT_INTERVAL)
    select(s, A, 5.0)
    assert s.consent_expires_at == 15.0
    # the client's own checks, from the selected address or elsewhere, do not renew it
    s.handle_binding_request_untrusted(request(), A, 9.0)
    s.handle_binding_request_untrusted(request(use_candidate=True), A, 9.5)
    assert s.consent_expires_at == 15.0
    # our consent request goes out 4-6 s after the selection; its answer renews consent
    assert s.poll(8.9) == []
    due = s.next_timeout()
    assert 5.0 + 0.8 * CONSENT_INTERVAL <= due <= 5.0 + 1.2 * CONSENT_INTERVAL
    (out,) = s.poll(due)
    assert out.address == A and s.poll(due) == []
    assert s.handle_binding_response_untrusted(answer(out), A, 11.0).proved == A
    assert s.consent_expires_at == 21.0
    # unanswered from now on: retransmitted, then given up; consent lapses 10 s after the answer
    sent = []
    t = 11.0
    while not s.check_consent(t):
        sent += s.poll(t)
        t = min(s.next_timeout(), 30.0)
    assert t == 21.0 and s.state == "failed"
    assert all(o.address == A for o in sent) and len(sent) >= 2


def test_requests_retransmitted_then_given_up() -> None:
    s = session()
    (out,) = s.handle_binding_request_untrusted(request(use_candidate=True), A, 0.0).requests
    times = []
    t = 0.0
    for _ in range(20):
        t = s.next_timeout()
        if t >= CONSENT_TIMEOUT:
            break
        times += [t for o in s.poll(t) if o.data == out.data]
    assert times == [0.5, 1.5, 3.5]  # RTO 0.5 s doubling, REQUEST_ATTEMPTS sends in all
    assert len(times) + 1 == REQUEST_ATTEMPTS
    with pytest.raises(StunError):  # given up at 7.5 s: a late answer proves nothing
        s.handle_binding_response_untrusted(answer(out), A, 8.0)


def test_address_bound() -> None:
    s = session(max_addresses=3)
    select(s, A, 0.0)
    s.handle_binding_request_untrusted(request(), B, 1.0)
    s.handle_binding_request_untrusted(request(), C, 2.0)
    r = s.handle_binding_request_untrusted(request(), ("192.0.2.99", 1), 3.0)
    assert r.evicted == (B,)  # oldest that is not selected
    assert A in s.addresses and B not in s.addresses
    s.forget_address(A)
    assert s.selected_address is None and not s.nominated and s.selected_via is None
    with pytest.raises(ValueError):
        session(max_addresses=1)


# ---------------------------------------------------------------- directory


def test_directory_routes_by_username_then_address() -> None:
    d = IceLiteDirectory()
    s1 = session()
    s2 = other_session()
    d.add(s1)
    d.add(s2)
    assert len(d) == 2 and d.by_ufrag("LoCa") is s1 and d.by_ufrag("nope") is None
    assert d.by_address(A) is None
    assert d.find_for_stun(request(), A) is s1
    assert d.find_for_stun(request(username="Oth3:Rm2x"), A) is s2
    assert d.find_for_stun(request(username="Unkn:R3mt"), A) is None
    assert d.find_for_stun(b"junk", A) is None

    with pytest.raises(StunError):
        d.handle_stun_untrusted(request(username="Unkn:R3mt"), A, 0.0)
    # rejected: nothing mapped
    _, r = d.handle_stun_untrusted(request(key=b"bad password, ignored!"), A, 0.0)
    assert r.error_code == 401 and d.by_address(A) is None
    # accepted: the source address now routes DTLS/RTP
    got, r = d.handle_stun_untrusted(request(use_candidate=True), A, 1.0)
    assert got is s1 and r.accepted and d.by_address(A) is s1
    # our request's answer finds its session by the transaction id
    got, proved = d.handle_stun_untrusted(answer(r.requests[0]), A, 1.1)
    assert got is s1 and proved.proved == A and s1.selected_address == A
    with pytest.raises(StunError):  # an answer to nobody's request
        d.handle_stun_untrusted(answer(r.requests[0], tid=secrets.token_bytes(12)), A, 1.2)
    # a request without USERNAME from a known address reaches its session (400)
    got, r = d.handle_stun_untrusted(request(username=None), A, 1.5)
    assert got is s1 and r.error_code == 400
    # and from an unknown address it is dropped
    with pytest.raises(StunError):
        d.handle_stun_untrusted(request(username=None), B, 1.5)


def test_directory_address_belongs_to_its_session_until_another_proves_it() -> None:
    d = IceLiteDirectory()
    s1 = session()
    s2 = other_session()
    d.add(s1)
    d.add(s2)
    _, r = d.handle_stun_untrusted(request(use_candidate=True), A, 0.0)
    d.handle_stun_untrusted(answer(r.requests[0]), A, 0.0)
    assert d.by_address(A) is s1 and s1.selected_address == A
    # s2's client forges a check from A (its own credentials): answered, but A stays s1's
    key2 = OTHER.pwd.encode()
    _, r2 = d.handle_stun_untrusted(request(username="Oth3:Rm2x", key=key2, use_candidate=True), A, 1.0)
    assert r2.accepted and d.by_address(A) is s1 and s2.selected_address is None
    # ... and s1's client, at A, cannot answer s2's request (it knows nothing of s2's credentials)
    (out,) = r2.requests
    with pytest.raises(StunError):
        d.handle_stun_untrusted(answer(out, key=OTHER_REMOTE[1], username="Rm2x:Oth3", sign_with=REMOTE_PWD), A, 1.1)
    assert d.by_address(A) is s1 and s1.selected_address == A
    # if A really is s2's client now (a NAT gave the port to another client), it answers: A moves
    _, moved = d.handle_stun_untrusted(answer(out, key=OTHER_REMOTE[1], username="Rm2x:Oth3"), A, 2.0)
    assert moved.proved == A and d.by_address(A) is s2 and s2.selected_address == A
    assert s1.selected_address is None and A not in s1.addresses


def test_directory_eviction_and_remove() -> None:
    d = IceLiteDirectory(max_sessions=2)
    s1 = session(max_addresses=2)
    d.add(s1)
    with pytest.raises(ValueError):
        d.add(session())  # same ufrag
    d.handle_stun_untrusted(request(), A, 0.0)
    d.handle_stun_untrusted(request(), B, 1.0)
    _, r = d.handle_stun_untrusted(request(), C, 2.0)
    assert r.evicted == (A,) and d.by_address(A) is None and d.by_address(C) is s1

    s2 = other_session()
    s2.tag = s1.tag  # a tag collision: the directory gives it another
    d.add(s2)
    assert s2.tag != s1.tag
    with pytest.raises(ValueError):
        d.add(IceLiteSession(0.0))  # full
    assert list(d) == [s1, s2]
    assert d.remove(s1) and d.by_address(C) is None and d.by_ufrag("LoCa") is None
    assert not d.remove(s1)
    with pytest.raises(StunError):
        d.handle_stun_untrusted(request(), C, 3.0)


# ---------------------------------------------------------------- interop with aioice (a full agent)


def aioice_agent(controlling: bool, ufrag: str, pwd: str) -> tuple[Connection, CandidatePair]:
    conn = Connection(ice_controlling=controlling, local_username="Cl1entUf", local_password="cl1entpassw0rdcl1entpa")
    conn.remote_is_lite = True
    conn.remote_username = ufrag
    conn.remote_password = pwd
    local = Candidate("1", 1, "udp", 2130706431, A[0], A[1], "host")
    remote = Candidate("1", 1, "udp", 2130706431, "192.0.2.200", 3478, "host")
    protocol = SimpleNamespace(local_candidate=local)  # no socket: only the component is read
    return conn, CandidatePair(cast(Any, protocol), remote)


@pytest.mark.parametrize("nominate", [False, True])
def test_aioice_controlling_check_gets_accepted_response(nominate: bool) -> None:
    s = IceLiteSession(0.0, remote_ufrag="Cl1entUf", remote_pwd="cl1entpassw0rdcl1entpa")
    conn, pair = aioice_agent(True, s.local.ufrag, s.local.pwd)
    req = conn.build_request(pair, nominate=nominate)
    assert conn.remote_password is not None
    key = conn.remote_password.encode("utf8")
    req.add_message_integrity(key)  # as StunProtocol.request does
    result = s.handle_binding_request_untrusted(bytes(req), A, 1.0)
    assert result.accepted and result.nominated is nominate
    assert len(result.requests) == (1 if nominate else 0)
    # aioice's Transaction.response_received: authenticated with the remote password, class RESPONSE
    assert result.response is not None
    resp = stun.parse_message(result.response)
    assert resp.check_message_integrity(key)
    assert resp.message_class == stun.Class.RESPONSE
    assert resp.transaction_id == req.transaction_id
    assert resp.attributes["XOR-MAPPED-ADDRESS"] == A


def test_aioice_controlled_check_gets_role_conflict_it_accepts() -> None:
    s = IceLiteSession(0.0, remote_ufrag="Cl1entUf", remote_pwd="cl1entpassw0rdcl1entpa")
    conn, pair = aioice_agent(False, s.local.ufrag, s.local.pwd)
    req = conn.build_request(pair, nominate=False)
    assert "ICE-CONTROLLED" in req.attributes
    assert conn.remote_password is not None
    key = conn.remote_password.encode("utf8")
    req.add_message_integrity(key)
    result = s.handle_binding_request_untrusted(bytes(req), A, 1.0)
    assert result.error_code == 487 and result.response is not None
    resp = stun.parse_message(result.response)
    # signed, so aioice's Transaction does not discard it; it then switches to controlling
    assert resp.check_message_integrity(key)
    assert resp.message_class == stun.Class.ERROR and resp.error_code == 487
    conn.switch_role(ice_controlling=True)
    retry = conn.build_request(pair, nominate=True)
    retry.add_message_integrity(key)
    assert s.handle_binding_request_untrusted(bytes(retry), A, 2.0).nominated


def test_aioice_answers_our_request_and_the_answer_proves_the_address() -> None:
    """aioice's own request handling (Connection.request_received) checks and answers our
    request; its answer selects the address it nominated."""
    s = IceLiteSession(0.0, remote_ufrag="Cl1entUf", remote_pwd="cl1entpassw0rdcl1entpa")
    conn, pair = aioice_agent(True, s.local.ufrag, s.local.pwd)
    nominate = conn.build_request(pair, nominate=True)
    nominate.add_message_integrity(s.local.pwd.encode())
    (out,) = s.handle_binding_request_untrusted(bytes(nominate), A, 1.0).requests
    sent: list[tuple[stun.Message, Any]] = []
    protocol = SimpleNamespace(
        local_candidate=pair.protocol.local_candidate,
        send_stun=lambda message, addr: sent.append((message, addr)),
    )
    conn._early_checks_done = False  # its checks are not ours to run: only the answer matters here
    conn.request_received(stun.parse_message(out.data), A, cast(Any, protocol))
    ((response, to),) = sent
    assert to == A and response.message_class == stun.Class.RESPONSE
    result = s.handle_binding_response_untrusted(bytes(response), A, 1.01)
    assert result.proved == A and result.address_changed and s.selected_address == A


# ---------------------------------------------------------------- fuzzing


def _check_result(result: BindingResult, tid: bytes | None = None) -> None:
    assert isinstance(result, BindingResult)
    if result.response is not None:
        msg = stun.parse_message(result.response)
        if tid is not None:
            assert msg.transaction_id == tid
        if result.accepted:
            assert msg.check_message_integrity(LOCAL.pwd.encode())


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    s = session()
    with contextlib.suppress(StunError):
        _check_result(s.handle_binding_request_untrusted(data, A, 0.0))


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=4))
def test_fuzz_mutated_valid_request(edits: list[tuple[int, int]]) -> None:
    data = bytearray(request(use_candidate=True, tid=TID))
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
        else:
            data.append(value)
    s = session()
    with contextlib.suppress(StunError):
        _check_result(s.handle_binding_request_untrusted(bytes(data), A, 0.0))


# Mostly attributes whose values aioice decodes (addresses, ERROR-CODE, strings, integers), some
# that the framing walk polices (USERNAME, PRIORITY, MESSAGE-INTEGRITY, FINGERPRINT).
_ATTR_TYPES = st.sampled_from(
    [
        *(0x0001, 0x0003, 0x0009, 0x000C, 0x0012, 0x0013, 0x0014, 0x0020, 0x0025, 0x8022, 0x8029, 0x802B),
        *(0xC057, 0x7FFF, 0x0006, 0x0024, 0x0008, 0x8028),
    ]
)


@settings(max_examples=600)
@given(
    st.one_of(st.just(0x0001), st.sampled_from([0x0011, 0x0101, 0x0111, 0x0003, 0x0002])),
    st.lists(st.tuples(_ATTR_TYPES, st.binary(max_size=24)), max_size=4),
    st.sampled_from([None, LOCAL.pwd.encode(), b"wrong-password-wrong-pw"]),
    st.booleans(),
    st.booleans(),
)
def test_fuzz_well_framed_messages(
    mtype: int, attrs: list[tuple[int, bytes]], key: bytes | None, fingerprint: bool, with_base: bool
) -> None:
    """Framing and checksums right, attribute values arbitrary: reach aioice's value decoding."""
    if with_base:  # a valid check's attributes first, so some messages get all the way through
        attrs = [(0x0006, b"LoCa:R3mt"), (0x0024, b"\x6e\x7f\x1e\xff"), (0x802A, bytes(8)), *attrs]
    data = raw_stun(mtype, attrs, key=key, fingerprint=fingerprint)
    d = IceLiteDirectory()
    s = session()
    d.add(s)
    for addr in (A, B):
        handle = s.handle_binding_response_untrusted if mtype & 0x0100 else s.handle_binding_request_untrusted
        try:
            result = handle(data, addr, 0.0)
        except StunError as exc:
            event(f"dropped: {exc}"[:48])  # see them with --hypothesis-show-statistics
        else:
            event(f"answered {result.error_code or ('success' if result.accepted else 'nothing')}")
            _check_result(result, TID)
        with contextlib.suppress(StunError):
            _, result = d.handle_stun_untrusted(data, addr, 0.0)
            _check_result(result, TID)


def test_ice_restart_answers_only_the_new_credentials_and_keeps_the_path_until_a_new_one() -> None:
    d = IceLiteDirectory()
    s = session()
    d.add(s)
    _, r = d.handle_stun_untrusted(request(use_candidate=True), A, 1.0)
    d.handle_stun_untrusted(answer(r.requests[0]), A, 1.0)
    assert s.selected_address == A and s.nominated
    fresh = IceCredentials("N3wl", "newl0calpassw0rdnewl0c")
    new_pwd = "n3wr3m0tepassw0rdn3wr3"
    d.restart(s, fresh, "N3wr", new_pwd)
    # the old credentials are unknown now; the old path still carries media meanwhile
    with pytest.raises(StunError):
        d.handle_stun_untrusted(request(), A, 2.0)
    assert d.by_ufrag("LoCa") is None and d.by_ufrag("N3wl") is s
    assert s.selected_address == A and not s.nominated and d.by_address(A) is s
    # the old remote ufrag with the new local one: 401
    _, r = d.handle_stun_untrusted(request(username="N3wl:R3mt", key=fresh.pwd.encode()), B, 2.0)
    assert r.error_code == 401 and not r.accepted
    # a nominated check on the new credentials from a new address selects it once it answers
    _, r = d.handle_stun_untrusted(request(username="N3wl:N3wr", key=fresh.pwd.encode(), use_candidate=True), B, 3.0)
    assert r.accepted and s.selected_address == A and d.by_address(B) is s
    assert parse_signed_ok(r.response or b"", fresh.pwd.encode())
    (out,) = r.requests
    d.handle_stun_untrusted(answer(out, key=new_pwd, username="N3wr:N3wl"), B, 3.1)
    assert s.selected_address == B and s.nominated


def test_ice_restart_refusals_change_nothing() -> None:
    d = IceLiteDirectory()
    s1, s2 = session(), other_session()
    d.add(s1)
    d.add(s2)
    pwd = "n3wr3m0tepassw0rdn3wr3"
    with pytest.raises(ValueError, match="already registered"):
        d.restart(s1, IceCredentials("Oth3", "whateverpassw0rdwhatev"), "N3wr", pwd)
    with pytest.raises(ValueError):
        d.restart(s1, IceCredentials("LoCa", "l0calpassw0rdl0calpass"), "N3wr", pwd)  # not new
    with pytest.raises(ValueError):
        d.restart(s1, IceCredentials("N3wl", "newl0calpassw0rdnewl0c"), "x", pwd)  # a bad remote ufrag
    with pytest.raises(ValueError):
        d.restart(s1, IceCredentials("N3wl", "newl0calpassw0rdnewl0c"), "N3wr", "short")  # a bad remote pwd
    with pytest.raises(ValueError, match="not registered"):
        d.restart(session(), IceCredentials("N3wl", "newl0calpassw0rdnewl0c"), "N3wr", pwd)
    assert d.by_ufrag("LoCa") is s1 and s1.remote_ufrag == REMOTE_UFRAG and d.by_ufrag("Oth3") is s2
