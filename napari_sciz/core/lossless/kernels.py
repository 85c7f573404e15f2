"""Compiled per-voxel work of the lossless decoder (numba), one wavefront at a time.

A version-3 payload is decoded wavefront by wavefront (voxels with equal ``3z + 2y + x``,
whose neighbours are all in earlier wavefronts). For each wavefront :func:`wave_context`
computes every voxel's sub-predictions, blended prediction and context class; the entropy
coder then decodes the wavefront's tokens class by class (the encoder sorted them so: one
fixed model per run); :func:`wave_finish` reads the raw bits, forms the values and updates the
neighbour state. The arithmetic is the numpy formulation's of :mod:`napari_sciz.core.lossless`,
operation for operation (integers, and the blend's binary64 operations in the same order
without contraction), so values are identical on every machine; the round trips of the test
suite check it. Compiled on first use and cached on disk by numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["class_runs", "wave_context", "wave_finish"]

_N_NBR = 11


@njit(cache=True, nogil=True)
def wave_context(
    idx: np.ndarray,
    offsets: np.ndarray,
    b_local: np.ndarray,
    b_cells: np.ndarray,
    hw: int,
    vflat: np.ndarray,
    err: np.ndarray,
    absr: np.ndarray,
    sub_ids: np.ndarray,
    ls_w: np.ndarray,
    ls_b: np.ndarray,
    thr: np.ndarray,
    n_tex: int,
    shift: int,
    n_cls: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Sub-predictions ``(K, m)``, predictions, and the wavefront sorted by context.

    Returns ``subs``, ``pred`` and :func:`class_runs` of the contexts (``order``: voxels by
    context, stable; ``starts``: where each context's run begins, ``n_cls + 1`` entries).

    ``idx``: voxel indices (C order) of the wavefront; ``offsets``/``b_local``/``b_cells``:
    neighbour cells as :class:`napari_sciz.core.lossless._Neighbours` gives them; ``vflat``,
    ``err`` (``(cells, K)``), ``absr``: the state of decoded cells; ``sub_ids``: the active
    sub-predictors; ``ls_w`` ``(11, d)``, ``ls_b`` ``(d,)``: least-squares weights per slice.
    """
    m = idx.shape[0]
    k_sub = sub_ids.shape[0]
    subs = np.empty((k_sub, m), np.int64)
    pred = np.empty(m, np.int64)
    cls = np.empty(m, np.int64)
    nv = np.empty(_N_NBR, np.int64)
    cells = np.empty(_N_NBR, np.int64)
    n_thr = thr.shape[0]
    nb_border = b_local.shape[0]
    bp = 0  # next border voxel (b_local is increasing)
    for j in range(m):
        if bp < nb_border and b_local[bp] == j:
            for k in range(_N_NBR):
                cells[k] = b_cells[k, bp]
            bp += 1
        else:
            for k in range(_N_NBR):
                cells[k] = idx[j] + offsets[k]
        for k in range(_N_NBR):
            nv[k] = vflat[cells[k]]
        for s in range(k_sub):
            i = sub_ids[s]
            if i == 0:
                p = nv[0]
            elif i == 1:
                p = nv[1]
            elif i == 2:
                p = nv[0] + nv[1] - nv[2]
            elif i == 3:
                p = nv[0] + nv[3] - nv[1]
            elif i == 4:
                z = idx[j] // hw
                acc = np.int64(0)
                for k in range(_N_NBR):
                    acc += ls_w[k, z] * nv[k]
                p = (acc + ls_b[z]) >> shift
            elif i == 5:
                p = nv[4] + nv[0] - nv[9]
            else:
                lo = min(nv[0], nv[1])
                hi = max(nv[0], nv[1])
                p = min(max(nv[0] + nv[1] - nv[2], lo), hi)
            subs[s, j] = p
        if k_sub == 1:
            pred[j] = subs[0, j]
        else:
            # inverse-squared-error blend, binary64, in the numpy formulation's order
            q0 = np.float64(
                err[cells[0], 0] + err[cells[1], 0] + err[cells[2], 0] + err[cells[3], 0]
            )
            q0 = q0 + 1.0
            q0 = q0 * q0
            den = 1.0 / q0
            num = 0.0
            for s in range(1, k_sub):
                q = np.float64(
                    err[cells[0], s] + err[cells[1], s] + err[cells[2], s] + err[cells[3], s]
                )
                q = q + 1.0
                q = q * q
                wt = 1.0 / q
                term = wt * np.float64(subs[s, j] - subs[0, j])
                if s == 1:
                    num = term
                    den = den + wt
                else:
                    num = num + term
                    den = den + wt
            pred[j] = subs[0, j] + np.int64(np.floor(num / den + 0.5))
        c = 2 * (absr[cells[0]] + absr[cells[1]]) + absr[cells[2]] + absr[cells[3]] + absr[cells[4]]
        lo_i, hi_i = 0, n_thr  # searchsorted(thr, c, side="right")
        while lo_i < hi_i:
            mid = (lo_i + hi_i) >> 1
            if thr[mid] <= c:
                lo_i = mid + 1
            else:
                hi_i = mid
        cl = lo_i
        if n_tex > 1:
            g = abs(nv[0] - nv[2]) + abs(nv[1] - nv[2]) + abs(nv[1] - nv[3])
            cl = cl * n_tex + min(g, n_tex - 1)
        cls[j] = cl
    order, starts = class_runs(cls, n_cls)
    return subs, pred, order, starts


