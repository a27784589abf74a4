"""alexnet.stats against numbers worked out by hand, and the verdict rules one by one."""
from __future__ import annotations

import math

import pytest

from alexnet import stats
from alexnet.errors import AlexNetError


def test_mean_and_sample_sd_by_hand():
    # 2, 4, 4, 4, 5, 5, 7, 9: sum 40, mean 5; squared deviations 9+1+1+1+0+0+4+16 = 32;
    # sample variance 32 / 7, sd √(32/7) = 2.138090 (the population sd would be √4 = 2).
    xs = [2, 4, 4, 4, 5, 5, 7, 9]
    assert stats.mean(xs) == 5
    assert stats.sample_sd(xs) == pytest.approx(math.sqrt(32 / 7), rel=1e-15)
    assert math.isnan(stats.sample_sd([3.0]))
    with pytest.raises(AlexNetError):
        stats.mean([])


@pytest.mark.parametrize("p, df, expected", [
    (0.975, 1, 12.706205),   # published tables (e.g. NIST/SEMATECH e-Handbook, table 1.4.2.7)
    (0.975, 2, 4.302653),
    (0.975, 4, 2.776445),
    (0.975, 5, 2.570582),
    (0.975, 9, 2.262157),
    (0.975, 30, 2.042272),
    (0.95, 10, 1.812461),
    (0.995, 3, 5.840909),
])
def test_t_quantile_matches_tables(p, df, expected):
    assert stats.t_quantile(p, df) == pytest.approx(expected, abs=1e-6)
    assert stats.t_quantile(1 - p, df) == pytest.approx(-expected, abs=1e-6)


def test_t_cdf_closed_forms():
    # df = 1 is Cauchy: P(T ≤ 1) = 1/2 + atan(1)/π = 3/4.
    assert stats.t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-15)
    # df = 2 has P(T ≤ t) = 1/2 + t / (2√(2 + t²)); at t = 1: 1/2 + 1/(2√3) = 0.788675.
    assert stats.t_cdf(1.0, 2) == pytest.approx(0.5 + 1 / (2 * math.sqrt(3)), abs=1e-15)
    # Large df tends to the normal: Φ(1.959964) = 0.975.
    assert stats.t_cdf(1.959964, 100_000) == pytest.approx(0.975, abs=1e-5)
    assert stats.t_cdf(0.0, 7) == 0.5
    with pytest.raises(AlexNetError):
        stats.t_cdf(1.0, 2.5)


def test_paired_difference_by_hand():
    # a = 10, 12, 14; b = 11, 15, 16 → differences 1, 3, 2: mean 2, sample sd 1 (deviations
    # −1, 1, 0; 2 / 2 = 1), standard error 1/√3 = 0.577350; t(0.975, 2) = 4.302653;
    # half-width 4.302653 × 0.577350 = 2.484138 → [−0.484138, 4.484138].
    ci = stats.paired_difference([10, 12, 14], [11, 15, 16])
    assert ci.estimate == pytest.approx(2.0)
    assert ci.low == pytest.approx(2 - 2.484138, abs=1e-6)
    assert ci.high == pytest.approx(2 + 2.484138, abs=1e-6)
    assert (ci.n, ci.null, ci.kind, ci.level) == (3, 0.0, "difference", 0.95)
    assert stats.verdict(ci, "greater") == "cannot tell"   # the interval reaches below 0


def test_paired_ratio_by_hand():
    # relu 100, 200, 400; tanh 200, 800, 800 → ratios 2, 4, 2; logs ln2, 2 ln2, ln2:
    # mean (4/3) ln2 = 0.924196, so the geometric mean is 2^(4/3) = 2.519842;
    # sd of the logs: deviations (−1/3, 2/3, −1/3) ln2, squares sum (6/9) ln²2, ÷ 2 → (1/3) ln²2,
    # sd = ln2/√3 = 0.400189; se = ln2/3 = 0.231049; half-width 4.302653 × 0.231049 = 0.994124;
    # interval exp(0.924196 ∓ 0.994124) = [0.932458, 6.809518].
    ci = stats.paired_ratio([100, 200, 400], [200, 800, 800])
    assert ci.estimate == pytest.approx(2 ** (4 / 3), rel=1e-12)
    assert ci.low == pytest.approx(math.exp(0.924196 - 0.994124), rel=1e-5)
    assert ci.high == pytest.approx(math.exp(0.924196 + 0.994124), rel=1e-5)
    assert (ci.null, ci.kind) == (1.0, "ratio")
    assert stats.locate(6.0, ci) == "inside"
    assert stats.verdict(ci, "greater") == "cannot tell"
    # The interval is symmetric on the log scale: swapping the arms inverts it.
    inv = stats.paired_ratio([200, 800, 800], [100, 200, 400])
    assert (inv.low, inv.high) == pytest.approx((1 / ci.high, 1 / ci.low), rel=1e-12)


def test_paired_inputs_checked():
    with pytest.raises(AlexNetError):
        stats.paired_difference([1, 2], [1, 2, 3])
    with pytest.raises(AlexNetError):
        stats.paired_ratio([1, 0], [1, 2])
    with pytest.raises(AlexNetError):
        stats.paired_difference([], [])
    one = stats.paired_ratio([2.0], [6.0])   # one seed: an estimate and no interval
    assert one.estimate == pytest.approx(3.0)
    assert (one.low, one.high) == (0.0, math.inf)
    assert stats.verdict(one, "greater") == "cannot tell"


def _iv(low, high, null=0.0, kind="difference"):
    return stats.Interval((low + high) / 2, low, high, 0.95, 5, null, "test", kind)


@pytest.mark.parametrize("low, high, direction, expected", [
    (0.5, 2.0, "greater", "held"),          # wholly above 0, and above was claimed
    (-2.0, -0.5, "less", "held"),
    (-2.0, -0.5, "greater", "not held"),    # wholly on the other side
    (0.5, 2.0, "less", "not held"),
    (-1.0, 1.0, "greater", "cannot tell"),  # straddles the null
    (0.0, 1.0, "greater", "cannot tell"),   # touching the null is not excluding it
])
def test_verdict_rules(low, high, direction, expected):
    assert stats.verdict(_iv(low, high), direction) == expected


def test_verdict_margin_for_differences_and_ratios():
    # A tight interval around "no effect" says the claimed effect, if any, is too small.
    assert stats.verdict(_iv(-0.1, 0.2), "greater", margin=0.5) == "not held"
    assert stats.verdict(_iv(-0.1, 0.8), "greater", margin=0.5) == "cannot tell"
    # For a ratio the margin is a factor: [1/1.2, 1.2] around 1.
    assert stats.verdict(_iv(0.9, 1.1, 1.0, "ratio"), "greater", margin=1.2) == "not held"
    assert stats.verdict(_iv(0.9, 1.3, 1.0, "ratio"), "greater", margin=1.2) == "cannot tell"
    assert stats.verdict(_iv(1.5, 9.0, 1.0, "ratio"), "greater") == "held"
    with pytest.raises(AlexNetError):
        stats.verdict(_iv(0, 1), "bigger")


def test_locate():
    iv = _iv(2.0, 4.0)
    assert [stats.locate(v, iv) for v in (1.0, 2.0, 3.0, 4.0, 6.0)] == \
        ["below", "inside", "inside", "inside", "above"]
