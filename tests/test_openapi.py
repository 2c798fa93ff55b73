"""`GET /openapi.json` is kept true: it is valid OpenAPI 3.1, its schemas are
msgspec's for the handlers' own types, it names exactly the app's REST routes,
and real responses (every documented status, provoked here) validate against
what it documents for that status."""

from __future__ import annotations

import copy
import tempfile
from typing import Any

import httpx
import jsonschema
import msgspec
import schemathesis
import trio
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from actors.supervisor import SupervisorClient
from api import schemas
from api.app import create_app, peer_environment
from api.context import ServerContext
from api.http_sessions import HttpSessions
from api.media import MediaConnections
from api.openapi import build_openapi
from core.config import Config
from media_server_client.signaling import connect_signaling
from services.webhooks import Webhooks
from tests.serving import RunningServer, make_config, running_server
from transport.media_port import MediaPort

SECRET = "openapi-test-secret-of-32-bytes-or-more"
API_KEY = "k"
KEY = {"Authorization": f"Bearer {API_KEY}"}
# blueprints that are not the REST API (PROTOCOL.md): pages, static files, /ws, fault injection
NOT_REST = {"pages", "signaling", "debug"}
DOC_URI = "urn:bitbasel:openapi"


def rest_routes(config: Config) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every rule of the real app's url_map that is REST."""
    send, _ = trio.open_memory_channel[Any](0)
    port = MediaPort(["127.0.0.1"], 0)
    try:
        media = MediaConnections(config, port)
        ctx = ServerContext(
            config=config,
            supervisor=SupervisorClient(send),
            tokens=None,
            media=media,
            webhooks=Webhooks(config.webhooks),
        )
        app = create_app(ctx, HttpSessions(peer_environment(ctx), ctx.sessions))  # with WHIP and WHEP
    finally:
        port.close()
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".", 1)[0] in NOT_REST or rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                routes.add((method.lower(), path))
    return routes


def documented_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    """(method, path) of every documented operation but OPTIONS (WHIP and WHEP document theirs)."""
    return {(method, path) for path, item in document["paths"].items() for method in item if method != "options"}


