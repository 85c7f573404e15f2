"""Compiled passes of the interpolation bounded blocks (:mod:`.interpblock`), numba.

A pass is one level and axis of the coarse-to-fine interpolation: its targets are the voxels
at odd multiples of ``h`` along ``axis``, on the grid of step ``h`` along the axes before it
and ``2h`` along the axes after it, visited in raster order. Each target is predicted from the
reconstructed voxels at ``pos - h`` and ``pos + h`` along the axis (their rounded mean, or a
copy of the first at the far edge) or, with ``pos - 3h`` and ``pos + 3h`` inside, by the cubic
``(9 (a + b) - c - d + 8) >> 4``; its context is the level and a 7-class activity of
``|b - a|`` in quantization steps, and, with ``qctx``, a 4-class sum of the absolute
quantization indices the two neighbours were coded with (``qabs``, capped at 255: 0, 1, 2-3,
4 or more). Integer arithmetic only: every machine computes the same values. Compiled on
first use and cached on disk by numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["ACTIVITY", "INDEX_CLASSES", "decode_pass", "pass_context"]

#: activity classes per level (floor(log2(1 + |b - a| / step)), at most 6)
ACTIVITY = 7
#: classes of the neighbours' absolute quantization indices (``qctx``)
INDEX_CLASSES = 4


@njit(cache=True, nogil=True, inline="always")
def _at(rec: np.ndarray, axis: int, i: int, j: int, k: int, p: int) -> int:
    if axis == 0:
        return rec[p, j, k]
    if axis == 1:
        return rec[i, p, k]
    return rec[i, j, p]


@njit(cache=True, nogil=True, inline="always")
def _predict(rec: np.ndarray, axis: int, i: int, j: int, k: int, pos: int, h: int, n: int):
    a = _at(rec, axis, i, j, k, pos - h)
    if pos + h >= n:
        return a, 0
    b = _at(rec, axis, i, j, k, pos + h)
    if pos - 3 * h >= 0 and pos + 3 * h < n:
        c = _at(rec, axis, i, j, k, pos - 3 * h)
        d = _at(rec, axis, i, j, k, pos + 3 * h)
        return (9 * (a + b) - c - d + 8) >> 4, abs(b - a)
    return (a + b + 1) >> 1, abs(b - a)


@njit(cache=True, nogil=True, inline="always")
def _thresholds(step: int) -> np.ndarray:
    """``(2^k - 1) step`` for k = 1 .. ACTIVITY - 1: ``spread // step >= 2^k - 1`` exactly when
    ``spread`` reaches it (no division per voxel)."""
    thr = np.empty(ACTIVITY - 1, np.int64)
    for k in range(1, ACTIVITY):
        thr[k - 1] = ((1 << k) - 1) * step
    return thr


@njit(cache=True, nogil=True, inline="always")
def _context(
    spread: int, thr: np.ndarray, level: int, qabs: np.ndarray, axis: int, i: int, j: int,
    k: int, pos: int, h: int, n: int, qctx: bool,
) -> int:  # fmt: skip
    cls = 0
    for c in range(ACTIVITY - 1):
        cls += spread >= thr[c]
    if not qctx:
        return 1 + cls + ACTIVITY * (level - 1)
    s = int(_at(qabs, axis, i, j, k, pos - h))
    if pos + h < n:
        s += int(_at(qabs, axis, i, j, k, pos + h))
    qcls = 0 if s == 0 else 1 if s == 1 else 2 if s <= 3 else 3
    return 1 + (cls + ACTIVITY * (level - 1)) * INDEX_CLASSES + qcls


@njit(cache=True, nogil=True, inline="always")
def _grid(shape: tuple, axis: int, h: int) -> tuple:
    """Start and stride of the pass's targets along each axis."""
    s = 2 * h
    st = np.empty(3, np.int64)
    sp = np.empty(3, np.int64)
    for a in range(3):
        if a < axis:
            st[a], sp[a] = 0, h
        elif a == axis:
            st[a], sp[a] = h, s
        else:
            st[a], sp[a] = 0, s
    return st, sp


@njit(cache=True, nogil=True, inline="always")
def _targets(shape: tuple, st: np.ndarray, sp: np.ndarray) -> int:
    n0 = (shape[0] - st[0] + sp[0] - 1) // sp[0]
    n1 = (shape[1] - st[1] + sp[1] - 1) // sp[1]
    n2 = (shape[2] - st[2] + sp[2] - 1) // sp[2]
    return max(n0, 0) * max(n1, 0) * max(n2, 0)


@njit(cache=True, nogil=True)
def pass_context(
    rec: np.ndarray, qabs: np.ndarray, level: int, axis: int, step: int, qctx: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The predictions and contexts of one pass's targets (raster order)."""
    h = 1 << (level - 1)
    n, thr = rec.shape[axis], _thresholds(step)
    st, sp = _grid(rec.shape, axis, h)
    pred = np.empty(_targets(rec.shape, st, sp), np.int64)
    ctx = np.empty_like(pred)
    t = 0
    for i in range(st[0], rec.shape[0], sp[0]):
        for j in range(st[1], rec.shape[1], sp[1]):
            for k in range(st[2], rec.shape[2], sp[2]):
                pos = i if axis == 0 else j if axis == 1 else k
                pred[t], spread = _predict(rec, axis, i, j, k, pos, h, n)
                ctx[t] = _context(spread, thr, level, qabs, axis, i, j, k, pos, h, n, qctx)
                t += 1
    return pred, ctx


@njit(cache=True, nogil=True)
def decode_pass(
    rec: np.ndarray,
    qabs: np.ndarray,
    level: int,
    axis: int,
    step: int,
    pred: np.ndarray,
    ctx: np.ndarray,
    tok: np.ndarray,
    bits: np.ndarray,
    bitpos: int,
    nb_table: np.ndarray,
    base_table: np.ndarray,
) -> int:
    """Write one pass's reconstructions into ``rec`` (and capped absolute indices into
    ``qabs``).

    ``tok`` holds the pass's tokens in coding order (by context, raster order within one),
    their raw bits start at ``bitpos`` of ``bits``. Returns the next bit position, or -1 when
    a token is unknown or the raw bits run out.
    """
    n_ctx = 0
    for t in range(ctx.size):
        n_ctx = max(n_ctx, ctx[t] + 1)
    cursor = np.zeros(n_ctx + 1, np.int64)
    for t in range(ctx.size):
        cursor[ctx[t] + 1] += 1
    for c in range(n_ctx):
        cursor[c + 1] += cursor[c]
    offset = np.empty(tok.size + 1, np.int64)
    offset[0] = bitpos
    for j in range(tok.size):
        if tok[j] < 0 or tok[j] >= nb_table.size:
            return -1
        offset[j + 1] = offset[j] + nb_table[tok[j]]
    if offset[tok.size] > bits.size:
        return -1
    h = 1 << (level - 1)
    st, sp = _grid(rec.shape, axis, h)
    t = 0
    for i in range(st[0], rec.shape[0], sp[0]):
        for j in range(st[1], rec.shape[1], sp[1]):
            for k in range(st[2], rec.shape[2], sp[2]):
                c = ctx[t]
                m = cursor[c]
                cursor[c] = m + 1
                u = base_table[tok[m]]
                extra = 0
                for b in range(offset[m], offset[m + 1]):
                    extra = (extra << 1) | bits[b]
                u += extra
                qi = (u >> 1) ^ -(u & 1)
                rec[i, j, k] = pred[t] + qi * step
                qabs[i, j, k] = min(abs(qi), 255)
                t += 1
    return offset[tok.size]
