"""What one viewer's link carries, and which simulcast layer it gets: sans-IO, time passed in.

**The estimate** (Galène's rules, `rtpconn/rtpwriter.go`): a rate that grows by 269/256 at
each receiver report with less than 5/256 loss and shrinks by (512 - loss)/512 when the loss
is over 25/256, capped by the viewer's REMB when it sends one (libwebrtc does when
transport-cc is not negotiated, as here). Costs nothing per packet: it moves once a second.

**The layer** (`LayerPolicy.choose`), one step at a time, with hysteresis (mediasoup's and
Galène's lessons; the complaints to beat are oscillation and freezes):

- down at once when the current layer's rate is over the estimate (congestion costs frames);
- up only when the next layer's rate fits under 7/8 of the estimate, at least
  ``HOLD_AFTER_DOWN`` seconds after a bandwidth-driven downgrade and ``MIN_LAYER_SECONDS``
  after any switch;
- no video at all (audio only) when even the lowest layer is over the estimate for
  ``AUDIO_ONLY_AFTER`` seconds; video comes back (probing toward it) when it fits.

**Probing.** A viewer's REMB cannot climb much over what it receives (libwebrtc caps it at
1.5x the incoming rate), so a viewer moved down would never be moved up again on the estimate
alone. When a step up is wanted and allowed but does not fit yet, the router pads the
viewer's stream (RTP padding, never media) up to the next layer's rate for
``PROBE_SECONDS``; the viewer's estimate follows what it receives, and the step up comes
when it fits. A probe that brings loss stops at once and the next one waits twice as long
(``PROBE_INTERVAL`` doubling up to ``PROBE_INTERVAL_MAX``): probing never costs the viewer a
frame, only spare bandwidth.
"""

from __future__ import annotations

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
UP_FIT: Final = 7 / 8  # a step up needs the next layer's rate under this share of the estimate
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
PROBE_INTERVAL_MAX: Final = 16.0
PROBE_BACKOFF_DROP: Final = 0.9  # a probe stops if the estimate falls under this share of its start


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

    __slots__ = ("_loss_rate", "_remb_from", "last_loss", "lossy_since", "remb_bps")

    def __init__(self, initial_bps: int, now: float) -> None:
        self._loss_rate = float(initial_bps)
        self._remb_from = now + REMB_GRACE
        self.remb_bps: int | None = None
        self.last_loss = 0  # /256, of the latest report
        self.lossy_since: float | None = None  # when the loss last went over HIGH_LOSS

    @property
    def bps(self) -> int:
        rate = self._loss_rate if self.remb_bps is None else min(self._loss_rate, self.remb_bps)
        return int(rate)

    def on_remb(self, bps: int, now: float) -> None:
        if now >= self._remb_from:
            self.remb_bps = max(MIN_BPS, bps)

    def on_loss(self, fraction_lost: int, now: float) -> None:
        """A receiver report's fraction lost (0..255) for the viewer's video."""
        self.last_loss = fraction_lost
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
        "_probe_start_bps",
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
        self._probe_start_bps = 0

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
        if current != AUDIO_ONLY and rates[current] > bps * DOWN_OVER:
            return self._down(now, estimate, available, rates, current)
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

    def _down(
        self, now: float, estimate: ViewerBandwidth, available: list[int], rates: list[int], current: int
    ) -> Decision:
        """The current layer is more than the link carries: the best lower one that fits,
        else the lowest, else (after AUDIO_ONLY_AFTER seconds at the lowest, clearly over the
        estimate and losing packets) audio only."""
        self._probe_until = float("-inf")
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
            return Decision(current)
        if self._too_much_since is None:
            self._too_much_since = now
        if now - self._too_much_since < AUDIO_ONLY_AFTER:
            return Decision(current)
        self._down_at = now
        return self._settle(now, AUDIO_ONLY, "bandwidth")

    def _probe(self, now: float, estimate: ViewerBandwidth, rates: list[int], current: int, nxt: int) -> int:
        """Padding (bits a second) to add now so the viewer's estimate can grow to the next
        layer. Each probe doubles the wait before the next one (up to PROBE_INTERVAL_MAX); a
        step up resets it, and the next step is probed at once."""
        if now < self._probe_until:
            full = estimate.last_loss > LOW_LOSS or estimate.bps < self._probe_start_bps * PROBE_BACKOFF_DROP
            if full:  # the link is full (loss, or its delay grew): stop, and wait before the next
                self._probe_until = float("-inf")
                self._probe_from = now + self._probe_interval
                return 0
            sending = rates[current] if current != AUDIO_ONLY else 0
            return max(0, int(rates[nxt] / UP_FIT) - sending)
        if now >= self._probe_from and estimate.last_loss <= LOW_LOSS:
            self._probe_until = now + PROBE_SECONDS
            self._probe_from = now + PROBE_SECONDS + self._probe_interval
            self._probe_interval = min(PROBE_INTERVAL_MAX, 2 * self._probe_interval)
            self._probe_start_bps = estimate.bps
            return self._probe(now, estimate, rates, current, nxt)
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
