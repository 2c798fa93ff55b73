"""Receiver statistics and NACK generation toward the host (media/receive_stats.py)."""

from __future__ import annotations

from media.receive_stats import NackTracker, ReceiveStats


def test_loss_and_fraction_lost() -> None:
    s = ReceiveStats(0x11, 90000, first_seq=0)
    for seq in range(100):
        if seq % 10 != 5:
            s.update(seq, seq * 3000, seq / 30)
    b = s.report_block(4.0)
    assert b.ssrc == 0x11
    assert b.highest_seq == 99
    assert b.cumulative_lost == 10
    assert b.fraction_lost == (10 << 8) // 100
    # next interval: no loss
    for seq in range(100, 150):
        s.update(seq, seq * 3000, seq / 30)
    b = s.report_block(5.0)
    assert b.fraction_lost == 0
    assert b.cumulative_lost == 10


def test_cycles_on_wrap() -> None:
    s = ReceiveStats(1, 48000, first_seq=65530)
    for k in range(20):
        ext = s.update((65530 + k) & 0xFFFF, 960 * k, k * 0.02)
        assert ext == 65530 + k
    assert s.report_block(1.0).highest_seq == 65530 + 19
    # a reordered packet from before the wrap keeps its old cycle
    assert s.update(65535, 0, 1.0) == 65535


def test_jitter_zero_for_perfect_pacing_and_grows_otherwise() -> None:
    s = ReceiveStats(1, 90000, first_seq=0)
    for k in range(50):
        s.update(k, 3000 * k, k / 30)
    assert s.report_block(2.0).jitter == 0
    s.update(50, 3000 * 50, 50 / 30 + 0.05)
    assert s.report_block(2.0).jitter > 0


def test_lsr_dlsr() -> None:
    s = ReceiveStats(1, 90000, first_seq=0)
    s.update(0, 0, 0.0)
    assert s.report_block(0.0).lsr == 0
    s.on_sender_report(0x1122334455667788, now=10.0)
    b = s.report_block(10.5)
    assert b.lsr == 0x33445566
    assert b.dlsr == 32768


def test_nack_retries_then_gives_up() -> None:
    n = NackTracker(max_retries=3, retry_interval=0.04, max_age=1.0)
    n.on_packet(10, 0.0)
    n.on_packet(13, 0.0)  # 11, 12 missing
    assert n.due(0.0) == [11, 12]
    assert n.due(0.01) == []
    n.on_packet(12, 0.02)  # recovered
    assert n.due(0.05) == [11]
    assert n.due(0.10) == [11]
    assert n.due(0.20) == []  # three tries done
    assert n.gave_up == 0
    n.due(1.01)
    assert n.gave_up == 1
    assert len(n) == 0


def test_nack_wraps_with_extended_seqs() -> None:
    n = NackTracker()
    n.on_packet(65534, 0.0)
    n.on_packet(65536 + 1, 0.0)
    assert n.due(0.0) == [65535, 0]


def test_nack_huge_gap_is_not_nacked() -> None:
    n = NackTracker(max_missing=100)
    n.on_packet(0, 0.0)
    n.on_packet(1000, 0.0)
    assert n.due(0.0) == []
    assert n.overflowed == 1
