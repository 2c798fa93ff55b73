"""Per-viewer seq/ts/picture-id mapping (media/seqmap.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from media.seqmap import SeqMap


def test_new_viewer_sees_host_numbers() -> None:
    m = SeqMap(90000)
    assert not m.active
    m.start(1, 500, 9000, now=1.0, in_pid=7)
    assert m.active
    assert (m.out_seq(501), m.out_ts(12000)) == (501, 12000)
    assert m.accepts(500) and m.accepts(510) and not m.accepts(499)


def test_switch_is_continuous() -> None:
    m = SeqMap(90000)
    m.start(1, 65530, 4_294_960_000, now=0.0, in_pid=0x7FFE)
    # last packet of the old source: seq 5 (wrapped), ts 4_294_963_000, pid 0x7FFF
    m.end(5, 4_294_963_000, 10.0, highest_pid=0x7FFF, highest_pid_bits=15)
    assert not m.active
    last_out_seq = m.out_seq(5)
    m.start(2, 1000, 777, now=10.5, in_pid=42)
    assert m.out_seq(1000) == (last_out_seq + 1) & 0xFFFF == 6
    assert m.out_ts(777) == (4_294_963_000 + 45000) & 0xFFFFFFFF
    assert (42 + m.pid_offset) & 0x7FFF == 0  # 0x7FFF + 1 wraps to 0
    assert m.out_seq(1001) == 7


def test_switch_ts_advances_at_least_one_tick() -> None:
    m = SeqMap(48000)
    m.start(1, 10, 100, now=5.0)
    m.end(10, 100, 5.0)
    m.start(2, 0, 0, now=5.0)
    assert m.out_ts(0) == 101


def test_reverse_mapping() -> None:
    m = SeqMap(90000)
    m.start(1, 100, 0, now=0.0)
    m.end(150, 0, 1.0)
    m.start(2, 65500, 0, now=1.1)
    out = m.out_seq(65535)
    assert m.input_seq(out, 2, highest_in_seq=3) == 65535
    assert m.input_seq(m.out_seq(3), 2, highest_in_seq=3) == 3
    assert m.input_seq(m.out_seq(4), 2, highest_in_seq=3) is None  # not received yet
    assert m.input_seq(m.out_seq(65499), 2, highest_in_seq=3) is None  # before start
    assert m.input_seq(out, 1, highest_in_seq=3) is None  # another epoch


@given(
    st.lists(
        st.tuples(st.integers(0, 65535), st.integers(0, 2**32 - 1), st.integers(1, 300)),
        min_size=1,
        max_size=8,
    )
)
def test_output_seq_is_continuous_across_switches(epochs: list[tuple[int, int, int]]) -> None:
    """Whatever each source's numbering, the viewer sees seq +1 per packet and ts increasing."""
    m = SeqMap(90000)
    now = 0.0
    expected: int | None = None
    last_ts: int | None = None
    for epoch, (first_seq, first_ts, count) in enumerate(epochs, start=1):
        m.start(epoch, first_seq, first_ts, now)
        for k in range(count):
            seq = (first_seq + k) & 0xFFFF
            ts = (first_ts + 3000 * k) & 0xFFFFFFFF
            out = m.out_seq(seq)
            if expected is not None:
                assert out == expected
            if last_ts is not None:
                assert 0 < (m.out_ts(ts) - last_ts) & 0xFFFFFFFF < 0x80000000
            expected = (out + 1) & 0xFFFF
            last_ts = m.out_ts(ts)
            now += 1 / 30
        last = count - 1
        m.end((first_seq + last) & 0xFFFF, (first_ts + 3000 * last) & 0xFFFFFFFF, now - 1 / 30)
