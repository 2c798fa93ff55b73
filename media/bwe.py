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
LOW_LOSS: Final = 5  # /256: grow below this
HIGH_LOSS: Final = 25  # /256: shrink above this
MIN_BPS: Final = 50_000
MAX_BPS: Final = 20_000_000
HOLD_AFTER_DOWN: Final = 10.0  # no step up for this long after a bandwidth-driven step down
MIN_LAYER_SECONDS: Final = 2.0  # a layer is kept at least this long (no flapping)
UP_FIT: Final = 7 / 8  # a step up needs the next layer's rate under this share of the estimate
AUDIO_ONLY_AFTER: Final = 4.0  # seconds with even the lowest layer too much before video stops
PROBE_SECONDS: Final = 3.0
PROBE_INTERVAL: Final = 4.0  # the first probe this long after the step up was first held back
PROBE_INTERVAL_MAX: Final = 60.0


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
    """The estimate of one viewer's link (see the module's docstring)."""

    __slots__ = ("_loss_rate", "last_loss", "lossy_since", "remb_bps")

    def __init__(self, initial_bps: int) -> None:
        self._loss_rate = float(initial_bps)
        self.remb_bps: int | None = None
        self.last_loss = 0  # /256, of the latest report
        self.lossy_since: float | None = None  # when the loss last went over HIGH_LOSS

    @property
    def bps(self) -> int:
        rate = self._loss_rate if self.remb_bps is None else min(self._loss_rate, self.remb_bps)
        return int(rate)

    def on_remb(self, bps: int) -> None:
        self.remb_bps = max(MIN_BPS, bps)

    def on_loss(self, fraction_lost: int, now: float) -> None:
        """A receiver report's fraction lost (0..255) for the viewer's video."""
        self.last_loss = fraction_lost
        if fraction_lost < LOW_LOSS:
            self._loss_rate = min(MAX_BPS, self._loss_rate * GROW)
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
        "_probe_until",
        "_switched_at",
        "_too_much_since",
        "_up_wanted_since",
        "layer",
    )

    def __init__(self) -> None:
        self.layer: int | None = None  # None until the first choice
        self._switched_at = float("-inf")
        self._down_at = float("-inf")
        self._too_much_since: float | None = None
        self._up_wanted_since: float | None = None
        self._probe_until = float("-inf")
        self._probe_from = float("-inf")
        self._probe_interval = PROBE_INTERVAL

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
        if current != AUDIO_ONLY and rates[current] > bps:
            return self._down(now, available, rates, current, bps)
        self._too_much_since = None
        if current == AUDIO_ONLY:
            nxt = available[0]
        else:
            above = [i for i in available if current < i <= top]
            if not above:
                return Decision(current)
            nxt = above[0]
        if now - self._down_at < HOLD_AFTER_DOWN or now - self._switched_at < MIN_LAYER_SECONDS:
            return Decision(current)
        if rates[nxt] <= bps * UP_FIT:
            return self._settle(now, nxt, "bandwidth")
        return Decision(current, self._probe(now, estimate, rates, current, nxt))

    def _down(self, now: float, available: list[int], rates: list[int], current: int, bps: int) -> Decision:
        """The current layer is more than the link carries: the best lower one that fits,
        else the lowest, else (after AUDIO_ONLY_AFTER seconds at the lowest) audio only."""
        self._probe_until = float("-inf")
        lower = [i for i in available if i < current]
        if lower:
            fitting = [i for i in lower if rates[i] <= bps]
            self._down_at = now
            return self._settle(now, fitting[-1] if fitting else lower[0], "bandwidth")
        if self._too_much_since is None:
            self._too_much_since = now
        if now - self._too_much_since < AUDIO_ONLY_AFTER:
            return Decision(current)
        self._down_at = now
        return self._settle(now, AUDIO_ONLY, "bandwidth")

    def _probe(self, now: float, estimate: ViewerBandwidth, rates: list[int], current: int, nxt: int) -> int:
        """Padding (bits a second) to add now so the viewer's estimate can grow to the next layer."""
        if now < self._probe_until:
            if estimate.last_loss > LOW_LOSS:  # the link is full: stop, and wait longer next time
                self._probe_until = float("-inf")
                self._probe_from = now + self._probe_interval
                self._probe_interval = min(PROBE_INTERVAL_MAX, 2 * self._probe_interval)
                return 0
            sending = rates[current] if current != AUDIO_ONLY else 0
            return max(0, int(rates[nxt] / UP_FIT) - sending)
        if self._up_wanted_since is None:
            self._up_wanted_since = now
            self._probe_from = max(self._probe_from, now + self._probe_interval)
        if now >= self._probe_from and estimate.last_loss <= LOW_LOSS:
            self._probe_until = now + PROBE_SECONDS
            self._probe_from = now + PROBE_SECONDS + self._probe_interval
        return 0

    def _settle(self, now: float, layer: int, reason: QualityReason) -> Decision:
        if layer == self.layer:
            return Decision(layer)
        self.layer = layer
        self._switched_at = now
        self._up_wanted_since = None
        self._too_much_since = None
        self._probe_until = float("-inf")
        if reason == "bandwidth" and layer != AUDIO_ONLY:
            self._probe_interval = PROBE_INTERVAL  # a step that worked: probes are cheap again
        return Decision(layer, 0, reason)
