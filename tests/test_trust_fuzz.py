"""Fuzzing a live server: signaling frames and REST requests from an untrusted
world, while a viewer in another room keeps receiving a host's media.

How the cases are made (deterministic, seeded, shrinkable):

- Hypothesis does not drive async tests, and pytest-trio owns the event loop.
  So the server, the media bots and every socket live in the test's Trio loop,
  while Hypothesis runs in a worker thread (`trio.to_thread.run_sync`) with
  ordinary sync `@given` functions whose body hands each generated case to the
  Trio loop (`trio.from_thread.run`) and checks what came back. Hypothesis
  thus sees real outcomes: a failing case is shrunk against the live server
  and reported minimal. `derandomize=True` and no example database make every
  run generate the same cases (the seed comes from the test function), so a
  failure reproduces.
- Signaling: one Hypothesis example is one WebSocket session, a list of frames:
  mostly well-formed messages with wrong values (rooms, roles, tokens, SDP
  mutated line by line from real aiortc offers, trickle candidates), plus wrong
  types, unknown types, truncated JSON, huge and non-finite numbers, unicode,
  deep nesting, binary frames and frames over 64 KiB. After every frame a
  `ping` probe tells "still open" (its `pong`) from "closed" (error + close).
  `max_messages_per_second` is raised so that the rate limit is not all that
  gets tested. Then a swarm phase draws many more sessions up front and runs
  them over many concurrent sockets (volume and concurrency; a failing swarm
  session is reported as it was drawn, not shrunk).
- REST: Schemathesis generates requests from our own /openapi.json (valid and
  invalid bodies, path parameters, auth) and runs its checks against the
  documented schemas (not_a_server_error is replaced by "no 500 and 503 only
  as `capacity`/`unavailable`"; see `_rest_case` for one relaxation), then
  Hypothesis sends off-schema requests: random methods, paths, headers and
  bodies.

Asserted: no 500 (503 `capacity` is the contract's answer to max_rooms), every
non-2xx REST body is `{"error", "message"}`, every WebSocket refusal is an
`error` then its close code (or 1009 for oversize, 1000 after `leave`), no
ERROR is logged, no session leaks, the server stays up, and the viewer's
decoded video frame count grows throughout. Loopback only: generated ICE
candidates name loopback addresses or none (and never `.local` mDNS names).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
import schemathesis
import trio
import trio_asyncio
from aiortc import RTCConfiguration, RTCPeerConnection
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance
from trio_websocket import ConnectionClosed

from actors.peer import CLOSE_OF_CODE
from core.signaling import MAX_MESSAGE_BYTES, Leave, Ping, decode_client_message_untrusted  # the server's reading
from media_server_client.aiortc_hooks import restrict_host_addresses
from media_server_client.messages import Error, Joined, Pong  # what the client session decodes
from media_server_client.signaling import SessionClosed, SignalingSession, connect_signaling
from tests.media_support import LOOPBACK, host, media_server, viewer
from tests.serving import RunningServer, make_config

SECRET = "fuzz-secret-of-at-least-32-bytes!!"
# WHIP and WHEP bodies (an SDP offer, an SDP fragment) are text: drawn and sent as text/plain is
schemathesis.serializer.alias(["application/sdp", "application/trickle-ice-sdpfrag"], "text/plain")
API_KEY = "fuzz-api-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MAX_ROOMS = 12

# case counts (per run, before shrinking); BITBASEL_FUZZ_SCALE=4 runs four times as many
SCALE = float(os.environ.get("BITBASEL_FUZZ_SCALE", "1"))
SIGNALING_SESSIONS = max(1, int(450 * SCALE))
MIN_FRAMES_PER_SESSION = 4
MAX_FRAMES_PER_SESSION = 16
SWARM_SESSIONS = max(1, int(600 * SCALE))
SWARM_CONCURRENCY = 32
FRAME_ANSWER_SECONDS = 10  # a frame and its probe get their answers within this
REST_SCHEMA_CASES = max(1, int(150 * SCALE))  # per generation mode (positive, negative)
REST_RANDOM_CASES = max(1, int(200 * SCALE))

FUZZ_SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],  # no shrinking against a live server: report the case as found
    print_blob=False,
)
log = logging.getLogger("tests.fuzz")


# ---- the world the fuzzer knows -------------------------------------------------------------


@dataclass(repr=False)
class World:
    server: RunningServer
    media_room: str  # the bots' room: the fuzzer knows its id, never a token for it
    rooms: list[str]  # fuzz rooms: ids and tokens are known
    stopped_room: str
    host_user: dict[str, str]
    tokens: list[str]
    offers: list[str]  # real aiortc offers (host: sendonly, viewer: recvonly), loopback candidates only

    def __repr__(self) -> str:  # Hypothesis prints strategies with their arguments
        return f"World({self.server.url})"


@dataclass
class Counts:
    frames: int = 0
    probes: int = 0
    sockets: int = 0
    swarm_sockets: int = 0
    swarm_frames: int = 0
    rest_schema: int = 0
    rest_random: int = 0
    closes: Counter[int | None] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)


async def make_offer(kinds: dict[str, str]) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        restrict_host_addresses(pc, LOOPBACK)
        for kind, direction in kinds.items():
            pc.addTransceiver(kind, direction=direction)
        offer = await trio_asyncio.aio_as_trio(pc.createOffer)()
        await trio_asyncio.aio_as_trio(pc.setLocalDescription)(offer)
        sdp: str = pc.localDescription.sdp
        return sdp
    finally:
        await trio_asyncio.aio_as_trio(pc.close)()


async def build_world(server: RunningServer, media_room: str) -> World:
    rooms, host_user, tokens = [], {}, []
    async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=10) as client:
        for i in range(3):
            created = (await client.post("/room/create", json={"post_id": f"fuzz_{i}", "host_user_id": f"h{i}"})).json()
            rooms.append(created["room_id"])
            host_user[created["room_id"]] = f"h{i}"
            tokens.append(created["host_token"])
            for user in ("v1", f"h{i}"):
                body = {"role": "viewer", "user_id": user, "ttl_seconds": 600}
                tokens.append((await client.post(f"/room/{created['room_id']}/token", json=body)).json()["token"])
        stopped = (await client.post("/room/create", json={"post_id": "fuzz_stopped", "host_user_id": "z"})).json()
        await client.post(f"/room/{stopped['room_id']}/stop")
    now = int(time.time())
    room = rooms[0]
    tokens += [
        stopped["host_token"],
        jwt.encode({"room": room, "role": "host", "sub": "h0", "exp": now - 3600}, SECRET, "HS256"),  # expired
        jwt.encode({"room": room, "role": "host", "sub": "h0", "exp": now + 60}, "x" * 32, "HS256"),  # wrong key
        jwt.encode({"room": media_room, "role": "viewer", "sub": "v", "exp": now + 60}, "y" * 32, "HS256"),
    ]
    offers = [
        await make_offer({"video": "sendonly", "audio": "sendonly"}),
        await make_offer({"video": "recvonly", "audio": "recvonly"}),
        await make_offer({"video": "sendrecv"}),
    ]
    for offer in offers:
        assert loopback_only(offer) == offer
    return World(server, media_room, rooms, stopped["room_id"], host_user, tokens, offers)


# ---- signaling frames --------------------------------------------------------------------------


def _unsafe_candidate(line: str) -> bool:
    """A candidate line naming an address off loopback, or an mDNS name (aioice would resolve it)."""
    if "candidate" not in line:
        return False
    if ".local" in line.lower():
        return True
    for token in line.replace("candidate:", " ").split():
        try:
            address = ipaddress.ip_address(token.strip("[]"))
        except ValueError:
            continue
        if not address.is_loopback:
            return True
    return False


def loopback_only(text: str) -> str:
    """Drop every candidate line that names an address off loopback or an mDNS name."""
    return "\r\n".join(line for line in text.split("\r\n") if not _unsafe_candidate(line))


def json_junk() -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**80), 2**80)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=30)
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )


def candidate_lines() -> st.SearchStrategy[str]:
    return st.builds(
        "candidate:{} {} {} {} {} {} typ {}{}".format,
        st.integers(0, 2**40) | st.text("abcXYZ019+/", max_size=12),
        st.integers(-1, 300),
        st.sampled_from(["udp", "UDP", "tcp", "sctp", "x", ""]),
        st.integers(-1, 2**64),
        st.sampled_from(["127.0.0.1", "127.0.0.2", "::1", "127.0.0.1.1", "999.1.1.1", "", "[::1]", "localhost"]),
        st.integers(-5, 70000),
        st.sampled_from(["host", "srflx", "relay", "prflx", "x"]),
        st.sampled_from(["", " raddr 127.0.0.1 rport 9", " generation 0", " tcptype active", " ufrag x"]),
    )


@st.composite
def mutated_sdp(draw: st.DrawFn, offers: list[str]) -> str:
    lines = draw(st.sampled_from(offers)).split("\r\n")
    line_text = st.text(st.characters(blacklist_characters="\r\n"), max_size=60)
    tokens = st.one_of(
        st.integers(-(2**70), 2**70).map(str),
        line_text.map(lambda t: t[:20]),
        st.sampled_from(["VP8", "H264", "VP9", "opus", "PCMU", "0", "-1", "sendonly", "recvonly", "inactive", "UDP"]),
    )
    for _ in range(draw(st.integers(0, 5))):
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        op = draw(st.sampled_from(["drop", "dup", "swap", "token", "junk", "m-line", "truncate"]))
        if not lines:
            break
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "token" and "candidate" not in lines[i]:
            parts = re.split(r"([ :/=])", lines[i])
            k = draw(st.integers(0, len(parts) - 1))
            parts[k] = draw(tokens)
            lines[i] = "".join(parts)
        elif op == "junk":
            lines.insert(i, draw(line_text))
        elif op == "m-line":
            kind = draw(st.sampled_from(["video", "audio", "application", "text"]))
            lines.insert(i, f"m={kind} {draw(st.integers(-1, 70000))} UDP/TLS/RTP/SAVPF {draw(tokens)}")
        elif op == "truncate":
            lines = lines[:i]
    separator = draw(st.sampled_from(["\r\n", "\r\n", "\n", "\r"]))
    return separator.join(line for line in lines if not _unsafe_candidate(line))


def messages(world: World, *, only_joins: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """Message-shaped dicts: right shapes with wrong values, wrong types, extra fields."""
    junk = json_junk()
    room_ids = st.sampled_from([*world.rooms, world.stopped_room, world.media_room, "room_1"]) | junk
    tokens = st.sampled_from(world.tokens) | st.text(max_size=40) | junk

    def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.none() | strategy

    join = st.fixed_dictionaries(
        {"type": st.just("join"), "room_id": room_ids, "role": st.sampled_from(["host", "viewer"]) | junk},
        optional={"token": optional(tokens), "user_id": optional(st.sampled_from(["h0", "h1", "v1"]) | junk)},
    )
    offer = st.fixed_dictionaries({"type": st.just("offer"), "sdp": mutated_sdp(world.offers) | junk})
    candidate = st.fixed_dictionaries(
        {"type": st.just("candidate"), "candidate": candidate_lines() | st.sampled_from(["", "a=end-of-candidates"])},
        optional={
            "sdpMid": optional(st.sampled_from(["0", "1", "video"]) | junk),
            "sdpMLineIndex": optional(st.integers(-(2**70), 2**70) | junk),
        },
    )
    simple = st.fixed_dictionaries(
        {"type": st.sampled_from(["leave", "ping", "pong", "joined", "answer", "error", "JOIN", "", "ping "]) | junk}
    )
    shapes = [join, offer, candidate, simple, st.dictionaries(st.text(max_size=10), junk, max_size=5)]
    if only_joins:
        shapes = [join]
    shaped = st.randoms(use_true_random=True).flatmap(lambda r: r.choice(shapes))  # each shape as likely
    extra = st.dictionaries(st.text(max_size=10), junk, max_size=3)
    return st.builds(lambda message, more: {**more, **message}, shaped, extra)


ODD_FORMS = ("truncated", "binary", "nested", "numbers", "text", "duplicate", "huge")


@st.composite
def frames(draw: st.DrawFn, world: World) -> str | bytes:
    message = draw(messages(world))
    text = json.dumps(message, ensure_ascii=draw(st.booleans()))
    # about one frame in four takes an odd form, each as likely (a Random seeded by Hypothesis
    # keeps the mix as written; Hypothesis's own choices lean hard on the ends of a list)
    form = draw(st.randoms(use_true_random=True)).choices(["json", *ODD_FORMS], weights=[21] + [1] * len(ODD_FORMS))[0]
    if form == "json":
        return text
    if form == "truncated":
        return text[: draw(st.integers(0, max(len(text) - 1, 0)))]
    if form == "binary":
        return text.encode()
    if form == "nested":
        depth = draw(st.integers(1, 5000))
        return '{"type": "ping", "x": ' + "[" * depth + "]" * depth + "}"
    if form == "numbers":
        number = draw(st.sampled_from(["1e999", "-1e999", "NaN", "Infinity", "1" * 400, "-0", "0.1e-999", "2e308"]))
        return text.replace("}", f', "n": {number}}}', 1) if text.endswith("}") else number
    if form == "text":
        return draw(st.text(max_size=200))
    if form == "duplicate":
        return text.replace("{", '{"type": "ping", ', 1) if text.startswith("{") else text
    assert form == "huge", form
    size = draw(st.sampled_from([MAX_MESSAGE_BYTES - 100, MAX_MESSAGE_BYTES + 1, MAX_MESSAGE_BYTES + 5000, 200_000]))
    return json.dumps({"type": "ping", "pad": "é" * (size // 2)}, ensure_ascii=False)  # 2 bytes a character


def sessions(world: World) -> st.SearchStrategy[list[str | bytes]]:
    """Mostly a good join first (so that what follows is judged after `joined`), then frames."""
    good_joins = [
        json.dumps({"type": "join", "room_id": room, "role": role, "token": token})
        for room, role, token in [
            (world.rooms[0], "host", world.tokens[0]),
            (world.rooms[0], "viewer", world.tokens[1]),
            (world.rooms[1], "viewer", world.tokens[4]),
            (world.rooms[2], "host", world.tokens[6]),
        ]
    ]
    # half a good join, then a fuzzed join (refusals: unauthorized, forbidden, room_not_found...), then any frame
    firsts = [st.sampled_from(good_joins), messages(world, only_joins=True).map(json.dumps), frames(world)]
    first = st.randoms(use_true_random=True).flatmap(lambda r: r.choices(firsts, weights=[5, 3, 2])[0])
    rest = st.lists(frames(world), min_size=MIN_FRAMES_PER_SESSION - 1, max_size=MAX_FRAMES_PER_SESSION - 1)
    return st.builds(lambda head, tail: [head, *tail], first, rest)


def generate_sessions(world: World, count: int) -> list[list[str | bytes]]:
    """`count` sessions drawn up front (no I/O), for the swarm to run concurrently."""
    generated: list[list[str | bytes]] = []

    @settings(FUZZ_SETTINGS, max_examples=count)
    @given(session=sessions(world))
    def record(session: list[str | bytes]) -> None:
        generated.append(session)

    record()
    return generated


# ---- one signaling session, checked ---------------------------------------------------------------


def short(frames_: list[str | bytes], limit: int = 300) -> list[str | bytes]:
    return [f if len(f) <= limit else f[:limit] + ("…" if isinstance(f, str) else b"...") for f in frames_]


def _decodes_to(frame: str | bytes, kind: type[Any]) -> bool:
    """Whether the server reads this frame as a message of `kind` (same decoder, same size limit)."""
    size = len(frame) if isinstance(frame, bytes) else len(frame.encode())
    try:
        return size <= MAX_MESSAGE_BYTES and isinstance(decode_client_message_untrusted(frame), kind)
    except ValueError:
        return False


async def run_session(world: World, frames_: list[str | bytes], counts: Counts, *, swarm: bool = False) -> None:
    """One WebSocket session: send the frames, each followed by a `ping` probe, and check every answer."""
    stage = "connect"
    with trio.move_on_after(FRAME_ANSWER_SECONDS * (len(frames_) + 2)) as bounded:
        async with connect_signaling(world.server.ws_url) as session:
            if swarm:
                counts.swarm_sockets += 1
            else:
                counts.sockets += 1
            stage = "frames"
            await _run_frames(session, frames_, counts, swarm=swarm)
            stage = "close"
        stage = "closed"
    if bounded.cancelled_caught:
        raise AssertionError(f"stuck at {stage} of a session of {short(frames_)}")


async def _run_frames(session: SignalingSession, frames_: list[str | bytes], counts: Counts, *, swarm: bool) -> None:
    joined = False
    for index, frame in enumerate(frames_):
        try:
            await session.send_raw(frame)
            await session.send(Ping())
        except ConnectionClosed:
            pass  # closed while sending (e.g. 1009 for this frame): read what came before the close
        if swarm:
            counts.swarm_frames += 1
        else:
            counts.frames += 1
            counts.probes += 1
        pending: list[Error] = []
        # a frame that is itself a good `ping` gets a `pong` of its own before the probe's
        pongs = 2 if joined and _decodes_to(frame, Ping) else 1
        deadline = trio.current_time() + FRAME_ANSWER_SECONDS
        while pongs:
            try:
                with trio.move_on_at(deadline) as answered:
                    message = await session.receive()  # a message that does not decode raises ValueError
                if answered.cancelled_caught:
                    raise AssertionError(f"no answer in {FRAME_ANSWER_SECONDS} s to frame {index} of {short(frames_)}")
            except SessionClosed as closed:
                check_close(closed, frame, pending, joined=joined, swarm=swarm, sent=frames_[: index + 1])
                counts.closes[closed.code] += 1
                return
            if isinstance(message, Pong):
                pongs -= 1
            elif isinstance(message, Error):
                pending.append(message)
                counts.errors[message.code] += 1
            elif isinstance(message, Joined):
                assert not joined, f"a second joined after {short(frames_[: index + 1])}"
                joined = True
        if swarm and any(e.code == "replaced" for e in pending):
            # another swarm session of the same host took over; the close may trail a probe's pong
            try:
                with trio.fail_after(FRAME_ANSWER_SECONDS):
                    await session.wait_closed()
            except SessionClosed as closed:
                # The `replaced` error has arrived, and its close frame follows: the server reads
                # what this client still sends until its close answer (the closing handshake),
                # so no reset can discard the frame (tests/test_signaling.py)
                assert closed.code == CLOSE_OF_CODE["replaced"], closed
                counts.closes[closed.code] += 1
            return
        # the session goes on: only the errors that do not end it
        assert all(e.code in ("bad_message", "bad_sdp") for e in pending), (pending, short(frames_[: index + 1]))


def check_close(
    closed: SessionClosed,
    frame: str | bytes,
    pending: list[Error],
    *,
    joined: bool,
    swarm: bool,
    sent: list[str | bytes],
) -> None:
    size = len(frame) if isinstance(frame, bytes) else len(frame.encode())
    code = closed.code
    if code == 1009:
        assert size > MAX_MESSAGE_BYTES, f"1009 for a frame of {size} bytes: {short(sent)}"
        return
    if code == 1000 and not pending:
        assert joined and _decodes_to(frame, Leave), f"closed 1000 without a leave: {frame!r:.300}"
        return
    assert pending, f"closed {code} without an error first, after {frame!r:.300}"
    error = pending[-1]
    if swarm and error.code == "replaced" and code == 1006:
        return  # the close frame lost to a reset (see _run_frames): the error did arrive first
    assert CLOSE_OF_CODE.get(error.code) == code, f"{error} then close {code}"
    allowed = {"bad_message", "unauthorized", "forbidden", "room_not_found", "host_taken", "unsupported_codec"}
    if swarm:
        allowed |= {"replaced", "room_full"}  # concurrent hosts of one user replace each other
    assert error.code in allowed, error


# ---- REST ---------------------------------------------------------------------------------------


OPEN_DATA_PATHS = ("/health", "/openapi.json")


def check_rest_response(response: Any, *, keyed: bool) -> None:
    """What every REST answer must be, whatever was asked (httpx or requests response)."""
    status = response.status_code
    path = httpx.URL(str(response.request.url)).path
    assert status != 500 and status < 600, f"{status} for {path}: {response.text[:300]}"
    if status < 400:
        if not keyed and response.headers.get("content-type", "").startswith("application/json"):
            # without the key, only the open routes answer with data (pages and static files are not JSON)
            assert path in OPEN_DATA_PATHS, f"{status} JSON without the API key: {path}"
        return
    if not response.content:  # a HEAD, or a refusal by Hypercorn itself (before the app)
        assert response.request.method == "HEAD" or status in (400, 414, 431), (status, path)
        return
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error", "message"}, (status, path, body)
    assert isinstance(body["error"], str) and isinstance(body["message"], str), body
    if status == 503:
        doors = path.startswith(("/whip/", "/whep/"))  # WHIP/WHEP: also a session or room limit
        assert body["error"] in ("capacity", "unavailable", *(("rate_limited", "room_full") if doors else ())), body


def _integral_floats(value: Any) -> bool:
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, dict):
        return any(_integral_floats(v) for v in value.values())
    if isinstance(value, list):
        return any(_integral_floats(v) for v in value)
    return False


def rest_schema_fuzz(base_url: str, room_ids: list[str], counts: Counts) -> None:
    """Schemathesis, from /openapi.json (runs in a worker thread, blocking I/O)."""
    document = httpx.get(f"{base_url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        _rest_schema_mode(schema, mode, base_url, room_ids, counts)


def _rest_schema_mode(schema: Any, mode: GenerationMode, base_url: str, room_ids: list[str], counts: Counts) -> None:
    strategy = st.one_of(
        schema.as_strategy(generation_mode=mode),
        *[schema.as_strategy(generation_mode=mode, path_parameters={"room_id": r}) for r in room_ids],
    )

    @settings(FUZZ_SETTINGS, max_examples=REST_SCHEMA_CASES)
    @given(case=strategy)
    def one_case(case: Any) -> None:
        _rest_case(case, base_url, mode, counts)

    one_case()


def _rest_case(case: Any, base_url: str, mode: GenerationMode, counts: Counts) -> None:
    counts.rest_schema += 1
    response = case.call(base_url=base_url, headers=AUTH, timeout=10)
    counts.statuses[response.status_code] += 1
    check_rest_response(response, keyed=True)
    excluded = [not_a_server_error]  # replaced by check_rest_response: 503 `capacity` is the contract
    if mode == GenerationMode.POSITIVE and response.status_code == 400 and _integral_floats(case.body):
        # JSON Schema's "integer" admits 3600.0; the server takes integers as written (3600), as
        # /openapi.json says. Not a server fault: skip the "valid data accepted" check for it.
        excluded.append(positive_data_acceptance)
    # schemathesis's checks (some send probes of their own, e.g. the same request without the key)
    case.validate_response(
        response, excluded_checks=excluded, headers=AUTH, transport_kwargs={"base_url": base_url, "headers": AUTH}
    )


@st.composite
def random_requests(draw: st.DrawFn, room_ids: list[str]) -> dict[str, Any]:
    segment = st.text(max_size=12).map(lambda s: urllib.parse.quote(s, safe=""))  # any text, percent-encoded
    prefix = st.sampled_from(
        [
            "/",
            "/room/",
            "/room/create",
            "/stats",
            "/health",
            "/static/",
            "/watch/",
            "/debug/room/",
            "/openapi.json",
            "//",
            "/ws",
            "/%2e%2e/",
            "/room/" + room_ids[0] + "/",
        ]
    )
    path = draw(prefix) + "/".join(draw(st.lists(segment, max_size=3)))
    if draw(st.booleans()):
        path = draw(st.sampled_from([f"/room/{r}/{op}" for r in room_ids for op in ("stats", "stop", "token")]))
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]))
    headers: dict[str, str] = {}
    keyed = draw(st.sampled_from(["good", "good", "none", "wrong", "lower"]))
    if keyed == "good":
        headers.update(AUTH)
    elif keyed == "wrong":
        headers["Authorization"] = draw(st.sampled_from(["Bearer", "Bearer  " + API_KEY, "Basic " + API_KEY, API_KEY]))
    elif keyed == "lower":
        headers["Authorization"] = "bearer " + API_KEY
    if draw(st.booleans()):
        headers["Content-Type"] = draw(
            st.sampled_from(
                ["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
            )
        )
    if draw(st.integers(0, 9)) == 0:
        headers["Range"] = draw(st.sampled_from(["bytes=99999999-", "bytes=0-1", "bytes=-5", "junk"]))
    body_kind = draw(st.sampled_from(["none", "json", "json", "bytes", "big"]))
    content: bytes | None = None
    if body_kind == "json":
        content = json.dumps(draw(json_junk())).encode()
    elif body_kind == "bytes":
        content = draw(st.binary(max_size=200))
    elif body_kind == "big":
        content = b"[" * draw(st.sampled_from([2000, 100_000])) + b"x" * draw(st.sampled_from([0, 1_100_000]))
    return {"method": method, "url": path, "headers": headers, "content": content, "keyed": keyed == "good"}


def rest_random_fuzz(base_url: str, room_ids: list[str], counts: Counts) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as client:

        @settings(FUZZ_SETTINGS, max_examples=REST_RANDOM_CASES)
        @given(request=random_requests(room_ids))
        def one_request(request: dict[str, Any]) -> None:
            keyed = request.pop("keyed")
            counts.rest_random += 1
            request["url"] = base_url + request["url"]  # absolute: httpx refuses a relative "//x"
            response = client.request(**request)
            counts.statuses[response.status_code] += 1
            check_rest_response(response, keyed=keyed)

        one_request()


# ---- the test -------------------------------------------------------------------------------------


class FrameWatch:
    """Samples the viewer's decoded video frames; `longest_stall` is the longest time without one."""

    def __init__(self, read: Callable[[], int]) -> None:
        self.read = read
        self.samples: list[tuple[float, int]] = []

    async def run(self) -> None:
        while True:
            self.samples.append((trio.current_time(), self.read()))
            await trio.sleep(0.25)

    def frames_between(self, start: float, end: float) -> int:
        inside = [n for t, n in self.samples if start <= t <= end]
        return inside[-1] - inside[0] if inside else 0

    def longest_stall(self, start: float, end: float) -> float:
        longest, since, last = 0.0, start, -1
        for t, n in self.samples:
            if start <= t <= end:
                if n != last:
                    since, last = t, n
                longest = max(longest, t - since)
        return longest


