"""Compiled Gaussian passes of the lock's projection (numba), at chosen voxels only.

The projection (:mod:`.project`) smooths a field that is zero away from its constrained
voxels and reads the result only there, 30 times per box. :func:`gaussian_pass` computes one
separable pass of :func:`scipy.ndimage.gaussian_filter` (mode ``reflect``, symmetric
weights) at the voxels a mask names, with the very sums scipy makes, in the same order, so
the values are equal bit for bit to scipy's (tested): files written before these kernels
decode as they were written. :func:`distance_classes` gives the flags' contexts
(:func:`.geometry.contexts`) with numpy's operations, so the same bits, on threads.
Compiled on first use and cached on disk by numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["distance_classes", "dual_steps", "gather_at", "gaussian_pass", "scatter_at"]


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
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray, axis: int, runs: np.ndarray
) -> None:  # pragma: no cover - compiled
    """One pass of a symmetric 1D correlation of 3D ``src`` along ``axis`` into ``dst``.

    Only the ``runs`` given are written, each ``(z, y, x0, x1)``: the voxels ``x0 <= x <
    x1`` of row ``(z, y)``; ``dst`` keeps its other values. Each value is ``s[i] w[r] +
    sum_{j=-r}^{-1} (s[i+j] + s[i-j]) w[r+j]``, accumulated in that order, as scipy's
    ``correlate1d`` does for symmetric weights.
    """
    n = src.shape[axis]
    r = (weights.shape[0] - 1) // 2
    for k in range(runs.shape[0]):
        z, y, x0, x1 = runs[k, 0], runs[k, 1], runs[k, 2], runs[k, 3]
        if axis == 2:
            line = src[z, y]
            for i in range(x0, x1):
                acc = line[i] * weights[r]
                if i >= r and i + r < n:
                    for j in range(-r, 0):
                        acc += (line[i + j] + line[i - j]) * weights[r + j]
                else:
                    for j in range(-r, 0):
                        a = line[_reflect(i + j, n)]
                        acc += (a + line[_reflect(i - j, n)]) * weights[r + j]
                dst[z, y, i] = acc
            continue
        i = z if axis == 0 else y
        out = dst[z, y, x0:x1]  # (loops from 0 over views: LLVM vectorizes those)
        centre = src[z, y, x0:x1]
        for x in range(x1 - x0):
            out[x] = centre[x] * weights[r]
        for j in range(-r, 0):
            lo, hi = _reflect(i + j, n), _reflect(i - j, n)
            a = src[lo, y, x0:x1] if axis == 0 else src[z, lo, x0:x1]
            b = src[hi, y, x0:x1] if axis == 0 else src[z, hi, x0:x1]
            w = weights[r + j]
            for x in range(x1 - x0):
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


@njit(cache=True, nogil=True, inline="always")
def _slope(s: np.ndarray, z: int, y: int, x: int, axis: int) -> float:  # pragma: no cover
    """``numpy.gradient``'s value along ``axis`` (unit spacing, first-order edges): the
    same operations, so the same bits."""
    n = s.shape[axis]
    i = z if axis == 0 else (y if axis == 1 else x)
    lo = i - 1 if i > 0 else 0
    hi = i + 1 if i < n - 1 else n - 1
    if axis == 0:
        a, b = s[hi, y, x], s[lo, y, x]
    elif axis == 1:
        a, b = s[z, hi, x], s[z, lo, x]
    else:
        a, b = s[z, y, hi], s[z, y, lo]
    if 0 < i < n - 1:
        return (a - b) / 2.0
    return (a - b) / 1.0


@njit(cache=True, nogil=True, error_model="numpy")
def distance_classes(
    smoothed: np.ndarray, threshold: float, step: float, last: int, out: np.ndarray,
    y0: int, y1: int,
) -> None:  # fmt: skip  # pragma: no cover - compiled
    """``out[:, y0:y1]`` = ``2 * min(|S - T| / |grad S| / step, last) + (S > T)`` of the 3D
    ``smoothed`` ``S`` (uint8), the gradient over the axes of more than one sample, each
    operation as :func:`.geometry.contexts` makes it with numpy."""
    for z in range(smoothed.shape[0]):
        for y in range(y0, y1):
            for x in range(smoothed.shape[2]):
                norm = 0.0
                for axis in range(3):
                    if smoothed.shape[axis] > 1:
                        g = _slope(smoothed, z, y, x, axis)
                        norm = norm + g * g
                norm = np.sqrt(norm)
                value = smoothed[z, y, x]
                dist = np.abs(value - threshold) / norm
                cls = float(last)
                if np.isfinite(dist):
                    cls = min(dist / step, float(last))
                out[z, y, x] = 2 * np.uint8(cls) + (1 if value > threshold else 0)


@njit(cache=True, nogil=True)
def dual_steps(
    base: np.ndarray,
    side: np.ndarray,
    margin: float,
    iterations: int,
    index: np.ndarray,
    field: np.ndarray,
    buffers: np.ndarray,
    axes: np.ndarray,
    weights: np.ndarray,
    radii: np.ndarray,
    runs: np.ndarray,
    run_starts: np.ndarray,
) -> np.ndarray:  # pragma: no cover - compiled
    """The projection's dual iterations on one box (:func:`.project._solve`), compiled.

    The same operations, in the same order, as the loop of numpy calls it replaces (each
    smoothing: the field scattered on ``index``, the passes ``p`` of ``axes[p]`` with
    ``weights[p, :2 radii[p] + 1]`` over ``runs[run_starts[p]:run_starts[p + 1]]`` into
    ``buffers[p]``, gathered back), so the same bits; without a Python call per step, which
    made a lock of many small boxes (a colour image's stars) cost about a millisecond each.
    """
    n = index.shape[0]
    lam = np.zeros(n)
    y = np.zeros(n)
    lam_next = np.empty(n)
    values = np.empty(n)
    smoothed = np.empty(n)
    t = 1.0
    for _ in range(iterations):
        for k in range(n):
            values[k] = side[k] * y[k]
        scatter_at(values, index, field)
        src = field
        for p in range(axes.shape[0]):
            w = weights[p, : 2 * radii[p] + 1]
            gaussian_pass(src, buffers[p], w, axes[p], runs[run_starts[p] : run_starts[p + 1]])
            src = buffers[p]
        gather_at(src, index, smoothed)
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        step = (t - 1.0) / t_next
        for k in range(n):
            slack = margin - side[k] * (base[k] + smoothed[k])
            v = y[k] + slack
            lam_next[k] = v if v > 0.0 else 0.0
        for k in range(n):
            y[k] = lam_next[k] + step * (lam_next[k] - lam[k])
            lam[k] = lam_next[k]
        t = t_next
    return lam


@njit(cache=True, nogil=True)
def _sweep_runs(
    lines: np.ndarray, y_first: bool, need: np.ndarray, width: int, gap: int, out: np.ndarray
) -> int:  # pragma: no cover - compiled
    """:func:`row_runs`' runs written into ``out`` (none where it has no rows); their count."""
    nz, ny = lines.shape
    outer, inner = (ny, nz) if y_first else (nz, ny)
    fill = out.shape[0] > 0
    count = 0
    for a in range(outer):
        for b in range(inner):
            z, y = (b, a) if y_first else (a, b)
            if not lines[z, y]:
                continue
            if width >= 0:
                if fill:
                    out[count, 0], out[count, 1], out[count, 2], out[count, 3] = z, y, 0, width
                count += 1
                continue
            row = need[z, y]
            x, n = 0, row.shape[0]
            start, stop = -1, -1
            while x < n:
                if not row[x]:
                    x += 1
                    continue
                first = x
                while x < n and row[x]:
                    x += 1
                if start >= 0 and first - stop < gap:  # (joined to the run before)
                    stop = x
                    continue
                if start >= 0:
                    if fill:
                        out[count, 0], out[count, 1] = z, y
                        out[count, 2], out[count, 3] = start, stop
                    count += 1
                start, stop = first, x
            if start >= 0:
                if fill:
                    out[count, 0], out[count, 1], out[count, 2], out[count, 3] = z, y, start, stop
                count += 1
    return count


@njit(cache=True, nogil=True)
def row_runs(
    lines: np.ndarray, y_first: bool, need: np.ndarray, width: int, gap: int
) -> np.ndarray:  # pragma: no cover - compiled
    """The runs ``(z, y, x0, x1)`` a pass computes (:func:`.gauss._runs`): in the rows
    ``(z, y)`` set in ``lines`` (all the rows of one ``y`` together where ``y_first``, else
    row-major), the whole row ``[0, width)`` where ``width >= 0``, else the runs of voxels
    ``need[z, y]`` names, runs less than ``gap`` apart joined."""
    count = _sweep_runs(lines, y_first, need, width, gap, np.empty((0, 4), np.int64))
    out = np.empty((count, 4), np.int64)
    if count:
        _sweep_runs(lines, y_first, need, width, gap, out)
    return out
