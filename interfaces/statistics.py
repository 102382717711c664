"""Interval and test arithmetic for the comparison tables.

- ``t_interval``: a mean over independent seeds and its Student-t interval.
- ``series_mean_interval``: a single run's time mean, whose cycles are autocorrelated: the
  standard error is inflated by an AR(1) fit to the series (as DAPPER does), through the
  effective sample size n (1 - a) / (1 + a).
- ``pooled_mean_interval``: the mean of several runs of one system (a table row's seeds), with
  one AR(1) fit shared by all of them, far better determined than each run's own.
- ``trend_test``: is a scored window stationary? Regression of log RMSE on cycle index, with the
  slope's standard error corrected for AR(1) residuals the same way (Santer et al. 2000), and
  ``combined_p`` to pool the seeds of a row into one test (Fisher's method).
- ``holm``: step-down multiplicity adjustment of several p-values of one table.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

#: Significance level of the stationarity test and of the Holm family (two-sided).
ALPHA = 0.05


def _finite(values: Iterable) -> np.ndarray:
    arr = np.array([float(v) for v in values if v is not None], dtype=float)
    return arr[np.isfinite(arr)]


def t_interval(values: Iterable, level: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the Student-t interval at ``level``, n) of the finite values."""
    from scipy import stats

    vals = _finite(values)
    n = len(vals)
    if n == 0:
        return float("nan"), float("nan"), 0
    mean = float(vals.mean())
    if n == 1:
        return mean, float("nan"), 1
    sd = float(vals.std(ddof=1))
    return mean, float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n), n


def t_test_p(values: Iterable) -> float:
    """Two-sided p-value of 'the mean is 0' for independent values (nan below 2 values)."""
    from scipy import stats

    vals = _finite(values)
    n = len(vals)
    if n < 2:
        return float("nan")
    sd = float(vals.std(ddof=1))
    if sd == 0:
        return 1.0 if vals.mean() == 0 else 0.0
    t = float(vals.mean()) / (sd / math.sqrt(n))
    return float(2 * stats.t.sf(abs(t), n - 1))


def lag1_autocorrelation(x: np.ndarray) -> float:
    """Lag-1 autocorrelation of a (demeaned) series, with the small-sample bias correction
    a + (1 + 3a)/n (Kendall 1954), clipped to [0, 0.99]: negative values would shrink the
    interval below the white-noise one, and a -> 1 makes it infinite."""
    n = len(x)
    if n < 3:
        return 0.0
    d = x - x.mean()
    denom = float(d @ d)
    if denom == 0:
        return 0.0
    a = float(d[:-1] @ d[1:]) / denom
    a += (1 + 3 * a) / n
    return min(max(a, 0.0), 0.99)


def effective_size(n: int, a: float) -> float:
    """Number of independent values worth the n AR(1)-correlated ones."""
    return n * (1 - a) / (1 + a)


def series_mean_interval(series: Iterable, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, half-width of its interval at ``level``, effective sample size) of one run's
    series, accounting for its autocorrelation through an AR(1) fit."""
    from scipy import stats

    x = _finite(series)
    n = len(x)
    if n == 0:
        return float("nan"), float("nan"), 0.0
    mean = float(x.mean())
    if n < 3:
        return mean, float("nan"), float(n)
    a = lag1_autocorrelation(x)
    n_eff = effective_size(n, a)
    dof = max(n_eff - 1, 1.0)
    se = float(x.std(ddof=1)) / math.sqrt(max(n_eff, 1.0))
    return mean, float(stats.t.ppf(0.5 + level / 2, dof)) * se, n_eff


def pooled_mean_interval(runs: Sequence[Iterable], level: float = 0.95) -> tuple[float, float, float]:
    """(lag-1 autocorrelation, half-width of the interval at ``level`` of the mean of the runs'
    time means, total effective sample size) for runs of one system, e.g. a table row's seeds.

    The runs share their dynamics, so they share one AR(1) fit: the lag-1 autocorrelation
    pooled over the runs (each demeaned on its own, with the small-sample correction of its
    length). One run's fit is poorly determined when the autocorrelation is high: with 200
    cycles and a = 0.97 its interval came out 2-6x too wide (or too narrow), and a few such runs
    made a row's interval several times the spread of its seeds' means. The runs' standard
    errors combine as independent errors; the t quantile has the pooled effective size."""
    from scipy import stats

    xs = [x for x in (_finite(r) for r in runs) if len(x) >= 3]
    if not xs:
        return float("nan"), float("nan"), 0.0
    devs = [x - x.mean() for x in xs]
    denom = sum(float(d @ d) for d in devs)
    if denom == 0:
        return 0.0, 0.0, float(sum(len(x) for x in xs))
    a = sum(float(d[:-1] @ d[1:]) for d in devs) / denom
    n = sum(len(x) for x in xs) / len(xs)
    a = min(max(a + (1 + 3 * a) / n, 0.0), 0.99)  # Kendall's correction, as lag1_autocorrelation
    sizes = [effective_size(len(x), a) for x in xs]
    var = sum(float(x.var(ddof=1)) / max(m, 1.0) for x, m in zip(xs, sizes)) / len(xs) ** 2
    total = float(sum(sizes))
    return a, float(stats.t.ppf(0.5 + level / 2, max(total - 1, 1.0))) * math.sqrt(var), total


def trend_test(series: Iterable) -> dict:
    """Regression of log(series) on its index: slope per cycle, its AR(1)-corrected standard
    error and the two-sided p-value of 'no trend'. Non-positive or non-finite values are left
    out (log of an RMSE). Too short a series (< 8 values) gives p = nan."""
    from scipy import stats

    raw = np.array([float(v) for v in series], dtype=float)
    t = np.arange(len(raw), dtype=float)
    keep = np.isfinite(raw) & (raw > 0)
    y, t = np.log(raw[keep]), t[keep]
    n = len(y)
    out = {"slope": float("nan"), "slope_se": float("nan"), "p": float("nan"), "n": n, "n_eff": float("nan"),
           "relative_change": float("nan")}
    if n < 8:
        return out
    tc = t - t.mean()
    slope = float(tc @ (y - y.mean())) / float(tc @ tc)
    resid = y - y.mean() - slope * tc
    a = lag1_autocorrelation(resid)
    n_eff = effective_size(n, a)
    dof = n_eff - 2
    if dof < 1:  # too few independent values to say anything
        out.update(slope=slope, n_eff=n_eff)
        return out
    # The residual variance with n_eff - 2 degrees of freedom, the slope's from the OLS formula.
    s2 = float(resid @ resid) / dof
    se = math.sqrt(s2 / float(tc @ tc))
    p = float(2 * stats.t.sf(abs(slope) / se, dof)) if se > 0 else (0.0 if slope else 1.0)
    out.update(slope=slope, slope_se=se, p=p, n_eff=n_eff,
               relative_change=float(math.expm1(slope * (t[-1] - t[0]))))
    return out


def combined_p(pvalues: Iterable) -> float:
    """Fisher's combination of independent p-values (one per seed) into one p-value."""
    from scipy import stats

    ps = _finite(pvalues)
    if len(ps) == 0:
        return float("nan")
    ps = np.clip(ps, 1e-300, 1.0)
    return float(stats.chi2.sf(-2 * np.log(ps).sum(), 2 * len(ps)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given; nan stays nan and does not
    count in the family size."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and math.isfinite(p)]
    m = len(idx)
    out = [float("nan")] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out
