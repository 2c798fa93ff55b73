"""Security review (issue 18), rows 7 to 10, each from outside a running server.

- 7: no spelling of `/internal/...` (dot segments, percent-encoded slashes and dots in any
  case, backslashes, repeated slashes, an absolute-form target) gets through a front with
  workers: 404, and the workers' rooms stay.
- 8: a header that is not ASCII where a secret or proof is compared (`Authorization`,
  `X-BitBasel-Relayed-By`) is refused (401) or dropped, never a 500.
- 9: a node whose Redis URL holds a password never shows it: not in its log (front and
  workers), not in `/stats`, not in the error when Redis refuses it.
- 10: the client package's `verify_webhook` raises only `WebhookSignatureError` on bad input.

Requests go over a raw socket, framed by h11, which sends the target and header bytes as
given: httpx removes dot segments (`/x/../internal` goes out as `/internal`) and refuses a str
header that is not ASCII, which would hide what these tests send. `send_raw` checks the bytes
on the wire.
"""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.credentials import redact_url, same_secret
from front.canonical_path import canonical_path, is_internal, relayed_path
from media_server_client import WebhookSignatureError, verify_webhook
from media_server_client.webhooks import sign_webhook
from tests.redis_support import redis_server
from tests.serving import ServerProcess, make_config, running_server, server_process

API_KEY = "api-key-of-the-security-tests"
WIRE_TIMEOUT = 20.0


# ---- a raw HTTP/1.1 client ----------------------------------------------------------------------


@dataclass(frozen=True)
class RawAnswer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send_raw(
    base_url: str,
    method: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
) -> RawAnswer:
    """`method target` sent exactly as given (no normalising of the path, any header bytes)."""
    where = urlsplit(base_url)
    assert where.hostname is not None and where.port is not None
    client = h11.Connection(h11.CLIENT)
    fields = [(b"Host", where.netloc.encode()), (b"Connection", b"close"), (b"Content-Length", b"%d" % len(body))]
    wire = client.send(h11.Request(method=method, target=target, headers=fields + (headers or [])))
    wire += (client.send(h11.Data(data=body)) if body else b"") + client.send(h11.EndOfMessage())
    assert wire.startswith(method.encode() + b" " + target + b" HTTP/1.1\r\n"), wire  # as written
    for name, value in headers or []:
        assert b"\r\n" + name + b": " + value + b"\r\n" in wire, wire
    status, chunks = 0, []
    with socket.create_connection((where.hostname, where.port), timeout=WIRE_TIMEOUT) as sock:
        sock.sendall(wire)
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return RawAnswer(status, b"".join(chunks))


# ---- row 7: /internal is never relayed --------------------------------------------------------


@pytest.fixture
def open_front(tmp_path: Path) -> Iterator[ServerProcess]:
    """A front over two workers, no API key (the workers' routes need none from the front then)."""
    with server_process(tmp_path, cluster={"workers": 2}) as front:
        yield front


def internal_spellings(room_id: str, authority: str) -> list[bytes]:
    """Ways to write `/internal/rooms/release` that a server may read as that path."""
    spellings = [
        "/internal/rooms/release",
        "/internal/rooms/release/",
        "//internal/rooms/release",
        "/./internal/rooms/release",
        "/x/../internal/rooms/release",
        "/x/y/../../internal/rooms/release",
        "/x/%2e%2e/internal/rooms/release",
        "/x/%2E%2e/internal/rooms/release",
        "/x/.%2E/internal/rooms/release",
        "/x/..%2finternal/rooms/release",
        "/x/..%2Finternal%2Frooms%2Frelease",
        "/x%2F..%2Finternal/rooms/release",
        "/x/%2e%2e%2finternal/rooms/release",
        "/x\\..\\internal/rooms/release",
        "/x/..%5cinternal/rooms/release",
        "/x/..%5Cinternal/rooms/release",
        "/%69nternal/rooms/release",
        "/INTERNAL/rooms/release",
        "/%2finternal/rooms/release",
        "/x/%252e%252e/internal/rooms/release",  # encoded twice: a literal `%2e%2e` here, never `..`
        "/x/%252e%252e%252finternal/rooms/release",
        f"/room/{room_id}/../../internal/rooms/release",
        f"/room/{room_id}/..%2F..%2Finternal/rooms/release",
        f"/room/{room_id}/..%2f..%2finternal/rooms/release",
        f"/room/{room_id}/%2e%2e/%2e%2e/internal/rooms/release",
        f"/room/{room_id}/..\\..\\internal/rooms/release",
        f"/room/{room_id}//..//..//internal/rooms/release",
        "/room/../internal/rooms/release",
        "/room/%2e%2e/internal/rooms/release",
        "/room/..%2Finternal/rooms/release",
        "/room/../x/../internal/rooms/release",
        f"http://{authority}/x/../internal/rooms/release",  # absolute-form target
        f"http://{authority}/room/{room_id}/..%2F..%2Finternal/rooms/release",
    ]
    return [spelling.encode() for spelling in spellings]


