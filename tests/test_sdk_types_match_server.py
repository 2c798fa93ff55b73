"""The client package's own types (clients/python) against the server's.

The client declares its own REST answers (media_server_client/rest.py, dataclasses) and
signaling messages (media_server_client/messages.py, msgspec tagged unions, a copy of
core/signaling.py and core/ice_servers.IceServer) instead of importing the server's
packages, so nothing else keeps the two in step: a field added to (or renamed in) a
server response or message, a tag changed, without the client following fails here.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

import media_server_client as sdk
from actors.messages import PeerInfo, RoomStats
from actors.supervisor import ServerTotals
from api.schemas import CreateRoomResponse, TokenResponse
from core import ice_servers as server_ice
from core import signaling as server
from media_server_client import Peer
from media_server_client import messages as client

ROOT = Path(__file__).resolve().parent.parent
SERVER_PACKAGES = ("actors", "api", "core", "media", "transport")

# ---- REST answers --------------------------------------------------------------------------

PAIRS: list[tuple[type[Any], type[msgspec.Struct]]] = [
    (sdk.RoomStats, RoomStats),
    (sdk.ServerStats, ServerTotals),
    (sdk.CreatedRoom, CreateRoomResponse),
    (sdk.JoinToken, TokenResponse),
    (Peer, PeerInfo),
]


def server_names(struct: type[msgspec.Struct]) -> list[str]:
    return [field.encode_name for field in msgspec.structs.fields(struct)]


def client_names(kind: type[Any]) -> list[str]:
    return [field.name for field in dataclasses.fields(kind)]


def client_required(kind: type[Any]) -> list[str]:
    return [
        field.name
        for field in dataclasses.fields(kind)
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    ]


@pytest.mark.parametrize(("client_type", "server_type"), PAIRS, ids=lambda t: t.__name__)
def test_client_struct_has_the_server_fields(client_type: type[Any], server_type: type[msgspec.Struct]) -> None:
    assert client_names(client_type) == server_names(server_type)


@pytest.mark.parametrize(("client_type", "server_type"), PAIRS, ids=lambda t: t.__name__)
def test_a_server_answer_decodes_into_the_client_type(
    client_type: type[Any], server_type: type[msgspec.Struct]
) -> None:
    """Every field as the server encodes it (a JSON round trip of a full instance) reads back."""
    from media_server_client.rest import _decode

    values = {"str": "s", "int": 7, "float": 1.5, "bool": True}
    sample: dict[str, Any] = {}
    for field in msgspec.structs.fields(server_type):
        info = msgspec.inspect.type_info(field.type)
        options = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
        chosen = next(t for t in options if not isinstance(t, msgspec.inspect.NoneType))
        if isinstance(chosen, msgspec.inspect.LiteralType):
            sample[field.name] = chosen.values[0]
        elif isinstance(chosen, msgspec.inspect.DictType | msgspec.inspect.StructType):
            sample[field.name] = None if len(options) > 1 else {}
        else:
            sample[field.name] = values[type(chosen).__name__.removesuffix("Type").lower()]
    wire = msgspec.json.encode(msgspec.convert(sample, server_type))
    decoded = _decode(client_type, msgspec.json.decode(wire))
    assert dataclasses.asdict(decoded) == msgspec.json.decode(wire)


def test_the_rest_decoder_ignores_new_fields_and_refuses_wrong_ones() -> None:
    from media_server_client.rest import _BadResponse, _decode

    base = {"room_id": "room_1", "post_id": "p", "is_active": True, "viewer_count": 2, "has_host": False}
    stats = _decode(sdk.RoomStats, {**base, "created_at": 5, "added_by_a_newer_server": [1]})
    assert stats == sdk.RoomStats(**base, created_at=5.0) and isinstance(stats.created_at, float)
    for wrong in ({"viewer_count": "2"}, {"viewer_count": True}, {"is_active": 1}, {"stop_reason": 3}):
        with pytest.raises(_BadResponse):
            _decode(sdk.RoomStats, {**base, **wrong})
    with pytest.raises(_BadResponse, match="missing required field 'has_host'"):
        _decode(sdk.RoomStats, {k: v for k, v in base.items() if k != "has_host"})
    with pytest.raises(_BadResponse):
        _decode(Peer, {"peer_id": "p", "role": "admin", "user_id": "u", "joined_at": 1, "connection_state": "c",
                       "bytes_received": 0, "bytes_sent": 0})  # fmt: skip


# what the client required from the start; anything the server added since has a default
REQUIRED_FROM_THE_START: dict[type[Any], list[str]] = {
    sdk.RoomStats: ["room_id", "post_id", "is_active", "viewer_count", "has_host"],
    sdk.ServerStats: [
        "total_rooms",
        "active_rooms",
        "total_peers",
        "total_viewers",
        "total_hosts",
        "total_bytes_sent",
        "total_bytes_received",
    ],
    sdk.CreatedRoom: ["room_id", "post_id"],
    sdk.JoinToken: ["token", "expires_at"],
}


@pytest.mark.parametrize("client_type", REQUIRED_FROM_THE_START, ids=lambda t: t.__name__)
def test_newer_fields_have_defaults(client_type: type[Any]) -> None:
    """So that the answers of a server older than the client still decode."""
    assert client_required(client_type) == REQUIRED_FROM_THE_START[client_type]


# ---- signaling messages (PROTOCOL.md) ------------------------------------------------------

MESSAGE_PAIRS: list[tuple[type[msgspec.Struct], type[msgspec.Struct]]] = [
    (client.Join, server.Join),
    (client.Offer, server.Offer),
    (client.Candidate, server.Candidate),
    (client.Leave, server.Leave),
    (client.Ping, server.Ping),
    (client.Joined, server.Joined),
    (client.Answer, server.Answer),
    (client.RoomUpdate, server.RoomUpdate),
    (client.Stopped, server.Stopped),
    (client.Error, server.Error),
    (client.Pong, server.Pong),
    (client.IceServer, server_ice.IceServer),
]


def shape(struct: type[msgspec.Struct]) -> dict[str, Any]:
    config = struct.__struct_config__
    return {
        "tag_field": config.tag_field,
        "tag": config.tag,
        "omit_defaults": config.omit_defaults,
        "fields": [(f.encode_name, f.required) for f in msgspec.structs.fields(struct)],
    }


@pytest.mark.parametrize(("client_type", "server_type"), MESSAGE_PAIRS, ids=lambda t: t.__name__)
def test_client_message_has_the_server_tag_and_fields(
    client_type: type[msgspec.Struct], server_type: type[msgspec.Struct]
) -> None:
    assert shape(client_type) == shape(server_type)


def test_the_unions_hold_the_same_messages() -> None:
    def tags(union: Any) -> list[str]:
        return [member.__struct_config__.tag for member in union.__args__]

    assert tags(client.ClientMessage) == tags(server.ClientMessage)
    assert tags(client.ServerMessage) == tags(server.ServerMessage)
    assert client.PROTOCOL_VERSION == server.PROTOCOL_VERSION
    assert client.Role.__args__ == server.Role.__args__
    assert client.StopReason.__args__ == server.StopReason.__args__


SERVER_SAYS: list[server.ServerMessage] = [
    server.Joined(
        room_id="room_1",
        peer_id="p1",
        role="viewer",
        viewer_count=2,
        has_host=True,
        ice_servers=[
            server_ice.IceServer(urls=["stun:a.test"]),
            server_ice.IceServer(urls=["turn:b.test"], username="1:u", credential="c"),
        ],
    ),
    server.Answer(sdp="v=0\r\n"),
    server.RoomUpdate(viewer_count=3, has_host=False),
    server.Stopped(room_id="room_1", reason="crashed"),
    server.Error(code="bad_sdp", message="no video"),
    server.Pong(),
]
CLIENT_SAYS: list[client.ClientMessage] = [
    client.Join(room_id="room_1", role="host", token="t", user_id="u"),
    client.Join(room_id="room_1", role="viewer"),
    client.Offer(sdp="v=0\r\n"),
    client.Candidate(candidate="candidate:1 1 udp 1 127.0.0.1 9 typ host", sdpMid="0", sdpMLineIndex=0),
    client.Leave(),
    client.Ping(),
]


@pytest.mark.parametrize("message", SERVER_SAYS, ids=lambda m: type(m).__name__)
def test_the_client_reads_what_the_server_writes(message: server.ServerMessage) -> None:
    frame = server.encode(message)
    decoded = client.decode_server_message(frame)
    assert type(decoded).__name__ == type(message).__name__
    assert client.encode(decoded) == frame


@pytest.mark.parametrize("message", CLIENT_SAYS, ids=lambda m: type(m).__name__)
def test_the_server_reads_what_the_client_writes(message: client.ClientMessage) -> None:
    frame = client.encode(message)
    decoded = server.decode_client_message_untrusted(frame)
    assert type(decoded).__name__ == type(message).__name__
    assert server.encode(decoded) == frame


# ---- imports -------------------------------------------------------------------------------


def imported_after(*modules: str) -> tuple[list[str], bool]:
    """(server packages, whether msgspec) in sys.modules after importing `modules` in a new process."""
    code = (
        f"import json, sys, {', '.join(modules)}; "
        f"print(json.dumps([sorted({{m.split('.')[0] for m in sys.modules}} & set({SERVER_PACKAGES!r})), "
        "'msgspec' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    server_packages, msgspec_imported = json.loads(out.stdout)
    return server_packages, msgspec_imported


def test_the_rest_client_imports_none_of_the_server_packages_nor_msgspec() -> None:
    """The REST client and verify_webhook need httpx alone."""
    assert imported_after("media_server_client", "media_server_client.rest", "media_server_client.webhooks") == (
        [],
        False,
    )


def test_the_bots_import_none_of_the_server_packages() -> None:
    modules = ("messages", "signaling", "bots", "sources", "aiortc_hooks", "containment")
    server_packages, _ = imported_after(*(f"media_server_client.{name}" for name in modules))
    assert server_packages == []
