"""The causal predictor of payload versions 2 and 3.

Every voxel is predicted from 11 causal neighbours (``W, N, NW, NE, WW, NN`` in its slice,
``P, PN, PS, PW, PE`` in the previous slice) by one sub-predictor or an inverse-squared-error
blend of several; its context class comes from the neighbours' absolute residuals and the
neighbourhood's texture. The decoder walks the block along wavefronts ``3z + 2y + x``.
"""

from __future__ import annotations

import math
import struct

import numpy as np

#: sub-predictors of version 2 (bit i of the payload's mask enables sub-predictor i)
_SUB_NAMES = ("W", "N", "W+N-NW", "W+NE-N", "LS", "P+W-PW", "MED")


_SUB_LS = 4


_N_SUB = len(_SUB_NAMES)


#: version 6 adds sub-predictor 7, the wide least squares of :mod:`.xls`
_SUB_XLS = 7


_N_SUB_V6 = 8


#: neighbours of a voxel: in the slice (fallbacks at the borders) and in the previous slice
_NBR_NAMES = ("W", "N", "NW", "NE", "P", "WW", "NN", "PN", "PS", "PW", "PE")


_N_NBR = len(_NBR_NAMES)


_IN_ROWS = np.array([0, 1, 2, 3, 5, 6])  # in the slice


_PREV_ROWS = np.array([4, 7, 8, 9, 10])  # in the previous slice


#: least-squares weights are in 1/256ths; 11 weights (one per neighbour) and a bias
_V2_SHIFT = 8


_V2_LS = struct.Struct("<11hq")


#: errors and absolute residuals are capped (keeps the blend and the context in int64)
_V2_CAP = (1 << 20) - 1


#: blend weights: 1 / (1 + S_i)^2, S_i = error sum of sub-predictor i at W, N, NW, NE
#: activity classes: floor(2 log2(1 + c)) capped, c = 2|r_W| + 2|r_N| + |r_NW| + |r_NE| + |r_P|
_N_CLS2 = 40


_CLS_THR = np.array([math.isqrt((1 << k) - 1) for k in range(1, _N_CLS2)], np.int64)


def _class_of(c: np.ndarray, thr: np.ndarray = _CLS_THR) -> np.ndarray:
    """``min(39, floor(2 log2(1 + c)))`` in integer arithmetic (``c >= 0``).

    With a subset ``thr`` of the thresholds: the index of the bin of merged classes.
    """
    # class k is reached when (1 + c)^2 >= 2^k, i.e. c >= isqrt(2^k - 1)
    return np.searchsorted(thr, c, side="right")


def _nbr_maps(h: int, w: int) -> np.ndarray:
    """Slice positions of the neighbours (rows in the order of ``_NBR_NAMES``) of every
    position ``y*w + x`` of a slice.

    In-slice neighbours (``W, N, NW, NE, WW, NN``) have causal fallbacks at the borders (-1:
    none, the voxel of the previous slice is used); previous-slice neighbours (``P, PN, PS,
    PW, PE``) are clamped to the slice.
    """
    pos = np.arange(h * w, dtype=np.int64)
    y, x = np.divmod(pos, w)
    m = np.empty((_N_NBR, h * w), np.int64)
    m[0] = np.where(x > 0, pos - 1, np.where(y > 0, pos - w, -1))  # W (first column: N)
    m[1] = np.where(y > 0, pos - w, np.where(x > 0, pos - 1, -1))  # N (first row: W)
    m[2] = np.where((y > 0) & (x > 0), pos - w - 1, m[1])  # NW
    m[3] = np.where((y > 0) & (x < w - 1), pos - w + 1, m[1])  # NE
    m[4] = pos  # P
    m[5] = np.where(x > 1, pos - 2, m[0])  # WW
    m[6] = np.where(y > 1, pos - 2 * w, m[1])  # NN
    m[7] = np.where(y > 0, pos - w, pos)  # PN
    m[8] = np.where(y < h - 1, pos + w, pos)  # PS
    m[9] = np.where(x > 0, pos - 1, pos)  # PW
    m[10] = np.where(x < w - 1, pos + 1, pos)  # PE
    return m


