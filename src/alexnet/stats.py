"""Small statistics for paired comparisons across seeds: is an effect the paper reports there?

Krizhevsky et al. (2012) state their comparisons as single numbers ("six times faster", Figure 1;
"reduces our top-1 and top-5 error rates by 1.4% and 1.2%", §3.3). On a small CPU budget each of
our numbers moves with the seed, so every comparison here is made over several seeds, *paired*:
the two arms of one seed share their initial weights and the order of their data, and the seed's
arms are compared with each other before anything is averaged. Pairing removes the part of the
seed-to-seed spread that both arms share.

    diff = paired_difference(baseline, variant)   # mean of variant − baseline, 95% t-interval
    ratio = paired_ratio(relu_steps, tanh_steps)  # geometric mean of tanh/relu, 95% t-interval
    verdict(ratio, "greater")                     # "held" / "not held" / "cannot tell"
    detectable_difference(sd_diff, n)             # the smallest effect n pairs can resolve

No scipy: the Student t quantile is computed here from the exact closed form of the t
distribution for whole degrees of freedom (Abramowitz & Stegun 26.7.3-4), which is all that
paired data with n seeds needs (df = n − 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .errors import AlexNetError

VERDICTS = ("held", "not held", "cannot tell")


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval, and what "no effect" would be."""
    estimate: float   # mean difference, or geometric mean ratio
    low: float        # lower end of the interval (−inf, or 0 for a ratio, when n < 2)
    high: float       # upper end (+inf when n < 2)
    level: float      # coverage, e.g. 0.95
    n: int            # pairs (seeds) it rests on
    null: float       # the value meaning "no effect": 0 for a difference, 1 for a ratio
    method: str       # how it was computed, in words, for the report
    kind: str = "difference"  # "difference" (effects add) or "ratio" (effects multiply)

    def as_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "level": self.level,
                "n": self.n, "null": self.null, "method": self.method, "kind": self.kind}


# --- plain summaries ----------------------------------------------------------------------------

def mean(xs: Sequence[float]) -> float:
    xs = _floats(xs, "values")
    if not xs:
        raise AlexNetError("the mean of no values is undefined")
    return math.fsum(xs) / len(xs)


