"""media/sdp.py: sans-IO SDP helpers, text in, text out."""

from __future__ import annotations

import pytest

from media import sdp
from media.streams import SdpError, UnsupportedCodecError

# A Chrome-style host offer (trimmed): VP8 + rtx + VP9 + red/ulpfec, Opus + red.
CHROME_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=extmap-allow-mixed",
        "a=msid-semantic: WMS stream",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 " + ":".join(["00", "11", "22", "33", "AA", "BB", "CC", "DD"] * 4),
        "a=setup:actpass",
        "a=mid:0",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=sendonly",
        "a=msid:stream audiotrack",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=rtcp-fb:111 transport-cc",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=rtpmap:63 red/48000/2",
        "a=fmtp:63 111/111",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:13 CN/8000",
        "a=rtpmap:110 telephone-event/48000",
        "a=rtpmap:126 telephone-event/8000",
        "a=ssrc:1111 cname:x",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        "a=setup:actpass",
        "a=mid:1",
        "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=sendonly",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 goog-remb",
        "a=rtcp-fb:96 transport-cc",
        "a=rtcp-fb:96 ccm fir",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "a=rtpmap:98 VP9/90000",
        "a=rtcp-fb:98 nack",
        "a=fmtp:98 profile-id=0",
        "a=rtpmap:99 rtx/90000",
        "a=fmtp:99 apt=98",
        "a=rtpmap:100 red/90000",
        "a=rtpmap:101 ulpfec/90000",
        "a=ssrc-group:FID 2222 3333",
        "a=ssrc:2222 cname:x",
        "a=ssrc:3333 cname:x",
        "",
    ]
)


def test_parse_roundtrip_keeps_every_line() -> None:
    description = sdp.parse_sdp_untrusted(CHROME_OFFER)
    assert description.to_text() == CHROME_OFFER
    audio, video = description.media
    assert (audio.kind, audio.mid, audio.direction) == ("audio", "0", "sendonly")
    assert [r.name for r in video.rtpmaps()] == ["VP8", "rtx", "VP9", "rtx", "red", "ulpfec"]
    assert audio.fmtp(111) == {"minptime": "10", "useinbandfec": "1"}
    assert video.extmaps()[3].endswith("transport-wide-cc-extensions-01")
    assert video.ssrcs() == [2222, 3333]
    assert description.bundle_groups() == [["0", "1"]]


def test_parse_accepts_lf_only() -> None:
    description = sdp.parse_sdp_untrusted(CHROME_OFFER.replace("\r\n", "\n"))
    assert len(description.media) == 2


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "v=1\r\nm=audio 9 X 0\r\n",
        "v=0\r\ns=-\r\n",  # no media
        "v=0\r\nm=audio\r\n",
        "v=0\r\nm=audio x UDP 0\r\n",
        "v=0\r\nthis is not sdp\r\n",
        "v=0\r\n" + "m=audio 9 X 0\r\n" * 40,
        "v=0\r\n" + "a=x\r\n" * 20000,
    ],
)
def test_parse_rejects_garbage(bad: str) -> None:
    with pytest.raises(SdpError):
        sdp.parse_sdp_untrusted(bad)


def test_parse_rejects_non_string() -> None:
    with pytest.raises(SdpError):
        sdp.parse_sdp_untrusted(b"v=0")  # type: ignore[arg-type]


def test_restrict_host_offer_keeps_one_codec_per_section() -> None:
    out = sdp.parse_sdp_untrusted(sdp.restrict_offer_untrusted(CHROME_OFFER, role="host"))
    audio, video = out.media
    assert audio.formats == ["111"] and video.formats == ["96"]
    assert [r.name for r in audio.rtpmaps()] == ["opus"]
    assert [r.name for r in video.rtpmaps()] == ["VP8"]
    assert video.rtcp_feedback(96) == ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
    text = out.to_text()
    for gone in ("apt=96", "VP9", "red/", "ulpfec", "a=fmtp:63", "telephone-event"):
        assert gone not in text
    # everything else is untouched
    assert "a=ssrc-group:FID 2222 3333" in text and "a=ice-ufrag:abcd" in text


