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

#: activity classes: the bit length of ``|A - B|``, the last class open
ACTIVITY = 8
#: contexts per pass: activity x parity of ``A + B`` x on the refined axes' coarse grid
PER_PASS = ACTIVITY * 2 * 2
#: the two symbols before the residual tokens: the voxel is a copy of ``A``, of ``B``
SNAPS = 2


@njit(cache=True, nogil=True)
def _activity(a: int, b: int) -> int:  # pragma: no cover - compiled
    d = abs(a - b)
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
def pass_contexts(
    m: np.ndarray, phase: int, base: int, grid0: int, grid1: int
) -> np.ndarray:  # pragma: no cover - compiled
    """The context of every target of ``m`` ``(P, Q, N)`` (refined axis last), in C order of
    ``(P, Q, targets)``. ``grid0``/``grid1``: the coarse-grid phase of axes 0 and 1 of ``m``
    when they were refined before (else -1); ``base``: the pass's first context."""
    p, q, n = m.shape
    nt = (n - (1 - phase) + 1) // 2
    out = np.empty(p * q * nt, np.int32)
    k = 0
    for i in range(p):
        g0 = 1 if grid0 < 0 or i % 2 == grid0 else 0
        for j in range(q):
            g = g0 if grid1 < 0 or j % 2 == grid1 else 0
            for s in range(nt):
                lo, hi = _neighbours(n, 1 - phase + 2 * s)
                a, b = m[i, j, lo], m[i, j, hi]
                out[k] = base + ((_activity(a, b) * 2 + ((a + b) & 1)) * 2 + g)
                k += 1
    return out


@njit(cache=True, nogil=True)
def refine_pass(
    m: np.ndarray,
    phase: int,
    ctx: np.ndarray,
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
    ``starts[c]``, ``c`` relative to the pass's first context); ``ctx``: the targets'
    contexts (relative) in C order; raw bits in C order from ``bitpos``.
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
                k += 1
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
                    for _ in range(nb):
                        u += np.int64(bits[bitpos]) << (nb - 1 - _)
                        bitpos += 1
                    r = (u >> 1) ^ -(u & 1)
                    m[i, j, t] = ((m[i, j, lo] + m[i, j, hi] + 1) >> 1) + r
    return bitpos
