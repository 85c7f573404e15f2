"""Moving a decoded volume's threshold surface to where the flags say it belongs.

Given the decoded volume ``d``, the target side of every constrained voxel (``+1`` above the
threshold, ``-1`` below) and a margin ``m``, :func:`lock_sides` finds the volume ``x``
closest to ``d`` (least squares) whose smoothed values ``S = G*x`` lie on the target side by
at least ``m``: the projection onto ``sign * (G*x - T) >= m``. It is solved in its dual with
accelerated projected gradient steps (FISTA; the step 1 is safe because the Gaussian's
operator norm is 1), a fixed number of iterations, so encoder and decoder do the same work.
The correction is ``G*(sign * lambda)``: smooth, and zero farther than the Gaussian's reach
from a constrained voxel, so every group of nearby flags is solved in its own box.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .gauss import AtConstraints, gaussian, pool

#: dual iterations per box
ITERATIONS = 30
#: voxels around a flag that are constrained too (they keep their side while it moves)
CONSTRAINED_REACH = 2


def _reach(sigmas: Sequence[float]) -> tuple[int, ...]:
    """The Gaussian's radius per axis (scipy's ``truncate=4``)."""
    return tuple(int(4.0 * float(s) + 0.5) for s in sigmas)


def constrained(flags: np.ndarray) -> np.ndarray:
    """Voxels constrained around ``flags`` (the flags grown by :data:`CONSTRAINED_REACH`)."""
    from scipy import ndimage as ndi

    return ndi.binary_dilation(flags, iterations=CONSTRAINED_REACH)


def _solve(
    d: np.ndarray, sign: np.ndarray, where: np.ndarray, threshold: float, margin: float,
    sigmas: Sequence[float],
) -> np.ndarray:  # fmt: skip
    """The correction of one box (``where``: its constrained voxels).

    ``G*x = G*d + (G*G)*(sign * lambda)``, and ``G*G`` is the Gaussian of sigma ``sqrt(2)
    sigma``: one filtering per iteration. ``lambda`` stays zero away from ``where`` and the
    iterations read the smoothed values only there, so they run on those voxels alone
    (:class:`.gauss.AtConstraints`), with the values a whole-box filtering gives.
    """
    wide = AtConstraints(where, [float(s) * np.sqrt(2.0) for s in sigmas])
    base = wide.read(gaussian(d, sigmas) - threshold)
    side = wide.read(sign)
    lam = np.zeros(base.shape)
    y = lam
    t = 1.0
    with pool(len(wide.index)) as threads:
        if threads is None:  # (one thread: the same steps, compiled)
            return gaussian(
                sign * wide.spread(wide.dual_steps(base, side, margin, ITERATIONS)), sigmas
            )
        for _ in range(ITERATIONS):
            smoothed = base + wide.smooth(side * y, threads)
            slack = margin - side * smoothed
            lam_next = np.maximum(0.0, y + slack)
            t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
            y = lam_next + ((t - 1.0) / t_next) * (lam_next - lam)
            lam, t = lam_next, t_next
    return gaussian(sign * wide.spread(lam), sigmas)


def lock_sides(
    decoded: np.ndarray,
    target: np.ndarray,
    flags: np.ndarray,
    threshold: float,
    margin: float,
    sigmas: Sequence[float],
) -> np.ndarray:
    """``decoded`` (float64) with the flagged voxels moved to their target side.

    Parameters
    ----------
    decoded : numpy.ndarray
        The decoded volume.
    target : numpy.ndarray
        bool, the side every voxel should be on (True: above ``threshold`` once smoothed).
    flags : numpy.ndarray
        bool, the voxels whose side changes; they and their neighbours are constrained.
    threshold, margin : float
        ``T`` and ``m``.
    sigmas : sequence of float
        The smoothing's Gaussian sigma per axis.

    Returns
    -------
    numpy.ndarray
        The corrected volume (float64); equal to ``decoded`` away from the flags.
    """
    from scipy import ndimage as ndi

    out = np.array(decoded, np.float64)
    if not flags.any():
        return out
    core = constrained(flags)
    reach = _reach(sigmas)
    # groups of constrained voxels more than two radii apart cannot meet: a correction
    # reaches one radius past its constraints, the smoothed values it changes two
    size = tuple(2 * r + 1 for r in reach)
    groups, _n = ndi.label(ndi.maximum_filter(core, size=size))
    correction = np.zeros(out.shape)
    for index, box in enumerate(ndi.find_objects(groups), start=1):
        if box is None:
            continue
        crop = tuple(
            slice(max(0, b.start - r), min(n, b.stop + r))
            for b, r, n in zip(box, reach, out.shape, strict=True)
        )  # (two radii past the constraints: every value the solution reads or writes)
        where = core[crop] & (groups[crop] == index)
        sign = np.where(target[crop], 1.0, -1.0)
        correction[crop] += _solve(out[crop], sign, where, threshold, margin, sigmas)
    return out + correction
