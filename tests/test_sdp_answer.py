"""media/sdp_answer.py: the sans-IO answerer of the server's own transport.

Offers: aiortc's, made in the test (no network: the client gathers on
127.0.0.1 only, inside the suite's private namespace); hand-written
Chrome-like ones (from what Chromium 156 offers: rtx / red / ulpfec / H264 /
VP9 / AV1, transport-cc, a data channel) and a Firefox-like max-bundle one
(bundle-only sections at port 0, session-level fingerprint, candidates); an
offer without BUNDLE. Every answer is checked against its offer by
``check_answer``; Hypothesis mutates the offers and only SdpError /
UnsupportedCodecError may come out.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import trio
import trio_asyncio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media.rtp import ABS_SEND_TIME_URI, RID_URI
from media.sdp import MAX_SDP_LENGTH, VIDEO_FEEDBACK, MediaSection, parse_sdp_untrusted
from media.sdp_answer import (
    KEPT_EXTENSION_URIS,
    Answer,
    AnswerParams,
    RemoteCandidate,
    answer_offer_untrusted,
    parse_candidate_untrusted,
    random_ssrcs,
)
from media.streams import SdpError, UnsupportedCodecError
from media_server_client import aiortc_hooks as adapter

FINGERPRINT = ("sha-256", ":".join(f"{i:02X}" for i in range(32)))
PORT = 40000
SSRCS = {"video": 0x11111111, "audio": 0x22222222}

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
ORIENTATION = "urn:3gpp:video-orientation"
SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def params(role: str = "viewer", **changes: object) -> AnswerParams:
    values: dict[str, object] = {
        "role": role,
        "ice_ufrag": "srvU",
        "ice_pwd": "serverpassword0123456789",
        "fingerprint": FINGERPRINT,
        "candidates": [("203.0.113.7", PORT), ("2001:db8::7", PORT)],
        "video_bitrate_kbps": 1500,
        "max_framerate": 30,
        "audio_bitrate_kbps": 128,
        "ssrcs": dict(SSRCS) if role == "viewer" else {},
        "cname": "sfu",
        "stream_id": "room",
        "session_id": 42,
    }
    values.update(changes)
    return AnswerParams(**values)  # type: ignore[arg-type]


def crlf(lines: list[str]) -> str:
    return "\r\n".join(lines) + "\r\n"


# -- offers -------------------------------------------------------------------------------

CHROME_FP = "62:96:59:0B:04:8B:EB:DD:8A:38:98:1D:D6:B1:BF:F3:C2:2C:B6:B6:DC:51:06:80:61:93:A9:F0:E3:45:62:FE"
CHROME_TRANSPORT = [
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:TsDj",
    "a=ice-pwd:Vvh+kh44ZpCEfvsA9GGAL8sW",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 " + CHROME_FP,
    "a=setup:actpass",
]
CHROME_AUDIO = [
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
    *CHROME_TRANSPORT,
    "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=sendonly",
    "a=msid:stream0 audio0",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "a=rtcp-xr:rcvr-rtt=all",
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
    "a=ssrc:276691269 cname:G80Jhb2lmqPjWajR",
    "a=ssrc:276691269 msid:stream0 audio0",
]
_VIDEO_FB = ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
CHROME_VIDEO = [
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 45 46 98 99 118 119 120",
    *CHROME_TRANSPORT,
    "a=mid:1",
    "a=extmap:14 urn:ietf:params:rtp-hdrext:toffset",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=extmap:13 urn:3gpp:video-orientation",
    "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    "a=sendonly",
    "a=msid:stream0 video0",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "a=rtpmap:96 VP8/90000",
    *[f"a=rtcp-fb:96 {fb}" for fb in _VIDEO_FB],
    "a=rtpmap:97 rtx/90000",
    "a=fmtp:97 apt=96",
    "a=rtpmap:102 H264/90000",
    *[f"a=rtcp-fb:102 {fb}" for fb in _VIDEO_FB],
    "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
    "a=rtpmap:103 rtx/90000",
    "a=fmtp:103 apt=102",
    "a=rtpmap:45 AV1/90000",
    *[f"a=rtcp-fb:45 {fb}" for fb in _VIDEO_FB],
    "a=fmtp:45 level-idx=5;profile=0;tier=0",
    "a=rtpmap:46 rtx/90000",
    "a=fmtp:46 apt=45",
    "a=rtpmap:98 VP9/90000",
    *[f"a=rtcp-fb:98 {fb}" for fb in _VIDEO_FB],
    "a=fmtp:98 profile-id=0",
    "a=rtpmap:99 rtx/90000",
    "a=fmtp:99 apt=98",
    "a=rtpmap:118 red/90000",
    "a=rtpmap:119 rtx/90000",
    "a=fmtp:119 apt=118",
    "a=rtpmap:120 ulpfec/90000",
    "a=ssrc-group:FID 1955776722 800319451",
    "a=ssrc:1955776722 cname:G80Jhb2lmqPjWajR",
    "a=ssrc:800319451 cname:G80Jhb2lmqPjWajR",
]
CHROME_DATA = [
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "c=IN IP4 0.0.0.0",
    *CHROME_TRANSPORT[2:],
    "a=mid:2",
    "a=sctp-port:5000",
    "a=max-message-size:262144",
]
CHROME_SESSION = [
    "v=0",
    "o=- 8883442359174034965 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS stream0",
]
#: Chrome publishing (host): audio then video, sendonly, trickle ICE (no candidates).
CHROME_HOST_OFFER = crlf([*CHROME_SESSION, *CHROME_AUDIO, *CHROME_VIDEO])
#: Chrome watching (viewer): recvonly, plus a data channel (rejected).
CHROME_VIEWER_OFFER = crlf(
    [
        *[line.replace("BUNDLE 0 1", "BUNDLE 0 1 2") for line in CHROME_SESSION],
        *[line.replace("a=sendonly", "a=recvonly") for line in CHROME_AUDIO if not line.startswith("a=ssrc")],
        *[line.replace("a=sendonly", "a=recvonly") for line in CHROME_VIDEO if not line.startswith("a=ssrc")],
        *CHROME_DATA,
    ]
)
#: The viewer offer without any a=group:BUNDLE (and without the data channel).
NO_BUNDLE_OFFER = crlf(
    [line for line in CHROME_VIEWER_OFFER.split("\r\n")[:-1] if not line.startswith("a=group:")][: -len(CHROME_DATA)]
)

FIREFOX_FP = "9F:32:8C:43:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:01"
#: Firefox with bundlePolicy max-bundle, watching: only the first section has a
#: port and transport attributes; audio and the data channel are bundle-only at port 0.
FIREFOX_VIEWER_OFFER = crlf(
    [
        "v=0",
        "o=mozilla...THIS_IS_SDPARTA-99.0 1735285127369539716 0 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=fingerprint:sha-256 " + FIREFOX_FP,
        "a=group:BUNDLE 0 1 2",
        "a=ice-options:trickle",
        "a=msid-semantic:WMS *",
        "m=video 53821 UDP/TLS/RTP/SAVPF 120 124 121 125 126 127 97 98 123 122 119",
        "c=IN IP4 192.168.1.20",
        "a=candidate:0 1 UDP 2122252543 192.168.1.20 53821 typ host",
        "a=candidate:1 1 UDP 2122187007 0f1e2d3c-aaaa-bbbb-cccc-1234567890ab.local 53822 typ host",
        "a=candidate:2 1 TCP 2105524479 192.168.1.20 9 typ host tcptype active",
        "a=candidate:3 1 UDP 1686052863 198.51.100.4 53821 typ srflx raddr 192.168.1.20 rport 53821",
        "a=end-of-candidates",
        "a=recvonly",
        "a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:4 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "a=extmap:5 urn:ietf:params:rtp-hdrext:toffset",
        "a=extmap:6/recvonly http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
        "a=extmap:7 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        "a=fmtp:126 profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1",
        "a=fmtp:97 profile-level-id=42e01f;level-asymmetry-allowed=1",
        "a=fmtp:120 max-fs=12288;max-fr=60",
        "a=fmtp:124 apt=120",
        "a=fmtp:121 max-fs=12288;max-fr=60",
        "a=fmtp:125 apt=121",
        "a=fmtp:127 apt=126",
        "a=fmtp:98 apt=97",
        "a=fmtp:119 apt=122",
        "a=ice-pwd:b5a2b1b2c0d5e0f3a4b6c7d8e9f0a1b2",
        "a=ice-ufrag:3e7c9a1f",
        "a=mid:0",
        "a=rtcp-fb:120 nack",
        "a=rtcp-fb:120 nack pli",
        "a=rtcp-fb:120 ccm fir",
        "a=rtcp-fb:120 goog-remb",
        "a=rtcp-fb:120 transport-cc",
        "a=rtcp-fb:121 nack",
        "a=rtcp-fb:121 nack pli",
        "a=rtcp-fb:126 nack",
        "a=rtcp-fb:97 nack",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=rtpmap:120 VP8/90000",
        "a=rtpmap:124 rtx/90000",
        "a=rtpmap:121 VP9/90000",
        "a=rtpmap:125 rtx/90000",
        "a=rtpmap:126 H264/90000",
        "a=rtpmap:127 rtx/90000",
        "a=rtpmap:97 H264/90000",
        "a=rtpmap:98 rtx/90000",
        "a=rtpmap:123 ulpfec/90000",
        "a=rtpmap:122 red/90000",
        "a=rtpmap:119 rtx/90000",
        "a=setup:actpass",
        "a=ssrc:2710284880 cname:{e1b2c3d4-0000-4000-8000-000000000001}",
        "m=audio 0 UDP/TLS/RTP/SAVPF 109 9 0 8 101",
        "c=IN IP4 0.0.0.0",
        "a=bundle-only",
        "a=recvonly",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=extmap:2/recvonly urn:ietf:params:rtp-hdrext:csrc-audio-level",
        "a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1",
        "a=fmtp:101 0-15",
        "a=mid:1",
        "a=rtpmap:109 opus/48000/2",
        "a=rtpmap:9 G722/8000/1",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=ssrc:1459712346 cname:{e1b2c3d4-0000-4000-8000-000000000001}",
        "m=application 0 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 0.0.0.0",
        "a=bundle-only",
        "a=sendrecv",
        "a=mid:2",
        "a=sctp-port:5000",
        "a=max-message-size:1073741823",
    ]
)
FIREFOX_HOST_OFFER = FIREFOX_VIEWER_OFFER.replace("a=recvonly", "a=sendonly")

OFFERS: dict[str, tuple[str, str]] = {  # name -> (offer, role)
    "chrome-host": (CHROME_HOST_OFFER, "host"),
    "chrome-viewer": (CHROME_VIEWER_OFFER, "viewer"),
    "firefox-viewer": (FIREFOX_VIEWER_OFFER, "viewer"),
    "firefox-host": (FIREFOX_HOST_OFFER, "host"),
    "no-bundle-viewer": (NO_BUNDLE_OFFER, "viewer"),
}


# -- the invariants every answer keeps -----------------------------------------------------

TRANSPORT_ATTRIBUTES = ("ice-ufrag", "ice-pwd", "fingerprint", "setup", "rtcp-mux")


def check_answer(offer_text: str, answer: Answer, p: AnswerParams) -> None:
    """Check ``answer`` against ``offer_text`` and ``p``: what must hold for every answer."""
    text = answer.sdp
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    offer = parse_sdp_untrusted(offer_text)
    parsed = parse_sdp_untrusted(text)
    assert parsed.session_lines[0] == "v=0"
    assert "a=ice-lite" in parsed.session_lines
    # the same m-lines, in the same order, with the same mids
    assert [(s.kind, s.mid) for s in parsed.media] == [(s.kind, s.mid) for s in offer.media]
    # the group: only mids the offer's first group has, accepted ones, tagged first
    groups = parsed.bundle_groups()
    if answer.bundle_mids:
        assert groups == [answer.bundle_mids]
        first_group = next(group for group in offer.bundle_groups() if group)  # an empty one is no group
        assert set(answer.bundle_mids) <= set(first_group)
    else:
        assert groups == []
    accepted = [s for s in parsed.media if not s.rejected]
    assert accepted
    tagged = accepted[0] if not answer.bundle_mids else next(s for s in accepted if s.mid == answer.bundle_mids[0])
    for section, offered in zip(parsed.media, offer.media, strict=True):
        if section.rejected:
            assert section.mid not in answer.bundle_mids
            assert not section.attributes("candidate") and not section.attributes("bundle-only")
            continue
        assert section.kind in ("audio", "video") and section.port == PORT
        if answer.bundle_mids:
            assert section.mid in answer.bundle_mids
        for name in TRANSPORT_ATTRIBUTES:
            assert len(section.attributes(name)) == 1, name
        assert section.attributes("ice-ufrag") == [p.ice_ufrag]
        assert section.attributes("setup") == [answer.setup]
        # the one codec, under the offer's payload type (a viewer's video: each of VP8, H.264 it
        # can receive, VP8 first)
        codec, *others = section.rtpmaps()
        if others:
            assert p.role == "viewer" and section.kind == "video" and [o.name for o in others] == ["H264"]
            assert codec.name == "VP8" and str(others[0].payload_type) in offered.formats
        assert section.formats == [str(c.payload_type) for c in [codec, *others]]
        assert str(codec.payload_type) in offered.formats
        assert (codec.name, codec.clock_rate) in (("VP8", 90000), ("H264", 90000), ("opus", 48000))
        offered_codec = next(r for r in offered.rtpmaps() if r.payload_type == codec.payload_type)
        assert offered_codec.name.lower() == codec.name.lower()
        # rtcp-fb: only what the offer has for that payload type, among the four
        feedback = section.rtcp_feedback(codec.payload_type)
        assert set(feedback) <= set(VIDEO_FEEDBACK) & set(offered.rtcp_feedback(codec.payload_type))
        if section.kind == "video":
            assert set(feedback) == set(VIDEO_FEEDBACK) & set(offered.rtcp_feedback(codec.payload_type))
        # extmaps: the kept URIs, with the offer's ids
        offered_ids = offered.extmaps()
        simulcast = bool(section.attributes("simulcast"))
        for ext_id, uri in section.extmaps().items():
            viewer_send_time = p.role == "viewer" and uri == ABS_SEND_TIME_URI  # stamped by the server
            kept = uri in KEPT_EXTENSION_URIS or (simulcast and uri == RID_URI) or viewer_send_time
            assert kept and offered_ids[ext_id] == uri
        # direction
        if p.role == "host":
            expected = "recvonly" if offered.direction in ("sendonly", "sendrecv") else "inactive"
            assert section.direction == expected
        else:
            assert section.direction in ("sendonly", "inactive")
            if offered.direction in ("sendonly", "inactive"):
                assert section.direction == "inactive"
        # candidates: in the tagged section with BUNDLE, in every section without
        candidates = section.attributes("candidate")
        if section is tagged or not answer.bundle_mids:
            assert len(candidates) == len(p.candidates)
            assert section.attributes("end-of-candidates") == [""]
        else:
            assert candidates == []
    # what the forwarder gets
    if p.role == "host":
        assert answer.sinks == []
        assert [(s.kind, s.payload_type) for s in answer.sources] == [
            (s.kind, s.rtpmaps()[0].payload_type) for s in accepted if s.direction == "recvonly"
        ]
    else:
        assert answer.sources == []
        sending = [s for s in accepted if s.direction == "sendonly"]
        assert [(s.kind, s.mid, s.payload_type) for s in answer.sinks] == [
            (s.kind, s.mid, s.rtpmaps()[0].payload_type) for s in sending
        ]
        assert {s.ssrc for s in answer.sinks} <= set(p.ssrcs.values())
        assert len({s.kind for s in answer.sinks}) == len(answer.sinks)  # one per kind


def answer(name: str, **changes: object) -> tuple[Answer, AnswerParams]:
    offer, role = OFFERS[name]
    p = params(role, **changes)
    result = answer_offer_untrusted(offer, p)
    check_answer(offer, result, p)
    return result, p


def media(result: Answer) -> list[MediaSection]:
    return parse_sdp_untrusted(result.sdp).media


# -- aiortc's offers: aiortc must accept the answer -------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "host"])
async def test_aiortc_offer_answer_is_accepted_by_aiortc(role: str) -> None:
    async def main() -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            direction = "recvonly" if role == "viewer" else "sendonly"
            pc.addTransceiver("video", direction=direction)
            pc.addTransceiver("audio", direction=direction)
            adapter.restrict_host_addresses(pc, ["127.0.0.1"])  # a candidate in the offer
            await pc.setLocalDescription(await pc.createOffer())
            offer = pc.localDescription.sdp
            p = params(role, candidates=[("127.0.0.1", PORT)])
            result = answer_offer_untrusted(offer, p)
            check_answer(offer, result, p)

            offered = parse_sdp_untrusted(offer).media
            assert result.bundle_mids == [s.mid for s in offered] == ["0", "1"]
            assert result.setup == "active" and result.remote_setup == "actpass"
            assert result.remote_ufrag == offered[0].attributes("ice-ufrag")[0]
            assert result.remote_pwd == offered[0].attributes("ice-pwd")[0]
            assert (
                "sha-256",
                offered[0].attributes("fingerprint")[0].split()[1],
            ) in result.remote_fingerprints
            # aiortc gathered per m-line; the tagged (first) section's candidates are the ones used
            port = int(offered[0].attributes("candidate")[0].split()[5])
            assert [(c.address, c.port, c.type) for c in result.remote_candidates] == [("127.0.0.1", port, "host")]
            assert result.remote_end_of_candidates

            await pc.setRemoteDescription(RTCSessionDescription(sdp=result.sdp, type="answer"))
            assert pc.signalingState == "stable"
            expected = "recvonly" if role == "viewer" else "sendonly"
            assert {t.mid: t.currentDirection for t in pc.getTransceivers()} == {"0": expected, "1": expected}
            if role == "viewer":
                assert {(s.kind, s.mid, s.ssrc) for s in result.sinks} == {
                    (t.kind, t.mid, SSRCS[t.kind]) for t in pc.getTransceivers()
                }
            else:
                assert {s.kind for s in result.sources} == {"audio", "video"}
        finally:
            await pc.close()

    with trio.fail_after(30):
        async with trio_asyncio.open_loop():
            await trio_asyncio.aio_as_trio(main)()


# -- Chrome-like offers ------------------------------------------------------------------


def test_chrome_host_offer() -> None:
    result, _ = answer("chrome-host")
    audio, video = media(result)
    session = parse_sdp_untrusted(result.sdp).session_lines
    assert session[:5] == ["v=0", "o=- 42 2 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=ice-lite"]
    assert "a=group:BUNDLE 0 1" in session and "a=extmap-allow-mixed" in session
    assert not any(line.startswith("a=msid-semantic") for line in session)  # nothing sent to a host
    assert (audio.formats, video.formats) == (["111"], ["96"])
    assert (audio.direction, video.direction) == ("recvonly", "recvonly")
    assert audio.extmaps() == {1: AUDIO_LEVEL, 4: MID}
    assert video.extmaps() == {13: ORIENTATION, 4: MID}
    assert video.rtcp_feedback(96) == ["nack", "nack pli", "ccm fir", "goog-remb"]
    assert audio.rtcp_feedback(111) == []  # transport-cc dropped
    assert video.fmtp(96) == {"max-fr": "30"}
    assert audio.fmtp(111) == {"maxaveragebitrate": "128000", "useinbandfec": "1"}
    assert "b=AS:1500" in video.lines and "b=TIAS:1500000" in video.lines and "b=AS:128" in audio.lines
    for gone in ("rtx", "red/", "ulpfec", "H264", "VP9", "AV1", "transport-cc", "abs-send-time", "rtcp-rsize"):
        assert gone not in result.sdp
    assert [(s.kind, s.payload_type, s.clock_rate, s.extensions) for s in result.sources] == [
        ("audio", 111, 48000, {1: AUDIO_LEVEL, 4: MID}),
        ("video", 96, 90000, {13: ORIENTATION, 4: MID}),
    ]
    # trickle ICE: no candidates yet
    assert result.remote_candidates == [] and not result.remote_end_of_candidates
    assert (result.remote_ufrag, result.remote_pwd) == ("TsDj", "Vvh+kh44ZpCEfvsA9GGAL8sW")
    assert result.remote_fingerprints == [("sha-256", CHROME_FP)]
    # candidates: one per configured address, on the one port, in the tagged section
    assert audio.attributes("candidate") == [
        f"1 1 udp 2130706431 203.0.113.7 {PORT} typ host",
        f"2 1 udp 2130706175 2001:db8::7 {PORT} typ host",
    ]
    assert video.attributes("candidate") == []
    assert audio.lines[0] == "c=IN IP4 203.0.113.7"


def test_section_lines_are_in_rfc_8866_order() -> None:
    # c=, then b=, then the attributes; the codec's rtpmap, its feedback, its fmtp, then what is sent
    transport = [
        "a=ice-ufrag:srvU",
        "a=ice-pwd:serverpassword0123456789",
        f"a=fingerprint:sha-256 {FINGERPRINT[1]}",
        "a=setup:active",
        "a=rtcp-mux",
    ]
    extmaps = [f"a=extmap:13 {ORIENTATION}", f"a=extmap:4 {MID}"]
    feedback = [f"a=rtcp-fb:96 {fb}" for fb in VIDEO_FEEDBACK]
    host_video = media(answer("chrome-host")[0])[1]
    assert host_video.lines == [
        "c=IN IP4 203.0.113.7",
        "b=AS:1500",
        "b=TIAS:1500000",
        "a=mid:1",
        "a=recvonly",
        *transport,
        *extmaps,
        "a=rtpmap:96 VP8/90000",
        *feedback,
        "a=fmtp:96 max-fr=30",
    ]
    viewer_video = media(answer("chrome-viewer")[0])[1]
    assert viewer_video.lines == [
        "c=IN IP4 203.0.113.7",
        "a=mid:1",
        "a=sendonly",
        *transport,
        f"a=extmap:2 {SEND_TIME}",  # a viewer's: the server stamps it
        *extmaps,
        "a=rtpmap:96 VP8/90000",
        *feedback,
        "a=rtpmap:102 H264/90000",  # each codec it can receive, VP8 first (issue 22)
        *[f"a=rtcp-fb:102 {fb}" for fb in VIDEO_FEEDBACK],
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",  # its own
        "a=msid:room room-video",
        f"a=ssrc:{SSRCS['video']} cname:sfu",
    ]


def test_size_limit_is_the_offers_whatever_its_line_endings() -> None:
    # 63 kB with LF line endings: under the limit as received (CRLF would take it over)
    lines = CHROME_HOST_OFFER.split("\r\n")[:-1]
    offer = "\n".join(lines[:-1] + ["a=x"] * 15000 + lines[-1:]) + "\n"
    assert len(offer) < MAX_SDP_LENGTH < len(offer.replace("\n", "\r\n"))
    result = answer_offer_untrusted(offer, params("host"))
    assert [s.kind for s in result.sources] == ["audio", "video"]
    with pytest.raises(SdpError, match="too long"):
        answer_offer_untrusted(offer + "a=x\n" * 1000, params("host"))


def test_chrome_viewer_offer_rejects_the_data_channel() -> None:
    result, _ = answer("chrome-viewer")
    audio, video, data = media(result)
    assert result.bundle_mids == ["0", "1"]
    assert data.to_lines() == ["m=application 0 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 0.0.0.0", "a=mid:2"]
    assert result.rejected == [(2, "not audio or video")]
    assert (audio.direction, video.direction) == ("sendonly", "sendonly")
    assert audio.attributes("ssrc") == [f"{SSRCS['audio']} cname:sfu"]
    assert video.attributes("msid") == ["room room-video"]
    assert "a=msid-semantic:WMS *" in result.sdp
    assert [(s.kind, s.ssrc, s.payload_type, s.mid, s.extensions) for s in result.sinks] == [
        ("audio", SSRCS["audio"], 111, "0", {AUDIO_LEVEL: 1, SEND_TIME: 2, MID: 4}),
        ("video", SSRCS["video"], 96, "1", {SEND_TIME: 2, ORIENTATION: 13, MID: 4}),
    ]
    assert video.rtcp_feedback(96) == ["nack", "nack pli", "ccm fir", "goog-remb"]
    assert "b=AS" not in result.sdp  # nothing asked of a viewer; its H.264 format as it offered it
    assert [line for line in result.sdp.split("\r\n") if line.startswith("a=fmtp")] == [
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"
    ]
    assert result.sinks[1].payload_types == {"VP8": 96, "H264": 102}


def test_viewer_sendrecv_is_answered_sendonly() -> None:
    offer = CHROME_VIEWER_OFFER.replace("a=recvonly", "a=sendrecv")
    p = params()
    result = answer_offer_untrusted(offer, p)
    check_answer(offer, result, p)
    assert [s.direction for s in media(result)[:2]] == ["sendonly", "sendonly"]


def test_viewer_gets_one_stream_per_kind() -> None:
    second_video = [line.replace("a=mid:1", "a=mid:v2") for line in CHROME_VIDEO if not line.startswith("a=ssrc")]
    offer = crlf(
        [
            *[line.replace("BUNDLE 0 1", "BUNDLE 0 1 v2") for line in CHROME_SESSION],
            *CHROME_AUDIO,
            *CHROME_VIDEO,
            *second_video,
        ]
    ).replace("a=sendonly", "a=recvonly")
    p = params()
    result = answer_offer_untrusted(offer, p)
    check_answer(offer, result, p)
    audio, video, video2 = media(result)
    assert (audio.direction, video.direction, video2.direction) == ("sendonly", "sendonly", "inactive")
    assert video2.attributes("ssrc") == [] and video2.port == PORT
    assert [s.mid for s in result.sinks] == ["0", "1"]
    assert result.bundle_mids == ["0", "1", "v2"]


def test_section_without_direction_is_sendrecv() -> None:
    # RFC 8866's default (aiortc, when it answered for the server, could not answer it: SECURITY.md)
    for name, role in (("chrome-host", "host"), ("chrome-viewer", "viewer")):
        offer = re.sub(r"a=(sendonly|recvonly)\r\n", "", OFFERS[name][0])
        p = params(role)
        result = answer_offer_untrusted(offer, p)
        check_answer(offer, result, p)
        expected = "recvonly" if role == "host" else "sendonly"
        assert [s.direction for s in media(result)[:2]] == [expected, expected]


def test_host_recvonly_section_is_inactive() -> None:
    offer = CHROME_HOST_OFFER.replace("a=sendonly", "a=recvonly", 1)  # the audio section
    p = params("host")
    result = answer_offer_untrusted(offer, p)
    check_answer(offer, result, p)
    audio, video = media(result)
    assert (audio.direction, video.direction) == ("inactive", "recvonly")
    assert [s.kind for s in result.sources] == ["video"]


def test_extmap_ids_and_allow_mixed() -> None:
    # two-byte ids only with extmap-allow-mixed; 15 is reserved in the one-byte form
    offer = CHROME_HOST_OFFER.replace("a=extmap:13 urn:3gpp", "a=extmap:200 urn:3gpp")
    video = media(answer_offer_untrusted(offer, params("host")))[1]
    assert video.extmaps() == {200: ORIENTATION, 4: MID}
    no_mixed = offer.replace("a=extmap-allow-mixed\r\n", "")
    result = answer_offer_untrusted(no_mixed, params("host"))
    assert "extmap-allow-mixed" not in result.sdp
    assert media(result)[1].extmaps() == {4: MID}
    # allow-mixed at media level is echoed there
    media_mixed = no_mixed.replace("a=mid:1\r\n", "a=mid:1\r\na=extmap-allow-mixed\r\n")
    result = answer_offer_untrusted(media_mixed, params("host"))
    assert media(result)[1].attributes("extmap-allow-mixed") == [""]
    assert media(result)[1].extmaps() == {200: ORIENTATION, 4: MID}
    assert media(result)[0].attributes("extmap-allow-mixed") == []
    # a direction on the offer's extmap is not repeated
    directed = CHROME_HOST_OFFER.replace("a=extmap:4 urn", "a=extmap:4/sendonly urn")
    assert "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid" in answer_offer_untrusted(directed, params("host")).sdp


def test_rtcp_feedback_wildcard_is_copied_for_the_payload_type() -> None:
    offer = CHROME_HOST_OFFER.replace("a=rtcp-fb:96 nack pli", "a=rtcp-fb:* nack pli").replace(
        "a=rtcp-fb:96 ccm fir\r\n", ""
    )
    video = media(answer_offer_untrusted(offer, params("host")))[1]
    assert video.rtcp_feedback(96) == ["nack", "nack pli", "goog-remb"]
    assert "a=rtcp-fb:96 nack pli" in video.lines


# -- Firefox-like max-bundle offers --------------------------------------------------------


def test_firefox_max_bundle_viewer() -> None:
    result, _ = answer("firefox-viewer")
    video, audio, data = media(result)
    # the bundle-only audio section is in the bundle, on the server's port
    assert result.bundle_mids == ["0", "1"]
    assert audio.port == PORT and audio.direction == "sendonly" and not audio.attributes("bundle-only")
    assert data.port == 0 and data.mid == "2" and result.rejected == [(2, "not audio or video")]
    assert (video.formats, audio.formats) == (["120", "126"], ["109"])  # VP8, and its H.264
    assert video.extmaps() == {3: MID, 4: SEND_TIME}
    assert audio.extmaps() == {1: AUDIO_LEVEL, 3: MID}  # csrc-audio-level dropped
    assert video.rtcp_feedback(120) == ["nack", "nack pli", "ccm fir", "goog-remb"]
    for gone in ("rtx", "red/", "ulpfec", "VP9", "telephone-event", "G722", "apt="):
        assert gone not in result.sdp
    # the transport parameters: the tagged section's, the fingerprint from the session level
    assert (result.remote_ufrag, result.remote_pwd) == ("3e7c9a1f", "b5a2b1b2c0d5e0f3a4b6c7d8e9f0a1b2")
    assert result.remote_fingerprints == [("sha-256", FIREFOX_FP)]
    assert result.remote_end_of_candidates
    assert result.remote_candidates == [
        RemoteCandidate("0", 1, "udp", 2122252543, "192.168.1.20", 53821, "host"),
        RemoteCandidate("1", 1, "udp", 2122187007, "0f1e2d3c-aaaa-bbbb-cccc-1234567890ab.local", 53822, "host"),
        RemoteCandidate("2", 1, "tcp", 2105524479, "192.168.1.20", 9, "host", tcptype="active"),
        RemoteCandidate("3", 1, "udp", 1686052863, "198.51.100.4", 53821, "srflx", "192.168.1.20", 53821),
    ]
    assert [(s.kind, s.mid, s.payload_type) for s in result.sinks] == [("video", "0", 120), ("audio", "1", 109)]


def test_firefox_max_bundle_host() -> None:
    result, _ = answer("firefox-host")
    video, audio, _data = media(result)
    assert (video.direction, audio.direction) == ("recvonly", "recvonly")
    assert audio.fmtp(109) == {"maxaveragebitrate": "128000", "useinbandfec": "1"}
    assert video.fmtp(120) == {"max-fr": "30"}
    assert [(s.kind, s.payload_type) for s in result.sources] == [("video", 120), ("audio", 109)]


def test_bundle_only_without_bundle_group_is_rejected() -> None:
    # RFC 8843 section 6: bundle-only outside a BUNDLE group is ignored: port 0 = disabled
    offer = FIREFOX_VIEWER_OFFER.replace("a=group:BUNDLE 0 1 2\r\n", "")
    p = params()
    result = answer_offer_untrusted(offer, p)
    check_answer(offer, result, p)
    assert result.bundle_mids == [] and "a=group" not in result.sdp
    assert [s.port for s in media(result)] == [PORT, 0, 0]
    assert result.rejected[0] == (1, "port 0 (disabled by the offerer)")


# -- BUNDLE groups -------------------------------------------------------------------------


def test_offer_without_bundle() -> None:
    result, p = answer("no-bundle-viewer")
    assert result.bundle_mids == [] and "a=group" not in result.sdp
    for section in media(result):  # each section is its own transport for the offerer
        assert len(section.attributes("candidate")) == len(p.candidates)
    assert result.remote_ufrag == "TsDj"


def test_offer_without_bundle_and_different_credentials() -> None:
    other_ufrag = NO_BUNDLE_OFFER.replace("a=ice-ufrag:TsDj", "a=ice-ufrag:Zzzz", 1)
    with pytest.raises(SdpError, match="BUNDLE") as caught:
        answer_offer_untrusted(other_ufrag, params())
    assert "different ICE credentials" in str(caught.value)
    other_fingerprint = NO_BUNDLE_OFFER.replace(CHROME_FP, CHROME_FP[:-2] + "00", 1)
    with pytest.raises(SdpError, match="BUNDLE"):
        answer_offer_untrusted(other_fingerprint, params())
    # with BUNDLE only the tagged section's credentials count (RFC 8843 section 7.1.3)
    bundled = CHROME_VIEWER_OFFER.replace("a=ice-ufrag:TsDj", "a=ice-ufrag:Zzzz", 1)
    assert answer_offer_untrusted(bundled, params()).remote_ufrag == "Zzzz"


def test_group_is_only_what_the_offer_grouped() -> None:
    # the second section is outside the (first) group: rejected, not bundled
    two_groups = CHROME_HOST_OFFER.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0\r\na=group:BUNDLE 1")
    outside = CHROME_HOST_OFFER.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0")
    for offer in (two_groups, outside):
        p = params("host")
        result = answer_offer_untrusted(offer, p)
        check_answer(offer, result, p)
        assert result.bundle_mids == ["0"]
        assert result.rejected == [(1, "not in the offer's (first) BUNDLE group")]
        assert "a=group:BUNDLE 0\r\n" in result.sdp and result.sdp.count("a=group:") == 1
    # a mid no m= line has is ignored (ffmpeg's WHIP muxer writes one); other semantics are not echoed
    phantom = CHROME_HOST_OFFER.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 7 1 0\r\na=group:LS 0 1")
    result = answer_offer_untrusted(phantom, params("host"))
    assert result.bundle_mids == ["1", "0"] and "a=group:LS" not in result.sdp
    # the offer's tag (mid 1, first of the group) is the answer's tag: candidates go there
    audio, video = media(result)
    assert video.attributes("candidate") and not audio.attributes("candidate")


def test_rejected_tag_moves_to_the_next_accepted_section() -> None:
    # RFC 8843 section 7.3.1: a viewer whose video has no VP8: audio becomes the tag
    offer = CHROME_VIEWER_OFFER.replace("a=group:BUNDLE 0 1 2", "a=group:BUNDLE 1 0 2").replace(
        "VP8/90000", "H264/90000"
    )
    p = params()
    result = answer_offer_untrusted(offer, p)
    check_answer(offer, result, p)
    audio, video, _ = media(result)
    assert result.bundle_mids == ["0"] and video.port == 0
    assert (1, "video offered without VP8") in result.rejected
    assert audio.attributes("candidate")
    assert [s.kind for s in result.sinks] == ["audio"]


def test_bundle_only_sections_cannot_carry_the_transport() -> None:
    # Firefox max-bundle viewer whose video (the only section with a port) has no VP8
    offer = FIREFOX_VIEWER_OFFER.replace("VP8/90000", "H264/90000")
    with pytest.raises(SdpError, match="bundle-only"):
        answer_offer_untrusted(offer, params())


# -- DTLS role -----------------------------------------------------------------------------


@pytest.mark.parametrize(("offered", "answered"), [("actpass", "active"), ("passive", "active"), ("active", "passive")])
def test_setup_role(offered: str, answered: str) -> None:
    offer = CHROME_HOST_OFFER.replace("a=setup:actpass", f"a=setup:{offered}")
    p = params("host")
    result = answer_offer_untrusted(offer, p)
    check_answer(offer, result, p)
    assert (result.setup, result.remote_setup) == (answered, offered)
    assert [s.attributes("setup") for s in media(result)] == [[answered], [answered]]


def test_session_level_setup_and_credentials() -> None:
    lines = [line for line in CHROME_HOST_OFFER.split("\r\n")[:-1] if line not in CHROME_TRANSPORT[2:]]
    at = lines.index("t=0 0") + 1
    lines[at:at] = CHROME_TRANSPORT[2:]
    result = answer_offer_untrusted(crlf(lines), params("host"))
    assert (result.remote_ufrag, result.remote_setup, result.setup) == ("TsDj", "actpass", "active")


# -- refused offers --------------------------------------------------------------------------


def _drop(prefix: str) -> Callable[[str], str]:
    return lambda offer: "".join(line for line in offer.splitlines(keepends=True) if not line.startswith(prefix))


def _sub(old: str, new: str, count: int = -1) -> Callable[[str], str]:
    return lambda offer: offer.replace(old, new, count)


REFUSED: list[tuple[str, str, Callable[[str], str], type[Exception], str]] = [
    ("no ufrag", "host", _drop("a=ice-ufrag"), SdpError, "no a=ice-ufrag"),
    ("no pwd", "host", _drop("a=ice-pwd"), SdpError, "no a=ice-pwd"),
    ("short ufrag", "host", _sub("a=ice-ufrag:TsDj", "a=ice-ufrag:ab"), SdpError, "ice-ufrag must be"),
    ("short pwd", "host", _sub("a=ice-pwd:Vvh+kh44ZpCEfvsA9GGAL8sW", "a=ice-pwd:short"), SdpError, "ice-pwd must be"),
    ("no fingerprint", "host", _drop("a=fingerprint"), SdpError, "no a=fingerprint"),
    ("bad fingerprint", "host", _sub(CHROME_FP, "XY:ZZ"), SdpError, "malformed a=fingerprint"),
    ("md5 fingerprint", "host", _sub("sha-256 ", "md5 "), SdpError, "supported hash"),
    ("no setup", "host", _drop("a=setup"), SdpError, "no a=setup"),
    ("holdconn", "host", _sub("a=setup:actpass", "a=setup:holdconn"), SdpError, "'holdconn' is not"),
    ("no rtcp-mux", "host", _drop("a=rtcp-mux"), SdpError, "rtcp-mux"),
    ("ice-lite offer", "host", _sub("t=0 0", "t=0 0\r\na=ice-lite"), SdpError, "ICE-lite"),
    ("duplicate mid", "host", _sub("a=mid:1", "a=mid:0"), SdpError, "two m= sections have a=mid:0"),
    ("bad mid", "host", _sub("a=mid:1", "a=mid:\x01"), SdpError, "malformed a=mid"),
    ("nothing to send", "host", _sub("a=sendonly", "a=recvonly"), SdpError, "no audio or video to send"),
    ("nothing to receive", "viewer", lambda o: o, SdpError, "no audio or video to receive"),
    ("host without VP8", "host", _sub("VP8/90000", "H264/90000"), UnsupportedCodecError, "video offered without VP8"),
    ("host without Opus", "host", _sub("opus/48000/2", "ISAC/16000"), UnsupportedCodecError, "without opus"),
    (
        "RTCP payload type",
        "host",
        lambda o: o.replace("SAVPF 96 ", "SAVPF 77 ").replace("a=rtpmap:96 VP8", "a=rtpmap:77 VP8"),
        SdpError,
        "payload type 77",
    ),
    (
        "bad candidate",
        "host",
        _sub("a=setup:actpass", "a=setup:actpass\r\na=candidate:1 1 udp x 1.2.3.4 5 typ host", 1),
        SdpError,
        "a=candidate",
    ),
    (
        "too many candidates",
        "host",
        _sub("a=mid:0", "a=mid:0" + "\r\na=candidate:1 1 udp 1 10.0.0.1 5 typ host" * 65),
        SdpError,
        "candidates",
    ),
    ("only a data channel", "viewer", lambda o: crlf(CHROME_SESSION + CHROME_DATA), SdpError, "not audio or video"),
    ("not SDP", "host", lambda o: "hello", SdpError, "v=0"),
    ("no mid without BUNDLE", "host", lambda o: _drop("a=mid:1")(_drop("a=group")(o)), SdpError, "without a=mid"),
    ("long format", "host", _sub("SAVPF 96 97", "SAVPF " + "9" * 5000 + " 96 97"), SdpError, "too long"),
    ("wrong transport", "host", _sub("UDP/TLS/RTP/SAVPF", "RTP/AVP"), SdpError, "is not UDP/TLS/RTP/SAVPF"),
]


@pytest.mark.parametrize(
    ("role", "mutate", "error", "message"), [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED]
)
def test_refused_offers_say_why(role: str, mutate: Callable[[str], str], error: type[Exception], message: str) -> None:
    offer = mutate(CHROME_HOST_OFFER)
    with pytest.raises(error, match=re.escape(message)):
        answer_offer_untrusted(offer, params(role))


def test_viewer_without_vp8_anywhere_names_the_codec() -> None:
    offer = crlf([*CHROME_SESSION, *CHROME_VIDEO]).replace("a=sendonly", "a=recvonly").replace("VP8/", "H264/")
    with pytest.raises(SdpError, match="video offered without VP8"):
        answer_offer_untrusted(offer, params())


# -- parameters and helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"role": "publisher"}, "role"),
        ({"ice_ufrag": "ab"}, "ice_ufrag"),
        ({"ice_pwd": "short"}, "ice_pwd"),
        ({"fingerprint": ("md5", FINGERPRINT[1])}, "fingerprint"),
        ({"fingerprint": ("sha-256", "nothex")}, "fingerprint"),
        ({"candidates": []}, "at least one"),
        ({"candidates": [("example.com", PORT)]}, "does not appear to be an IPv4 or IPv6 address"),
        ({"candidates": [("10.0.0.1", 0)]}, "port"),
        ({"candidates": [("10.0.0.1", 1), ("10.0.0.2", 2)]}, "one media port"),
        ({"max_framerate": 0}, "max_framerate"),
        ({"cname": "has space"}, "cname"),
        ({"ssrcs": {"video": 1}}, "ssrcs"),
        ({"ssrcs": {"video": 0, "audio": 1}}, "non-zero"),
        ({"ssrcs": {"video": 5, "audio": 5}}, "differ"),
        ({"session_id": -1}, "session_id"),
    ],
)
def test_bad_params(changes: dict[str, object], message: str) -> None:
    changes = dict(changes)
    role = str(changes.pop("role", "viewer"))
    with pytest.raises(ValueError, match=message):
        params(role, **changes)


def test_random_ssrcs() -> None:
    for _ in range(50):
        ssrcs = random_ssrcs()
        assert set(ssrcs) == {"audio", "video"}
        assert ssrcs["audio"] != ssrcs["video"]
        assert all(1 <= ssrc <= 0xFFFFFFFF for ssrc in ssrcs.values())
    params(ssrcs=random_ssrcs())
    params("host", session_id=0)  # a host needs no SSRCs


def test_parse_candidate() -> None:
    assert parse_candidate_untrusted(
        "a=candidate:842163049 1 udp 1677729535 198.51.100.4 60769 typ srflx raddr 10.0.0.2 rport 60769 "
        "generation 0 ufrag TsDj network-cost 999"
    ) == RemoteCandidate("842163049", 1, "udp", 1677729535, "198.51.100.4", 60769, "srflx", "10.0.0.2", 60769)
    assert parse_candidate_untrusted("candidate:1 1 UDP 1 ::1 9 typ host").transport == "udp"
    for bad in [
        "candidate:1 1 udp 1 1.2.3.4 5 type host",
        "candidate:1 1 udp 1 1.2.3.4 5 typ",
        "candidate:1 1 udp 1 1.2.3.4 99999 typ host",
        "candidate:1 0x1 udp 1 1.2.3.4 5 typ host",
        "candidate:1 1 udp 1 1.2.3.4 \uff15 typ host"  # a non-ASCII digit,
        "candidate:1 1 udp 99999999999 1.2.3.4 5 typ host",
        "candidate:1 1 udp 1 1.2.3.4 5 typ host raddr",
        "candidate:1 1 udp 1 1.2.3.4 5 typ srflx raddr 1.2.3.4 rport x",
        "candidate:!! 1 udp 1 1.2.3.4 5 typ host",
    ]:
        with pytest.raises(SdpError, match="a=candidate"):
            parse_candidate_untrusted(bad)


# -- fuzzing -------------------------------------------------------------------------------------

FRAGMENTS = [
    "a=group:BUNDLE 0 1 2",
    "a=group:BUNDLE",
    "a=group:BUNDLE 1",
    "a=bundle-only",
    "m=video 0 UDP/TLS/RTP/SAVPF 96",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "m=video 9 UDP/TLS/RTP/SAVPF 300",
    "m=text 9 UDP/TLS/RTP/SAVPF 98",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "a=mid:0",
    "a=mid:",
    "a=mid:a b",
    "a=setup:active",
    "a=setup:passive",
    "a=setup:holdconn",
    "a=ice-lite",
    "a=ice-ufrag:ab",
    "a=ice-ufrag:abcd",
    "a=ice-pwd:abcdefghijklmnopqrstuvwx",
    "a=fingerprint:sha-256 zz",
    "a=fingerprint:sha-1 AB:CD",
    "a=rtpmap:96 VP8/90000",
    "a=rtpmap:111 opus/48000",
    "a=rtpmap:300 VP8/90000",
    "a=rtpmap:x",
    "a=rtpmap:96 VP8/x",
    "a=extmap:15 urn:3gpp:video-orientation",
    "a=extmap:0 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:x y",
    "a=extmap:3",
    "a=extmap-allow-mixed",
    "a=candidate:1 1 udp 1 1.2.3.4 5 typ host",
    "a=candidate:garbage",
    "a=end-of-candidates",
    "a=sendrecv",
    "a=recvonly",
    "a=sendonly",
    "a=inactive",
    "a=rtcp-fb:* nack",
    "a=rtcp-fb:96",
    "a=rtcp-mux",
    "a=fmtp:111 useinbandfec=1",
    "a=fmtp:96",
    "a=ssrc:1 cname:x",
    "a=ssrc:x",
    "c=IN IP4 0.0.0.0",
    "b=AS:100",
    "x",
    "",
]
BASE_OFFERS = [offer for offer, _ in OFFERS.values()]


@st.composite
def mutated_offers(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(BASE_OFFERS)).split("\r\n")[:-1]
    for _ in range(draw(st.integers(1, 5))):
        i = draw(st.integers(0, len(lines) - 1))
        operation = draw(st.sampled_from(["delete", "duplicate", "insert", "replace", "token", "text"]))
        if operation == "delete" and len(lines) > 1:
            del lines[i]
        elif operation == "duplicate":
            lines.insert(i, lines[i])
        elif operation == "insert":
            lines.insert(i, draw(st.sampled_from(FRAGMENTS)))
        elif operation == "replace":
            lines[i] = draw(st.sampled_from(FRAGMENTS))
        elif operation == "token":
            tokens = lines[i].split(" ")
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[j] = draw(st.sampled_from(["0", "9", "96", "-1", "", "x", "99999999999", "UDP", "typ", ":"]))
            lines[i] = " ".join(tokens)
        else:
            lines[i] = draw(st.text(max_size=40))
    return "\r\n".join(lines) + draw(st.sampled_from(["\r\n", "\n", ""]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(offer=mutated_offers(), role=st.sampled_from(["host", "viewer"]))
def test_fuzzed_offers_raise_only_sdp_errors(offer: str, role: str) -> None:
    p = params(role)
    try:
        result = answer_offer_untrusted(offer, p)
    except (SdpError, UnsupportedCodecError):
        return
    check_answer(offer, result, p)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=300))
def test_random_text_raises_only_sdp_errors(text: str) -> None:
    with pytest.raises(SdpError):
        answer_offer_untrusted(text, params())


# ---------------------------------------------------------------- simulcast (RFC 8853)

RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
CHROME_SIMULCAST_HOST_OFFER = CHROME_HOST_OFFER.replace(
    "a=ssrc-group:FID 1955776722 800319451\r\n",
    "a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;f\r\n",
)


def test_a_simulcast_host_offer_is_answered_recv_with_its_layers() -> None:
    p = params("host")
    result = answer_offer_untrusted(CHROME_SIMULCAST_HOST_OFFER, p)
    check_answer(CHROME_SIMULCAST_HOST_OFFER, result, p)
    _audio, video = media(result)
    assert video.attributes("rid") == ["q recv", "h recv", "f recv"]
    assert video.attributes("simulcast") == ["recv q;h;f"]
    assert video.extmaps()[10] == RID  # the layers are told apart by it
    video_source = next(s for s in result.sources if s.kind == "video")
    assert video_source.rids == ("q", "h", "f") and video_source.extensions[10] == RID
    assert "repaired-rtp-stream-id" not in result.sdp  # no RTX, no repaired streams


@pytest.mark.parametrize(
    ("change", "rids"),
    [
        (("a=simulcast:send q;h;f", "a=simulcast:send ~q;h,x;f"), ("q", "h", "f")),  # paused, alternatives
        (("a=simulcast:send q;h;f", "a=simulcast:send q;h;f;z"), ("q", "h", "f")),  # z has no a=rid line
        (("a=simulcast:send q;h;f", "a=simulcast:send q"), ()),  # one layer is no simulcast
        (("a=simulcast:send q;h;f", "a=simulcast:recv q;h;f"), ()),  # a host sends
        (("a=extmap:10 " + RID, "a=extmap:10 urn:example:other"), ()),  # without the rid extension
        (("a=rid:h send", "a=rid:h recv"), ("q", "f")),
        (("a=rid:q send", "a=rid:" + "q" * 17 + " send"), ("h", "f")),  # over the rid length bound
    ],
)
def test_simulcast_offers_the_server_answers_with_fewer_or_no_layers(
    change: tuple[str, str], rids: tuple[str, ...]
) -> None:
    offer = CHROME_SIMULCAST_HOST_OFFER.replace(*change)
    result = answer_offer_untrusted(offer, params("host"))
    video_source = next(s for s in result.sources if s.kind == "video")
    assert video_source.rids == rids
    _audio, video = media(result)
    assert video.attributes("simulcast") == (["recv " + ";".join(rids)] if rids else [])


def test_a_viewer_offer_with_simulcast_lines_is_answered_without() -> None:
    offer = CHROME_VIEWER_OFFER.replace(
        "a=mid:1\r\n", "a=mid:1\r\na=rid:q recv\r\na=rid:h recv\r\na=simulcast:recv q;h\r\n"
    )
    result = answer_offer_untrusted(offer, params("viewer"))
    assert "a=simulcast" not in result.sdp and "a=rid" not in result.sdp


def test_a_host_offering_h264_gets_it_where_the_server_prefers_it() -> None:
    """`[video] codecs` (issue 22): VP8 first keeps VP8; H264 first takes the H.264 format of
    packetization mode 1 (Chromium's 42001f here), answered with the host's own
    profile-level-id; an offer of H.264 alone is refused only where H.264 is not allowed."""
    result, _ = answer("chrome-host", video_codecs=("VP8", "H264"))
    assert media(result)[1].formats == ["96"] and result.sources[1].codec == "VP8"

    result, _ = answer("chrome-host", video_codecs=("H264", "VP8"))
    video = media(result)[1]
    assert video.formats == ["102"] and video.rtpmaps()[0].name == "H264"
    assert video.fmtp(102) == {"level-asymmetry-allowed": "1", "packetization-mode": "1", "profile-level-id": "42001f"}
    assert video.rtcp_feedback(102) == ["nack", "nack pli", "ccm fir", "goog-remb"]
    assert [(s.kind, s.codec, s.payload_type) for s in result.sources] == [
        ("audio", "opus", 111),
        ("video", "H264", 102),
    ]

    h264_only = CHROME_HOST_OFFER.replace("a=rtpmap:96 VP8/90000", "a=rtpmap:96 VP9/90000")
    result = answer_offer_untrusted(h264_only, params("host", video_codecs=("VP8", "H264")))
    assert result.sources[1].codec == "H264"
    with pytest.raises(UnsupportedCodecError, match="video offered without VP8"):
        answer_offer_untrusted(h264_only, params("host"))
