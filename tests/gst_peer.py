#!/usr/bin/python3
"""A GStreamer webrtcbin peer for the media server (host or viewer), for the tests.

Run with Debian's system Python (`/usr/bin/python3`: python3-gi and
python3-websocket live there, not in the project's venv):

    /usr/bin/python3 tests/gst_peer.py --role viewer --ws ws://127.0.0.1:PORT/ws \
        --room room_123 --user bob --bundle-policy max-bundle --seconds 20

Host: videotestsrc (live, 320x240@15) ! vp8enc ! rtpvp8pay and audiotestsrc
(live) ! opusenc ! rtpopuspay into webrtcbin. Viewer: recvonly VP8 and Opus
transceivers; what arrives is decoded (vp8dec / opusdec) into fakesinks whose
buffers are counted. Either way the peer is the offerer (PROTOCOL.md), trickles
its candidates (unless --no-trickle), keeps the socket alive with `ping`, and
keeps webrtcbin's own certificate (RSA, made by dtlsagent).

It prints one JSON object per line on stdout (`event`: joined, offer, answer,
ice, connection, connected, candidate, first_frame, stats, error, closed,
exit) and ends after --seconds, on stdin EOF or on SIGTERM/SIGINT, cleanly
(pipeline to NULL, `leave`, WebSocket closed), with exit status 0 (1 when the
join was refused or the WebSocket could not be opened).

Loopback: libnice gathers host candidates on the addresses it is given with
nice_agent_add_local_address(); without any, it takes every interface that is
up and running EXCEPT loopback ones (nice_interfaces_get_local_ips(FALSE)), so
inside a network namespace where only `lo` exists webrtcbin gathers nothing at
all, never completes gathering, and ICE cannot start. Neither webrtcbin nor
GstWebRTCNice exposes a way to add an address in GStreamer 1.22, and Debian has
no typelib for libnice installed with it (gir1.2-nice-0.1 would be one more
package), so --local-address (default 127.0.0.1) is added to webrtcbin's
NiceAgent through ctypes (libgobject g_object_get + libnice). The agent is not
read through PyGObject: webrtcbin 1.22 keeps its `ice-agent` (a GstObject) with
a floating reference, PyGObject sinks it when wrapping and unrefs it when the
wrapper goes, and webrtcbin then uses a freed object (critical warnings, then
a segfault in gst_webrtc_ice_add_stream).

No STUN or TURN server is set (webrtcbin's stun-server and turn-server stay
NULL, checked at start): nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
import websocket  # noqa: E402  (python3-websocket, websocket-client)
from gi.repository import GLib, GObject, Gst, GstSdp, GstWebRTC  # noqa: E402

PING_SECONDS = 20
VIDEO_PT = 96
AUDIO_PT = 111
VIDEO_CAPS = f"application/x-rtp,media=video,encoding-name=VP8,clock-rate=90000,payload={VIDEO_PT}"
AUDIO_CAPS = (
    f"application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,encoding-params=(string)2,payload={AUDIO_PT}"
)
BUNDLE_POLICIES = {
    "none": GstWebRTC.WebRTCBundlePolicy.NONE,
    "balanced": GstWebRTC.WebRTCBundlePolicy.BALANCED,
    "max-compat": GstWebRTC.WebRTCBundlePolicy.MAX_COMPAT,
    "max-bundle": GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE,
}

_print_lock = threading.Lock()
_started = time.monotonic()


def emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout (from any thread)."""
    line = json.dumps({"event": event, **fields}, sort_keys=True)
    with _print_lock:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass


def elapsed_ms() -> int:
    return int((time.monotonic() - _started) * 1000)