class _Neighbours:
    """Indices of the 11 neighbours of voxels of a ``(d, h, w)`` block.

    They index arrays of ``(d + 1) * h * w`` cells: slice ``-1`` (the first ``h * w`` cells,
    all 0) stands for the missing previous slice of slice 0, voxel ``i`` (C order) is cell
    ``h * w + i``.
    """

    def __init__(self, d: int, h: int, w: int) -> None:
        self.hw = hw = h * w
        self.maps = _nbr_maps(h, w)
        self.offsets = (
            hw
            + np.array(
                [-1, -w, -w - 1, -w + 1, -hw, -2, -2 * w, -hw - w, -hw + w, -hw - 1, -hw + 1],
                np.int64,
            )[:, None]
        )
        y, x = np.divmod(np.arange(hw), w)
        self.border = ~((x >= 2) & (x <= w - 2) & (y >= 2) & (y <= h - 2))

    def index(self, idx: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Neighbour cells ``(11, m)`` of the voxels ``idx`` (C order) at slice positions
        ``pos``."""
        out = idx + self.offsets
        bad = np.nonzero(self.border[pos])[0]
        if bad.size:
            out[:, bad] = self._border_cells(idx[bad], pos[bad])
        return out

    def _border_cells(self, idx: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Neighbour cells of voxels near the slice border (with the fallbacks)."""
        j = self.maps[:, pos]
        prev = idx - pos  # the previous slice starts there (in cells)
        fix = np.empty_like(j)
        j_in = j[_IN_ROWS]
        fix[_IN_ROWS] = np.where(j_in >= 0, prev + self.hw + j_in, prev + pos)
        fix[_PREV_ROWS] = prev + j[_PREV_ROWS]
        return fix

    def plan(
        self, order: np.ndarray, bounds: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Border voxels of every wavefront, computed once for the decoder.

        Returns the position of each border voxel inside its wavefront, its neighbour cells
        ``(11, n_border)`` and, per wavefront, the start of its border voxels (``len(bounds)``
        entries).
        """
        pos = order % self.hw
        sel = np.nonzero(self.border[pos])[0]
        group = np.searchsorted(bounds, sel, side="right") - 1
        cells = self._border_cells(order[sel], pos[sel])
        return sel - bounds[group], cells, np.searchsorted(sel, bounds)


def _sub_predictions(
    nv: np.ndarray,
    mask: int,
    ls_w: np.ndarray | None,
    ls_b: np.ndarray | int,
    xls_pred: np.ndarray | None = None,
) -> np.ndarray:
    """Sub-predictions ``(K, m)`` from the neighbour values ``nv`` ``(11, m)`` (int64).

    ``ls_w``: least-squares weights ``(11, m)`` or ``(11, 1)``; ``ls_b``: bias;
    ``xls_pred``: the wide least-squares sub-prediction (:mod:`.xls`) when ``mask`` has it.
    """
    subs = []
    for i in range(_N_SUB_V6):
        if not mask >> i & 1:
            continue
        if i == _SUB_XLS:
            assert xls_pred is not None
            subs.append(xls_pred)
            continue
        if i == 0:
            subs.append(nv[0])
        elif i == 1:
            subs.append(nv[1])
        elif i == 2:
            subs.append(nv[0] + nv[1] - nv[2])
        elif i == 3:
            subs.append(nv[0] + nv[3] - nv[1])
        elif i == _SUB_LS:
            assert ls_w is not None
            subs.append(((ls_w * nv).sum(axis=0) + ls_b) >> _V2_SHIFT)
        elif i == 5:
            subs.append(nv[4] + nv[0] - nv[9])
        else:  # median edge detector (LOCO-I)
            lo, hi = np.minimum(nv[0], nv[1]), np.maximum(nv[0], nv[1])
            subs.append(np.clip(nv[0] + nv[1] - nv[2], lo, hi))
    return np.stack(subs)


def _blend(subs: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Inverse-squared-error blend of the sub-predictions ``subs`` ``(K, m)``.

    ``s``: error sums ``(m, K)``. The weights ``1 / (1 + s)^2`` and the weighted mean are
    computed in binary64 one elementwise operation at a time, in a fixed order (no reductions
    whose order numpy may choose), so every IEEE-754 machine rounds them identically.
    """
    k = subs.shape[0]
    if k == 1:
        return subs[0]
    q = np.array(s.T, dtype=np.float64, order="C")
    q += 1.0
    q *= q
    wts = 1.0 / q
    diff = (subs[1:] - subs[0]).astype(np.float64)
    num = wts[1] * diff[0]
    den = wts[0] + wts[1]
    for i in range(2, k):
        num += wts[i] * diff[i - 1]
        den += wts[i]
    return subs[0] + np.floor(num / den + 0.5).astype(np.int64)


def _err_sum(err: np.ndarray, nidx: np.ndarray) -> np.ndarray:
    """Error sums of the sub-predictors at W, N, NW, NE ``(m, K)`` (int32, capped terms)."""
    return err[nidx[0]] + err[nidx[1]] + err[nidx[2]] + err[nidx[3]]


def _ctx_class(na: np.ndarray, thr: np.ndarray = _CLS_THR) -> np.ndarray:
    """Context class from the absolute residuals ``(5, m)`` at W, N, NW, NE, P."""
    return _class_of(2 * (na[0] + na[1]) + na[2] + na[3] + na[4], thr)


#: texture levels of the context (second dimension, optional per block)
_N_TEX = 3


#: gradient levels of the predictor map (version 4): ``min(7, floor(log2(1 + g)))`` with the
#: texture's ``g``; each level codes with the blend or one sub-predictor
N_GRAD = 8


def gradient_level(nv: np.ndarray) -> np.ndarray:
    """Gradient level ``min(7, floor(log2(1 + |W - NW| + |N - NW| + |N - NE|)))``."""
    g = np.abs(nv[0] - nv[2]) + np.abs(nv[1] - nv[2]) + np.abs(nv[1] - nv[3])
    level = np.zeros(g.shape, np.int64)
    for k in range(1, N_GRAD):
        level += (g + 1) >= (1 << k)
    return level


def _texture(nv: np.ndarray) -> np.ndarray:
    """Texture level ``min(2, |W - NW| + |N - NW| + |N - NE|)`` (0: flat neighbourhood)."""
    g = np.abs(nv[0] - nv[2]) + np.abs(nv[1] - nv[2]) + np.abs(nv[1] - nv[3])
    return np.minimum(g, _N_TEX - 1)


def _ls_fit_v2(nv: np.ndarray, target: np.ndarray, use_prev: bool) -> tuple[np.ndarray, int]:
    """Weights (1/256) and bias of the 11-neighbour least-squares predictor of one slice.

    Robust fit (encoder only, any float result is fine): iteratively reweighted least squares
    with weights ``1 / (|r| + 2)``, so that edges do not dominate the fit; the bias is then the
    median of the integer residual.
    """
    rows = np.arange(_N_NBR) if use_prev else _IN_ROWS
    k = rows.size
    a = nv[rows].T.astype(np.float64)
    t = target.astype(np.float64)
    if t.size > 16384:
        idx = np.linspace(0, t.size - 1, 16384).astype(np.int64)
        a, t = a[idx], t[idx]
    weights = np.zeros(_N_NBR, np.int64)
    if t.size >= 2:
        a1 = np.concatenate([a, np.ones((t.size, 1))], axis=1)
        wt = np.ones(t.size)
        coef = np.zeros(k + 1)
        for _ in range(4):
            aw = a1 * wt[:, None]
            gram = a1.T @ aw
            gram += np.eye(k + 1) * (1e-6 * np.trace(gram) / (k + 1) + 1e-9)
            try:
                coef = np.linalg.solve(gram, aw.T @ t)
            except np.linalg.LinAlgError:
                coef = np.zeros(k + 1)
                break
            wt = 1.0 / (np.abs(t - a1 @ coef) + 2.0)
        if np.all(np.isfinite(coef)):
            weights[rows] = np.clip(np.rint(coef[:k] * (1 << _V2_SHIFT)), -32768, 32767)
    raw = (weights[:, None] * nv).sum(axis=0)
    med = float(np.median((target << _V2_SHIFT) - raw)) if target.size else 0.0
    bias = int(np.clip(round(med) + (1 << (_V2_SHIFT - 1)), -(2**62), 2**62))
    return weights, bias


#: wavefront of voxel (z, y, x): 3z + 2y + x (every neighbour used lies on an earlier one)
_WAVE = (3, 2, 1)


def _wave_order(d: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Decoding order (flat indices sorted by wavefront, then C order) and group bounds."""
    t = (
        _WAVE[0] * np.arange(d, dtype=np.int64)[:, None, None]
        + _WAVE[1] * np.arange(h, dtype=np.int64)[None, :, None]
        + _WAVE[2] * np.arange(w, dtype=np.int64)[None, None, :]
    ).ravel()
    from .kernels import class_runs

    return class_runs(t, int(t.max()) + 1 if t.size else 0)  # a stable counting sort
