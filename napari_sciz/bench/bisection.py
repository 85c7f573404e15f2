"""Bisection of a codec's quality parameter to the best quality that fits a byte budget."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["BisectionResult", "Trial", "bisect_quality"]


@dataclass(frozen=True)
class Trial:
    """One evaluated parameter value: ``param`` gave ``nbytes`` (``fits``: ``nbytes <= budget``)."""

    param: float
    nbytes: int
    fits: bool


@dataclass
class BisectionResult:
    """Outcome of :func:`bisect_quality`.

    Attributes
    ----------
    param : float or None
        Best-quality parameter that fits the byte budget (``None``: even the lowest quality
        does not).
    nbytes : int or None
        Its size.
    violating_param : float or None
        Closest evaluated parameter on the higher-quality side of ``param`` that does not fit
        (``None`` when the highest quality fits).
    trials : list of Trial
        Every evaluation, in order.
    feasible : list of float
        The fitting parameters, best quality first.
    """

    param: float | None
    nbytes: int | None
    violating_param: float | None
    trials: list[Trial]
    feasible: list[float]


def bisect_quality(
    size_of: Callable[[float], int],
    budget: int,
    lo: float,
    hi: float,
    *,
    increasing: bool,
    log: bool = False,
    integer: bool = False,
    iterations: int = 16,
    rtol: float = 0.002,
    scan: int = 0,
    window: float = 0.05,
) -> BisectionResult:
    """Bisect a quality parameter to the best quality whose output fits ``budget`` bytes.

    The output size is assumed to grow with quality; the parameter grows with quality when
    ``increasing`` (bits per value, a PSNR target) and falls with it otherwise (a distance, an error
    bound, a CRF).  Non-monotone spots are tolerated: every evaluation is kept and the answer is the
    best-quality evaluated parameter that fits, whatever path the bisection took.

    Parameters
    ----------
    size_of : callable
        ``size_of(param) -> nbytes``; may raise ``ValueError`` / ``RuntimeError`` for an unusable
        parameter, counted as "does not fit".
    budget : int
        The largest allowed size in bytes.
    lo, hi : float
        Parameter range (``lo < hi``).
    increasing : bool
        Whether quality (and size) grows with the parameter.
    log : bool
        Bisect ``log(param)`` (for parameters spanning decades; needs ``lo > 0``).
    integer : bool
        The parameter is an integer; the bisection stops at adjacent integers.
    iterations : int
        Maximum number of evaluations inside the bracket.
    rtol : float
        Stop early once a fitting size is within ``rtol`` of the budget.
    scan : int
        After the bisection, evaluate this many extra parameters evenly spread over the normalised
        quality interval ``[q_fit - window, q_violating + window]`` around the boundary it found
        (for codecs whose size jumps around, e.g. SZ3 switching predictors).
    window : float
        Half-width of that scan, as a fraction of the parameter range (on the log scale if ``log``).

    Returns
    -------
    BisectionResult
    """
    if not lo < hi:
        raise ValueError(f"need lo < hi, got {lo} and {hi}")
    if log and lo <= 0:
        raise ValueError("log bisection needs lo > 0")
    trials: list[Trial] = []

    def evaluate(p: float) -> Trial:
        try:
            n = int(size_of(p))
        except (ValueError, RuntimeError):
            n = 2**62
        t = Trial(p, n, n <= budget)
        trials.append(t)
        return t

    # q: 0 = lowest quality, 1 = highest quality
    def param_at(q: float) -> float:
        u = q if increasing else 1.0 - q
        p = (
            math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
            if log
            else lo + u * (hi - lo)
        )
        return float(round(p)) if integer else p

    def quality_key(p: float) -> float:
        return p if increasing else -p

    best_q = evaluate(param_at(1.0))
    if not best_q.fits:
        worst_q = evaluate(param_at(0.0))
        if worst_q.fits:
            q_fit, q_bad = 0.0, 1.0
            for _ in range(iterations):
                mid = 0.5 * (q_fit + q_bad)
                p_mid = param_at(mid)
                if integer and p_mid in (param_at(q_fit), param_at(q_bad)):
                    break
                t = evaluate(p_mid)
                if t.fits:
                    q_fit = mid
                    if t.nbytes >= budget * (1.0 - rtol):
                        break
                else:
                    q_bad = mid
            if scan > 0:
                done = {t.param for t in trials}
                a, b = max(q_fit - window, 0.0), min(q_bad + window, 1.0)
                for q in np.linspace(a, b, scan):
                    p = param_at(float(q))
                    if p not in done:
                        done.add(p)
                        evaluate(p)

    fitting = sorted({t.param for t in trials if t.fits}, key=quality_key, reverse=True)
    if not fitting:
        return BisectionResult(None, None, None, trials, [])
    best = fitting[0]
    nbytes = min(t.nbytes for t in trials if t.param == best)
    better_bad = [
        t.param for t in trials if not t.fits and quality_key(t.param) > quality_key(best)
    ]
    violating = min(better_bad, key=quality_key) if better_bad else None
    return BisectionResult(best, nbytes, violating, trials, fitting)
