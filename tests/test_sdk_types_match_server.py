"""The REST client's response structs (media_server_client/rest.py) against the
server's (the types its handlers return, from which /openapi.json is made).

The client declares its own structs instead of importing the server's packages,
so nothing else keeps the two in step: a field added to (or renamed in) a server
response without the client following fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

import media_server_client as sdk
from actors.messages import PeerInfo, RoomStats
from actors.supervisor import ServerTotals
from api.schemas import CreateRoomResponse, TokenResponse
from media_server_client import Peer

ROOT = Path(__file__).resolve().parent.parent
SERVER_PACKAGES = ("actors", "api", "core", "media", "transport")

PAIRS: list[tuple[type[msgspec.Struct], type[msgspec.Struct]]] = [
    (sdk.RoomStats, RoomStats),
    (sdk.ServerStats, ServerTotals),
    (sdk.CreatedRoom, CreateRoomResponse),
    (sdk.JoinToken, TokenResponse),
    (Peer, PeerInfo),
]


def names(struct: type[msgspec.Struct]) -> list[str]:
    return [field.encode_name for field in msgspec.structs.fields(struct)]


@pytest.mark.parametrize(("client_type", "server_type"), PAIRS, ids=lambda t: t.__name__)
def test_client_struct_has_the_server_fields(client_type: type[msgspec.Struct], server_type: type) -> None:
    assert names(client_type) == names(server_type)


# what the client required from the start; anything the server added since has a default
REQUIRED_FROM_THE_START: dict[type[msgspec.Struct], list[str]] = {
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
def test_newer_fields_have_defaults(client_type: type[msgspec.Struct]) -> None:
    """So that the answers of a server older than the client still decode."""
    required = [field.encode_name for field in msgspec.structs.fields(client_type) if field.required]
    assert required == REQUIRED_FROM_THE_START[client_type]


def test_the_rest_client_imports_none_of_the_server_packages() -> None:
    """It is to become a package of its own (installable without the server)."""
    code = (
        "import sys, media_server_client, media_server_client.rest, media_server_client.errors; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({SERVER_PACKAGES!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
