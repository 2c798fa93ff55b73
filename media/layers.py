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
    "QUALITIES",
    "LayerName",
    "Quality",
    "QualityReason",
    "layer_names",
    "quality_cap",
]

#: The layer index meaning "no video": the viewer gets audio only.
AUDIO_ONLY: Final = -1

Quality = Literal["auto", "high", "medium", "low", "audio_only"]
LayerName = Literal["high", "medium", "low", "audio_only"]  # what a viewer gets
QualityReason = Literal["bandwidth", "requested", "host", "codec"]  # why that changed
QUALITIES: Final[tuple[Quality, ...]] = ("auto", "high", "medium", "low", "audio_only")
LAYER_NAMES: Final[tuple[LayerName, ...]] = ("low", "medium", "high")
_RANK: Final = {"low": 0, "medium": 1, "high": 2}


def layer_names(count: int) -> tuple[LayerName, ...]:
    """The names of ``count`` layers, lowest first."""
    names: dict[int, tuple[LayerName, ...]] = {1: ("high",), 2: ("low", "high"), 3: LAYER_NAMES}
    return names.get(count, ())


def quality_cap(quality: Quality, count: int) -> int | None:
    """The highest layer index (of ``count``, lowest first) a viewer asking for ``quality`` may
    get: None for ``auto`` (any), AUDIO_ONLY for ``audio_only``; a name the room does not have
    means the best layer not above it (``medium`` in a room of ``low`` and ``high``: ``low``)."""
    if quality == "auto":
        return None
    if quality == "audio_only":
        return AUDIO_ONLY
    rank = _RANK[quality]
    names = layer_names(count)
    fitting = [i for i, name in enumerate(names) if _RANK[name] <= rank]
    return fitting[-1] if fitting else 0
