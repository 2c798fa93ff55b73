"""What one viewer's link carries, and which simulcast layer it gets: sans-IO, time passed in.

**The estimate** (Galène's rules, `rtpconn/rtpwriter.go`): a rate that grows by 269/256 at
each receiver report with less than 5/256 loss and shrinks by (512 - loss)/512 when the loss
is over 25/256, capped by the viewer's REMB when it sends one (libwebrtc does when
transport-cc is not negotiated, as here). Costs nothing per packet: it moves once a second.

**The layer** (`LayerPolicy.choose`), one step at a time, with hysteresis (mediasoup's and
Galène's lessons; the complaints to beat are oscillation and freezes):

- down at once when the current layer's rate is over the estimate (congestion costs frames);
- up only when the next layer's rate fits under 0.7 of the estimate, at least
  ``HOLD_AFTER_DOWN`` seconds after a bandwidth-driven downgrade and ``MIN_LAYER_SECONDS``
  after any switch;
- no video at all (audio only) when even the lowest layer is over the estimate for
  ``AUDIO_ONLY_AFTER`` seconds; video comes back (probing toward it) when it fits.

**Probing.** A viewer's REMB cannot climb much over what it receives (libwebrtc caps it at
1.5x the incoming rate), so a viewer moved down would never be moved up again on the estimate
alone. When a step up is wanted and allowed but does not fit yet, the router pads the
viewer's stream (RTP padding, never media) up to the next layer's rate (with UP_FIT's margin)
for ``PROBE_SECONDS``; the viewer's estimate follows what it receives, and the step up comes
when it fits. A probe that brings loss stops at once and the next one waits twice as long
(``PROBE_INTERVAL`` doubling up to ``PROBE_INTERVAL_MAX``): probing never costs the viewer a
frame, only spare bandwidth.
"""

from __future__ import annotations

import math
from typing import Final

from media.layers import AUDIO_ONLY, QualityReason

__all__ = ["AUDIO_ONLY", "Decision", "LayerPolicy", "ViewerBandwidth"]

GROW: Final = 269 / 256  # per receiver report with little loss (Galène)
#: ... but while under the viewer's REMB (after a lossy spell) it grows back this much faster:
#: the REMB says what the link carries now, and a loss-based rate that crawls back at 5 % a
#: second would hold a viewer on a low layer for half a minute after its link cleared.
RECOVER: Final = 1.25
LOW_LOSS: Final = 5  # /256: grow below this
HIGH_LOSS: Final = 25  # /256: shrink above this
MIN_BPS: Final = 50_000
MAX_BPS: Final = 20_000_000
HOLD_AFTER_DOWN: Final = 10.0  # no step up for this long after a bandwidth-driven step down
MIN_LAYER_SECONDS: Final = 2.0  # a layer is kept at least this long (no flapping)
#: A step up needs the next layer's rate under this share of the estimate: the rest is room
#: for its keyframes (a low layer's keyframe is a quarter second of its rate and more; on a
#: link filled to 7/8, the queue it leaves takes seconds to drain, and frames wait behind it).
UP_FIT: Final = 0.7
#: A step down needs the current layer's (smoothed) rate over the estimate by this factor: a
#: viewer's REMB trails a layer whose host encoder is still ramping up by a second or two.
DOWN_OVER: Final = 1.1
#: A viewer's REMB is ignored this long after it starts: libwebrtc reports its initial guess
#: (300 kbit/s) until it has measured what it receives, 5 s in.
REMB_GRACE: Final = 6.0
AUDIO_ONLY_AFTER: Final = 4.0  # seconds with the lowest layer clearly too much before video stops
AUDIO_ONLY_MARGIN: Final = 1.25  # "clearly": its rate over the estimate by this factor
PROBE_SECONDS: Final = 10.0  # a probe lasts until the step up fits, or loss, or this long
PROBE_INTERVAL: Final = 2.0  # the first probe this long after a step up was first held back
PROBE_INTERVAL_MAX: Final = 6.0
#: A probe pads up to this much more than the next layer's rate needs (with UP_FIT's margin):
#: a probe that proves its rate proves that the next layer fits; more would only fill a capped
#: link's buffer further before the receiver says so (a second of frames late).
PROBE_OVERSHOOT: Final = 1.0
#: A probe that has run this long with no sign of congestion (no loss, the REMB not falling)
#: proves its rate: libwebrtc's REMB, growing at most 8 % a second, would take half a minute
#: to climb from a low layer to the top one; the probe says in seconds whether the link
#: carries the next.
PROBE_PROOF_SECONDS: Final = 2.5
#: A probe's padding grows to its target over this long (a slow start): on a link that cannot
#: carry the target, the receiver says so while the excess, and the queue it builds, are small.
PROBE_RAMP_SECONDS: Final = 1.5
ALLOCATION_STEP: Final = 0.5  # how often the router asks each viewer's policy again (its ALLOCATE_INTERVAL)
REMB_FALL: Final = 0.95  # a REMB under this share of the one before: a sign of congestion
#: The current layer is taken as carried when, with no sign of congestion, the viewer's
#: feedback says at least this share of its rate (a REMB trails what it receives).
WELL_SHARE: Final = 0.5
QUEUE_SIGN_SECONDS: Final = 0.1  # a round trip this much over the least seen: a sign ...
QUEUE_HEAVY_SECONDS: Final = 0.3  # ... this much: congestion
CONGESTION_SIGNS: Final = 3  # this many signs ...
CONGESTION_WINDOW: Final = 2.0  # ... within this many seconds: congestion