def offer_summary(sdp: str) -> dict[str, Any]:
    """What decides how the server takes the offer: its BUNDLE group and each m= line's ICE ufrag."""
    groups = [line[len("a=group:BUNDLE") :].split() for line in sdp.splitlines() if line.startswith("a=group:BUNDLE")]
    ufrags: list[str | None] = []
    session_ufrag = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            ufrags.append(session_ufrag)
        elif line.startswith("a=ice-ufrag:"):
            value = line[len("a=ice-ufrag:") :].strip()
            if ufrags:
                ufrags[-1] = value
            else:
                session_ufrag = value
    return {"bundle": groups[0] if groups else None, "ufrags": ufrags}


def sdp_mids(sdp: str) -> list[str | None]:
    """The a=mid of each m= section, in order (read from the text: GstSDPMedia pointers into a
    temporary GstSDPMessage wrapper dangle in PyGObject)."""
    mids: list[str | None] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            mids.append(None)
        elif line.startswith("a=mid:") and mids:
            mids[-1] = line[len("a=mid:") :].strip()
    return mids


# ---- libnice: a host candidate on loopback ---------------------------------------------------


def gobject_pointer(obj: GObject.Object) -> int:
    """The GObject* behind a PyGObject wrapper: its hash (pygobject_hash), checked against its repr
    ("<... (GstWebRTCBin at 0x...)>")."""
    pointer = hash(obj)
    match = re.search(r" at (0x[0-9a-fA-F]+)\)>$", repr(obj))
    if match is None or int(match.group(1), 16) != pointer:
        raise RuntimeError(f"cannot tell the GObject pointer of {obj!r}")
    return pointer


def add_ice_local_address(webrtc: Gst.Element, address: str) -> None:
    """nice_agent_add_local_address() on webrtcbin's NiceAgent (see the module's docstring)."""
    gobject = ctypes.CDLL("libgobject-2.0.so.0")
    nice = ctypes.CDLL("libnice.so.10")
    gobject.g_object_get.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p]
    gobject.g_object_get.restype = None
    gobject.g_object_unref.argtypes = [ctypes.c_void_p]
    gobject.g_object_unref.restype = None
    nice.nice_address_new.argtypes = []
    nice.nice_address_new.restype = ctypes.c_void_p
    nice.nice_address_set_from_string.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    nice.nice_address_set_from_string.restype = ctypes.c_int
    nice.nice_agent_add_local_address.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    nice.nice_agent_add_local_address.restype = ctypes.c_int
    nice.nice_address_free.argtypes = [ctypes.c_void_p]
    nice.nice_address_free.restype = None

    webrtc_ptr = gobject_pointer(webrtc)
    ice = ctypes.c_void_p()
    gobject.g_object_get(webrtc_ptr, b"ice-agent", ctypes.byref(ice), None)  # a new reference
    if not ice.value:
        raise RuntimeError("webrtcbin has no ice-agent")
    agent = ctypes.c_void_p()
    try:
        gobject.g_object_get(ice, b"agent", ctypes.byref(agent), None)  # GstWebRTCNice's NiceAgent
        if not agent.value:
            raise RuntimeError("webrtcbin's ice-agent has no NiceAgent")
        nice_address = nice.nice_address_new()
        try:
            if not nice.nice_address_set_from_string(nice_address, address.encode()):
                raise ValueError(f"not an IP address: {address!r}")
            if not nice.nice_agent_add_local_address(agent, nice_address):
                raise RuntimeError(f"nice_agent_add_local_address({address}) failed")
        finally:
            nice.nice_address_free(nice_address)
    finally:
        if agent.value:
            gobject.g_object_unref(agent)
        gobject.g_object_unref(ice)


# ---- signaling -------------------------------------------------------------------------------


