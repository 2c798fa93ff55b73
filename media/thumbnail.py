"""A VP8 keyframe to a JPEG (PyAV: libvpx decodes, FFmpeg's MJPEG encoder writes the JPEG).

Called only when someone asks for a room's thumbnail, in a worker thread (PyAV releases
the GIL while it decodes and encodes). Raises `ThumbnailError` for a frame that does not
decode.
"""

from __future__ import annotations

from fractions import Fraction

import av

JPEG_QUALITY_SCALE = 4  # FFmpeg's qscale for MJPEG: 2 (best) .. 31; 4 is a good thumbnail


class ThumbnailError(ValueError):
    pass


def keyframe_to_jpeg(vp8_frame: bytes) -> tuple[bytes, int, int]:
    """(JPEG bytes, width, height) of a whole VP8 keyframe."""
    decoder = av.CodecContext.create("vp8", "r")
    try:
        frames = decoder.decode(av.Packet(vp8_frame))
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