@njit(cache=True, nogil=True)
def class_runs(cls: np.ndarray, n_cls: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """Stable counting sort of a wavefront by class: ``(order, starts)`` (``n_cls + 1``)."""
    starts = np.zeros(n_cls + 1, np.int64)
    for j in range(cls.shape[0]):
        starts[cls[j] + 1] += 1
    for c in range(n_cls):
        starts[c + 1] += starts[c]
    fill = starts[:-1].copy()
    order = np.empty(cls.shape[0], np.int64)
    for j in range(cls.shape[0]):
        c = cls[j]
        order[fill[c]] = j
        fill[c] += 1
    return order, starts


@njit(cache=True, nogil=True)
def wave_finish(
    idx: np.ndarray,
    hw: int,
    runs: np.ndarray,
    tok_sorted: np.ndarray,
    tok_nb: np.ndarray,
    tok_hi: np.ndarray,
    bit_bytes: np.ndarray,
    n_bits: int,
    cursor: int,
    subs: np.ndarray,
    pred: np.ndarray,
    vflat: np.ndarray,
    err: np.ndarray,
    absr: np.ndarray,
    cap: int,
) -> int:  # pragma: no cover - compiled
    """Values of a wavefront from its tokens and raw bits; the new bit cursor (-1: overrun).

    ``tok_sorted`` are the tokens in the order ``runs`` (voxels sorted by context);
    ``bit_bytes`` is the raw bit stream followed by 8 zero bytes.
    """
    k_sub = subs.shape[0]
    limit = 8 * n_bits
    m = idx.shape[0]
    tok = np.empty(m, np.int64)
    for i in range(m):
        tok[runs[i]] = tok_sorted[i]
    for j in range(m):
        t = tok[j]
        nb = tok_nb[t]
        u = tok_hi[t]
        if nb:
            if cursor + nb > limit:
                return -1
            byte = cursor >> 3
            win = np.uint64(0)
            for b in range(8):
                win = (win << np.uint64(8)) | np.uint64(bit_bytes[byte + b])
            sh = np.uint64(64 - (cursor & 7) - nb)
            bits = (win >> sh) & ((np.uint64(1) << np.uint64(nb)) - np.uint64(1))
            u += np.int64(bits)
            cursor += nb
        r = (u >> 1) ^ -(u & 1)
        val = pred[j] + r
        cell = idx[j] + hw
        vflat[cell] = val
        for s in range(k_sub):
            err[cell, s] = min(abs(val - subs[s, j]), cap)
        absr[cell] = min(abs(r), cap)
    return cursor
