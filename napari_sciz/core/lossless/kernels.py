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

__all__ = [
    "CLS_LUT",
    "RING",
    "WT_LUT",
    "class_table",
    "class_runs",
    "wave_context",
    "wave_finish",
    "weight_table",
]

_N_NBR = 11


_N_SUB = 7


#: extra neighbours of the wide least squares (version 6, :mod:`.xls`)
_N_XT = 14


#: error sums whose blend weight the decoders look up in a table
WT_LUT = 2048


#: activity values whose context class the decoders look up in a table
CLS_LUT = 4096


def class_table(thr: np.ndarray) -> np.ndarray:
    """Context class (``searchsorted(thr, c, "right")``) of every activity ``c < CLS_LUT``."""
    return np.searchsorted(thr, np.arange(CLS_LUT), side="right").astype(np.uint8)


def weight_table(n: int) -> np.ndarray:
    """``1 / (1 + s)^2`` for ``s < n``, rounded exactly as the blend computes it."""
    q = np.arange(n, dtype=np.float64) + 1.0
    q = q * q
    return 1.0 / q


@njit(cache=True, nogil=True, inline="always")
def _weight(s: int, wt_lut: np.ndarray) -> float:  # pragma: no cover - compiled
    """``1 / (1 + s)^2`` in binary64 (from the table when ``s`` is small: the same double)."""
    if s < wt_lut.shape[0]:
        return wt_lut[s]
    q = np.float64(s)
    q = q + 1.0
    q = q * q
    return 1.0 / q


