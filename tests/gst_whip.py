#!/usr/bin/python3
"""A GStreamer WHIP publisher (RFC 9725) for the tests: what OBS or a hardware encoder does.

Run with Debian's system Python (python3-gi lives there):

    /usr/bin/python3 tests/gst_whip.py --url http://127.0.0.1:PORT/whip/room_123 \
        --encoder x264enc --token TOKEN --seconds 20

videotestsrc (live, 320x240@15) ! x264enc or openh264enc ! rtph264pay and audiotestsrc !
opusenc ! rtpopuspay into webrtcbin (sendonly transceivers; webrtcbin still offers `sendrecv`,
which a WHIP server accepts). The offer is POSTed as `application/sdp` with the bearer token,
no trickle (as OBS does: the server is ICE-lite and learns the peer from its checks); the 201's
answer is applied. At the end (--seconds, stdin EOF, SIGTERM) the session is DELETEd.

GStreamer 1.22 has no whipsink (gst-plugins-rs) and Debian's simple-whip-client does not start,
so this script is the WHIP client. webrtcbin's first create-offer may answer nothing: it is
asked again. Its ICE agent gets 127.0.0.1 as tests/gst_peer.py explains.

One JSON object per line on stdout: policy, offer, created (status, location, etag, links),
answer_applied, connection, connected, stats (video_encoded, audio_encoded), deleted (status),
exit. Exit status 1 when the POST is refused.
"""

from __future__ import annotations

import argparse
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402
from gst_peer import add_ice_local_address, elapsed_ms, emit, quit_on_signals_and_stdin  # noqa: E402  (tests/, beside this script)

VIDEO_PT = 102
AUDIO_PT = 111
ENCODERS = {
    # constrained baseline, a keyframe every 2 s, SPS/PPS before each IDR
    "x264enc": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=600 "
    "! video/x-h264,profile=constrained-baseline",
    "openh264enc": "openh264enc bitrate=600000 gop-size=30 complexity=low",
    # High profile, as OBS's x264 sends by default (B-frames off: WebRTC has no reordering)
    "x264enc-high": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=600 bframes=0 "
    "! video/x-h264,profile=high",
}
OFFER_ATTEMPTS = 10