@pytest.mark.slow
async def test_fuzz_the_live_server_while_media_flows(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    config = make_config(
        auth={"secret": SECRET, "api_key": API_KEY},
        server={"max_messages_per_second": 100_000},
        rooms={"max_rooms": MAX_ROOMS},
    )
    counts = Counts()
    phases: dict[str, tuple[float, float]] = {}
    started = time.monotonic()
    with trio.fail_after(240):
        async with media_server(config) as server, trio.open_nursery() as nursery:
            async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=10) as client:
                media = (await client.post("/room/create", json={"post_id": "media", "host_user_id": "alice"})).json()
                media_room = media["room_id"]
                viewer_token = (
                    await client.post(f"/room/{media_room}/token", json={"role": "viewer", "user_id": "watcher"})
                ).json()["token"]
            world = await build_world(server, media_room)
            async with (
                host(server, media_room, token=media["host_token"]) as publisher,
                viewer(server, media_room, token=viewer_token) as watcher,
            ):
                with trio.fail_after(30):
                    await watcher.wait_for(lambda s: s.video_frames >= 5)
                watch = FrameWatch(lambda: watcher.state.video_frames)
                nursery.start_soon(watch.run)

                # phase 1: signaling sessions, one after another, from Hypercorn-driving Hypothesis
                def signaling_fuzz() -> None:
                    @settings(FUZZ_SETTINGS, max_examples=SIGNALING_SESSIONS)
                    @given(session=sessions(world))
                    def one_session(session: list[str | bytes]) -> None:
                        trio.from_thread.run(run_session, world, session, counts)

                    one_session()

                t0 = trio.current_time()
                await trio.to_thread.run_sync(signaling_fuzz)
                phases["signaling"] = (t0, trio.current_time())
                print(f"signaling phase: {phases['signaling'][1] - t0:.1f} s, {counts.frames} frames", flush=True)

                # phase 2: many more sessions, drawn up front, over many concurrent sockets
                t0 = trio.current_time()
                limiter = trio.CapacityLimiter(SWARM_CONCURRENCY)

                async def swarm_one(frames_: list[str | bytes]) -> None:
                    async with limiter:
                        await run_session(world, frames_, counts, swarm=True)

                swarm_sessions = await trio.to_thread.run_sync(generate_sessions, world, SWARM_SESSIONS)
                async with trio.open_nursery() as swarm:
                    for frames_ in swarm_sessions:
                        swarm.start_soon(swarm_one, frames_)
                phases["swarm"] = (t0, trio.current_time())
                print(f"swarm phase: {phases['swarm'][1] - t0:.1f} s, {counts.swarm_frames} frames", flush=True)

                # phase 3: REST from the OpenAPI document, then off-schema
                t0 = trio.current_time()
                rest_rooms = [*world.rooms, world.stopped_room]
                await trio.to_thread.run_sync(rest_schema_fuzz, server.url, rest_rooms, counts)
                await trio.to_thread.run_sync(rest_random_fuzz, server.url, rest_rooms, counts)
                phases["rest"] = (t0, trio.current_time())

                # the media room was not disturbed
                for name, (start, end) in phases.items():
                    if end - start >= 1.0:  # frames are sampled every 0.25 s
                        assert watch.frames_between(start, end) > 0, f"no video frame during {name}"
                    assert watch.longest_stall(start, end) < 3.0, (name, watch.longest_stall(start, end))
                assert publisher.state.closed is None and watcher.state.closed is None
                assert publisher.state.reconnects == 0 and watcher.state.reconnects == 0  # never dropped
                assert watcher.state.connection_state == "connected"
                async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=10) as client:
                    stats = (await client.get(f"/room/{media_room}/stats")).json()
                    assert stats["is_active"] and stats["has_host"] and stats["viewer_count"] == 1, stats
                    # every fuzz session was released: only the two bots are joined
                    for _ in range(100):
                        if (await client.get("/stats")).json()["total_peers"] == 2:
                            break
                        await trio.sleep(0.1)
                    else:
                        raise AssertionError(f"sessions leaked: {(await client.get('/stats')).json()}")
                    assert (await client.get("/health")).status_code == 200
            nursery.cancel_scope.cancel()

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()[:300]}" for r in errors[:5]]
    elapsed = time.monotonic() - started
    durations = {name: round(end - start, 1) for name, (start, end) in phases.items()}
    print(
        f"\nfuzz: {counts.sockets} signaling sessions, {counts.frames} fuzz frames (+{counts.probes} ping probes); "
        f"swarm: {counts.swarm_sockets} sessions, {counts.swarm_frames} frames, {SWARM_CONCURRENCY} at once; "
        f"REST: {counts.rest_schema} schemathesis cases, {counts.rest_random} off-schema requests; "
        f"viewer frames: {watcher.state.video_frames}; phases (s): {durations}; total {elapsed:.1f} s\n"
        f"closes: {dict(counts.closes)}\nerrors: {dict(counts.errors)}\nREST statuses: {dict(counts.statuses)}"
    )