def sample_sd(xs: Sequence[float]) -> float:
    """Standard deviation with Bessel's correction (divide by n − 1): the spread of the population
    the seeds are drawn from, not of these n values alone. Undefined (nan) for one value."""
    xs = _floats(xs, "values")
    if len(xs) < 2:
        return math.nan
    m = mean(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


# --- Student's t --------------------------------------------------------------------------------

def t_cdf(t: float, df: int) -> float:
    """P(T ≤ t) for Student's t with a whole number of degrees of freedom, exactly.

    With θ = atan(t/√df), A = P(|T| ≤ |t|) is a finite trigonometric sum (A&S 26.7.3-4):
      df odd:  A = (2/π)·(θ + sinθ·(cosθ + (2/3)cos³θ + … + (2·4…(df−3))/(1·3…(df−2))·cos^(df−2)θ))
      df even: A = sinθ·(1 + (1/2)cos²θ + (1·3)/(2·4)cos⁴θ + …
                         + (1·3…(df−3))/(2·4…(df−2))·cos^(df−2)θ)
    (for df = 1 the odd sum is empty: the Cauchy distribution, A = 2θ/π)."""
    if int(df) != df or df < 1:
        raise AlexNetError(f"degrees of freedom must be a whole number ≥ 1, not {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:                      # odd: the sum starts at cosθ, terms grow by c²·k/(k+1), k even
        total, term = 0.0, math.cos(theta) if df > 1 else 0.0
        for k in range(2, df - 1, 2):
            total += term
            term *= c2 * k / (k + 1)
        total += term
        a = 2 / math.pi * (theta + s * total)
    else:                           # even: the sum starts at 1, terms grow by c²·(k−1)/k, k even
        total, term = 0.0, 1.0
        for k in range(2, df, 2):
            total += term
            term *= c2 * (k - 1) / k
        total += term
        a = s * total
    return 0.5 + math.copysign(a / 2, t)


def t_quantile(p: float, df: int) -> float:
    """The t such that P(T ≤ t) = p, by bisection on t_cdf (monotone), to ~1e-12 relative."""
    if not 0 < p < 1:
        raise AlexNetError(f"a quantile needs 0 < p < 1, not {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:        # the Cauchy 0.9995 quantile is 637: doubling finds it fast
        lo, hi = hi, hi * 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return (lo + hi) / 2


# --- paired comparisons -------------------------------------------------------------------------

def t_interval(xs: Sequence[float], level: float = 0.95, null: float = 0.0,
               method: str = "t-interval on the mean") -> Interval:
    """mean ± t(1 − α/2, n − 1) · sd / √n. With one value there is no spread to estimate and the
    interval is the whole line (so every verdict on it is "cannot tell")."""
    xs = _floats(xs, "values")
    m, n = mean(xs), len(xs)
    if n < 2:
        return Interval(m, -math.inf, math.inf, level, n, null,
                        method + " (one value: no interval)")
    half = t_quantile(1 - (1 - level) / 2, n - 1) * sample_sd(xs) / math.sqrt(n)
    return Interval(m, m - half, m + half, level, n, null, method)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of b_i − a_i over the pairs, with a t-interval on those differences."""
    a, b = _pairs(a, b)
    return t_interval([y - x for x, y in zip(a, b)], level, 0.0,
                      f"paired t-interval on the differences (df = {len(a) - 1})")


def paired_ratio(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """Geometric mean of b_i / a_i, with a t-interval on the log ratios mapped back by exp.

    Logs because a ratio is symmetric there (2× and ½× are ±log 2 from "no effect") and the
    log of a time-to-event is closer to normal than the time; the interval is then on the ratio
    of medians of a log-normal, which is what "N times faster" means across seeds."""
    a, b = _pairs(a, b)
    if any(x <= 0 for x in a + b):
        raise AlexNetError("a ratio needs positive values in both arms")
    logs = t_interval([math.log(y / x) for x, y in zip(a, b)], level, 0.0)
    return Interval(math.exp(logs.estimate), math.exp(logs.low), math.exp(logs.high), level,
                    logs.n, 1.0, f"paired t-interval on the log ratios (df = {len(a) - 1}), "
                                 f"exponentiated", "ratio")


def detectable_difference(sd_diff: float, n: int, level: float = 0.95) -> float:
    """The half-width t(1 − α/2, n − 1) · sd_diff / √n of a paired t-interval over n pairs whose
    differences have standard deviation sd_diff: the smallest mean effect whose interval would
    just exclude 0 (when the estimate lands on it, which happens about half the time; a
    smaller effect cannot be told from chance with n pairs). Infinite for n < 2."""
    if n < 2 or math.isnan(sd_diff):
        return math.inf
    if sd_diff < 0:
        raise AlexNetError(f"a standard deviation cannot be negative: {sd_diff}")
    return t_quantile(1 - (1 - level) / 2, n - 1) * sd_diff / math.sqrt(n)


# --- what the interval says about a claim -------------------------------------------------------

def verdict(interval: Interval, direction: str, margin: float | None = None) -> str:
    """Does the interval support an effect in the claimed `direction` ("greater" or "less" than
    the interval's null)?

      "held":        the whole interval lies on the claimed side of the null;
      "not held":    the whole interval lies on the other side, or (given a `margin`) inside
                     null ± margin, i.e. any effect is too small to matter (for a ratio the
                     margin is a factor: inside [null/margin, null·margin]);
      "cannot tell": anything else: the interval reaches both sides of the null."""
    if direction not in ("greater", "less"):
        raise AlexNetError(f"direction must be 'greater' or 'less', not {direction!r}")
    lo, hi, null = interval.low, interval.high, interval.null
    above, below = lo > null, hi < null
    if (above and direction == "greater") or (below and direction == "less"):
        return "held"
    if above or below:
        return "not held"
    if margin is not None:
        band = ((null / margin, null * margin) if interval.kind == "ratio"
                else (null - margin, null + margin))
        if band[0] <= lo and hi <= band[1]:
            return "not held"
    return "cannot tell"


def locate(value: float, interval: Interval) -> str:
    """Where a reported value (the paper's 6×, say) falls: "below", "inside" or "above"."""
    if value < interval.low:
        return "below"
    return "above" if value > interval.high else "inside"


def _floats(xs, what: str) -> list[float]:
    out = [float(x) for x in xs]
    if any(math.isnan(x) for x in out):
        raise AlexNetError(f"the {what} contain nan")
    return out


def _pairs(a, b) -> tuple[list[float], list[float]]:
    a, b = _floats(a, "first arm's values"), _floats(b, "second arm's values")
    if len(a) != len(b):
        raise AlexNetError(f"paired arms need as many values each: {len(a)} and {len(b)}")
    if not a:
        raise AlexNetError("no pairs to compare")
    return a, b