class Decision:
    """What the router does for a viewer now: the layer to send (an index into the layers,
    lowest first, or AUDIO_ONLY), why it changed (if it did: "bandwidth", "requested",
    "host"), and the padding rate to add (bits a second; 0: none)."""

    __slots__ = ("layer", "padding_bps", "reason")

    def __init__(self, layer: int, padding_bps: int = 0, reason: QualityReason | None = None) -> None:
        self.layer = layer
        self.padding_bps = padding_bps
        self.reason = reason

    def __repr__(self) -> str:
        return f"Decision(layer={self.layer}, padding_bps={self.padding_bps}, reason={self.reason!r})"


class ViewerBandwidth:
    """The estimate of one viewer's link (see the module's docstring), in bits a second, all
    its streams together (a REMB covers them all)."""

    __slots__ = (
        "_loss_rate",
        "_remb_from",
        "_signs",
        "congested_at",
        "last_loss",
        "last_sign_at",
        "lossy_since",
        "min_round_trip",
        "proven_bps",
        "remb_bps",
    )

    def __init__(self, initial_bps: int, now: float) -> None:
        self._loss_rate = float(initial_bps)
        self._remb_from = now + REMB_GRACE
        self.remb_bps: int | None = None
        self.last_loss = 0  # /256, of the latest report
        self.lossy_since: float | None = None  # when the loss last went over HIGH_LOSS
        #: signs of congestion: loss over LOW_LOSS, the REMB falling (libwebrtc cuts it when
        #: its delay-based detector sees a queue growing), the round trip growing. One alone is a suspicion (a probe
        #: stops); CONGESTION_SIGNS within CONGESTION_WINDOW, or loss over HIGH_LOSS, are
        #: congestion: what was proven is forgotten and the REMB and the loss rule again. (A
        #: delay spike of a busy receiver cuts a REMB once or twice; a link that is full keeps
        #: cutting it, 5-6 times in a second here, and loses packets.)
        self._signs: list[float] = []
        self.last_sign_at = float("-inf")
        self.congested_at = float("-inf")
        #: a rate delivered for PROBE_PROOF_SECONDS with no sign of congestion (a probe's, or
        #: the layer the viewer gets): the link carries it until congestion, however slowly
        #: the REMB climbs back after a false alarm
        self.proven_bps = 0
        self.min_round_trip = float("inf")  # seconds: the link with no queue

    @property
    def measured_bps(self) -> int:
        """What the viewer's feedback says: the loss-based rate, capped by its REMB."""
        rate = self._loss_rate if self.remb_bps is None else min(self._loss_rate, self.remb_bps)
        return int(rate)

    @property
    def bps(self) -> int:
        """The estimate: what the feedback says, or what was proven if more."""
        return max(self.measured_bps, self.proven_bps)

    def on_remb(self, bps: int, now: float) -> None:
        if now < self._remb_from:
            return
        bps = max(MIN_BPS, bps)
        if self.remb_bps is not None and bps < self.remb_bps * REMB_FALL:
            self._sign(now, heavy=False)
        self.remb_bps = bps

    def on_round_trip(self, seconds: float, now: float) -> None:
        """A round trip measured from the viewer's report block: its excess over the least seen
        is the queue on the link. The one sign that still works when the REMB is far under
        what the viewer receives (libwebrtc only ever cuts it to 85 % of that) and before the
        queue overflows into loss."""
        if seconds < 0:
            return
        self.min_round_trip = min(self.min_round_trip, seconds)
        queue = seconds - self.min_round_trip
        if queue > QUEUE_SIGN_SECONDS:
            self._sign(now, heavy=queue > QUEUE_HEAVY_SECONDS)

    def proven(self, bps: int) -> None:
        """``bps`` was delivered without a sign of congestion."""
        self.proven_bps = max(self.proven_bps, bps)

    def _sign(self, now: float, *, heavy: bool) -> None:
        self.last_sign_at = now
        self._signs = [t for t in self._signs if now - t <= CONGESTION_WINDOW] + [now]
        if heavy or len(self._signs) >= CONGESTION_SIGNS:
            self.congested_at = now
            self.proven_bps = 0

    def on_loss(self, fraction_lost: int, now: float) -> None:
        """A receiver report's fraction lost (0..255) for the viewer's video."""
        self.last_loss = fraction_lost
        if fraction_lost > LOW_LOSS:
            self._sign(now, heavy=fraction_lost > HIGH_LOSS)
        if fraction_lost < LOW_LOSS:
            grown = self._loss_rate * GROW
            if self.remb_bps is not None and grown < self.remb_bps:  # back toward the REMB, faster
                grown = min(self.remb_bps, self._loss_rate * RECOVER)
            self._loss_rate = min(MAX_BPS, grown)
        elif fraction_lost > HIGH_LOSS:
            self._loss_rate = max(MIN_BPS, self._loss_rate * (512 - fraction_lost) / 512)
            self.lossy_since = now
        if self.remb_bps is not None:  # the loss-based rate never runs far ahead of the REMB
            self._loss_rate = min(self._loss_rate, 2.0 * self.remb_bps)


