"""Contract test: the private pylibsrtp hooks of transport/srtp.py still exist and still
do what the server needs (RTP up to a 1,500-byte datagram is protected and unprotected).

If this fails after a pylibsrtp upgrade, the message names the hook and why the server uses
it: fix transport/srtp.py (and its HOOKS table) first, or drop the hook if pylibsrtp now
sizes its buffer for such packets by itself (the last test says so).
"""

from __future__ import annotations

import os

import pylibsrtp
import pytest

from tests.rtp_packets import build_rtp_packet
from transport.srtp import BUFFER_BYTES, HOOKS, MAX_MEDIA_DATAGRAM, new_session

KEY = os.urandom(30)  # AES_CM_128_HMAC_SHA1_80: 16-byte key + 14-byte salt


def policy(ssrc_type: int) -> pylibsrtp.Policy:
    return pylibsrtp.Policy(key=KEY, ssrc_type=ssrc_type, srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)


def rtp(size: int, seq: int = 1) -> bytes:
    packet = build_rtp_packet(payload_type=96, sequence_number=seq, timestamp=0, ssrc=1, payload=b"")
    return packet + bytes(size - len(packet))


@pytest.mark.parametrize("hook", HOOKS, ids=lambda h: f"{h.owner}.{h.attribute}")
def test_hook_exists(hook: object) -> None:
    owner, attribute, why = hook  # type: ignore[misc]
    target = pylibsrtp if owner == "pylibsrtp" else pylibsrtp.Session(policy(pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    assert hasattr(target, attribute), f"pylibsrtp hook moved: {owner}.{attribute} (transport/srtp.py: {why})"


def test_a_full_size_packet_round_trips() -> None:
    tx = new_session(policy(pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    rx = new_session(policy(pylibsrtp.Policy.SSRC_ANY_INBOUND))
    for seq, size in enumerate((100, 1357, 1400, 1480, MAX_MEDIA_DATAGRAM - 10), start=1):
        packet = rtp(size, seq)
        protected = tx.protect(packet)
        assert len(protected) == size + 10 and rx.unprotect(protected) == packet
    assert BUFFER_BYTES >= MAX_MEDIA_DATAGRAM + 144


def test_plain_pylibsrtp_still_refuses_what_the_hook_is_for() -> None:
    """When this fails, pylibsrtp protects 1,400-byte packets by itself: the hook can go."""
    with pytest.raises(ValueError, match="too long"):
        pylibsrtp.Session(policy(pylibsrtp.Policy.SSRC_ANY_OUTBOUND)).protect(rtp(1400))