class Signaling:
    """websocket-client: blocking connect + join, then a reader thread that hands each message
    to the GLib main loop."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.create_connection(url, timeout=10, enable_multithread=True)
        self._send_lock = threading.Lock()
        self.closed_code: int | None = None

    def send(self, message: dict[str, Any]) -> bool:
        try:
            with self._send_lock:
                self.ws.send(json.dumps(message))
            return True
        except (websocket.WebSocketException, OSError):
            return False

    def receive(self) -> dict[str, Any] | None:
        """The next JSON message, or None once the socket is closed (`closed_code` set)."""
        while True:
            try:
                opcode, data = self.ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError):
                self.closed_code = self.closed_code or 1006
                return None
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                self.closed_code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                return None
            if opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                try:
                    message = json.loads(data)
                except ValueError:
                    continue
                if isinstance(message, dict):
                    return message

    def close(self) -> None:
        with contextlib.suppress(websocket.WebSocketException, OSError):
            self.ws.close(timeout=2)


# ---- the peer --------------------------------------------------------------------------------


class Peer:
    def __init__(self, args: argparse.Namespace, signaling: Signaling, loop: GLib.MainLoop) -> None:
        self.args = args
        self.signaling = signaling
        self.loop = loop
        self.role: str = args.role
        self.pipeline = Gst.Pipeline.new("gst-peer")
        self.webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
        if self.webrtc is None:
            raise RuntimeError("no webrtcbin (gstreamer1.0-plugins-bad)")
        self.webrtc.set_property("bundle-policy", BUNDLE_POLICIES[args.bundle_policy])
        # webrtcbin 1.22 refuses "balanced" ("Balanced bundle policy not implemented yet", a GST_ERROR
        # log line) and keeps its previous policy, the default "none": say what is in effect
        effective = self.webrtc.get_property("bundle-policy").value_nick
        # no STUN/TURN server: webrtcbin's default (NULL). Setting None from Python stores "" instead,
        # and libnice then logs "Stun server '' has no host" (an ERROR, though nothing is contacted)
        stun, turn = self.webrtc.get_property("stun-server"), self.webrtc.get_property("turn-server")
        if stun or turn:
            raise RuntimeError(f"webrtcbin has a STUN/TURN server by default: {stun!r} {turn!r}")
        emit("policy", requested=args.bundle_policy, effective=effective, stun_server=stun, turn_server=turn)
        self.pipeline.add(self.webrtc)
        add_ice_local_address(self.webrtc, args.local_address)
        self.offered = False
        self.offer_refused = False  # the server answered the offer with an error: trickle no more
        self.local_sdp: str | None = None
        self.offer_sent = False
        self.mids: list[str | None] = []
        self.pending_candidates: list[tuple[int, str]] = []
        self.counts = {"video_frames": 0, "audio_buffers": 0, "video_encoded": 0, "audio_encoded": 0}
        self.first_frame_ms: int | None = None
        self.connected = False
        self.connected_ms: int | None = None
        self._lock = threading.Lock()

        self.webrtc.connect("on-negotiation-needed", self._on_negotiation_needed)
        self.webrtc.connect("on-ice-candidate", self._on_ice_candidate)
        self.webrtc.connect("notify::ice-connection-state", self._on_ice_state)
        self.webrtc.connect("notify::ice-gathering-state", self._on_gathering_state)
        self.webrtc.connect("notify::connection-state", self._on_connection_state)
        self.webrtc.connect("pad-added", self._on_pad_added)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self._on_bus_error)
        bus.connect("message::warning", self._on_bus_warning)

        if self.role == "host":
            self._add_host_sources()
        else:
            for caps in (VIDEO_CAPS, AUDIO_CAPS):
                self.webrtc.emit(
                    "add-transceiver",
                    GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY,
                    Gst.Caps.from_string(caps),
                )

    # -- media

    def _add_host_sources(self) -> None:
        pattern, bitrate = ("snow", 2_000_000) if self.args.full_packets else ("ball", 300_000)
        video = Gst.parse_bin_from_description(
            f"videotestsrc is-live=true pattern={pattern} ! video/x-raw,width=320,height=240,framerate=15/1 "
            f"! videoconvert ! queue ! vp8enc name=venc deadline=1 keyframe-max-dist=30 target-bitrate={bitrate} "
            f"! rtpvp8pay picture-id-mode=15-bit pt={VIDEO_PT} ! queue",
            True,
        )
        audio = Gst.parse_bin_from_description(
            "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! queue ! opusenc name=aenc "
            f"! rtpopuspay pt={AUDIO_PT} ! queue",
            True,
        )
        for name, bin_, encoder, key in (
            ("video", video, "venc", "video_encoded"),
            ("audio", audio, "aenc", "audio_encoded"),
        ):
            bin_.set_name(f"{name}-source")
            self.pipeline.add(bin_)
            bin_.get_by_name(encoder).get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._count, key)
            if not bin_.link(self.webrtc):
                raise RuntimeError(f"cannot link the {name} source to webrtcbin")

    def _count(self, pad: Gst.Pad, info: Gst.PadProbeInfo, key: str) -> Gst.PadProbeReturn:
        first_ms = None
        with self._lock:
            self.counts[key] += 1
            if key == "video_frames" and self.first_frame_ms is None:
                first_ms = self.first_frame_ms = elapsed_ms()
        if first_ms is not None:
            connected_ms = self.connected_ms
            emit(
                "first_frame", ms=first_ms, after_connected_ms=None if connected_ms is None else first_ms - connected_ms
            )
        return Gst.PadProbeReturn.OK

    def _on_pad_added(self, webrtc: Gst.Element, pad: Gst.Pad) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps() or pad.query_caps(None)
        structure = caps.get_structure(0) if caps and caps.get_size() else None
        media = structure.get_string("media") if structure else None
        encoding = (structure.get_string("encoding-name") or "") if structure else ""
        emit("pad", media=media, encoding=encoding, name=pad.get_name())
        if media == "video":
            description, key = "rtpvp8depay ! vp8dec ! fakesink name=sink sync=false async=false", "video_frames"
        elif media == "audio":
            description, key = "rtpopusdepay ! opusdec ! fakesink name=sink sync=false async=false", "audio_buffers"
        else:
            description, key = "fakesink sync=false async=false", None
        sink = Gst.parse_bin_from_description("queue ! " + description, True)
        self.pipeline.add(sink)
        sink.sync_state_with_parent()
        if key is not None:
            sink.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, self._count, key)
        if pad.link(sink.get_static_pad("sink")) != Gst.PadLinkReturn.OK:
            emit("warning", message=f"cannot link {pad.get_name()} ({caps.to_string() if caps else None})")

    # -- negotiation

    def _on_negotiation_needed(self, webrtc: Gst.Element) -> None:
        if self.offered:
            return  # one offer per session here (a later one would be an ICE restart)
        self.offered = True
        promise = Gst.Promise.new_with_change_func(self._on_offer_created, None)
        webrtc.emit("create-offer", None, promise)

    def _on_offer_created(self, promise: Gst.Promise, _data: Any) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None else None
        if offer is None:
            emit("fatal", message=f"create-offer failed: {reply.to_string() if reply else None}")
            GLib.idle_add(self.loop.quit)
            return
        self.local_sdp = offer.sdp.as_text()
        self.mids = sdp_mids(self.local_sdp)
        self.webrtc.emit("set-local-description", offer, None)
        emit(
            "offer",
            mids=self.mids,
            sdp=self.local_sdp if self.args.print_sdp else None,
            **offer_summary(self.local_sdp),
        )
        self.signaling.send({"type": "offer", "sdp": self.local_sdp})
        with self._lock:
            self.offer_sent = True
            pending, self.pending_candidates = self.pending_candidates, []
        for index, candidate in pending:
            self._send_candidate(index, candidate)

    def apply_answer(self, sdp: str) -> None:
        result, message = GstSdp.SDPMessage.new_from_text(sdp)
        if result != GstSdp.SDPResult.OK:
            emit("fatal", message="the answer does not parse")
            return
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, message)
        promise = Gst.Promise.new_with_change_func(self._on_answer_set, None)
        self.webrtc.emit("set-remote-description", answer, promise)

    def _on_answer_set(self, promise: Gst.Promise, _data: Any) -> None:
        reply = promise.get_reply()
        error = reply.get_value("error") if reply is not None and reply.has_field("error") else None
        if error is not None:
            emit("answer_rejected", message=str(error))
        else:
            emit("answer_applied")

    def _on_ice_candidate(self, webrtc: Gst.Element, index: int, candidate: str) -> None:
        self._trickle(index, candidate[2:] if candidate.startswith("a=") else candidate)

    def _trickle(self, index: int, candidate: str) -> None:
        """Send a candidate ("" = end of candidates), after the offer (the server wants that order)."""
        if self.args.no_trickle:
            return
        with self._lock:
            if not self.offer_sent:
                self.pending_candidates.append((index, candidate))
                return
        self._send_candidate(index, candidate)

    def _send_candidate(self, index: int, candidate: str) -> None:
        if self.offer_refused:
            return  # the session has no offer: the server would answer each with bad_message
        mid = self.mids[index] if 0 <= index < len(self.mids) else None
        emit("candidate", candidate=candidate, sdpMLineIndex=index, sdpMid=mid)
        self.signaling.send({"type": "candidate", "candidate": candidate, "sdpMid": mid, "sdpMLineIndex": index})

    def _on_gathering_state(self, webrtc: Gst.Element, _spec: Any) -> None:
        state = webrtc.get_property("ice-gathering-state")
        emit("gathering", state=state.value_nick)
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            self._trickle(0, "")

    def _on_ice_state(self, webrtc: Gst.Element, _spec: Any) -> None:
        emit("ice", state=webrtc.get_property("ice-connection-state").value_nick)

    def _on_connection_state(self, webrtc: Gst.Element, _spec: Any) -> None:
        state = webrtc.get_property("connection-state")
        emit("connection", state=state.value_nick, ms=elapsed_ms())
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED and not self.connected:
            self.connected = True
            self.connected_ms = elapsed_ms()
            emit("connected", ms=self.connected_ms)

    def _on_bus_error(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        error, debug = message.parse_error()
        emit("gst_error", source=message.src.get_name() if message.src else None, message=error.message, debug=debug)

    def _on_bus_warning(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        warning, _debug = message.parse_warning()
        emit("gst_warning", source=message.src.get_name() if message.src else None, message=warning.message)

    # -- signaling messages (on the main loop)

    def on_message(self, message: dict[str, Any]) -> bool:
        kind = message.get("type")
        if kind == "answer":
            emit("answer", sdp=message.get("sdp") if self.args.print_sdp else None)
            self.apply_answer(str(message.get("sdp", "")))
        elif kind == "error":
            if message.get("code") in ("bad_sdp", "unsupported_codec") and self.offered:
                self.offer_refused = True
            emit("error", code=message.get("code"), message=message.get("message"))
        elif kind == "room":
            emit("room", viewer_count=message.get("viewer_count"), has_host=message.get("has_host"))
        elif kind == "stopped":
            emit("stopped", reason=message.get("reason"))
        elif kind == "pong":
            emit("pong")
        else:
            emit("message", message=message)
        return False

    def stats(self) -> bool:
        with self._lock:
            counts = dict(self.counts)
        emit("stats", ms=elapsed_ms(), **counts)
        return True

    def start(self) -> None:
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise RuntimeError("the pipeline does not start")

    def stop(self) -> None:
        self.stats()
        self.pipeline.set_state(Gst.State.NULL)


def quit_on_signals_and_stdin(loop: GLib.MainLoop, *, watch_stdin: bool = True) -> Callable[..., bool]:
    """End `loop` on SIGTERM or SIGINT and, with `watch_stdin`, at stdin's end (the test that
    started this process went away). Returns the quitting callback (for timers too)."""

    def quit_(*_args: Any) -> bool:
        loop.quit()
        return False

    def on_stdin(_fd: int, condition: GLib.IOCondition) -> bool:
        try:
            data = os.read(0, 4096)
        except OSError:
            data = b""
        if not data or condition & (GLib.IOCondition.HUP | GLib.IOCondition.ERR):
            loop.quit()
            return False
        return True

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, quit_)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, quit_)
    if watch_stdin:
        ended = GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR
        GLib.io_add_watch(0, GLib.PRIORITY_DEFAULT, ended, on_stdin)
    return quit_


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=("host", "viewer"), required=True)
    parser.add_argument("--ws", required=True, help="ws://127.0.0.1:PORT/ws")
    parser.add_argument("--room", required=True)
    parser.add_argument("--user", default=None)
    parser.add_argument("--token", default=None)
    parser.add_argument("--bundle-policy", choices=sorted(BUNDLE_POLICIES), default="max-bundle")
    parser.add_argument("--seconds", type=float, default=30.0, help="run this long, then leave")
    parser.add_argument("--local-address", default="127.0.0.1", help="ICE host candidate address")
    parser.add_argument("--ping-interval", type=float, default=PING_SECONDS, help="seconds between pings")
    parser.add_argument("--stats-interval", type=float, default=0.5)
    parser.add_argument("--no-trickle", action="store_true", help="send no candidates (ICE-lite server)")
    parser.add_argument("--ignore-stdin", action="store_true", help="do not end on stdin EOF")
    parser.add_argument("--print-sdp", action="store_true", help="put the offer and answer SDP in the events")
    parser.add_argument(
        "--full-packets",
        action="store_true",
        help="host: a noisy picture at 2 Mbit/s, so rtpvp8pay fills packets to its default MTU (1,400)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Gst.init(None)
    try:
        signaling = Signaling(args.ws)
    except (websocket.WebSocketException, OSError) as exc:
        emit("closed", code=None, message=f"cannot connect: {exc!r}")
        return 1
    join: dict[str, Any] = {"type": "join", "room_id": args.room, "role": args.role}
    if args.user is not None:
        join["user_id"] = args.user
    if args.token is not None:
        join["token"] = args.token
    signaling.send(join)
    first = signaling.receive()
    if first is None or first.get("type") != "joined":
        if first is not None and first.get("type") == "error":
            emit("error", code=first.get("code"), message=first.get("message"))
            signaling.receive()  # the close that follows
        emit("closed", code=signaling.closed_code)
        signaling.close()
        return 1
    emit("joined", **{k: v for k, v in first.items() if k != "type"})

    loop = GLib.MainLoop()
    try:
        peer = Peer(args, signaling, loop)
    except (RuntimeError, ValueError, GLib.Error) as exc:
        emit("fatal", message=f"cannot build the pipeline: {exc}")
        signaling.send({"type": "leave"})
        signaling.close()
        return 1
    stopping = threading.Event()
    closed_seen = threading.Event()

    def reader() -> None:
        while True:
            message = signaling.receive()
            if message is None:
                break
            GLib.idle_add(peer.on_message, message)
        if not stopping.is_set():
            closed_seen.set()
            emit("closed", code=signaling.closed_code)
            GLib.idle_add(loop.quit)

    def ping() -> bool:
        return signaling.send({"type": "ping"})

    quit_ = quit_on_signals_and_stdin(loop, watch_stdin=not args.ignore_stdin)
    GLib.timeout_add(int(args.seconds * 1000), quit_)
    GLib.timeout_add(int(args.ping_interval * 1000), ping)
    GLib.timeout_add(max(50, int(args.stats_interval * 1000)), peer.stats)
    threading.Thread(target=reader, name="signaling", daemon=True).start()
    peer.start()
    try:
        loop.run()
    finally:
        stopping.set()
        peer.stop()
        if signaling.closed_code is None:
            signaling.send({"type": "leave"})
            deadline = time.monotonic() + 2
            while signaling.closed_code is None and time.monotonic() < deadline:
                time.sleep(0.02)  # the reader sees the server's close (1000 after leave)
        closed_code = signaling.closed_code
        signaling.close()
        if not closed_seen.is_set():
            emit("closed", code=closed_code, by="us")
        emit("exit", ms=elapsed_ms())
    return 0


if __name__ == "__main__":
    sys.exit(main())
