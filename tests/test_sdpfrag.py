"""SDP fragments of WHIP/WHEP PATCH (media/sdpfrag.py, sans-IO) and the `Link` ice-server
headers (core/ice_servers.py)."""

from __future__ import annotations

import pytest

from core.ice_servers import IceServer, link_headers
from media.sdpfrag import (
    MAX_FRAGMENT_CANDIDATES,
    TrickledCandidate,
    ice_credentials,
    parse_sdpfrag_untrusted,
    restart_fragment,
    with_ice_credentials,
)
from media.streams import SdpError

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\n"
)


def test_a_trickle_fragment_gives_its_candidates_with_their_mids() -> None:
    text = (
        "a=ice-options:trickle ice2\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
        "a=candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\n"
        "a=mid:1\r\na=candidate:2 1 udp 2130706431 192.0.2.1 50002 typ host\r\na=end-of-candidates\r\n"
    )
    fragment = parse_sdpfrag_untrusted(text)
    assert (fragment.ufrag, fragment.pwd, fragment.end_of_candidates) == (None, None, True)
    assert fragment.candidates == [
        TrickledCandidate("candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host", "0"),
        TrickledCandidate("candidate:2 1 udp 2130706431 192.0.2.1 50002 typ host", "1"),
    ]


def test_a_restart_fragment_gives_the_new_credentials() -> None:
    fragment = parse_sdpfrag_untrusted("a=ice-ufrag:EsAw\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\n")
    assert (fragment.ufrag, fragment.pwd) == ("EsAw", "P2uYro0UCOQ4zxjKXaWCBui1")


@pytest.mark.parametrize(
    "text",
    [
        "a=ice-ufrag:EsAw\r\n",  # a password is needed too
        "a=ice-ufrag:EsAw\r\na=ice-pwd:short\r\n",
        "a=ice-ufrag:EsAw\r\na=ice-ufrag:Other\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n",
        "a=ice-ufrag:bad ufrag\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n",
        "not a line\r\n",
        "a=candidate:1 1 udp 1 192.0.2.1 1 typ host\r\n" * (MAX_FRAGMENT_CANDIDATES + 1),
        "a=" + "x" * 20_000,
    ],
)
def test_a_malformed_fragment_is_an_sdp_error(text: str) -> None:
    with pytest.raises(SdpError):
        parse_sdpfrag_untrusted(text)


def test_a_restart_offer_is_the_first_offer_with_the_new_credentials() -> None:
    assert ice_credentials(OFFER) == ("abcd", "0123456789012345678901")
    restarted = with_ice_credentials(OFFER, "EsAw", "P2uYro0UCOQ4zxjKXaWCBui1")
    assert ice_credentials(restarted) == ("EsAw", "P2uYro0UCOQ4zxjKXaWCBui1")
    assert restarted.count("a=ice-ufrag:EsAw") == 2 and "abcd" not in restarted
    assert restarted.replace("EsAw", "abcd").replace("P2uYro0UCOQ4zxjKXaWCBui1", "0123456789012345678901") == OFFER


def test_the_servers_restart_fragment_has_ice_lite_bundle_credentials_and_candidates() -> None:
    answer = (
        "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-lite\r\na=group:BUNDLE 0 1\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=ice-ufrag:srvU\r\n"
        "a=ice-pwd:serverpassword12345678\r\na=fingerprint:sha-256 AA\r\n"
        "a=candidate:1 1 udp 65535 127.0.0.1 40000 typ host\r\na=end-of-candidates\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=ice-ufrag:srvU\r\na=ice-pwd:serverpassword12345678\r\n"
    )
    assert restart_fragment(answer).split("\r\n") == [
        "a=ice-lite",
        "a=group:BUNDLE 0 1",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=mid:0",
        "a=ice-ufrag:srvU",
        "a=ice-pwd:serverpassword12345678",
        "a=candidate:1 1 udp 65535 127.0.0.1 40000 typ host",
        "a=end-of-candidates",
        "",
    ]


def test_link_headers_name_each_url_with_its_credentials() -> None:
    servers = [
        IceServer(urls=["stun:192.0.2.1:3478"]),
        IceServer(urls=["turn:192.0.2.1:3478", "turns:example.net:5349"], username='1:a"b', credential="c\\d"),
    ]
    credentials = 'username="1:a\\"b"; credential="c\\\\d"; credential-type="password"'
    assert link_headers(servers) == [
        '<stun:192.0.2.1:3478>; rel="ice-server"',
        f'<turn:192.0.2.1:3478>; rel="ice-server"; {credentials}',
        f'<turns:example.net:5349>; rel="ice-server"; {credentials}',
    ]
