"""Seed statistics shared by reports: mean and sample std, paired differences."""

import math
import statistics
from typing import NamedTuple


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
