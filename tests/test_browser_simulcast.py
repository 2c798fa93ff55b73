"""Simulcast end to end in headless Chromium (issue 20): a host page publishing three layers
(320, 640 and 1280 wide from the fake camera's 1280x720) and viewer pages whose links differ.

One viewer's UDP is capped at 300 kbit/s by an htb class on `lo` that matches its port (the
suite runs in a network namespace of its own, where `tc` may do that): it must come down to
a layer its link carries within 15 s, then never go a second without a decoded frame; when
the cap is lifted it must climb back to 1280 within 30 s, while the unconstrained viewer
never leaves 1280. Then the viewers' own choices (the watch page's quality menu), dynacast
(a layer nobody needs stops at the host) and audio only. A WHEP player (web/whep.html, no client
of ours) gets the same as a viewer: down under the cap, back up after it.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.browser_support import CHROMIUM, JS_INBOUND_VIDEO_MIME, ServerProcess, poll_page, server_process

pytestmark = pytest.mark.browser

if not CHROMIUM.exists():
    pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
if shutil.which("tc") is None:
    pytest.skip("tc (iproute2) is not installed", allow_module_level=True)

from playwright.sync_api import BrowserContext  # noqa: E402

from media.vp8 import parse_vp8_descriptor_untrusted  # noqa: E402
from tests.browser_pages import (  # noqa: E402
    Tab,
    new_room,
    open_host,
    open_viewer,
    open_whep_page,
    require_client_served,
    start_live,
)
from tests.peer_process import start_peer  # noqa: E402
from tests.serving import prometheus_values  # noqa: E402

CAP = "300kbit"
CAP_BUFFER_BYTES = 300_000 // 8  # one second at CAP
TOP_WIDTH, MIDDLE_WIDTH, LOW_WIDTH = 1280, 640, 320
SAMPLE_MS = 200

# The local UDP port of the page's selected candidate pair (what the server sends to).
JS_LOCAL_PORT = """async () => {
  const s = (window.bitbasel && window.bitbasel.session) || window.whep;  // whep.html: window.whep
  const report = await s.peerConnection.getStats();
  const byId = {}; let selected = null;
  report.forEach((r) => { byId[r.id] = r; });
  report.forEach((r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) selected = byId[r.selectedCandidatePairId];
  });
  return selected && byId[selected.localCandidateId] ? byId[selected.localCandidateId].port : null;
}"""

# The host's video bytes sent, per rid.
JS_SENT_BY_RID = """async () => {
  const out = {};
  (await window.bitbasel.session.peerConnection.getStats()).forEach((r) => {
    if (r.type === 'outbound-rtp' && r.kind === 'video') out[r.rid ?? ''] = r.bytesSent ?? 0;
  });
  return out;
}"""


@dataclass
class Sample:
    at: float
    frames: int
    width: int
    audio_samples: int


@dataclass
class Watcher:
    """A viewer page sampled every SAMPLE_MS: frames decoded, the width of the last one."""

    tab: Tab
    samples: list[Sample] = field(default_factory=list)

    def sample(self) -> Sample:
        inbound = self.tab.inbound()
        video, audio = inbound.get("video", {}), inbound.get("audio", {})
        sample = Sample(
            time.monotonic(),
            int(video.get("framesDecoded", 0)),
            int(video.get("frameWidth", 0)),
            int(audio.get("totalSamplesReceived", 0)),
        )
        self.samples.append(sample)
        return sample

    def since(self, start: float) -> list[Sample]:
        return [s for s in self.samples if s.at >= start]

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time between two samples that saw new frames decoded, in [start, end]."""
        last_new: float | None = None
        previous = None
        longest = 0.0
        for s in self.samples:
            if previous is not None and s.frames > previous.frames and start <= s.at <= end:
                if last_new is not None:
                    longest = max(longest, s.at - last_new)
                last_new = s.at
            previous = s
        return longest


