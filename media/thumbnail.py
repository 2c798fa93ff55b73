"""A VP8 or H.264 keyframe to a JPEG (PyAV: libvpx or FFmpeg's H.264 decoder decodes, FFmpeg's
MJPEG encoder writes the JPEG).

Called only when someone asks for a room's thumbnail, in a worker thread (PyAV releases
the GIL while it decodes and encodes). Raises `ThumbnailError` for a frame that does not
decode.
"""

from __future__ import annotations

from fractions import Fraction

import av

from media.h264 import ANNEX_B_START_CODE

JPEG_QUALITY_SCALE = 4  # FFmpeg's qscale for MJPEG: 2 (best) .. 31; 4 is a good thumbnail


class ThumbnailError(ValueError):
    pass


def keyframe_to_jpeg(keyframe: bytes) -> tuple[bytes, int, int]:
    """(JPEG bytes, width, height) of a whole keyframe: VP8, or an H.264 access unit in Annex B
    with its parameter sets (media/router.py's ``latest_keyframe``)."""
    # an H.264 access unit starts with a start code (a VP8 keyframe's 4th byte is 0x9d)
    decoder = av.CodecContext.create("h264" if keyframe.startswith(ANNEX_B_START_CODE) else "vp8", "r")
    try:
        frames = decoder.decode(av.Packet(keyframe))
        if not frames:  # a decoder that holds the picture back gives it when flushed
            frames = decoder.decode(None)
    except av.error.FFmpegError as exc:
        raise ThumbnailError(f"the keyframe does not decode: {exc}") from exc
    if not frames:
        raise ThumbnailError("the keyframe gave no picture")
    picture = frames[0]
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width = picture.width
    encoder.height = picture.height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 30)
    encoder.options = {"qscale": str(JPEG_QUALITY_SCALE)}
    encoder.flags |= av.codec.context.Flags.qscale
    packets = encoder.encode(picture.reformat(format="yuvj420p"))
    packets += encoder.encode(None)
    if not packets:
        raise ThumbnailError("the JPEG encoder gave nothing")
    return bytes(packets[0]), picture.width, picture.height