def test_restrict_refuses_missing_codecs() -> None:
    no_vp8 = CHROME_OFFER.replace("VP8/90000", "H264/90000")
    with pytest.raises(UnsupportedCodecError, match="VP8"):
        sdp.restrict_offer_untrusted(no_vp8, role="host")
    no_opus = CHROME_OFFER.replace("opus/48000/2", "ISAC/16000")
    with pytest.raises(UnsupportedCodecError, match="opus"):
        sdp.restrict_offer_untrusted(no_opus, role="host")
    wrong_clock = CHROME_OFFER.replace("VP8/90000", "VP8/8000")
    with pytest.raises(UnsupportedCodecError):
        sdp.restrict_offer_untrusted(wrong_clock, role="host")


def test_restrict_checks_direction_per_role() -> None:
    with pytest.raises(SdpError, match="to receive"):
        sdp.restrict_offer_untrusted(CHROME_OFFER, role="viewer")
    recvonly = CHROME_OFFER.replace("a=sendonly", "a=recvonly")
    with pytest.raises(SdpError, match="to send"):
        sdp.restrict_offer_untrusted(recvonly, role="host")
    assert sdp.restrict_offer_untrusted(recvonly, role="viewer")
    sendrecv = CHROME_OFFER.replace("a=sendonly", "a=sendrecv")
    assert sdp.restrict_offer_untrusted(sendrecv, role="viewer")
    assert sdp.restrict_offer_untrusted(sendrecv, role="host")
    no_direction = CHROME_OFFER.replace("a=sendonly\r\n", "")  # default sendrecv
    assert sdp.restrict_offer_untrusted(no_direction, role="host")


def test_restrict_refuses_odd_sections() -> None:
    with pytest.raises(SdpError, match="kind"):
        sdp.restrict_offer_untrusted(CHROME_OFFER.replace("m=video", "m=text"), role="host")
    with pytest.raises(SdpError, match="mid"):
        sdp.restrict_offer_untrusted(CHROME_OFFER.replace("a=mid:1\r\n", ""), role="host")
    with pytest.raises(SdpError, match="port 0"):
        sdp.restrict_offer_untrusted(CHROME_OFFER.replace("m=video 9", "m=video 0"), role="host")


def _aiortc_like_answer(offer: str) -> str:
    """An answer as aiortc writes it for the restricted offer (codec lines only)."""
    restricted = sdp.parse_sdp_untrusted(sdp.restrict_offer_untrusted(offer, role="host"))
    for section in restricted.media:
        section.lines = [
            line.replace("a=sendonly", "a=recvonly")
            for line in section.lines
            if not line.startswith(("a=fmtp:", "a=rtcp-fb:")) or line.endswith(("nack", "nack pli", "goog-remb"))
        ]
        section.lines.append("a=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host")
    return restricted.to_text()


def test_decorate_host_answer() -> None:
    offer = sdp.restrict_offer_untrusted(CHROME_OFFER, role="host")
    answer = sdp.decorate_host_answer(
        _aiortc_like_answer(CHROME_OFFER),
        offer,
        video_bitrate_kbps=1500,
        max_framerate=30,
        audio_bitrate_kbps=128,
    )
    audio, video = sdp.parse_sdp_untrusted(answer).media
    assert video.fmtp(96) == {"max-fr": "30"}
    assert {"nack", "nack pli", "ccm fir", "goog-remb"} <= set(video.rtcp_feedback(96))
    assert "transport-cc" not in video.rtcp_feedback(96)
    assert audio.fmtp(111) == {"maxaveragebitrate": "128000", "useinbandfec": "1"}
    assert "b=AS:1500" in video.lines and "b=TIAS:1500000" in video.lines
    assert "b=AS:128" in audio.lines
    # b= right after c= (RFC 8866 order)
    assert video.lines[video.lines.index("c=IN IP4 0.0.0.0") + 1] == "b=AS:1500"
    # decorating twice changes nothing
    assert (
        sdp.decorate_host_answer(answer, offer, video_bitrate_kbps=1500, max_framerate=30, audio_bitrate_kbps=128)
        == answer
    )