class Cap:
    """An htb class of CAP on `lo` for the UDP datagrams to one port (the viewer's)."""

    def __init__(self) -> None:
        self.installed = False

    def __enter__(self) -> Cap:
        tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "10")
        self.installed = True
        tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit")
        tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:20", "htb", "rate", CAP, "ceil", CAP)
        # a second of buffer, as on a mobile link (without it, lo's 1,000-packet queue would hold
        # half a minute of media at this rate)
        tc("qdisc", "add", "dev", "lo", "parent", "1:20", "handle", "20:", "bfifo", "limit", str(CAP_BUFFER_BYTES))
        return self

    def apply(self, port: int) -> None:
        match = ["u32", "match", "ip", "protocol", "17", "0xff", "match", "ip", "dport", str(port), "0xffff"]
        tc("filter", "add", "dev", "lo", "protocol", "ip", "parent", "1:", "prio", "1", *match, "flowid", "1:20")

    def lift(self) -> None:
        tc("filter", "del", "dev", "lo", "parent", "1:", "prio", "1")

    def __exit__(self, *exc: object) -> None:
        if self.installed:
            tc("qdisc", "del", "dev", "lo", "root")


def tc(*args: str) -> None:
    result = subprocess.run(["tc", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"tc {' '.join(args)}: {result.stderr.strip()} (run the suite with scripts/test)")


@pytest.fixture(scope="module")
def media_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with server_process(tmp_path_factory.mktemp("simulcast")) as server:
        require_client_served(server)
        yield server


def watch_until(watchers: list[Watcher], condition: Any, what: str, timeout: float) -> float:
    """Sample every watcher until `condition()` holds; the time it did (bounded)."""
    page = watchers[0].tab.page
    deadline = time.monotonic() + timeout
    while True:
        for w in watchers:
            w.sample()
        if condition():
            return time.monotonic()
        if time.monotonic() >= deadline:
            last = {w.tab.name: w.samples[-1] for w in watchers}
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last samples {last}")
        page.wait_for_timeout(SAMPLE_MS)


def watch_for(watchers: list[Watcher], seconds: float) -> None:
    page = watchers[0].tab.page
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for w in watchers:
            w.sample()
        page.wait_for_timeout(SAMPLE_MS)


def layers_of(server: ServerProcess, room_id: str) -> list[dict[str, Any]]:
    layers: list[dict[str, Any]] = server.room_stats(room_id)["forwarding"]["layers"]
    return layers


def test_each_viewer_gets_what_its_link_carries(context: BrowserContext, media_server: ServerProcess) -> None:
    room_id = new_room(media_server)
    host = open_host(context, media_server, room_id, "alice")
    start_live(host)
    free = Watcher(open_viewer(context, media_server, room_id, "unconstrained"))
    capped = Watcher(open_viewer(context, media_server, room_id, "capped"))
    joined = time.monotonic()
    both = [free, capped]

    # the host's three layers arrive, and a viewer with room to spare decodes the top one
    watch_until(both, lambda: free.samples[-1].width == TOP_WIDTH, "the unconstrained viewer at 1280", 40)
    assert time.monotonic() - joined <= 40
    widths = sorted(layer["width"] for layer in layers_of(media_server, room_id) if layer["width"])
    assert widths == [LOW_WIDTH, MIDDLE_WIDTH, TOP_WIDTH], layers_of(media_server, room_id)

    port = int(poll_page(capped.tab.page, JS_LOCAL_PORT, what="the capped viewer's selected candidate pair"))
    with Cap() as cap:
        cap.apply(port)
        capped_at = time.monotonic()
        down_at = watch_until(
            both, lambda: 0 < capped.samples[-1].width <= MIDDLE_WIDTH, "the capped viewer at 640 or less", 15
        )
        watch_for(both, 20)
        lifted_at = time.monotonic()
        gap = capped.longest_gap(down_at, lifted_at)
        shown = [(round(x.at - capped_at, 1), x.frames, x.width) for x in capped.since(down_at)]
        assert gap <= 1.0, f"the capped viewer went {gap:.1f} s without a decoded frame: {shown}"
        assert all(s.width <= MIDDLE_WIDTH for s in capped.since(down_at)), "it climbed while capped"
        cap.lift()
        back_at = watch_until(both, lambda: capped.samples[-1].width == TOP_WIDTH, "the viewer back at 1280", 30)
        print(f"capped: down in {down_at - capped_at:.1f} s, back at 1280 {back_at - lifted_at:.1f} s after the lift")
    assert all(s.width == TOP_WIDTH for s in free.since(capped_at)), "the unconstrained viewer left 1280"

    # a viewer's own choice: low from the watch page's menu, within 5 s, and it says so
    free.tab.page.select_option("#quality", "low")
    asked = time.monotonic()
    watch_until(both, lambda: free.samples[-1].width == LOW_WIDTH, "320 wide after choosing low", 5)
    assert time.monotonic() - asked <= 5
    assert free.tab.page.get_attribute("#layer", "data-layer") == "low"

    # dynacast: with only low viewers, the host stops sending its top layer after PAUSE_AFTER
    capped.tab.page.select_option("#quality", "low")
    sent = lambda: host.page.evaluate(JS_SENT_BY_RID)  # noqa: E731
    deadline = time.monotonic() + 20
    while True:
        before = sent()
        host.page.wait_for_timeout(2000)
        after = sent()
        if after["f"] == before["f"]:
            break
        assert time.monotonic() < deadline, f"the top layer is still sent: {before} -> {after}"
    assert after["q"] > before["q"], "the low layer must keep flowing"
    # ... and starts again within a second when a viewer asks for high (getStats lags a little)
    capped.tab.page.select_option("#quality", "high")
    resumed = sent()["f"]
    deadline = time.monotonic() + 1.5
    while sent()["f"] == resumed:
        assert time.monotonic() < deadline, "the top layer did not resume"
        host.page.wait_for_timeout(100)
    watch_until(both, lambda: capped.samples[-1].width == TOP_WIDTH, "1280 again after choosing high", 15)

    # audio only: the video stops, the audio goes on
    free.tab.page.select_option("#quality", "audio_only")
    watch_for(both, 2)
    stopped = free.samples[-1]
    watch_for(both, 3)
    assert free.samples[-1].frames == stopped.frames, "video still decoded after audio_only"
    assert free.samples[-1].audio_samples > stopped.audio_samples, "audio stopped with the video"
    assert free.tab.page.get_attribute("#layer", "data-layer") == "audio_only"
    for tab in (host, free.tab, capped.tab):
        tab.assert_no_errors()

    # what an operator sees: packets per layer, viewers per layer, switches and keyframe causes
    metrics = prometheus_values(media_server.rest("GET", "/metrics").text)
    for layer in ("low", "medium", "high"):
        assert metrics[f'bitbasel_layer_received_packets_total{{layer="{layer}"}}'] > 0
    assert metrics['bitbasel_layer_viewers{layer="audio_only"}'] >= 1
    assert metrics['bitbasel_layer_viewers{layer="high"}'] >= 1
    assert metrics['bitbasel_layer_switches_total{reason="bandwidth"}'] >= 2  # down under the cap, up after
    assert metrics['bitbasel_layer_switches_total{reason="requested"}'] >= 3
    assert metrics['bitbasel_keyframe_requests_total{cause="switch"}'] >= 1
    assert metrics["bitbasel_padding_bytes_total"] > 0  # the capped viewer's climb was probed


@pytest.mark.parametrize("codec", ["VP8", "H264"])
def test_a_whep_viewer_gets_what_its_link_carries(
    codec: str, context: BrowserContext, media_server: ServerProcess
) -> None:
    """A WHEP player (web/whep.html: no client of ours, no `set_quality`) is a viewer like any:
    its layer follows its link, down under the cap, back to 1280 after it; with a host that
    publishes its layers in H.264 too (layer switches at H.264 keyframes; VP8 alone is held to
    no second without a frame under the cap, see below)."""
    room_id = new_room(media_server)
    host = open_host(context, media_server, room_id, "alice", codec=codec)
    start_live(host)
    player = Watcher(open_whep_page(context, media_server, room_id, "WHEP player"))
    watch_until([player], lambda: player.samples[-1].width == TOP_WIDTH, "the WHEP player at 1280", 40)
    port = int(poll_page(player.tab.page, JS_LOCAL_PORT, what="the WHEP player's selected candidate pair"))
    with Cap() as cap:
        cap.apply(port)
        capped_at = time.monotonic()
        down_at = watch_until(
            [player], lambda: 0 < player.samples[-1].width <= MIDDLE_WIDTH, "the capped WHEP player at 640 or less", 15
        )
        watch_for([player], 10)
        gap = player.longest_gap(down_at, time.monotonic())
        if codec == "VP8":
            assert gap <= 1.0, f"the capped WHEP player went {gap:.1f} s without a decoded frame"
        # H.264 from Chromium has no temporal layers to thin the layer being left while a keyframe
        # is awaited, nor to step under the lowest one: under this hard cap it freezes for seconds
        # at times (1.7 and 4.4 s seen). Not asserted: a known limit (the note), printed.
        print(f"WHEP player ({codec}): longest freeze under the cap {gap:.1f} s")
        cap.lift()
        lifted_at = time.monotonic()
        back_at = watch_until([player], lambda: player.samples[-1].width == TOP_WIDTH, "the WHEP player at 1280", 30)
        print(f"WHEP player ({codec}): down in {down_at - capped_at:.1f} s, back at 1280 {back_at - lifted_at:.1f} s")
    assert player.tab.page.evaluate(JS_INBOUND_VIDEO_MIME) == f"video/{codec}"
    for tab in (host, player.tab):
        tab.assert_no_errors()


def unwrap(values: list[int], bits: int) -> list[int]:
    """Wrapping counters (sequence numbers, timestamps) as a line: each step is the signed
    shortest distance from the one before."""
    half, size = 1 << (bits - 1), 1 << bits
    out = values[:1]
    for a, b in itertools.pairwise(values):
        out.append(out[-1] + ((b - a + half) % size) - half)
    return out


def test_an_aiortc_viewer_sees_one_continuous_stream_across_forced_switches(
    context: BrowserContext, media_server: ServerProcess, tmp_path: Any
) -> None:
    room_id = new_room(media_server)
    host = open_host(context, media_server, room_id, "alice")
    start_live(host)
    dump = tmp_path / "viewer-rtp.json"
    qualities = "low,high,low,medium,low"
    options = ("--qualities", qualities, "--every", "3", "--dump", str(dump))
    viewer = start_peer(media_server, room_id, "viewer", options=options)
    try:
        viewer.wait_line("dumped", timeout=90)
    finally:
        viewer.stop()
    received = json.loads(dump.read_text())
    told = received["told"]
    switches = sum(1 for a, b in itertools.pairwise(told) if a != b)
    assert switches >= 3, f"the layers it was told: {told}"
    packets = received["packets"]
    assert {ssrc for ssrc, *_ in packets} == {packets[0][0]}, "more than one video SSRC"

    # sequence numbers: in arrival order, at most one gap per switch (a retransmission of a
    # packet the viewer asked again for arrives late: a step back, not a gap)
    seqs = unwrap([seq for _, seq, _, _ in packets], 16)
    gaps = sum(1 for a, b in itertools.pairwise(seqs) if b - a > 1)
    assert gaps <= switches, f"{gaps} gaps in the sequence numbers for {switches} switches"

    # in sequence order (duplicates and padding aside): timestamps never go back, and each
    # frame's VP8 picture id is the one before plus one, TL0PICIDX the same or plus one
    by_seq = {seq: (ts, bytes.fromhex(head)) for seq, (_, _, ts, head) in zip(seqs, packets, strict=True)}
    ordered = [by_seq[seq] for seq in sorted(by_seq) if by_seq[seq][1]]
    timestamps = unwrap([ts for ts, _ in ordered], 32)
    assert all(b >= a for a, b in itertools.pairwise(timestamps)), "a timestamp went back"
    frames = []
    for _, head in ordered:
        descriptor = parse_vp8_descriptor_untrusted(head)
        if descriptor.start_of_partition and descriptor.partition_id == 0:
            frames.append((descriptor.picture_id, descriptor.tl0_pic_idx))
    assert len(frames) > 100, f"only {len(frames)} frames"
    pids = [pid for pid, _ in frames]
    assert all(p is not None for p in pids)
    steps = [(b - a) % (1 << 15) for a, b in itertools.pairwise(pids)]  # type: ignore[operator]
    assert set(steps) == {1}, f"picture ids jump: {sorted(set(steps))}"
    tl0s = [tl0 for _, tl0 in frames]
    assert {(b - a) % 256 for a, b in itertools.pairwise(tl0s)} <= {0, 1}, "TL0PICIDX jumps"  # type: ignore[operator]
    host.assert_no_errors()
