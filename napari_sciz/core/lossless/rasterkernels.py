"""Compiled decoder of a version-4 to -7 lossless lane (numba), voxel by voxel in C order.

:func:`decode_raster` decodes one lane of a block (:mod:`.lanes` runs the lanes on threads):
for each voxel it gathers the neighbours in a three-slice state, forms the sub-predictions
and their blend (the wide least squares of :mod:`.xls` included), walks the context tree and
reads the voxel's token and raw bits. It is one loop on purpose: a call with array arguments
costs reference counting per voxel, so the per-voxel steps are written out in it. The
arithmetic is that of :mod:`.kernels` and of the numpy encoder, operation for operation, so
values are identical on every machine. Compiled on first use and cached on disk by numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .kernels import _N_NBR, _N_XT, _load64, _weight

__all__ = ["decode_raster"]


@njit(cache=True, nogil=True)
def _raster_cells(
    here: int, p: int, y: int, x: int, h: int, w: int, cells: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Cells of the 11 neighbours of voxel ``(y, x)`` of a slice near its border, in the
    two-slice state of :func:`decode_raster` (``here``: the voxel's cell, ``p``: the cell of
    the same position in the previous slice), with the causal fallbacks of
    :func:`napari_sciz.core.lossless.predict._nbr_maps`."""
    wc = here - 1 if x > 0 else (here - w if y > 0 else p)
    nc = here - w if y > 0 else (here - 1 if x > 0 else p)
    cells[0] = wc
    cells[1] = nc
    cells[2] = here - w - 1 if y > 0 and x > 0 else nc
    cells[3] = here - w + 1 if y > 0 and x < w - 1 else nc
    cells[4] = p
    cells[5] = here - 2 if x > 1 else wc
    cells[6] = here - 2 * w if y > 1 else nc
    cells[7] = p - w if y > 0 else p
    cells[8] = p + w if y < h - 1 else p
    cells[9] = p - 1 if x > 0 else p
    cells[10] = p + 1 if x < w - 1 else p