def test_no_spelling_of_internal_is_relayed_and_the_workers_keep_their_rooms(open_front: ServerProcess) -> None:
    """Issue 18 row 7: the front decides on the path its worker will see, whatever the spelling."""
    front = open_front
    rooms = [
        httpx.post(f"{front.url}/room/create", json={"post_id": f"traversal-{i}", "host_user_id": "alice"}).json()
        for i in range(2)
    ]
    placed = httpx.get(f"{front.url}/stats", timeout=10).json()
    assert sorted(len(w["rooms"]) for w in placed["workers"]) == [1, 1]  # one room on each worker
    authority = urlsplit(front.url).netloc
    stray = {"room_id": "room_000000000042", "post_id": "stray", "host_user_id": "mallory", "created_at": 0.0}
    for room in rooms:
        for target in internal_spellings(room["room_id"], authority):
            for method in ("POST", "GET"):
                answer = send_raw(front.url, method, target)
                assert answer.status == 404, (method, target, answer)
                assert b"released" not in answer.body, (method, target, answer)
            adopt = target.replace(b"release", b"adopt")
            answer = send_raw(
                front.url, "POST", adopt, [(b"Content-Type", b"application/json")], json.dumps(stray).encode()
            )
            assert answer.status == 404, (adopt, answer)
    for room in rooms:
        stats = httpx.get(f"{front.url}/room/{room['room_id']}/stats", timeout=10)
        assert stats.status_code == 200 and stats.json()["is_active"] is True, stats.text
    after = httpx.get(f"{front.url}/stats", timeout=10).json()
    assert after["active_rooms"] == 2  # and no room adopted on the side
    assert httpx.get(f"{front.url}/room/{stray['room_id']}/stats", timeout=10).status_code == 404


def test_the_worker_sees_the_path_the_front_decided_on(open_front: ServerProcess) -> None:
    """Dot segments and encoded slashes resolve once, at the front, and that path goes on."""
    front = open_front
    room_id = httpx.post(f"{front.url}/room/create", json={"post_id": "resolved", "host_user_id": "bob"}).json()[
        "room_id"
    ]
    for target in [
        f"/room/{room_id}/x/../stats",
        f"/room/{room_id}/x%2F..%2Fstats",
        f"/room/{room_id}//stats",
        f"/room/x/../{room_id}/stats",
        f"/room/{room_id}/%73tats",
        f"/room/{room_id}%2Fstats",  # an encoded slash is a slash, at the front as at the worker
        f"/room/{room_id}\\stats",
        f"/x/../room/{room_id}/stats",
    ]:
        answer = send_raw(front.url, "GET", target.encode())
        assert answer.status == 200 and answer.json()["room_id"] == room_id, (target, answer)
    for target in [f"/room/{room_id}/%252e%252e/stats", f"/room/{room_id}%252Fstats", "/room/room_1%2F..%2F/stats"]:
        answer = send_raw(front.url, "GET", target.encode())
        assert answer.status == 404, (target, answer)
    answer = send_raw(front.url, "GET", b"/health/../health")
    assert answer.status == 200 and answer.json()["status"] == "healthy", answer


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b"/", "/"),
        (b"/x/../internal/rooms/release", "/internal/rooms/release"),
        (b"/room/r/..%2F..%2Finternal", "/internal"),
        (b"/x\\..\\internal", "/internal"),
        (b"/a/b/", "/a/b/"),
        (b"/a/b/..", "/a/"),
        (b"/../../a", "/a"),
        (b"//a//b", "/a/b"),
        (b"/a/%252e%252e/b", "/a/%2e%2e/b"),  # decoded once, like the worker: a literal `%2e%2e`
        (b"http://host:1/x/../y", "/y"),
        (b"internal/x", "/internal/x"),
    ],
)
def test_the_canonical_path_and_what_goes_on_the_wire(raw: bytes, path: str) -> None:
    assert canonical_path(raw) == path
    assert canonical_path(relayed_path(path).encode()) == path  # the worker, decoding once, reads `path`
    assert is_internal(path) == path.startswith("/internal")


