"""Media byte counters shared by a room's connections and read by the stats."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ByteCounters:
    bytes_sent: int = 0  # SRTP/SRTCP datagram bytes sent to viewers
    bytes_received: int = 0  # SRTP/SRTCP datagram bytes received from hosts
