"""`joined.ice_servers`: STUN as configured, TURN with coturn `use-auth-secret` credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac

import msgspec
import pytest

from core.config import ConfigError, parse_config
from core.ice_servers import IceServer, ice_servers_for, turn_credentials
from core.signaling import Joined, encode


def test_turn_credentials_are_an_expiry_and_an_hmac_sha1_of_it() -> None:
    username, credential = turn_credentials("s3cret", "user:7", now=1_700_000_000.9, ttl_seconds=600)
    assert username == "1700000600:user:7"  # coturn reads the expiry before the first colon
    expected = hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(credential) == expected
    other_secret = turn_credentials("other", "user:7", now=1_700_000_000, ttl_seconds=600)[1]
    assert other_secret != credential
    with pytest.raises(ValueError):
        turn_credentials("", "u", now=0, ttl_seconds=600)
    with pytest.raises(ValueError):
        turn_credentials("s", "u", now=0, ttl_seconds=0)


def test_ice_servers_list_stun_then_turn_and_nothing_by_default() -> None:
    none = ice_servers_for("u", now=0, stun_servers=[], turn_servers=[], turn_secret="", ttl_seconds=60)
    assert none == []
    servers = ice_servers_for(
        "u",
        now=100,
        stun_servers=["stun:stun.example.test:3478"],
        turn_servers=["turn:turn.example.test:3478?transport=udp", "turns:turn.example.test:5349"],
        turn_secret="k",
        ttl_seconds=60,
    )
    assert servers[0] == IceServer(urls=["stun:stun.example.test:3478"])
    assert servers[1].urls == ["turn:turn.example.test:3478?transport=udp", "turns:turn.example.test:5349"]
    assert servers[1].username == "160:u"


def test_joined_carries_ice_servers_and_stun_entries_have_no_credentials() -> None:
    joined = Joined(
        room_id="r",
        peer_id="p",
        role="viewer",
        viewer_count=1,
        has_host=True,
        ice_servers=[IceServer(urls=["stun:a.test"]), IceServer(urls=["turn:b.test"], username="1:u", credential="c")],
    )
    text = encode(joined)
    assert '{"urls":["stun:a.test"]}' in text
    assert msgspec.json.decode(text, type=Joined) == joined
    # a server without the field (an older one) still decodes: the list is empty
    older = text.replace(text[text.index(',"ice_servers"') : -1], "")
    assert msgspec.json.decode(older, type=Joined).ice_servers == []


@pytest.mark.parametrize(
    ("ice", "message"),
    [
        ('turn_servers = ["stun:x.test"]\nturn_secret = "k"', "must start with 'turn:'"),
        ('turn_servers = ["turn:x.test"]', "needs turn_secret"),
        ("turn_credential_ttl_seconds = 10", "ice.turn_credential_ttl_seconds"),
    ],
)
def test_bad_turn_settings_are_refused_by_name(ice: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(f"[ice]\n{ice}\n")
