"""Sans-IO media core: RTP/RTCP parsing and rewriting, VP8 keyframe logic, the
per-room forwarder (router), SDP helpers.

Nothing in this package imports trio, asyncio or aiortc. Time is passed in as
``now`` (seconds, monotonic). Outputs go through plain callables handed in by
the caller (``send_rtp(bytes)``, ``send_rtcp(bytes)``), so tests can pass
``list.append`` and look at the bytes.
"""
