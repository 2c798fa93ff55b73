"""The forwarding-delay histogram (sans-IO): buckets, quantiles, windows."""

from __future__ import annotations

import math

import pytest

from media.delay_histogram import BOUNDS_US, DelayHistogram


def test_each_delay_lands_in_the_first_bucket_whose_bound_holds_it() -> None:
    histogram = DelayHistogram()
    for delay_us in (0, 25, 51, 1_000, 1_001, 2_000_000):
        histogram.record(delay_us * 1000)
    histogram.record(-5)  # a clock step backwards counts as no delay
    snap = histogram.snapshot()
    expected = [0] * (len(BOUNDS_US) + 1)
    expected[0] = 3  # 0, 25 and -5
    expected[BOUNDS_US.index(100)] = 1
    expected[BOUNDS_US.index(1_000)] = 1
    expected[BOUNDS_US.index(1_500)] = 1
    expected[-1] = 1  # above every bound
    assert list(snap.counts) == expected
    assert snap.total == 7
    assert snap.max_us == 2_000_000
    assert snap.sum_us == pytest.approx(25 + 51 + 1_000 + 1_001 + 2_000_000)


def test_quantiles_are_bucket_upper_bounds_never_under_estimates() -> None:
    histogram = DelayHistogram()
    for _ in range(990):
        histogram.record(40_000)  # 40 us
    for _ in range(10):
        histogram.record(4_000_000)  # 4 ms
    snap = histogram.snapshot()
    assert snap.quantile_us(0.5) == 50
    assert snap.quantile_us(0.99) == 50  # the 990th of 1,000
    assert snap.quantile_us(0.991) == 5_000
    assert snap.quantile_us(1.0) == 5_000
    histogram.record(10**10)
    assert math.isinf(histogram.snapshot().quantile_us(1.0))
    assert math.isnan(DelayHistogram().snapshot().quantile_us(0.99))
    with pytest.raises(ValueError):
        snap.quantile_us(1.5)


def test_a_window_is_the_difference_of_two_snapshots() -> None:
    histogram = DelayHistogram()
    for _ in range(100):
        histogram.record(8_000_000)  # 8 ms, before the window
    start = histogram.snapshot()
    for _ in range(100):
        histogram.record(180_000)  # 180 us, in the window
    window = histogram.snapshot().since(start)
    assert window.total == 100
    assert window.quantile_us(0.99) == 200
    assert window.sum_us == pytest.approx(100 * 180)
