"""The compiled decoding loop of label blocks (:mod:`.labelblock`)."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["decode_labels"]


@njit(cache=True, nogil=True)
def decode_labels(
    idx: np.ndarray,
    symbols: np.ndarray,
    starts: np.ndarray,
    other: np.ndarray,
    n_values: int,
    ctx_mask: int,
) -> int:  # pragma: no cover - compiled
    """Fill ``idx`` ``(D, H, W)`` with label indices; 0, or 1 when the symbols are damaged.

    ``symbols``: every context's symbols, context after context (context ``c`` from
    ``starts[c]``); ``other``: the indices of the "another label" symbols in raster order;
    ``ctx_mask``: 1023 (wide contexts) or 63.
    """
    d, h, w = idx.shape
    ptr = starts[:-1].copy()
    new = 0
    k_other = 0
    for z in range(d):
        for y in range(h):
            for x in range(w):
                vw = idx[z, y, x - 1] if x > 0 else -1
                vn = idx[z, y - 1, x] if y > 0 else -1
                vp = idx[z - 1, y, x] if z > 0 else -1
                vnw = idx[z, y - 1, x - 1] if x > 0 and y > 0 else -1
                vne = idx[z, y - 1, x + 1] if y > 0 and x < w - 1 else -1
                vww = idx[z, y, x - 2] if x > 1 else -1
                vnn = idx[z, y - 2, x] if y > 1 else -1
                vpw = idx[z - 1, y, x - 1] if z > 0 and x > 0 else -1
                vpn = idx[z - 1, y - 1, x] if z > 0 and y > 0 else -1
                c = (
                    (1 if vw == vn else 0)
                    + (2 if vw == vp else 0)
                    + (4 if vn == vp else 0)
                    + (8 if vw == vnw else 0)
                    + (16 if vn == vne else 0)
                    + (32 if z > 0 else 0)
                    + (64 if vw == vww else 0)
                    + (128 if vn == vnn else 0)
                    + (256 if vp == vpw else 0)
                    + (512 if vp == vpn else 0)
                ) & ctx_mask
                if ptr[c] >= starts[c + 1]:
                    return 1
                s = symbols[ptr[c]]
                ptr[c] += 1
                if s == 0:
                    v = vw
                elif s == 1:
                    v = vn
                elif s == 2:
                    v = vp
                elif s == 3:
                    v = vnw
                elif s == 4:
                    v = vne
                elif s == 5:
                    v = new
                    new += 1
                elif s == 6:
                    if k_other >= other.size:
                        return 1
                    v = other[k_other]
                    k_other += 1
                else:
                    return 1
                if v < 0 or v >= n_values or v > new:
                    return 1
                idx[z, y, x] = v
    return 0 if new == n_values and k_other == other.size else 1