@njit(cache=True, nogil=True)
def _ext_cells(
    here: int, p: int, pp: int, y: int, x: int, h: int, w: int, cells: np.ndarray, xc: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Cells of the 14 extra neighbours of the wide least squares (:mod:`.xls`) of voxel
    ``(y, x)`` near its slice's border: in the slice with the fallbacks of
    :data:`.xls.IN_SLICE` (``cells``: the 11 neighbours), in the previous slice clamped into
    it, two slices back at cell ``pp``."""
    # in the slice: NWW, NNW, NNE, NEE, WWW
    xc[0] = here - w - 2 if y >= 1 and x >= 2 else cells[2]
    xc[1] = here - 2 * w - 1 if y >= 2 and x >= 1 else cells[6]
    xc[2] = here - 2 * w + 1 if y >= 2 and x + 1 < w else cells[6]
    xc[3] = here - w + 2 if y >= 1 and x + 2 < w else cells[3]
    xc[4] = here - 3 if x >= 3 else cells[5]
    # in the previous slice, clamped: PNW, PNE, PSW, PSE, PWW, PEE, PNN, PSS
    ym, yp = max(y - 1, 0) - y, min(y + 1, h - 1) - y
    xm, xp = max(x - 1, 0) - x, min(x + 1, w - 1) - x
    xc[5] = p + ym * w + xm
    xc[6] = p + ym * w + xp
    xc[7] = p + yp * w + xm
    xc[8] = p + yp * w + xp
    xc[9] = p + max(x - 2, 0) - x
    xc[10] = p + min(x + 2, w - 1) - x
    xc[11] = p + (max(y - 2, 0) - y) * w
    xc[12] = p + (min(y + 2, h - 1) - y) * w
    xc[13] = pp


@njit(cache=True, nogil=True, inline="always")
def _big_class(c: int) -> int:  # pragma: no cover - compiled
    """``min(39, floor(2 log2(1 + c)))`` of a large ``c`` (no table)."""
    s = min(c, 1 << 20) + 1
    s = s * s
    k = -1
    while s:
        s >>= 1
        k += 1
    return min(k, 39)


@njit(cache=True, nogil=True)
def decode_raster(
    geom: np.ndarray,
    tokens: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    sub_ids: np.ndarray,
    calc_ids: np.ndarray,
    pmap: np.ndarray,
    ls_w: np.ndarray,
    ls_b: np.ndarray,
    xw: np.ndarray,
    xb: np.ndarray,
    xthr: np.ndarray,
    tree: np.ndarray,
    lut: np.ndarray,
    lut_pq: np.ndarray,
    cls_lut: np.ndarray,
    wt_lut: np.ndarray,
    flip: bool,
    level_shift: int,
    shift: int,
    tok_nb: np.ndarray,
    tok_hi: np.ndarray,
    bit_bytes: np.ndarray,
    bit_start: int,
    bit_end: int,
    cap: int,
    out: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Values of one lane of a version-4 or -5 block, voxel by voxel in C order, into ``out``.

    ``geom``: ``(d, h, w, z0, y0, H)``, the lane's shape, its first slice and row in the
    block of ``H`` rows; ``out``: the block, flat; ``ls_w``, ``ls_b``: the least-squares sets
    of the lane's slices. ``tokens``: every token grouped by context; this lane's tokens of
    context ``c`` are ``tokens[starts[c]:ends[c]]`` (C order). ``bit_bytes``: the raw bit
    stream and 8 zero bytes; this lane's bits are ``[bit_start, bit_end)``. Returns the bit
    position at the end, -1 when the raw bits run out, -2 when a context's tokens run out or
    are left over (a corrupted payload). ``sub_ids``: the blended sub-predictors;
    ``calc_ids``: those, then the others of the predictor map; ``pmap``: per gradient level,
    0 (the blend) or 1 + the position in ``calc_ids`` of the sub-predictor used alone.
    ``tree``: the context tree ``(4, nodes)`` (property, threshold, right child, leaf of
    :class:`.ctxtree.ContextTree`); ``lut``, ``lut_pq``: when ``lut_pq[0] >= 0``, the tree as a
    table: the context of properties ``lut_pq[0]`` = ``i`` and ``lut_pq[1]`` = ``j`` (0 when
    ``-1``) is ``lut[64 i + j]``; ``cls_lut``: the class of every value below its length;
    ``flip``: residuals are negated where ``sign(rW) + sign(rN) < 0``. ``xw`` ``(2 * 8,
    25)``, ``xb``: the wide least-squares weight sets (slice group, class) of sub-predictor 7
    (:mod:`.xls`); ``xthr``: its intensity classes' thresholds on ``W + N`` (empty: the class is
    the gradient level).
    """
    d, h, w, z0, y0, big_h = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5]
    hw = h * w
    k_sub = sub_ids.shape[0]
    # state of three slices: slice z in cells [(z % 3) hw, ...), the two before it in the
    # others (zeros before slice 0)
    vflat = np.zeros(3 * hw, np.int64)
    err = np.zeros((3 * hw, k_sub), np.int32)
    sres = np.zeros(3 * hw, np.int32)  # signed residuals (capped)
    nv = np.empty(_N_NBR, np.int64)
    cells = np.empty(_N_NBR, np.int64)
    xc = np.empty(_N_XT, np.int64)
    use_x = False
    for s in range(calc_ids.shape[0]):
        use_x = use_x or calc_ids[s] == 7
    n_xthr = xthr.shape[0]
    x_in = np.array([-w - 2, -2 * w - 1, -2 * w + 1, -w + 2, -3], np.int64)
    x_prev = np.array([-w - 1, -w + 1, w - 1, w + 1, -2, 2, -2 * w, 2 * w], np.int64)
    t_prop, t_thr, t_right, t_leaf = tree[0], tree[1], tree[2], tree[3]
    lut_p, lut_q = lut_pq[0], lut_pq[1]
    flip_i = np.int64(flip)
    sv = np.zeros(calc_ids.shape[0], np.int64)  # sub-predictions in calc_ids order
    n_grad = pmap.shape[0]
    mapped = False
    for g in range(n_grad):
        mapped = mapped or pmap[g] != 0
    # gradient level min(n_grad - 1, floor(log2(g1))) of every g1 = 1 + gradient below n_lvl
    n_lvl = 1 << n_grad
    lvl_lut = np.zeros(n_lvl, np.int64)
    for g in range(2, n_lvl):
        lvl_lut[g] = lvl_lut[g >> 1] + 1
    in_slice = np.array([-1, -w, -w - 1, -w + 1, 0, -2, -2 * w, -w, w, -1, 1], np.int64)
    n_wt, n_lut = wt_lut.shape[0], cls_lut.shape[0]
    cursor_cls = starts.copy()
    cursor = bit_start
    w_byte = bit_start >> 3  # the raw bits' 64-bit window starts at this byte
    win = _load64(bit_bytes, w_byte)
    for z in range(d):
        cur = (z % 3) * hw
        prev = ((z + 2) % 3) * hw
        pprev = ((z + 1) % 3) * hw if z >= 2 else prev  # two slices back (from slice 1: P)
        group = 8 * min(z, 1)  # the wide least squares' slice group (first rows of xw)
        for y in range(h):
            inner_row = 2 <= y <= h - 2
            x_row = 2 <= y <= h - 3
            row_out = ((z0 + z) * big_h + y0 + y) * w
            for x in range(w):
                here = cur + y * w + x
                p = prev + y * w + x
                if inner_row and 2 <= x <= w - 2:
                    for k in range(4):
                        cells[k] = here + in_slice[k]
                    for k in range(5, 7):
                        cells[k] = here + in_slice[k]
                    cells[4] = p
                    for k in range(7, _N_NBR):
                        cells[k] = p + in_slice[k]
                else:
                    _raster_cells(here, p, y, x, h, w, cells)
                for k in range(_N_NBR):
                    nv[k] = vflat[cells[k]]
                level = 0
                xpred = np.int64(0)
                if use_x or mapped:  # gradient level (predictor map, wide least squares)
                    g1 = abs(nv[0] - nv[2]) + abs(nv[1] - nv[2]) + abs(nv[1] - nv[3]) + 1
                    level = lvl_lut[min(g1, n_lvl - 1)]  # (a table: no unpredictable branch)
                if use_x:  # the wide least squares (taps 0-10: nv, 11-24: the extra cells)
                    if n_xthr:  # intensity class: thresholds at or below W + N
                        m_wn = nv[0] + nv[1]
                        row = group
                        for k in range(n_xthr):
                            row += np.int64(xthr[k] <= m_wn)
                    else:
                        row = group + level
                    acc = xb[row]
                    for k in range(_N_NBR):
                        acc += xw[row, k] * nv[k]
                    if x_row and 3 <= x <= w - 3:
                        for k in range(5):
                            acc += xw[row, _N_NBR + k] * vflat[here + x_in[k]]
                        if group:  # (the first slice of a lane has no previous slices)
                            for k in range(8):
                                acc += xw[row, _N_NBR + 5 + k] * vflat[p + x_prev[k]]
                            acc += xw[row, _N_NBR + 13] * vflat[pprev + y * w + x]
                    else:
                        _ext_cells(here, p, pprev + y * w + x, y, x, h, w, cells, xc)
                        for k in range(_N_XT):
                            acc += xw[row, _N_NBR + k] * vflat[xc[k]]
                    xpred = acc >> 12
                # sub-predictions and their blend: predict(), written out here (a call with
                # array arguments costs reference counting per voxel)
                for s in range(calc_ids.shape[0]):
                    i = calc_ids[s]
                    if i == 0:
                        sp = nv[0]
                    elif i == 1:
                        sp = nv[1]
                    elif i == 2:
                        sp = nv[0] + nv[1] - nv[2]
                    elif i == 3:
                        sp = nv[0] + nv[3] - nv[1]
                    elif i == 4:
                        acc = np.int64(0)
                        for k in range(_N_NBR):
                            acc += ls_w[k, z] * nv[k]
                        sp = (acc + ls_b[z]) >> shift
                    elif i == 5:
                        sp = nv[4] + nv[0] - nv[9]
                    elif i == 6:
                        sp = min(max(nv[0] + nv[1] - nv[2], min(nv[0], nv[1])), max(nv[0], nv[1]))
                    else:  # the wide least squares
                        sp = xpred
                    sv[s] = sp
                s0 = sv[0]
                pred = s0
                if k_sub > 1:
                    c0, c1, c2, c3 = cells[0], cells[1], cells[2], cells[3]
                    es = err[c0, 0] + err[c1, 0] + err[c2, 0] + err[c3, 0]
                    den = wt_lut[es] if es < n_wt else _weight(es, wt_lut)
                    num = 0.0
                    for s in range(1, k_sub):
                        es = err[c0, s] + err[c1, s] + err[c2, s] + err[c3, s]
                        wt = wt_lut[es] if es < n_wt else _weight(es, wt_lut)
                        term = wt * np.float64(sv[s] - s0)
                        num = term if s == 1 else num + term
                        den = den + wt
                    pred += np.int64(np.floor(num / den + 0.5))
                if mapped:  # the predictor map: this gradient level's sub-predictor alone
                    if pmap[level]:
                        pred = sv[pmap[level] - 1]
                # the context: from the table of a tree that tests at most two properties, else
                # down the tree, each property computed when a node asks for it
                r_w, r_n = np.int64(sres[cells[0]]), np.int64(sres[cells[1]])
                # (as arithmetic: residual signs are noise, branches on them mispredict)
                signs = (
                    np.int64(r_w > 0) - np.int64(r_w < 0) + np.int64(r_n > 0) - np.int64(r_n < 0)
                )
                # (one loop for both: the table's properties in turn, or the tree's nodes; the
                # property computed once, written out: a call costs reference counting)
                node, idx, k = 0, 0, 0
                pid = lut_p if lut_p >= 0 else t_prop[0]
                while pid >= 0:
                    if pid == 2:
                        pv = abs(signs)
                    elif pid == 3:
                        pv = min(max(pred, 0) >> level_shift, 31)
                    else:
                        if pid == 0:
                            c = 2 * (abs(r_w) + abs(r_n)) + abs(np.int64(sres[cells[2]]))
                            c += abs(np.int64(sres[cells[3]])) + abs(np.int64(sres[cells[4]]))
                        elif pid == 1:
                            c = abs(nv[0] - nv[2]) + abs(nv[1] - nv[2]) + abs(nv[1] - nv[3])
                        elif pid == 4:
                            c = abs(nv[0] - nv[2])
                        elif pid == 5:
                            c = abs(nv[1] - nv[2])
                        elif pid == 6:
                            c = abs(r_w)
                        elif pid == 7:
                            c = abs(r_n)
                        elif pid == 8:
                            c = abs(np.int64(sres[cells[4]]))
                        elif pid == 9:
                            c = abs(nv[1] - nv[3])
                        elif pid == 10:  # spread of the blended sub-predictions
                            if k_sub > 1:
                                lo_s, hi_s = sv[0], sv[0]
                                for s in range(1, k_sub):
                                    lo_s, hi_s = min(lo_s, sv[s]), max(hi_s, sv[s])
                                c = hi_s - lo_s
                            else:
                                c = abs(nv[0] - nv[1])
                        elif pid == 11:
                            c = abs(nv[4] - pred)
                        elif pid == 12:
                            c = abs(nv[0] - nv[5]) + abs(nv[1] - nv[6])
                        else:  # the smallest error sum of the blended sub-predictors
                            c = 0
                            if k_sub > 1:
                                c0, c1, c2, c3 = cells[0], cells[1], cells[2], cells[3]
                                c = np.int64(err[c0, 0] + err[c1, 0] + err[c2, 0] + err[c3, 0])
                                for s in range(1, k_sub):
                                    es = err[c0, s] + err[c1, s] + err[c2, s] + err[c3, s]
                                    c = min(c, np.int64(es))
                        pv = np.int64(cls_lut[c]) if c < n_lut else _big_class(c)
                    if lut_p >= 0:
                        idx = idx * 64 + pv
                        k += 1
                        pid = lut_q if k == 1 else -1
                    else:
                        node = node + 1 if pv <= t_thr[node] else t_right[node]
                        pid = t_prop[node]
                if lut_p >= 0:
                    cl = lut[idx * 64 if k == 1 else idx]
                else:
                    cl = t_leaf[node]
                pos = cursor_cls[cl]
                if pos >= ends[cl]:
                    return -2
                cursor_cls[cl] = pos + 1
                tk = tokens[pos]
                nb = tok_nb[tk]
                u = tok_hi[tk]
                if nb:
                    if cursor + nb > bit_end:
                        return -1
                    off = cursor - 8 * w_byte
                    if off + nb > 64:  # move the window
                        w_byte = cursor >> 3
                        win = _load64(bit_bytes, w_byte)
                        off = cursor & 7
                    u += np.int64((win << np.uint64(off)) >> np.uint64(64 - nb))
                    cursor += nb
                r = (u >> 1) ^ -(u & 1)
                r *= 1 - 2 * (flip_i & np.int64(signs < 0))
                val = pred + r
                vflat[here] = val
                if k_sub > 1:  # (errors are read by the blend and its property only)
                    for s in range(k_sub):
                        err[here, s] = min(abs(val - sv[s]), cap)
                sres[here] = min(max(r, -cap), cap)
                out[row_out + x] = val
    for c in range(cursor_cls.shape[0]):
        if cursor_cls[c] != ends[c]:
            return -2
    return cursor
