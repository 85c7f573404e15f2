"""Compiled per-voxel loop of the loop filter (numba), the hot spot of hybrid decoding.

:func:`filter_planes` computes, for planes ``z0:z1`` of a decoded base, exactly what the
module docstring of :mod:`napari_sciz.core.hybrid.loopfilter` defines, in one pass per voxel
(activity, class, 13 or 4 second differences, 3 or 2 more when wide) instead of a dozen
whole-array numpy passes: the same operations in the same order, so its values equal the
numpy formulation's bit for bit (``tests/test_hybrid.py`` checks it). Edges replicate the
nearest voxel. Compiled on first use and cached on disk by numba (``cache=True``); it
releases the GIL, so blocks decode in parallel threads, and a call for many planes splits
them between threads.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

__all__ = ["filter_planes", "tone_map", "warm_up"]


@njit(cache=True, nogil=True)
def _filter_planes(
    padded: np.ndarray,
    coefs: np.ndarray,
    thresholds: np.ndarray,
    steps: np.ndarray,
    bias: float,
    flat: bool,
    pad: int,
    z0: int,
    z1: int,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled (its results are tested against numpy)
    # `padded`: the base with `pad` replicated voxels on every side, flattened; `steps`: the
    # flat index step of each offset (one of each point-symmetric pair)
    _d, h, w = out.shape[0], out.shape[1], out.shape[2]
    sy = w + 2 * pad
    sz = (h + 2 * pad) * sy
    n_off = steps.shape[0]
    n_thr = thresholds.shape[0]
    for z in range(z0, z1):
        for y in range(h):
            row = (z + pad) * sz + (y + pad) * sy + pad
            for x in range(w):
                i = row + x
                c = padded[i]
                c2 = 2.0 * c
                if flat:
                    act = 0.0
                else:
                    act = 0.0 + abs(padded[i + sz] + padded[i - sz] - c2)
                act += abs(padded[i + sy] + padded[i - sy] - c2)
                act += abs(padded[i + 1] + padded[i - 1] - c2)
                act32 = np.float32(act)
                k = 0  # thresholds at or below (increasing: counted without branches)
                for t in range(n_thr):
                    k += thresholds[t] <= act32
                acc = c + coefs[k, n_off] * bias
                for p in range(n_off):
                    s = steps[p]
                    acc += coefs[k, p] * (padded[i + s] + padded[i - s] - c2)
                out[z - z0, y, x] = acc


def filter_planes(
    base: np.ndarray,
    coefs: np.ndarray,
    thresholds: np.ndarray,
    offsets: np.ndarray,
    bias: float,
    flat: bool,
    z0: int = 0,
    z1: int | None = None,
) -> np.ndarray:
    """Filtered planes ``z0:z1`` of ``base`` (float64 ``(D, H, W)``).

    Parameters
    ----------
    base : numpy.ndarray
        The decoded base layer, float64.
    coefs : numpy.ndarray
        ``(K, P + 1)`` float64 coefficients (already scaled by ``2 ** -shift``).
    thresholds : numpy.ndarray
        ``K - 1`` float32 activity thresholds.
    offsets : numpy.ndarray
        ``(P, 3)`` int64 offsets (one of each point-symmetric pair).
    bias : float
        Unit of the last coefficient (the block's value span).
    flat : bool
        2D activity (one-plane blocks).
    z0, z1 : int
        Planes to compute (default: all).

    Returns
    -------
    numpy.ndarray
        Float64 array of shape ``(z1 - z0, H, W)``.
    """
    base = np.asarray(base, dtype=np.float64)
    d, h, w = base.shape
    stop = d if z1 is None else int(z1)
    offs = np.asarray(offsets, dtype=np.int64).reshape(-1, 3)
    pad = max(1, int(np.abs(offs).max(initial=1)))
    lo, hi = max(int(z0) - pad, 0), min(stop + pad, d)  # the planes the requested ones read
    padded = np.pad(base[lo:hi], pad, mode="edge")  # (the z pad is read only at the ends)
    sy, sz = w + 2 * pad, (h + 2 * pad) * (w + 2 * pad)
    steps = offs[:, 0] * sz + offs[:, 1] * sy + offs[:, 2]
    out = np.empty((stop - int(z0), h, w), dtype=np.float64)
    args = (
        padded.ravel(),
        np.ascontiguousarray(coefs, dtype=np.float64),
        np.ascontiguousarray(thresholds, dtype=np.float32),
        np.ascontiguousarray(steps),
        float(bias),
        bool(flat),
        pad,
    )
    # planes are independent: several calls on threads (the kernel releases the GIL)
    n = stop - int(z0)
    parts = min(_THREADS, max(1, (n * h * w) // _MIN_VOXELS_PER_THREAD))
    cuts = [int(z0) + (n * i) // parts for i in range(parts + 1)]
    jobs = [
        (*args, a - lo, b - lo, out[a - int(z0) : b - int(z0)])
        for a, b in zip(cuts[:-1], cuts[1:], strict=True)
        if b > a
    ]
    if len(jobs) == 1:
        _filter_planes(*jobs[0])
    else:
        for future in [_pool().submit(_filter_planes, *job) for job in jobs]:
            future.result()
    return out


@njit(cache=True, nogil=True)
def _tone_map(values: np.ndarray, lo: float, per_knot: float, unit: np.ndarray) -> None:
    """In place: ``values += interp(values, knots, unit)`` (constant outside the knots)."""
    last = unit.shape[0] - 1
    for n in range(values.shape[0]):  # pragma: no cover - compiled (tested against numpy)
        v = values[n]
        x = (v - lo) * per_knot
        if x <= 0.0:
            values[n] = v + unit[0]
        elif x >= last:
            values[n] = v + unit[last]
        else:
            i = int(x)  # (0 <= x < last here)
            f = x - i
            values[n] = v + (unit[i] * (1.0 - f) + unit[i + 1] * f)


def tone_map(values: np.ndarray, lo: float, hi: float, unit: np.ndarray) -> np.ndarray:
    """``values`` (float64, C-contiguous; changed in place and returned) plus the piecewise
    linear map of ``unit`` (the correction at each of its knots, spaced evenly from ``lo`` to
    ``hi``; :mod:`~napari_sciz.core.hybrid.tonemap`)."""
    knots = unit.shape[0]
    _tone_map(values.reshape(-1), float(lo), (knots - 1) / (float(hi) - float(lo)), unit)
    return values


def warm_up() -> None:
    """Compile both kernels (or load them from numba's disk cache) on a few voxels, with the
    argument types of every real call (the wrappers above fix them)."""
    filter_planes(np.zeros((1, 2, 2)), np.zeros((1, 2)), np.zeros(0), [[0, 0, 1]], 1.0, True)
    tone_map(np.zeros(2), 0.0, 1.0, np.zeros(2))


#: threads of a filter call, and the least work worth a thread
_THREADS = max(1, min(8, os.cpu_count() or 1))
_MIN_VOXELS_PER_THREAD = 1 << 18
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(_THREADS, thread_name_prefix="sciz-filter")
        return _POOL