class LayerPolicy:
    """One viewer's layer choice over time (see the module's docstring)."""

    __slots__ = (
        "_down_at",
        "_probe_from",
        "_probe_interval",
        "_probe_started",
        "_probe_until",
        "_switched_at",
        "_too_much_since",
        "layer",
    )

    def __init__(self) -> None:
        self.layer: int | None = None  # None until the first choice
        self._switched_at = float("-inf")
        self._down_at = float("-inf")
        self._too_much_since: float | None = None
        self._probe_until = float("-inf")
        self._probe_from = float("-inf")
        self._probe_interval = PROBE_INTERVAL
        self._probe_started = float("-inf")

    def reset(self) -> None:
        """Choose afresh at the next call (the viewer asked for another quality)."""
        self.layer = None

    def choose(self, now: float, estimate: ViewerBandwidth, rates: list[int], cap: int | None) -> Decision:
        """The layer for now, given the layers' rates (bits a second, lowest first; 0: the
        layer is not flowing) and the highest layer the viewer asked for (None: any;
        AUDIO_ONLY: none)."""
        available = [i for i, rate in enumerate(rates) if rate > 0]
        current = self.layer
        if cap == AUDIO_ONLY:
            return self._settle(now, AUDIO_ONLY, "requested")
        if not available:  # no rate known yet (or nothing flows): keep the choice, or take the cap
            if current is None:
                return self._settle(now, len(rates) - 1 if cap is None else min(cap, len(rates) - 1), "requested")
            return Decision(current)
        top = available[-1] if cap is None else max((i for i in available if i <= cap), default=available[0])
        bps = estimate.bps
        fitting = [i for i in available if i <= top and rates[i] <= bps]
        if current is None:  # the first choice: the best layer that fits (the lowest if none does)
            return self._settle(now, fitting[-1] if fitting else available[0], "requested")
        if current != AUDIO_ONLY and (current not in available or current > top):  # it stopped flowing
            return self._settle(now, fitting[-1] if fitting else available[0], "host")
        if current != AUDIO_ONLY and self._went_well(now, estimate, rates[current]):
            estimate.proven(rates[current])
            bps = estimate.bps
        if current != AUDIO_ONLY and rates[current] > bps * DOWN_OVER:
            down = self._down(now, estimate, available, rates, current)
            if down is not None:
                return down
        else:
            self._too_much_since = None
        if current == AUDIO_ONLY:
            nxt = available[0]
        else:
            above = [i for i in available if current < i <= top]
            if not above:
                return Decision(current)
            nxt = above[0]
        if now - self._down_at < HOLD_AFTER_DOWN:
            return Decision(current)
        if rates[nxt] <= bps * UP_FIT and now - self._switched_at >= MIN_LAYER_SECONDS:
            return self._settle(now, nxt, "bandwidth")
        return Decision(current, self._probe(now, estimate, rates, current, nxt))

    def _went_well(self, now: float, estimate: ViewerBandwidth, rate: int) -> bool:
        """The current layer has gone on for PROBE_PROOF_SECONDS without a sign of congestion
        and the viewer's feedback is not far under it (a REMB trails a layer whose encoder is
        ramping up, and one that has just come back up): the link carries it, and a later
        false alarm (a REMB cut once by a busy receiver) does not take the viewer down."""
        quiet = now - max(estimate.last_sign_at, self._switched_at) >= PROBE_PROOF_SECONDS
        return quiet and estimate.remb_bps is not None and estimate.measured_bps >= rate * WELL_SHARE

    def _down(
        self, now: float, estimate: ViewerBandwidth, available: list[int], rates: list[int], current: int
    ) -> Decision | None:
        """The current layer is more than the link carries: the best lower one that fits,
        else the lowest, else (after AUDIO_ONLY_AFTER seconds at the lowest, clearly over the
        estimate and losing packets) audio only. None: the lowest is kept and the link is not
        losing: its estimate may only reflect how little it gets (a REMB stays within 1.5x of
        what arrives), so it is probed as usual."""
        bps = estimate.bps
        lower = [i for i in available if i < current]
        if lower:
            fitting = [i for i in lower if rates[i] <= bps]
            self._down_at = now
            return self._settle(now, fitting[-1] if fitting else lower[0], "bandwidth")
        # audio only needs loss too: a REMB alone sinks far under the link for a while after
        # congestion (libwebrtc backs off to 85 %, then climbs at ~8 % a second)
        lossy = estimate.last_loss > HIGH_LOSS
        if rates[current] <= bps * AUDIO_ONLY_MARGIN or not lossy:  # keep the lowest layer
            self._too_much_since = None
            return None
        if self._too_much_since is None:
            self._too_much_since = now
        if now - self._too_much_since < AUDIO_ONLY_AFTER:
            return Decision(current)
        self._down_at = now
        return self._settle(now, AUDIO_ONLY, "bandwidth")

    def _probe(self, now: float, estimate: ViewerBandwidth, rates: list[int], current: int, nxt: int) -> int:
        """Padding (bits a second) to add now so that the viewer's link is tried at the next
        layer's rate (and a little more): a probe that runs PROBE_PROOF_SECONDS with no sign of
        congestion proves that rate (the step up follows); one that meets congestion stops at
        once. Each probe doubles the wait before the next one (up to PROBE_INTERVAL_MAX); a step
        up resets it, and the next step is probed at once."""
        sending = rates[current] if current != AUDIO_ONLY else 0
        target = math.ceil(rates[nxt] * PROBE_OVERSHOOT / UP_FIT)  # proving it proves that nxt fits
        if now < self._probe_until:
            if estimate.last_sign_at >= self._probe_started:  # the link may be full: stop, wait
                self._probe_until = float("-inf")
                self._probe_from = now + self._probe_interval
                return 0
            elapsed = now - self._probe_started
            if elapsed >= PROBE_PROOF_SECONDS and estimate.remb_bps is not None:
                estimate.proven(target)
            return max(0, int((target - sending) * min(1.0, (elapsed + ALLOCATION_STEP) / PROBE_RAMP_SECONDS)))
        if now >= self._probe_from and now - estimate.last_sign_at >= PROBE_PROOF_SECONDS:
            self._probe_started = now
            self._probe_until = now + PROBE_SECONDS
            self._probe_from = now + PROBE_SECONDS + self._probe_interval
            self._probe_interval = min(PROBE_INTERVAL_MAX, 2 * self._probe_interval)
            return max(0, int((target - sending) * min(1.0, ALLOCATION_STEP / PROBE_RAMP_SECONDS)))
        return 0

    def _settle(self, now: float, layer: int, reason: QualityReason) -> Decision:
        if layer == self.layer:
            return Decision(layer)
        stepped_up = reason == "bandwidth" and self.layer is not None and layer > self.layer  # AUDIO_ONLY < 0
        self.layer = layer
        self._switched_at = now
        self._too_much_since = None
        self._probe_until = float("-inf")
        if stepped_up:  # a step that worked: probes are cheap again, and the next one starts now
            self._probe_interval = PROBE_INTERVAL
            self._probe_from = now
        return Decision(layer, 0, reason)
