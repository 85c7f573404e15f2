"""The compiled loops of resampled blocks (:mod:`.resampled`): a refinement pass's contexts,
and its decode.

Both walk the pass's region with the refined axis last (a strided view), its targets in C
order: along that axis, the indices of parity ``1 - phase``, between their neighbours ``A``
(the index before, or after at the start) and ``B`` (the index after, or before at the end).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["pass_contexts", "refine_pass"]

#: activity classes: the bit length of the difference between the two sides, the last open
ACTIVITY = 8
#: rounding residues: ``S mod 2c`` of the corners' sum ``S`` for ``c`` = 2, 4 or 8 corners
#: (2 + 4 + 8 of them: the residue tells how a tool rounded, up, down or to even)
RESIDUES = 4 + 8 + 16
#: contexts per pass: activity x residue
PER_PASS = ACTIVITY * RESIDUES
#: the two symbols before the residual tokens: the voxel is a copy of ``A``, of ``B``
SNAPS = 2


@njit(cache=True, nogil=True)
def _activity(d: int) -> int:  # pragma: no cover - compiled
    d = abs(d)
    n = 0
    while d > 0 and n < ACTIVITY - 1:
        d >>= 1
        n += 1
    return n


@njit(cache=True, nogil=True)
def _neighbours(n: int, t: int) -> tuple[int, int]:  # pragma: no cover - compiled
    lo = t - 1 if t > 0 else t + 1
    hi = t + 1 if t + 1 < n else t - 1
    return lo, hi


@njit(cache=True, nogil=True)
def _span(i: int, n: int, grid: int) -> tuple[int, int]:  # pragma: no cover - compiled
    """Indices to average along a refined axis: ``i`` itself on its coarse grid (or when the
    axis was not refined), else its two neighbours."""
    if grid < 0 or i % 2 == grid:
        return i, i
    return _neighbours(n, i)


@njit(cache=True, nogil=True)
def pass_contexts(
    m: np.ndarray, phase: int, base: int, grid0: int, grid1: int, corners: bool
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """The context and prediction of every target of ``m`` ``(P, Q, N)`` (refined axis last),
    in C order of ``(P, Q, targets)``. ``grid0``/``grid1``: the coarse-grid phase of axes 0
    and 1 of ``m`` when they were refined before (else -1); ``base``: the pass's first
    context. A target's prediction is the mean (halves rounded up) of its ``c`` coarse
    corners: the voxels before and after it along the axis, and (``corners``) along each
    axis refined before where it is not on the coarse grid; without ``corners``, of the two
    voxels before and after it (``c = 2``)."""
    if not corners:
        grid0 = grid1 = -1
    p, q, n = m.shape
    nt = (n - (1 - phase) + 1) // 2
    ctx = np.empty(p * q * nt, np.int32)
    pred = np.empty(p * q * nt, np.int64)
    k = 0
    for i in range(p):
        i0, i1 = _span(i, p, grid0)
        for j in range(q):
            j0, j1 = _span(j, q, grid1)
            c = 2 * (1 if i0 == i else 2) * (1 if j0 == j else 2)
            shift = 1 if c == 2 else (2 if c == 4 else 3)
            first = 0 if c == 2 else (4 if c == 4 else 12)
            for s in range(nt):
                lo, hi = _neighbours(n, 1 - phase + 2 * s)
                if c == 2:
                    sa, sb = m[i, j, lo], m[i, j, hi]
                elif c == 8:
                    sa = m[i0, j0, lo] + m[i0, j1, lo] + m[i1, j0, lo] + m[i1, j1, lo]
                    sb = m[i0, j0, hi] + m[i0, j1, hi] + m[i1, j0, hi] + m[i1, j1, hi]
                elif i0 != i:
                    sa, sb = m[i0, j, lo] + m[i1, j, lo], m[i0, j, hi] + m[i1, j, hi]
                else:
                    sa, sb = m[i, j0, lo] + m[i, j1, lo], m[i, j0, hi] + m[i, j1, hi]
                total = sa + sb
                pred[k] = (total + (c >> 1)) >> shift
                act = _activity((sa - sb) >> (shift - 1))
                ctx[k] = base + act * RESIDUES + first + (total & (2 * c - 1))
                k += 1
    return ctx, pred


@njit(cache=True, nogil=True)
def refine_pass(
    m: np.ndarray,
    phase: int,
    ctx: np.ndarray,
    pred: np.ndarray,
    symbols: np.ndarray,
    starts: np.ndarray,
    bits: np.ndarray,
    bitpos: int,
    nb_table: np.ndarray,
    base_table: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Write every target of ``m`` from its symbol and raw bits; the bit position after the
    pass, or -1 when the symbols or bits are damaged.

    ``symbols``: the pass's symbols context after context (context ``c`` from
    ``starts[c]``, ``c`` relative to the pass's first context); ``ctx`` and ``pred``: the
    targets' contexts (relative) and predictions in C order; raw bits in C order from
    ``bitpos``.
    """
    p, q, n = m.shape
    nt = (n - (1 - phase) + 1) // 2
    ptr = starts[:-1].copy()
    n_tok = nb_table.size
    k = 0
    for i in range(p):
        for j in range(q):
            for s in range(nt):
                t = 1 - phase + 2 * s
                lo, hi = _neighbours(n, t)
                c = ctx[k]
                if ptr[c] >= starts[c + 1]:
                    return -1
                sym = symbols[ptr[c]]
                ptr[c] += 1
                if sym == 0:
                    m[i, j, t] = m[i, j, lo]
                elif sym == 1:
                    m[i, j, t] = m[i, j, hi]
                else:
                    tok = sym - SNAPS
                    if tok < 0 or tok >= n_tok:
                        return -1
                    nb = nb_table[tok]
                    if bitpos + nb > bits.size:
                        return -1
                    u = base_table[tok]
                    for b in range(nb):
                        u += np.int64(bits[bitpos]) << (nb - 1 - b)
                        bitpos += 1
                    m[i, j, t] = pred[k] + ((u >> 1) ^ -(u & 1))
                k += 1
    return bitpos
