"""media/sdp.py: the SDP parser and line model (the answer's rules: tests/test_sdp_answer.py)."""

from __future__ import annotations

import pytest

from media import sdp
from media.streams import SdpError

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


def test_with_only_payload_type_keeps_one_codec_and_every_other_line() -> None:
    audio, video = sdp.parse_sdp_untrusted(CHROME_OFFER).media
    cut_audio, cut_video = audio.with_only_payload_type(111), video.with_only_payload_type(96)
    assert cut_audio.formats == ["111"] and cut_video.formats == ["96"]
    assert [r.name for r in cut_audio.rtpmaps()] == ["opus"]
    assert [r.name for r in cut_video.rtpmaps()] == ["VP8"]
    assert cut_video.rtcp_feedback(96) == ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
    text = sdp.SessionDescription([], [cut_audio, cut_video]).to_text()
    for gone in ("apt=96", "VP9", "red/", "ulpfec", "a=fmtp:63", "telephone-event"):
        assert gone not in text
    # everything else is untouched, and the parsed offer is not changed
    assert "a=ssrc-group:FID 2222 3333" in text and "a=ice-ufrag:abcd" in text
    assert len(video.rtpmaps()) == 6 and audio.formats[0] == "111" and len(audio.formats) == 8


def test_with_only_payload_type_keeps_wildcard_lines() -> None:
    video = sdp.parse_sdp_untrusted(CHROME_OFFER.replace("a=rtcp-fb:96 nack pli", "a=rtcp-fb:* nack pli")).media[1]
    assert "a=rtcp-fb:* nack pli" in video.with_only_payload_type(96).lines


def test_find_server_codec() -> None:
    audio, video = sdp.parse_sdp_untrusted(CHROME_OFFER).media
    assert sdp.find_server_codec(video) == sdp.RtpMap(96, "VP8", 90000)
    assert sdp.find_server_codec(audio) == sdp.RtpMap(111, "opus", 48000, 2)
    for no_codec in ("H264/90000", "VP8/8000"):  # another codec, or VP8 at the wrong clock rate
        assert (
            sdp.find_server_codec(sdp.parse_sdp_untrusted(CHROME_OFFER.replace("VP8/90000", no_codec)).media[1]) is None
        )
    assert (
        sdp.find_server_codec(sdp.parse_sdp_untrusted(CHROME_OFFER.replace("opus/48000/2", "ISAC/16000")).media[0])
        is None
    )
    with pytest.raises(SdpError, match="rtpmap"):
        sdp.find_server_codec(sdp.parse_sdp_untrusted(CHROME_OFFER.replace("VP8/90000", "VP8")).media[1])


def test_session_attributes() -> None:
    description = sdp.parse_sdp_untrusted(CHROME_OFFER)
    assert description.attributes("extmap-allow-mixed") == [""]
    assert description.attributes("msid-semantic") == [" WMS stream"]
    assert description.attributes("ice-ufrag") == []  # media level only


def test_extmap_with_direction() -> None:
    text = CHROME_OFFER.replace("a=extmap:2 http", "a=extmap:2/sendonly http")
    assert sdp.parse_sdp_untrusted(text).media[1].extmaps()[2].endswith("abs-send-time")
    with pytest.raises(SdpError):
        sdp.parse_sdp_untrusted(CHROME_OFFER.replace("a=extmap:2 ", "a=extmap:x ")).media[1].extmaps()