class Publisher:
    def __init__(self, args: argparse.Namespace, loop: GLib.MainLoop) -> None:
        self.args = args
        self.loop = loop
        self.pipeline = Gst.Pipeline.new("whip")
        self.webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
        self.webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        stun, turn = self.webrtc.get_property("stun-server"), self.webrtc.get_property("turn-server")
        if stun or turn:
            raise RuntimeError(f"webrtcbin has a STUN/TURN server by default: {stun!r} {turn!r}")
        emit("policy", encoder=args.encoder, stun_server=stun, turn_server=turn)
        self.pipeline.add(self.webrtc)
        add_ice_local_address(self.webrtc, args.local_address)
        self.counts = {"video_encoded": 0, "audio_encoded": 0}
        self.location: str | None = None
        self.connected = False
        self.offered = False
        self._lock = threading.Lock()
        video = Gst.parse_bin_from_description(
            "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1 "
            f"! videoconvert ! queue ! {ENCODERS[args.encoder]} ! h264parse name=venc "
            f"! rtph264pay config-interval=-1 aggregate-mode=zero-latency pt={VIDEO_PT} ! queue",
            True,
        )
        audio = Gst.parse_bin_from_description(
            "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! queue ! opusenc name=aenc "
            f"! rtpopuspay pt={AUDIO_PT} ! queue",
            True,
        )
        for bin_, encoder, key in ((audio, "aenc", "audio_encoded"), (video, "venc", "video_encoded")):
            self.pipeline.add(bin_)
            bin_.get_by_name(encoder).get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._count, key)
            if not bin_.link(self.webrtc):
                raise RuntimeError(f"cannot link {encoder} to webrtcbin")
        self.webrtc.connect("on-negotiation-needed", self._on_negotiation_needed)
        self.webrtc.connect("notify::connection-state", self._on_connection_state)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self._on_bus_error)

    def _count(self, _pad: Gst.Pad, _info: Gst.PadProbeInfo, key: str) -> Gst.PadProbeReturn:
        with self._lock:
            self.counts[key] += 1
        return Gst.PadProbeReturn.OK

    # -- negotiation

    def _on_negotiation_needed(self, webrtc: Gst.Element) -> None:
        if not self.offered:
            self.offered = True
            self._create_offer(1)

    def _create_offer(self, attempt: int) -> bool:
        promise = Gst.Promise.new_with_change_func(self._on_offer_created, attempt)
        self.webrtc.emit("create-offer", None, promise)
        return False

    def _on_offer_created(self, promise: Gst.Promise, attempt: int) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None and reply.has_field("offer") else None
        if offer is None:
            if attempt >= OFFER_ATTEMPTS:
                emit("fatal", message=f"create-offer answered nothing {attempt} times")
                GLib.idle_add(self.loop.quit)
            else:
                GLib.timeout_add(100, self._create_offer, attempt + 1)
            return
        sdp = offer.sdp.as_text()
        self.webrtc.emit("set-local-description", offer, None)
        emit("offer", attempt=attempt, sdp=sdp if self.args.print_sdp else None)
        threading.Thread(target=self._post, args=(sdp,), daemon=True).start()

    def _request(self, method: str, url: str, body: bytes | None, content_type: str | None) -> tuple[int, Any, str]:
        headers = {"Authorization": f"Bearer {self.args.token}"} if self.args.token else {}
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read().decode(errors="replace")

    def _post(self, sdp: str) -> None:
        status, headers, body = self._request("POST", self.args.url, sdp.encode(), "application/sdp")
        location = headers.get("Location") if status == 201 else None
        emit(
            "created",
            status=status,
            location=location,
            etag=headers.get("ETag"),
            links=headers.get_all("Link") or [],
            body=body if status != 201 or self.args.print_sdp else None,
        )
        if location is None:
            GLib.idle_add(self._refused)
            return
        self.location = urllib.parse.urljoin(self.args.url, location)
        GLib.idle_add(self._apply_answer, body)

    def _refused(self) -> bool:
        self.loop.quit()
        return False

    def _apply_answer(self, sdp: str) -> bool:
        result, message = GstSdp.SDPMessage.new_from_text(sdp)
        if result != GstSdp.SDPResult.OK:
            emit("fatal", message="the answer does not parse")
            self.loop.quit()
            return False
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, message)
        promise = Gst.Promise.new_with_change_func(self._on_answer_set, None)
        self.webrtc.emit("set-remote-description", answer, promise)
        return False

    def _on_answer_set(self, promise: Gst.Promise, _data: Any) -> None:
        reply = promise.get_reply()
        error = reply.get_value("error") if reply is not None and reply.has_field("error") else None
        emit("answer_rejected", message=str(error)) if error is not None else emit("answer_applied")

    def _on_connection_state(self, webrtc: Gst.Element, _spec: Any) -> None:
        state = webrtc.get_property("connection-state")
        emit("connection", state=state.value_nick, ms=elapsed_ms())
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED and not self.connected:
            self.connected = True
            emit("connected", ms=elapsed_ms())

    def _on_bus_error(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        error, debug = message.parse_error()
        emit("gst_error", source=message.src.get_name() if message.src else None, message=error.message, debug=debug)

    def stats(self) -> bool:
        with self._lock:
            counts = dict(self.counts)
        emit("stats", ms=elapsed_ms(), **counts)
        return True

    def delete(self) -> None:
        if self.location is not None:
            status, _headers, _body = self._request("DELETE", self.location, None, None)
            emit("deleted", status=status)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT/whip/ROOM_ID")
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default="x264enc")
    parser.add_argument("--token", default=None, help="the host's join token (Bearer)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--local-address", default="127.0.0.1")
    parser.add_argument("--stats-interval", type=float, default=0.5)
    parser.add_argument("--print-sdp", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Gst.init(None)
    loop = GLib.MainLoop()
    publisher = Publisher(args, loop)

    quit_ = quit_on_signals_and_stdin(loop)
    GLib.timeout_add(int(args.seconds * 1000), quit_)
    GLib.timeout_add(max(50, int(args.stats_interval * 1000)), publisher.stats)
    if publisher.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        emit("fatal", message="the pipeline does not start")
        return 1
    try:
        loop.run()
    finally:
        publisher.stats()
        publisher.pipeline.set_state(Gst.State.NULL)
        publisher.delete()
        emit("exit", ms=elapsed_ms())
    return 0 if publisher.location is not None else 1


if __name__ == "__main__":
    sys.exit(main())
