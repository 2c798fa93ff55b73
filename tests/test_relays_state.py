"""actors/relays.py without sockets: the control messages and when a relay end is silent."""

from __future__ import annotations

from typing import Any, cast

from actors.relays import RELAY_TIMEOUT_SECONDS, EdgeFeed, EdgeOfOrigin, EdgeState, OriginState, decode, encode
from media.streams import SourceStream
from transport.relay_port import RelayLink


def link() -> RelayLink:
    def nothing(data: bytes) -> None:
        pass

    return RelayLink(cast(Any, None), 7, nothing, nothing, nothing, False, None)


def test_control_messages_round_trip_and_junk_is_none() -> None:
    origin = OriginState(
        [SourceStream("video", 96, 90000, {3: "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"}, ("q", "f"))],
        True,
        12,
        layer_ssrcs={1234: "q"},
        banned_users=["mallory"],
    )
    assert decode(encode(origin)) == origin
    assert decode(encode(EdgeState(5))) == EdgeState(5)
    assert decode(b"{oops") is None and decode(b'{"type": "edge"}') is None


def test_a_new_relay_is_not_silent_before_its_first_word_and_is_after_the_timeout() -> None:
    edge = EdgeOfOrigin(link(), opened_at=100.0)
    assert not edge.silent(100.0 + RELAY_TIMEOUT_SECONDS - 0.1)  # never heard yet, but just opened
    assert edge.silent(100.0 + RELAY_TIMEOUT_SECONDS + 0.1)
    edge.link.last_heard = 104.0
    assert not edge.silent(104.0 + RELAY_TIMEOUT_SECONDS - 0.1)
    feed = EdgeFeed(link(), opened_at=50.0)
    assert not feed.silent(50.0 + RELAY_TIMEOUT_SECONDS - 0.1) and feed.silent(50.0 + RELAY_TIMEOUT_SECONDS + 0.1)