@njit(cache=True, nogil=True, inline="always")
def predict(
    nv: np.ndarray,
    cells: np.ndarray,
    err: np.ndarray,
    sub_ids: np.ndarray,
    ls_w: np.ndarray,
    ls_b: np.ndarray,
    z: int,
    shift: int,
    wt_lut: np.ndarray,
    sv: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Prediction of a voxel from its neighbour values ``nv`` (cells ``cells``).

    Fills ``sv`` with the sub-predictions of ``sub_ids`` and blends them with the weights of
    their errors ``err[cells[:4]]`` (``wt_lut``: :func:`weight_table`); ``ls_w`` ``(11, d)``,
    ``ls_b``: the least-squares weights of slice ``z``.
    """
    k_sub = sub_ids.shape[0]
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
        sv[s] = p
    if k_sub == 1:
        return sv[0]
    # inverse-squared-error blend relative to the first sub-prediction
    c0, c1, c2, c3 = cells[0], cells[1], cells[2], cells[3]
    den = _weight(err[c0, 0] + err[c1, 0] + err[c2, 0] + err[c3, 0], wt_lut)
    num = 0.0
    for s in range(1, k_sub):
        wt = _weight(err[c0, s] + err[c1, s] + err[c2, s] + err[c3, s], wt_lut)
        term = wt * np.float64(sv[s] - sv[0])
        if s == 1:
            num = term
        else:
            num = num + term
        den = den + wt
    return sv[0] + np.int64(np.floor(num / den + 0.5))


@njit(cache=True, nogil=True, inline="always")
def context_class(
    absr: np.ndarray,
    cells: np.ndarray,
    nv: np.ndarray,
    thr: np.ndarray,
    cls_lut: np.ndarray,
    n_tex: int,
) -> int:  # pragma: no cover - compiled
    """Context class of a voxel: activity class of its neighbours' absolute residuals
    (``searchsorted(thr, c, "right")``, from ``cls_lut`` for small ``c``) times its texture
    level when ``n_tex > 1``."""
    c = 2 * (absr[cells[0]] + absr[cells[1]]) + absr[cells[2]] + absr[cells[3]] + absr[cells[4]]
    if c < cls_lut.shape[0]:
        cl = np.int64(cls_lut[c])
    else:
        lo_i, hi_i = 0, thr.shape[0]
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
    return cl


@njit(cache=True, nogil=True, inline="always")
def _load64(bit_bytes: np.ndarray, byte: int) -> np.uint64:  # pragma: no cover - compiled
    """Big-endian 64 bits of ``bit_bytes`` from ``byte`` (the array is padded with 8 zero
    bytes)."""
    win = np.uint64(0)
    for b in range(8):
        win = (win << np.uint64(8)) | np.uint64(bit_bytes[byte + b])
    return win


@njit(cache=True, nogil=True, inline="always")
def residual(
    tk: int, tok_nb: np.ndarray, tok_hi: np.ndarray, bit_bytes: np.ndarray, cursor: int
) -> tuple[int, int]:  # pragma: no cover - compiled
    """Residual of token ``tk`` and its raw bits at bit ``cursor`` (``bit_bytes`` padded with
    8 zero bytes); returns ``(residual, new cursor)`` (the caller checks the length)."""
    nb = tok_nb[tk]
    u = tok_hi[tk]
    if nb:
        bits = (_load64(bit_bytes, cursor >> 3) << np.uint64(cursor & 7)) >> np.uint64(64 - nb)
        u += np.int64(bits)
        cursor += nb
    return (u >> 1) ^ -(u & 1), cursor


#: neighbours (``_NBR_NAMES`` order) of an inner voxel: wavefront, slice and row offsets
_INNER_DT = np.array([-1, -2, -3, -1, -3, -2, -4, -5, -1, -4, -2], np.int64)


_INNER_DZ = np.array([0, 0, 0, 0, -1, 0, 0, -1, -1, -1, -1], np.int64)


_INNER_DY = np.array([0, -1, -1, -1, 0, 0, -2, -1, 1, 0, 0], np.int64)


#: wavefronts kept in the decoder's ring of state (every neighbour is at most 5 back)
RING = 8


@njit(cache=True, nogil=True, inline="always")
def _ring_cell(t: int, z: int, y: int, d1: int, h: int) -> int:  # pragma: no cover - compiled
    """Cell of voxel row ``(z, y)`` of wavefront ``t`` in the ring (``z = -1``: zeros)."""
    return ((t & (RING - 1)) * d1 + z + 1) * h + y


@njit(cache=True, nogil=True, inline="always")
def _y_range(t: int, z: int, h: int, w: int) -> tuple[int, int]:  # pragma: no cover
    """Rows ``y`` of slice ``z`` that have a voxel on wavefront ``t`` (``0 <= x < w``)."""
    r = t - 3 * z
    y0 = max(0, (r - w) // 2 + 1)
    y1 = min(h - 1, r // 2)
    return y0, y1


@njit(cache=True, nogil=True)
def _neighbour_cells(
    t: int, z: int, y: int, x: int, d1: int, h: int, w: int, cells: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Ring cells of the 11 neighbours (``_NBR_NAMES`` order, with the causal fallbacks of
    :func:`napari_sciz.core.lossless.predict._nbr_maps`) of voxel ``(z, y, x)``."""
    p = _ring_cell(t - 3, z - 1, y, d1, h)
    if x > 0:
        wc = _ring_cell(t - 1, z, y, d1, h)
    elif y > 0:
        wc = _ring_cell(t - 2, z, y - 1, d1, h)
    else:
        wc = p
    if y > 0:
        nc = _ring_cell(t - 2, z, y - 1, d1, h)
    elif x > 0:
        nc = _ring_cell(t - 1, z, y, d1, h)
    else:
        nc = p
    cells[0] = wc
    cells[1] = nc
    cells[2] = _ring_cell(t - 3, z, y - 1, d1, h) if y > 0 and x > 0 else nc
    cells[3] = _ring_cell(t - 1, z, y - 1, d1, h) if y > 0 and x < w - 1 else nc
    cells[4] = p
    cells[5] = _ring_cell(t - 2, z, y, d1, h) if x > 1 else wc
    cells[6] = _ring_cell(t - 4, z, y - 2, d1, h) if y > 1 else nc
    cells[7] = _ring_cell(t - 5, z - 1, y - 1, d1, h) if y > 0 else p
    cells[8] = _ring_cell(t - 1, z - 1, y + 1, d1, h) if y < h - 1 else p
    cells[9] = _ring_cell(t - 4, z - 1, y, d1, h) if x > 0 else p
    cells[10] = _ring_cell(t - 2, z - 1, y, d1, h) if x < w - 1 else p


@njit(cache=True, nogil=True)
def wave_context(
    t: int,
    shape: np.ndarray,
    ring_v: np.ndarray,
    ring_err: np.ndarray,
    ring_abs: np.ndarray,
    sub_ids: np.ndarray,
    ls_w: np.ndarray,
    ls_b: np.ndarray,
    thr: np.ndarray,
    cls_lut: np.ndarray,
    wt_lut: np.ndarray,
    n_tex: int,
    shift: int,
    n_cls: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Sub-predictions ``(K, m)``, predictions, and wavefront ``t`` sorted by context.

    Returns ``subs``, ``pred`` and :func:`class_runs` of the contexts (``order``: voxels by
    context, stable; ``starts``: where each context's run begins, ``n_cls + 1`` entries).
    The wavefront's voxels are taken in C order (slice, then row). ``shape``: ``(d, h, w)``;
    ``ring_v``, ``ring_err`` (``(cells, K)``), ``ring_abs``: the state of the last
    :data:`RING` wavefronts (see :func:`_ring_cell`); ``sub_ids``: the active sub-predictors;
    ``ls_w`` ``(11, d)``, ``ls_b`` ``(d,)``: least-squares weights per slice; ``thr``: the
    class thresholds, ``cls_lut``: their classes of the small activities (``searchsorted(thr,
    c, "right")`` for ``c < len(cls_lut)``); ``wt_lut``: :func:`weight_table`.
    """
    d, h, w = shape[0], shape[1], shape[2]
    d1 = d + 1
    m = 0
    for z in range(d):
        y0, y1 = _y_range(t, z, h, w)
        m += max(0, y1 - y0 + 1)
    k_sub = sub_ids.shape[0]
    subs = np.empty((k_sub, m), np.int64)
    pred = np.empty(m, np.int64)
    cls = np.empty(m, np.int64)
    nv = np.empty(_N_NBR, np.int64)
    cells = np.empty(_N_NBR, np.int64)
    sv = np.empty(k_sub, np.int64)
    base = np.empty(_N_NBR, np.int64)  # cells of the neighbours of row 0 of slice 0 inside
    for k in range(_N_NBR):
        base[k] = _ring_cell(t + _INNER_DT[k], _INNER_DZ[k], _INNER_DY[k], d1, h)
    j = 0
    for z in range(d):
        y0, y1 = _y_range(t, z, h, w)
        for y in range(y0, y1 + 1):
            x = t - 3 * z - 2 * y
            if 2 <= y <= h - 2 and 2 <= x <= w - 2:
                zy = z * h + y
                for k in range(_N_NBR):
                    cells[k] = base[k] + zy
            else:
                _neighbour_cells(t, z, y, x, d1, h, w, cells)
            for k in range(_N_NBR):
                nv[k] = ring_v[cells[k]]
            pred[j] = predict(nv, cells, ring_err, sub_ids, ls_w, ls_b, z, shift, wt_lut, sv)
            for s in range(k_sub):
                subs[s, j] = sv[s]
            cls[j] = context_class(ring_abs, cells, nv, thr, cls_lut, n_tex)
            j += 1
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
    t: int,
    shape: np.ndarray,
    runs: np.ndarray,
    tok_sorted: np.ndarray,
    tok_nb: np.ndarray,
    tok_hi: np.ndarray,
    bit_bytes: np.ndarray,
    n_bits: int,
    cursor: int,
    subs: np.ndarray,
    pred: np.ndarray,
    ring_v: np.ndarray,
    ring_err: np.ndarray,
    ring_abs: np.ndarray,
    out: np.ndarray,
    cap: int,
) -> int:  # pragma: no cover - compiled
    """Values of wavefront ``t`` from its tokens and raw bits; the new bit cursor (-1:
    overrun).

    ``tok_sorted`` are the tokens in the order ``runs`` (voxels sorted by context);
    ``bit_bytes`` is the raw bit stream followed by 8 zero bytes. The values go to the ring
    and to ``out`` (the block, flat, C order).
    """
    d, h, w = shape[0], shape[1], shape[2]
    d1 = d + 1
    k_sub = subs.shape[0]
    limit = 8 * n_bits
    m = runs.shape[0]
    tok = np.empty(m, np.int64)
    for i in range(m):
        tok[runs[i]] = tok_sorted[i]
    j = 0
    for z in range(d):
        y0, y1 = _y_range(t, z, h, w)
        for y in range(y0, y1 + 1):
            r, cursor = residual(tok[j], tok_nb, tok_hi, bit_bytes, cursor)
            if cursor > limit:
                return -1
            val = pred[j] + r
            cell = _ring_cell(t, z, y, d1, h)
            ring_v[cell] = val
            for s in range(k_sub):
                ring_err[cell, s] = min(abs(val - subs[s, j]), cap)
            ring_abs[cell] = min(abs(r), cap)
            out[(z * h + y) * w + t - 3 * z - 2 * y] = val
            j += 1
    return cursor