def test_fmtp_merge_keeps_existing_params() -> None:
    section = sdp.parse_sdp_untrusted(CHROME_OFFER).media[0]
    section.set_fmtp_params(111, {"maxaveragebitrate": "64000"})
    assert section.fmtp(111) == {"minptime": "10", "useinbandfec": "1", "maxaveragebitrate": "64000"}
    assert len(section.attributes("fmtp")) == 2  # 111 replaced in place, 63 untouched


def test_decorate_viewer_answer_adds_offered_fir() -> None:
    viewer_offer = sdp.restrict_offer_untrusted(CHROME_OFFER.replace("a=sendonly", "a=recvonly"), role="viewer")
    answer = _aiortc_like_answer(CHROME_OFFER).replace("a=recvonly", "a=sendonly")
    video = sdp.parse_sdp_untrusted(sdp.decorate_viewer_answer(answer, viewer_offer)).media[1]
    assert "ccm fir" in video.rtcp_feedback(96)


def test_rewrite_host_candidates() -> None:
    answer = _aiortc_like_answer(CHROME_OFFER)
    out = sdp.rewrite_host_candidates(answer, "203.0.113.9")
    assert sdp.candidate_addresses(out) == [("203.0.113.9", 40000, "host")] * 2
    assert "c=IN IP4 203.0.113.9" in out and "10.0.0.5" not in out
    v6 = sdp.rewrite_host_candidates(answer, "2001:db8::1")
    assert "c=IN IP6 2001:db8::1" in v6
    with pytest.raises(SdpError):
        sdp.rewrite_host_candidates(answer, "not-an-ip")


def test_rewrite_leaves_srflx_alone() -> None:
    answer = _aiortc_like_answer(CHROME_OFFER).replace("typ host", "typ srflx raddr 10.0.0.5 rport 40000", 1)
    out = sdp.rewrite_host_candidates(answer, "203.0.113.9")
    assert sdp.candidate_addresses(out) == [
        ("10.0.0.5", 40000, "srflx"),
        ("203.0.113.9", 40000, "host"),
    ]


def test_sources_from_answer() -> None:
    sources = sdp.sources_from_answer(_aiortc_like_answer(CHROME_OFFER))
    assert [(s.kind, s.payload_type, s.clock_rate) for s in sources] == [
        ("audio", 111, 48000),
        ("video", 96, 90000),
    ]
    assert sources[1].extensions[2].endswith("abs-send-time")


def test_sinks_from_answer() -> None:
    answer = _aiortc_like_answer(CHROME_OFFER).replace("a=recvonly", "a=sendonly")
    sinks = sdp.sinks_from_answer(answer)
    assert [(s.kind, s.ssrc, s.payload_type, s.mid) for s in sinks] == [
        ("audio", 1111, 111, "0"),
        ("video", 2222, 96, "1"),
    ]
    assert sinks[0].extensions["urn:ietf:params:rtp-hdrext:sdes:mid"] == 4
    # an inactive section is not a sink
    assert len(sdp.sinks_from_answer(answer.replace("a=sendonly", "a=inactive", 1))) == 1
    with pytest.raises(SdpError, match="ssrc"):
        sdp.sinks_from_answer(answer.replace("a=ssrc:2222 cname:x", "").replace("a=ssrc:3333 cname:x", ""))


def test_extmap_with_direction() -> None:
    text = CHROME_OFFER.replace("a=extmap:2 http", "a=extmap:2/sendonly http")
    assert sdp.parse_sdp_untrusted(text).media[1].extmaps()[2].endswith("abs-send-time")
    with pytest.raises(SdpError):
        sdp.parse_sdp_untrusted(CHROME_OFFER.replace("a=extmap:2 ", "a=extmap:x ")).media[1].extmaps()
