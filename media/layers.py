"""Simulcast layers as viewers and the protocol name them: sans-IO helpers of the router.

A host publishes one video stream, or up to three simulcast layers (RFC 8853), each with its
own SSRC and rid. PROTOCOL.md names them by resolution, lowest first: ``low``, ``medium``,
``high`` (two layers: ``low``, ``high``; one: ``high``). The router orders its video sources
by the frame size their keyframes carry once every flowing layer has shown one, and by the
host's rid order until then (the JS client lists the lowest first, as browsers send them).

A viewer asks for a quality (``set_quality``): ``auto``, ``high``, ``medium``, ``low`` or
``audio_only``; :func:`quality_cap` turns it into the highest layer index it may get.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "AUDIO_ONLY",
    "LAYER_NAMES",
    "LOW_TEMPORAL_STEPS",
    "QUALITIES",
    "TID_ALL",
    "LayerName",
    "Quality",
    "QualityReason",
    "layer_names",
    "layer_of_step",
    "quality_cap",
    "step_of",
]

#: The layer index meaning "no video": the viewer gets audio only.
AUDIO_ONLY: Final = -1

Quality = Literal["auto", "high", "medium", "low", "audio_only"]
LayerName = Literal["high", "medium", "low", "audio_only"]  # what a viewer gets
QualityReason = Literal["bandwidth", "requested", "host", "codec"]  # why that changed
QUALITIES: Final[tuple[Quality, ...]] = ("auto", "high", "medium", "low", "audio_only")
LAYER_NAMES: Final[tuple[LayerName, ...]] = ("low", "medium", "high")
_RANK: Final = {"low": 0, "medium": 1, "high": 2}


_NAMES: Final[dict[int, tuple[LayerName, ...]]] = {1: ("high",), 2: ("low", "high"), 3: LAYER_NAMES}


def layer_names(count: int) -> tuple[LayerName, ...]:
    """The names of ``count`` layers, lowest first."""
    return _NAMES.get(count, ())


def quality_cap(quality: Quality, count: int) -> int | None:
    """The highest layer index (of ``count``, lowest first) a viewer asking for ``quality`` may
    get: None for ``auto`` (any), AUDIO_ONLY for ``audio_only``; a name the room does not have
    means the best layer not above it (``medium`` in a room of ``low`` and ``high``: ``low``)."""
    key = (quality, count)
    return _CAPS[key] if key in _CAPS else _quality_cap(quality, count)


def _quality_cap(quality: Quality, count: int) -> int | None:
    if quality == "auto":
        return None
    if quality == "audio_only":
        return AUDIO_ONLY
    rank = _RANK[quality]
    names = layer_names(count)
    fitting = [i for i, name in enumerate(names) if _RANK[name] <= rank]
    return fitting[-1] if fitting else 0


#: quality_cap's answers for the rooms there are (asked every tick for every viewer)
_CAPS: Final[dict[tuple[Quality, int], int | None]] = {
    (quality, count): _quality_cap(quality, count) for quality in QUALITIES for count in _NAMES
}


#: "Every temporal layer" as a cap on the TID forwarded.
TID_ALL: Final = 3
#: A simulcast viewer's choices are *steps*, lowest first: the lowest layer at its base
#: temporal layer (TID 0: a quarter of the frame rate in the usual L1T3), then at TIDs 0-1
#: (half), then whole; then each higher layer whole. The temporal steps are the finer step
#: under the lowest layer, before audio only (and relief while a spatial step down waits for
#: its keyframe); a higher layer is never sent at a lower frame rate (a smaller picture at the
#: full rate is what viewers prefer).
LOW_TEMPORAL_STEPS: Final = 2


def step_of(layer: int, tid: int = TID_ALL) -> int:
    """The step of ``layer`` (an index, lowest first) capped at ``tid``."""
    if layer == 0 and tid < LOW_TEMPORAL_STEPS:
        return tid
    return layer + LOW_TEMPORAL_STEPS


def layer_of_step(step: int) -> tuple[int, int]:
    """(layer index, TID cap) of a step."""
    if step < LOW_TEMPORAL_STEPS:
        return 0, step
    return step - LOW_TEMPORAL_STEPS, TID_ALL
