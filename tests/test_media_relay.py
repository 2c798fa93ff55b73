"""A room across workers in the router alone (media/router.py's relays): the origin's router
sends the host's packets, unchanged, to an edge's router, which takes them for a host of its
own; the edge's keyframe requests and NACKs come back to the origin. Bytes in, bytes out, time
passed in (the transport between workers is tests/test_relay_port.py's)."""

from __future__ import annotations

import itertools

from media.router import Router
from media.rtcp import Pli, build_nack, build_pli, parse_rtcp_untrusted
from media.rtp import parse_rtp_untrusted
from tests.test_media_simulcast import Host, Viewer, sink, stream


class Pair:
    """An origin router (the host attached) and an edge router fed by a relay from it; what
    the host is sent, and what the relay carried."""

    def __init__(self, *, lose: set[int] | None = None) -> None:
        self.origin = Router(rtcp_ssrc=7, target_bitrate_bps=1_500_000)
        self.edge = Router(rtcp_ssrc=8, target_bitrate_bps=1_500_000)
        self.to_host: list[bytes] = []
        self.relayed = 0
        self.relayed_seqs: list[int] = []
        self.lose = lose or set()  # host seqs the relay loses on their first way
        self.now = 0.0
        self.origin.attach_publisher([stream()], self.to_host.append, 0.0)

    def attach_edge(self) -> None:
        self.origin.add_relay("edge-1", self._relay_rtp, lambda data: self.edge.on_publisher_rtcp(data, self.now))
        self.edge.attach_publisher(
            self.origin.publisher_streams(), lambda data: self.origin.on_relay_rtcp("edge-1", data, self.now), 0.0
        )

    def _relay_rtp(self, data: bytes) -> None:
        self.relayed += 1
        seq = parse_rtp_untrusted(data).sequence_number
        self.relayed_seqs.append(seq)
        if seq in self.lose:
            self.lose.discard(seq)
            return
        self.edge.on_publisher_rtp(data, self.now)

    def plis_to_host(self) -> int:
        return sum(isinstance(p, Pli) for d in self.to_host for p in parse_rtcp_untrusted(d))


def play(pair: Pair, host: Host, seconds: float, *, rids: tuple[str, ...] = ("q", "h", "f")) -> None:
    """30 frames a second of each layer (a keyframe each second), both routers ticking."""
    end = pair.now + seconds
    while pair.now < end:
        at = pair.now
        for rid in rids:
            for packet in host.layers[rid].frame(at, key=round(at * 30) % 30 == 0):
                pair.origin.on_publisher_rtp(packet, at)
        if round(at * 30) % 3 == 0:
            pair.origin.tick(at)
            pair.edge.tick(at)
        if round(at * 30) % 30 == 0:
            for layer in host.layers.values():
                pair.origin.on_publisher_rtcp(layer.sender_report(at), at)
        pair.now = round(at + 1 / 30, 6)


def test_an_edge_viewer_gets_one_continuous_stream_through_the_relay() -> None:
    pair, host, viewer = Pair(), Host(), Viewer()
    pair.attach_edge()
    pair.edge.add_viewer("v", sink(), viewer.rtp.append, viewer.rtcp.append, 0.0)
    play(pair, host, 3.0)
    media = viewer.media()
    assert len(media) > 60
    assert {h.ssrc for h, _ in media} == {0x5000}  # the viewer's own SSRC, as from a host of its own
    seqs = [h.sequence_number for h in viewer.headers()]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    assert pair.edge.statistics().packets_in == pair.relayed == pair.origin.statistics().packets_in
    # the edge's sender reports come from the host's, relayed
    assert pair.edge.statistics().sender_reports_sent > 0
    assert pair.origin.statistics().packets_out == 0  # the origin has no viewer of its own


def test_keyframe_requests_of_many_edges_cost_the_host_a_bounded_number() -> None:
    pair, host = Pair(), Host()
    pair.attach_edge()
    play(pair, host, 1.0)
    before = pair.plis_to_host()
    ssrc = host.layers["f"].ssrc
    for _ in range(50):  # a storm: 50 requests within a tenth of a second
        pair.origin.on_relay_rtcp("edge-1", build_pli(8, ssrc), pair.now)
        pair.now = round(pair.now + 0.002, 6)
    assert pair.plis_to_host() - before <= 1
    assert pair.origin.statistics().keyframe_requests["relay"] >= 1