def test_the_document_is_valid_openapi_3_1() -> None:
    document = build_openapi()
    assert document["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(copy.deepcopy(document)).validate()  # against the OAS 3.1 meta-schema
    for name, schema in document["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema), name
    assert msgspec.json.decode(msgspec.json.encode(document)) == document  # plain JSON


def test_the_document_names_exactly_the_apps_rest_routes() -> None:
    document = build_openapi()
    for debug in (False, True):  # /debug/* exists only with fault injection, and is never documented
        assert rest_routes(make_config(debug={"fault_injection": debug})) == documented_routes(document)
    assert {path for _, path in documented_routes(document)} >= {
        "/health",
        "/room/create",
        "/room/{room_id}/stop",
        "/room/{room_id}/stats",
        "/stats",
        "/room/{room_id}/token",
        "/openapi.json",
    }


def test_the_schemas_are_msgspecs_for_the_handlers_types() -> None:
    document = build_openapi()
    types = [getattr(schemas, name) for name in schemas.__all__ if name != "CrashResponse"]
    _, generated = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    components = copy.deepcopy(document["components"]["schemas"])
    # the one documented addition: post_id or classroom_id is required
    assert components["CreateRoomRequest"].pop("anyOf") == [
        {"required": ["post_id"], "properties": {"post_id": {"type": "string"}}},
        {"required": ["classroom_id"], "properties": {"classroom_id": {"type": "string"}}},
    ]
    assert components == generated
    ops = {(m, p): op for p, item in document["paths"].items() for m, op in item.items()}

    def ref(schema: dict[str, Any]) -> str:
        return str(schema["$ref"]).rsplit("/", 1)[1]

    def ok(method: str, path: str) -> str:
        return ref(ops[(method, path)]["responses"]["200"]["content"]["application/json"]["schema"])

    def body(method: str, path: str) -> str:
        return ref(ops[(method, path)]["requestBody"]["content"]["application/json"]["schema"])

    assert ok("get", "/health") == "HealthResponse"
    assert (ok("post", "/room/create"), body("post", "/room/create")) == ("CreateRoomResponse", "CreateRoomRequest")
    assert ok("post", "/room/{room_id}/stop") == "StopRoomResponse"
    assert ok("get", "/room/{room_id}/stats") == "RoomStats"
    assert ok("get", "/stats") == "ServerTotals"
    assert (ok("post", "/room/{room_id}/token"), body("post", "/room/{room_id}/token")) == (
        "TokenResponse",
        "TokenRequest",
    )
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"} and document["security"] == [{"bearer": []}]
    for (method, path), op in ops.items():
        open_route = path in ("/health", "/openapi.json") or method == "options"
        assert (op.get("security") == []) is open_route, (method, path)
        errors = {int(s) for s in op["responses"] if not s.startswith("2")}
        assert (401 in errors) is not open_route, (method, path)
        if "{room_id}" in path and method != "options":
            names = ["room_id"] + [n for n in ("peer_id", "recording_id", "session_id") if "{" + n + "}" in path]
            assert [(p["name"], p["in"], p["required"]) for p in op["parameters"]] == [(n, "path", True) for n in names]
            assert (404 in errors) is (path != "/room/{room_id}/recordings"), path  # a listing: empty, never 404
        if "requestBody" in op:
            assert {400, 413} <= errors
        for status in errors:
            content = op["responses"][str(status)]["content"]["application/json"]["schema"]
            assert ref(content) == "ErrorResponse", (method, path, status)
    assert 503 in {int(s) for s in ops[("post", "/room/create")]["responses"]}


class Validator:
    """Checks a real response against what the document says for its route and status."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.registry: Registry[Any] = Registry().with_resource(
            DOC_URI, Resource.from_contents(document, default_specification=DRAFT202012)
        )
        self.seen: set[tuple[str, str, int]] = set()

    def __call__(self, method: str, path: str, response: httpx.Response) -> dict[str, Any]:
        op = self.document["paths"][path][method]
        status = str(response.status_code)
        assert status in op["responses"], f"{method} {path}: {status} is not documented: {response.text}"
        content = op["responses"][status].get("content", {})
        self.seen.add((method, path, response.status_code))
        if "text/plain" in content:  # /metrics: Prometheus's text format
            assert response.headers["content-type"].startswith("text/plain")
            return {"text": response.text}
        if "image/jpeg" in content:  # a thumbnail
            assert response.headers["content-type"] == "image/jpeg" and response.content[:2] == b"\xff\xd8"
            return {}
        if "application/sdp" in content:  # a WHIP/WHEP answer
            assert response.headers["content-type"] == "application/sdp" and response.text.startswith("v=0")
            return {}
        if not content:  # 204: no body
            assert not response.content
            return {}
        for media_type in ("video/webm", "video/x-matroska"):  # a recording
            if media_type in content:
                assert response.headers["content-type"] == media_type and response.content[:4] == b"\x1a\x45\xdf\xa3"
                return {}
        assert response.headers["content-type"].startswith("application/json")
        schema = content["application/json"]["schema"]
        if "$ref" in schema:
            schema = {"$ref": DOC_URI + schema["$ref"]}
        body: dict[str, Any] = response.json()
        jsonschema.Draft202012Validator(schema, registry=self.registry).validate(body)
        return body


async def exercise(server: RunningServer, check: Validator) -> None:
    big = b'{"post_id": "' + b"x" * (1024 * 1024) + b'", "host_user_id": "u"}'
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        check("get", "/health", await c.get("/health"))
        assert check("get", "/openapi.json", await c.get("/openapi.json")) == check.document

        create = "/room/create"
        check("post", create, await c.post(create, json={"post_id": "p", "host_user_id": "u"}))
        created = check("post", create, await c.post(create, json={"post_id": "p", "host_user_id": "u"}, headers=KEY))
        assert isinstance(created["host_token"], str)
        check("post", create, await c.post(create, json={"post_id": "p"}, headers=KEY))
        check("post", create, await c.post(create, content=big, headers=KEY))
        check("post", create, await c.post(create, json={"post_id": "q", "host_user_id": "u"}, headers=KEY))

        room, unknown = created["room_id"], "room_1"
        for r in (room, unknown):
            for method, template in (("get", "/room/{room_id}/stats"), ("post", "/room/{room_id}/token")):
                path = template.replace("{room_id}", r)
                body = {"role": "viewer", "user_id": "v"}
                check(method, template, await c.request(method.upper(), path, json=body))
                check(method, template, await c.request(method.upper(), path, json=body, headers=KEY))
        peers, kick = "/room/{room_id}/peers", "/room/{room_id}/peers/{peer_id}/kick"
        for r in (room, unknown):
            check("get", peers, await c.get(f"/room/{r}/peers"))
            check("get", peers, await c.get(f"/room/{r}/peers", headers=KEY))
            check("post", kick, await c.post(f"/room/{r}/peers/peer_000000000000/kick"))
            check("post", kick, await c.post(f"/room/{r}/peers/peer_000000000000/kick", headers=KEY))
        minted = await c.post(f"/room/{room}/token", json={"role": "viewer", "user_id": "v"}, headers=KEY)
        viewer_token = minted.json()
        async with connect_signaling(server.ws_url) as session:
            joined = await session.join(room, "viewer", token=viewer_token["token"])
            listed = check("get", peers, await c.get(f"/room/{room}/peers", headers=KEY))
            assert [p["peer_id"] for p in listed["peers"]] == [joined.peer_id]
            kicked = await c.post(f"/room/{room}/peers/{joined.peer_id}/kick", headers=KEY)
            assert kicked.status_code == 200, kicked.text
            check("post", kick, kicked)
        start, stop_rec = "/room/{room_id}/recording/start", "/room/{room_id}/recording/stop"
        listing, download = "/room/{room_id}/recordings", "/room/{room_id}/recordings/{recording_id}.webm"
        check("post", stop_rec, await c.post(f"/room/{room}/recording/stop", headers=KEY))  # not recording: 404
        for r in (room, unknown):
            check("post", start, await c.post(f"/room/{r}/recording/start"))
        check("post", stop_rec, await c.post(f"/room/{unknown}/recording/stop", headers=KEY))
        check("post", start, await c.post(f"/room/{unknown}/recording/start", headers=KEY))
        recording = check("post", start, await c.post(f"/room/{room}/recording/start", headers=KEY))
        check("post", stop_rec, await c.post(f"/room/{room}/recording/stop"))
        check("post", stop_rec, await c.post(f"/room/{room}/recording/stop", headers=KEY))
        check("get", listing, await c.get(f"/room/{room}/recordings"))
        assert check("get", listing, await c.get(f"/room/{room}/recordings", headers=KEY))["recordings"]
        webm = f"/room/{room}/recordings/{recording['recording_id']}.webm"
        check("get", download, await c.get(webm))
        check("get", download, await c.get(webm, headers=KEY))  # no host sent anything: 404
        check("get", download, await c.get(f"/room/{room}/recordings/rec_none.webm", headers=KEY))
        mkv, download_mkv = webm.replace(".webm", ".mkv"), "/room/{room_id}/recordings/{recording_id}.mkv"
        check("get", download_mkv, await c.get(mkv))
        check("get", download_mkv, await c.get(mkv, headers=KEY))  # no media, and no .mkv: 404
        thumbnail = "/room/{room_id}/thumbnail.jpg"
        check("get", thumbnail, await c.get(f"/room/{unknown}/thumbnail.jpg", headers=KEY))
        check("get", thumbnail, await c.get(f"/room/{unknown}/thumbnail.jpg"))
        token = "/room/{room_id}/token"
        check("post", token, await c.post(f"/room/{room}/token", json={"role": "x", "user_id": "v"}, headers=KEY))
        check("post", token, await c.post(f"/room/{room}/token", content=big, headers=KEY))

        sdp = {"Content-Type": "application/sdp"}
        for door in ("whip", "whep"):  # each status: tests/test_whip.py
            check("options", f"/{door}/{{room_id}}", await c.options(f"/{door}/{room}"))
            check("post", f"/{door}/{{room_id}}", await c.post(f"/{door}/{room}", content="v=0\r\n"))
            check("post", f"/{door}/{{room_id}}", await c.post(f"/{door}/{room}", content="v=0\r\n", headers=sdp))
            check("post", f"/{door}/{{room_id}}", await c.post(f"/{door}/{unknown}", content="v=0\r\n", headers=sdp))
            check("delete", f"/{door}/{{room_id}}/{{session_id}}", await c.delete(f"/{door}/{room}/nothing"))

        check("get", "/stats", await c.get("/stats"))
        totals = check("get", "/stats", await c.get("/stats", headers=KEY))
        check("get", "/metrics", await c.get("/metrics"))
        assert "bitbasel_rooms 1.0" in check("get", "/metrics", await c.get("/metrics", headers=KEY))["text"]
        assert totals["active_rooms"] == 1

        stop = "/room/{room_id}/stop"
        check("post", stop, await c.post(f"/room/{room}/stop"))
        check("post", stop, await c.post(f"/room/{unknown}/stop", headers=KEY))
        check("post", stop, await c.post(f"/room/{room}/stop", headers=KEY))
        check("post", stop, await c.post(f"/room/{room}/stop", headers=KEY))  # again on a stopped room
        stats = check("get", "/room/{room_id}/stats", await c.get(f"/room/{room}/stats", headers=KEY))
        assert stats["is_active"] is False and stats["stop_reason"] == "api"
        check("post", token, await c.post(f"/room/{room}/token", json={"role": "viewer", "user_id": "v"}, headers=KEY))


async def test_real_responses_validate_against_the_document() -> None:
    config = make_config(
        auth={"secret": SECRET, "api_key": API_KEY},
        rooms={"max_rooms": 1},
        recordings={"directory": tempfile.mkdtemp(prefix="openapi-recordings-")},
    )
    with trio.fail_after(15):
        async with running_server(config) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                document = (await client.get("/openapi.json")).json()
            assert document == build_openapi()
            check = Validator(document)
            await exercise(server, check)
    # every documented status was provoked, but 503 `unavailable` (a room actor that does not answer)
    documented = {
        (method, path, int(status))
        for path, item in document["paths"].items()
        for method, op in item.items()
        for status in op["responses"]
    }
    # (WHIP and WHEP: each status is provoked by tests/test_whip.py)
    never_provoked = {(m, p, s) for m, p, s in documented - check.seen if not p.startswith(("/whip/", "/whep/"))}
    assert never_provoked == {
        ("get", "/metrics", 404),  # `[metrics] access = "off"`: tests/test_metrics.py
        ("post", "/room/{room_id}/stop", 503),
        ("get", "/room/{room_id}/peers", 503),
        ("post", "/room/{room_id}/recording/start", 503),
        ("get", "/room/{room_id}/recordings/{recording_id}.webm", 200),  # needs a host's media: test_recording.py
        ("get", "/room/{room_id}/recordings/{recording_id}.mkv", 200),  # an H.264 host's: test_recording.py
        ("post", "/room/{room_id}/recording/stop", 503),
        ("get", "/room/{room_id}/thumbnail.jpg", 200),  # needs a host's video: tests/test_thumbnail.py
        ("get", "/room/{room_id}/thumbnail.jpg", 503),
        ("post", "/room/{room_id}/peers/{peer_id}/kick", 503),
        ("get", "/room/{room_id}/stats", 503),
        ("post", "/room/{room_id}/token", 503),
    }