# ---- rows 8 and 9: a cluster node on a password-protected Redis, with an API key ------------


@dataclass(frozen=True)
class GuardedNode:
    node: ServerProcess
    redis_url: str
    password: str


@pytest.fixture(scope="module")
def guarded_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardedNode]:
    """One cluster node (a front over two workers) on a Redis that wants a password, with an API key."""
    password = f"pw-{secrets.token_hex(12)}"
    with redis_server(password=password) as redis_url:
        assert f":{password}@" in redis_url
        cluster = {"workers": 2, "redis_url": redis_url}
        auth = {"api_key": API_KEY}
        with server_process(tmp_path_factory.mktemp("node"), cluster=cluster, auth=auth) as node:
            yield GuardedNode(node, redis_url, password)


def bearer(key: bytes = API_KEY.encode()) -> tuple[bytes, bytes]:
    return b"Authorization", b"Bearer " + key


NON_ASCII = [
    "Bearer clé".encode(),  # UTF-8
    "Bearer clé".encode("latin-1"),
    b"Bearer \xff\xfe\x80",
    "Bearer 🔑".encode(),
    b"Bearer " + API_KEY.encode() + "é".encode(),
]


def test_a_non_ascii_api_key_at_a_front_is_401_not_500(guarded_node: GuardedNode) -> None:
    """Issue 18 row 8: the front's own /stats compares the key as bytes."""
    node = guarded_node.node
    for value in NON_ASCII:
        answer = send_raw(node.url, "GET", b"/stats", [(b"Authorization", value)])
        assert answer.status == 401 and answer.json()["error"] == "unauthorized", (value, answer)
        relayed = send_raw(node.url, "GET", b"/room/room_123/stats", [(b"Authorization", value)])
        assert relayed.status in (401, 404), (value, relayed)  # the worker's answer: never a 500
    assert send_raw(node.url, "GET", b"/stats", [bearer()]).status == 200


def test_a_non_ascii_relay_proof_is_dropped_not_a_500(guarded_node: GuardedNode) -> None:
    """Issue 18 row 8: an `X-BitBasel-Relayed-By` that does not verify counts as not relayed."""
    node = guarded_node.node
    node_id = httpx.get(f"{node.url}/stats", headers={"Authorization": f"Bearer {API_KEY}"}).json()["node_id"]
    proofs = [
        node_id.encode() + " é".encode(),
        node_id.encode() + b" \xe9\xe9",
        node_id.encode() + b" " + b"\xff" * 64,
        "nœud ".encode() + b"a" * 64,
        b"\xe9 \xe9",
    ]
    for proof in proofs:
        headers = [bearer(), (b"X-BitBasel-Relayed-By", proof)]
        stats = send_raw(node.url, "GET", b"/stats", headers)
        assert stats.status == 200 and "nodes" in stats.json(), (proof, stats)  # a client's view: not relayed
        created = send_raw(
            node.url,
            "POST",
            b"/room/create",
            [*headers, (b"Content-Type", b"application/json")],
            b'{"post_id": "p8", "host_user_id": "h"}',
        )
        assert created.status == 200, (proof, created)
        room = send_raw(node.url, "GET", f"/room/{created.json()['room_id']}/stats".encode(), headers)
        assert room.status == 200, (proof, room)
    assert "Traceback" not in node.log()


async def test_a_non_ascii_api_key_at_a_single_server_is_401_not_500() -> None:
    """Issue 18 row 8: the REST routes of a server without workers."""
    config = make_config(auth={"api_key": API_KEY})
    async with running_server(config) as server:
        for value in NON_ASCII:
            for method, target in [("GET", b"/stats"), ("POST", b"/room/create"), ("GET", b"/room/room_1/stats")]:
                answer = await trio.to_thread.run_sync(
                    send_raw, server.url, method, target, [(b"Authorization", value)]
                )
                assert answer.status == 401, (method, target, value, answer)


def test_the_redis_password_is_never_logged_nor_shown(guarded_node: GuardedNode) -> None:
    """Issue 18 row 9: the front's and the workers' logs, /stats."""
    node, password = guarded_node.node, guarded_node.password
    stats = send_raw(node.url, "GET", b"/stats", [bearer()])
    assert stats.status == 200 and password.encode() not in stats.body
    log = node.log()
    assert password not in log, log
    assert "in the cluster at redis://:***@" in log, log  # the front's line is still there, redacted
    assert log.count("room directory redis://:***@") == 2, log  # and each worker's