def test_a_packet_the_relay_lost_is_resent_by_the_origin_on_the_edges_nack() -> None:
    host = Host()
    lost = host.layers["q"].seq + 10  # a packet of the low layer, early on
    pair, viewer = Pair(lose={lost}), Viewer()
    pair.attach_edge()
    pair.edge.add_viewer("v", sink(), viewer.rtp.append, viewer.rtcp.append, 0.0)
    play(pair, host, 2.0)
    assert not pair.lose  # it was lost once
    assert pair.edge.statistics().nacked_seqs >= 1  # the edge's tick asked its "host" for it
    assert pair.origin.statistics().retransmissions >= 1
    assert pair.relayed_seqs.count(lost) == 2  # sent again, by the origin, from its cache
    assert pair.plis_to_host() <= 2  # the origin did not pass the loss on to the host as a PLI storm
    # asked again at once: refused (RESEND_GUARD), not resent
    retransmissions = pair.origin.statistics().retransmissions
    pair.origin.on_relay_rtcp("edge-1", build_nack(8, host.layers["q"].ssrc, [lost]), pair.now)
    pair.origin.on_relay_rtcp("edge-1", build_nack(8, host.layers["q"].ssrc, [lost]), pair.now)
    assert pair.origin.statistics().retransmissions <= retransmissions + 1


def test_a_removed_relay_gets_nothing_more() -> None:
    pair, host = Pair(), Host()
    pair.attach_edge()
    play(pair, host, 0.5)
    count = pair.relayed
    pair.origin.remove_relay("edge-1")
    play(pair, host, 0.5)
    assert pair.relayed == count and pair.origin.relay_count == 0


def test_an_edge_opened_after_the_host_dropped_the_rid_learns_the_layers_from_the_origin() -> None:
    """A browser host stops sending the rid extension once its layers are reported on: a late
    edge knows the layers by the SSRCs its origin learned (OriginState.layer_ssrcs)."""
    pair, host, viewer = Pair(), Host(), Viewer()
    play(pair, host, 1.0)  # the origin learns the layers by their rid
    assert set(pair.origin.layer_ssrcs().values()) == {"q", "h", "f"}
    pair.attach_edge()
    pair.edge.learn_layer_ssrcs(pair.origin.layer_ssrcs())
    pair.edge.add_viewer("v", sink(), viewer.rtp.append, viewer.rtcp.append, pair.now)
    end = pair.now + 2.0
    while pair.now < end:  # no rid on any packet any more
        at = pair.now
        for rid in ("q", "h", "f"):
            for packet in host.layers[rid].frame(at, key=round(at * 30) % 30 == 0, with_rid=False):
                pair.origin.on_publisher_rtp(packet, at)
        if round(at * 30) % 3 == 0:
            pair.origin.tick(at)
            pair.edge.tick(at)
        pair.now = round(at + 1 / 30, 6)
    assert pair.edge.statistics().drops["unknown_rid"] == 0
    assert len(viewer.media()) > 30


def test_without_the_origins_layer_ssrcs_a_late_edge_cannot_tell_the_layers() -> None:
    pair, host = Pair(), Host()
    play(pair, host, 1.0)
    pair.attach_edge()
    for packet in host.layers["f"].frame(pair.now, key=True, with_rid=False):
        pair.origin.on_publisher_rtp(packet, pair.now)
    assert pair.edge.statistics().drops["unknown_rid"] > 0


def test_dynacast_keeps_the_layers_an_edges_viewers_need_and_lets_the_others_pause() -> None:
    pair, host = Pair(), Host()
    pair.attach_edge()
    play(pair, host, 1.0)
    assert pair.origin.needed_rids(pair.now) == ["q", "h", "f"]  # an edge that said nothing: every layer
    pair.origin.set_relay_needs("edge-1", ["q"])  # its viewers are all on the low layer
    later = pair.now + 11.0  # past PAUSE_AFTER
    assert pair.origin.needed_rids(later) == ["q"]
    pair.origin.set_relay_needs("edge-1", ["q", "h", "f"])  # one asks for more: back at once
    assert pair.origin.needed_rids(later) == ["q", "h", "f"]
