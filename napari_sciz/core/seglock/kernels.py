"""Compiled Gaussian passes of the lock's projection (numba), at chosen voxels only.

The projection (:mod:`.project`) smooths a field that is zero away from its constrained
voxels and reads the result only there, 30 times per box. :func:`gaussian_pass` computes one
separable pass of :func:`scipy.ndimage.gaussian_filter` (mode ``reflect``, symmetric
weights) at the voxels a mask names, with the very sums scipy makes, in the same order, so
the values are equal bit for bit to scipy's (tested): files written before these kernels
decode as they were written. Compiled on first use and cached on disk by numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["gather_at", "gaussian_pass", "scatter_at"]


@njit(cache=True, nogil=True, inline="always")
def _reflect(i: int, n: int) -> int:  # pragma: no cover - compiled
    """scipy's ``reflect`` extension (``d c b a | a b c d | d c b a``) of index ``i``."""
    if n == 1:
        return 0
    period = 2 * n
    i = i % period
    if i < 0:
        i += period
    return i if i < n else period - 1 - i


@njit(cache=True, nogil=True)
def gaussian_pass(
    src: np.ndarray,
    dst: np.ndarray,
    weights: np.ndarray,
    axis: int,
    need: np.ndarray,
    rows: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """One pass of a symmetric 1D correlation of 3D ``src`` along ``axis`` into ``dst``.

    Only the ``rows`` given (``(z, y)`` pairs) are written: whole rows along the last axis
    for a pass along axis 0 or 1, and there only the voxels ``need`` names for a pass along
    the last axis; ``dst`` keeps its other values. Each value is ``s[i] w[r] +
    sum_{j=-r}^{-1} (s[i+j] + s[i-j]) w[r+j]``, accumulated in that order, as scipy's
    ``correlate1d`` does for symmetric weights.
    """
    n = src.shape[axis]
    r = (weights.shape[0] - 1) // 2
    if axis == 2:
        buf = np.empty(n + 2 * r)
        for k in range(rows.shape[0]):
            z, y = rows[k, 0], rows[k, 1]
            for i in range(r):
                buf[i] = src[z, y, _reflect(i - r, n)]
                buf[n + r + i] = src[z, y, _reflect(n + i, n)]
            for i in range(n):
                buf[r + i] = src[z, y, i]
            for i in range(n):
                if need[z, y, i]:
                    acc = buf[i + r] * weights[r]
                    for j in range(-r, 0):
                        acc += (buf[i + r + j] + buf[i + r - j]) * weights[r + j]
                    dst[z, y, i] = acc
        return
    width = src.shape[2]
    for k in range(rows.shape[0]):
        z, y = rows[k, 0], rows[k, 1]
        i = z if axis == 0 else y
        out = dst[z, y]
        centre = src[z, y]
        for x in range(width):
            out[x] = centre[x] * weights[r]
        for j in range(-r, 0):
            lo, hi = _reflect(i + j, n), _reflect(i - j, n)
            a = src[lo, y] if axis == 0 else src[z, lo]
            b = src[hi, y] if axis == 0 else src[z, hi]
            w = weights[r + j]
            for x in range(width):
                out[x] += (a[x] + b[x]) * w


@njit(cache=True, nogil=True)
def gather_at(values: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    """``out[k] = values.flat[index[k]]`` (C order)."""  # pragma: no cover - compiled
    flat = values.reshape(-1)
    for k in range(index.shape[0]):
        out[k] = flat[index[k]]


@njit(cache=True, nogil=True)
def scatter_at(values: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    """``out.flat[index[k]] = values[k]`` (C order)."""  # pragma: no cover - compiled
    flat = out.reshape(-1)
    for k in range(index.shape[0]):
        flat[index[k]] = values[k]
