"""Seed statistics shared by reports: mean and sample std, paired differences, Student-t
intervals, the seeds an interval needs, Holm's adjustment.

Every interval here is the textbook paired t interval: for the differences d_k = b_k - a_k over
the n seeds both sides finished, mean(d) ± t(1 - α/2, n - 1) · std(d) / √n (std with n - 1).
"""

import math
import statistics
from typing import NamedTuple

from scipy import stats as _scipy

MAX_SEEDS = 1000  # seeds_needed searches up to here; beyond it answers None


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation of the finite values (std 0 for one, nan for none)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


class Paired(NamedTuple):
    """Paired differences b - a (same seed): mean, sample std, count, standard error."""

    mean: float
    std: float
    n: int

    @property
    def se(self) -> float:
        return self.std / math.sqrt(self.n) if self.n else math.nan


def paired(a: dict, b: dict) -> Paired:
    """Differences b[k] - a[k] over the keys (seeds) both have with finite values."""
    keys = [k for k in a if k in b and math.isfinite(a[k]) and math.isfinite(b[k])]
    mean, std = mean_std([b[k] - a[k] for k in keys])
    return Paired(mean, std, len(keys))


def t_quantile(level: float, n: int) -> float:
    """Two-sided Student-t critical value: t(1 - (1 - level) / 2, n - 1); 4.303 for 95%, n=3."""
    return float(_scipy.t.ppf(0.5 + level / 2, n - 1))


def half_width(std: float, n: int, level: float) -> float:
    """Half-width of the t interval of a mean of n values with sample std `std` (n >= 2)."""
    return t_quantile(level, n) * std / math.sqrt(n)


class Interval(NamedTuple):
    """A paired t interval: estimate (mean difference), [low, high] at `level`, n, std."""

    estimate: float
    low: float
    high: float
    n: int
    std: float
    level: float


def interval(p: Paired, level: float = 0.95) -> Interval:
    """The t interval of a paired mean difference; [-inf, inf] with fewer than 2 seeds."""
    if p.n < 2:
        return Interval(p.mean, -math.inf, math.inf, p.n, p.std, level)
    w = half_width(p.std, p.n, level)
    return Interval(p.mean, p.mean - w, p.mean + w, p.n, p.std, level)


def p_value(p: Paired) -> float:
    """Two-sided paired t-test of 'mean difference = 0' (1.0 with fewer than 2 seeds)."""
    if p.n < 2:
        return 1.0
    if p.std == 0:
        return 0.0 if p.mean != 0 else 1.0
    return float(2 * _scipy.t.sf(abs(p.mean) / p.se, p.n - 1))


def seeds_needed(std: float, gap: float, level: float, at_least: int = 2) -> int | None:
    """Fewest seeds n >= at_least whose t interval, at this std, is narrower than `gap` on each
    side (half-width < gap); None when gap <= 0 or more than MAX_SEEDS would be needed."""
    if not (gap > 0 and math.isfinite(std)):
        return None
    for n in range(max(2, at_least), MAX_SEEDS + 1):
        if half_width(std, n, level) < gap:
            return n
    return None


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the order given."""
    k = len(p_values)
    order = sorted(range(k), key=lambda i: p_values[i])
    out, running = [0.0] * k, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * p_values[i]))
        out[i] = running
    return out