def test_the_redis_password_is_not_in_the_error_when_redis_refuses(guarded_node: GuardedNode, tmp_path: Path) -> None:
    """Issue 18 row 9: a wrong password stops the start with a config error that does not repeat it."""
    wrong = f"wrong-{secrets.token_hex(12)}"
    redis_url = guarded_node.redis_url.replace(guarded_node.password, wrong)
    with (
        pytest.raises(AssertionError, match="did not start"),
        server_process(tmp_path, cluster={"workers": 2, "redis_url": redis_url}),
    ):
        pass
    [log_path] = tmp_path.glob("server-*.log")
    log = log_path.read_text()
    assert wrong not in log and guarded_node.password not in log, log
    assert "config error: cluster.redis_url: cannot use redis://:***@" in log and "AUTH refused" in log, log
    assert "Traceback" not in log, log  # a config error, exit code 2, as for any other


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://:p@ss@host/0", "redis://:***@host/0"),  # urlsplit's password is `p@ss` too
        ("redis://:p%2Fss@[::1]:6379", "redis://:***@[::1]:6379"),
        ("https://user:pass@hooks.example/in?to=a@b", "https://user:***@hooks.example/in?to=a@b"),
        ("https://token@hooks.example/", "https://***@hooks.example/"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_same_secret_compares_any_text_as_bytes() -> None:
    assert same_secret("Bearer k", "Bearer k") and same_secret(b"k", "k")
    for sent in ["Bearer cl\u00e9", "\udcff", "Bearer k\u00e9", None]:
        assert not same_secret(sent, "Bearer k")


# ---- row 10: verify_webhook raises only WebhookSignatureError ---------------------------------

SECRET = "webhook-secret-of-the-security-tests"
NOW = 1_800_000_000
BODY = b'{"id":"e1","type":"room_started","room_id":"room_1","post_id":"p","created_at":1,"data":{}}'


def only_signature_errors(body: Any, header: Any, secret: Any = SECRET, **options: Any) -> None:
    with pytest.raises(WebhookSignatureError):
        verify_webhook(body, header, secret, now=NOW, **options)


def signed(body: bytes) -> str:
    return str(sign_webhook(body, SECRET, timestamp=NOW))


DEEP = b"[" * 100_000 + b"]" * 100_000  # json.loads raises RecursionError on it


def case(body: Any, header: Any, secret: Any = SECRET, *, why: str, **options: Any) -> Any:
    return pytest.param(body, header, secret, options, id=why)


@pytest.mark.parametrize(
    ("body", "header", "secret", "options"),
    [
        case(BODY, f"t={NOW},v1=\u00e9", why="v1 latin-1 (issue 18 row 10: TypeError in compare_digest)"),
        case(BODY, f"t={NOW},v1=\udcff", why="v1 a lone surrogate"),
        case(BODY, f"t={NOW},v1=\U0001f511", why="v1 an emoji"),
        case(BODY, "t=\uff11\uff18\uff10\uff10,v1=00", why="t in fullwidth digits"),
        case(BODY, "t=1_800_000_000,v1=00", why="t with underscores"),
        case(BODY, "t= 1800000000,v1=00", why="t with a space"),
        case(BODY, "t=-1800000000,v1=00", why="t negative"),
        case(BODY, "t=" + "9" * 400 + ",v1=00", why="t too big for a float"),
        case(BODY, "t=" + "9" * 5000 + ",v1=00", why="t over the int digit limit"),
        case(BODY, "", why="header empty"),
        case(BODY, ",,,===,", why="header only separators"),
        case(BODY, "\x00", why="header a NUL"),
        case(BODY, f"t={NOW},v1=00".encode(), why="header bytes"),
        case(BODY, NOW, why="header an int"),
        case(BODY, [f"t={NOW}"], why="header a list"),
        case(None, signed(b""), why="body None"),
        case(12, signed(b"12"), why="body an int"),
        case({"id": "e1"}, signed(BODY), why="body a dict (parsed already)"),
        case("\udcff", signed(b""), why="body a str that is not text"),
        case(b"not json", signed(b"not json"), why="signed body not JSON"),
        case(b"\xff\xfe", signed(b"\xff\xfe"), why="signed body not UTF-8"),
        case(b"[1, 2]", signed(b"[1, 2]"), why="signed body JSON but no object"),
        case(DEEP, signed(DEEP), why="signed body nested too deep"),
        case(BODY, signed(BODY), "", why="secret empty"),
        case(BODY, signed(BODY), None, why="secret None"),
        case(BODY, signed(BODY), SECRET.encode(), why="secret bytes"),
        case(BODY, signed(BODY), "\udcff", why="secret not text"),
        case(BODY, signed(BODY), tolerance_seconds=float("nan"), why="tolerance NaN"),
        case(BODY, signed(BODY), tolerance_seconds="300", why="tolerance a str"),
        case(BODY, signed(BODY), tolerance_seconds=-1, why="tolerance negative"),
    ],
)
def test_verify_webhook_raises_only_its_own_error_on_bad_input(
    body: Any, header: Any, secret: Any, options: dict[str, Any]
) -> None:
    """Issue 18 row 10: a receiver catching WebhookSignatureError answers 4xx, never 500."""
    only_signature_errors(body, header, secret, **options)


def test_verify_webhook_refuses_a_bad_now() -> None:
    """A NaN `now` would pass the replay check (`abs(nan) > 300` is false)."""
    bad: list[Any] = [float("nan"), float("inf"), 10**400, 10**5000, "1800000000", object()]
    for now in bad:
        with pytest.raises(WebhookSignatureError):
            verify_webhook(BODY, signed(BODY), SECRET, now=now)


def test_verify_webhook_still_accepts_a_genuine_delivery() -> None:
    assert verify_webhook(BODY, signed(BODY), SECRET, now=NOW + 10)["id"] == "e1"
    assert verify_webhook(BODY.decode(), signed(BODY), SECRET, now=NOW)["type"] == "room_started"
    assert verify_webhook(bytearray(BODY), signed(BODY), SECRET, now=NOW)["id"] == "e1"
    assert verify_webhook(BODY, f"t={NOW},v1=00,{signed(BODY).split(',')[1]}", SECRET, now=NOW)["id"] == "e1"


TEXT = st.text(st.characters(exclude_categories=[]), max_size=80)  # lone surrogates too
HEADER_PART = st.sampled_from(["t", "v1", "v0", "", " t", "T"]).flatmap(
    lambda key: st.one_of(st.just(str(NOW)), st.integers().map(str), TEXT).map(lambda value: f"{key}={value}")
)
HEADERS = st.one_of(
    st.none(),
    TEXT,
    st.lists(HEADER_PART | TEXT, max_size=5).map(",".join),
    st.binary(max_size=40),
    st.integers(),
)
BODIES = st.one_of(st.binary(max_size=200), TEXT, st.just(BODY), st.none(), st.integers(), st.lists(st.integers()))
SECRETS = st.one_of(st.just(SECRET), TEXT, st.binary(max_size=20), st.none())


@settings(
    max_examples=400, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(body=BODIES, header=HEADERS, secret=SECRETS)
def test_verify_webhook_raises_nothing_but_its_own_error(body: Any, header: Any, secret: Any) -> None:
    """Issue 18 row 10, generated: any body, header and secret (types included)."""
    try:
        event = verify_webhook(body, header, secret, now=NOW)
    except WebhookSignatureError:
        return
    assert isinstance(event, dict)  # only a genuine delivery gets here


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(body=st.binary(max_size=200), v1=TEXT, extra=st.lists(HEADER_PART, max_size=3))
def test_verify_webhook_with_a_good_timestamp_and_any_v1(body: bytes, v1: str, extra: list[str]) -> None:
    """Past the timestamp check: whatever the `v1=` and the body, its own error or an event."""
    header = ",".join([f"t={NOW}", f"v1={v1}", *extra])
    with suppress(WebhookSignatureError):
        verify_webhook(body, header, SECRET, now=NOW)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
SIGNED_BODIES = st.one_of(st.binary(max_size=200), JSON_VALUES.map(lambda value: json.dumps(value).encode()))


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(body=SIGNED_BODIES)
def test_verify_webhook_on_any_signed_body_gives_an_event_or_its_own_error(body: bytes) -> None:
    """Past the signature: a body that is no JSON object is refused with the same error."""
    try:
        event = verify_webhook(body, signed(body), SECRET, now=NOW)
    except WebhookSignatureError:
        return
    assert isinstance(event, dict)
