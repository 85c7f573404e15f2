"""The encoder's side of payload versions 2-5: residuals, tokens and contexts of a block.

Every voxel is predicted as :mod:`.predict` describes (numpy, slice by slice: the encoder knows
every value, so no wavefronts are needed), its residual cut into a token and raw bits, and its
context class (versions 2-4) or context-tree properties (version 5) recorded. The decoders
reproduce these values exactly.
"""

from __future__ import annotations

import math

import numpy as np

from .ctxtree import N_PROPS, flip_signs, slice_properties
from .entropy import _token_bits, _tokenize
from .predict import (
    _N_CLS2,
    _N_SUB_V6,
    _N_TEX,
    _SUB_LS,
    _SUB_XLS,
    _V2_CAP,
    _V2_LS,
    N_GRAD,
    _blend,
    _ctx_class,
    _err_sum,
    _ls_fit_v2,
    _Neighbours,
    _sub_predictions,
    _texture,
    gradient_level,
)
from .xls import XLSParams, ext_values, fit_xls, predict_xls

#: sub-predictor sets the encoder tries (the smallest estimated code wins, with a small
#: penalty per extra sub-predictor since each one slows decoding down)
_MASKS = (16, 64, 4, 68, 88, 26, 19, 35, 112, 92, 124, 128, 192, 144)


_SUB_PENALTY = 0.004


#: least-squares weights (1/256) and bias of every slice
LSParams = list[tuple[np.ndarray, int]]


def _fit_ls(v: np.ndarray) -> LSParams:
    """Least-squares predictor of every slice of block ``v``, fitted on the whole slice."""
    d, h, w = v.shape
    hw = h * w
    nbrs = _Neighbours(d, h, w)
    vflat = np.concatenate([np.zeros(hw, np.int64), v.ravel()])
    pos = np.arange(hw, dtype=np.int64)
    out = []
    for z in range(d):
        nv = vflat[nbrs.index(pos + z * hw, pos)]
        out.append(_ls_fit_v2(nv, vflat[(z + 1) * hw : (z + 2) * hw], z > 0))
    return out


#: least-squares weights of a block without them (its sub-prediction is never used)
_NO_LS = np.zeros((11, 1), np.int64)


#: tokens counted per gradient level and option when the predictor map is chosen
_MAP_TOKENS = 128


#: the predictor map is measured on the middle slices of a block, up to this many voxels
_MAP_VOXELS = 1 << 18


#: rows of the sample of a slice larger than :data:`_MAP_VOXELS` (at least)
_MIN_MAP_ROWS = 16


#: a gradient level leaves the blend only for a sub-predictor this much cheaper there
_MAP_MARGIN = 0.01


def _encode_v2_core(
    v: np.ndarray,
    mask: int,
    ls_params: LSParams | None = None,
    pmap: np.ndarray | None = None,
    collect: bool = False,
    shift: int | None = None,
    xls: XLSParams | None = None,
) -> tuple[dict, float]:
    """Tokens of block ``v`` ``(d, h, w)`` with the sub-predictors of ``mask``; est. bits.

    ``ls_params``: the least-squares predictor of each slice (fitted on ``v`` when None);
    ``pmap``: the predictor map (per gradient level: 0 the blend, ``i + 1`` sub-predictor
    ``i`` alone; None: the blend everywhere). With ``collect``, the result also holds
    ``"options"``: token counts ``(N_GRAD, 1 + 7, _MAP_TOKENS)`` of every option at every
    gradient level (for :func:`choose_map`). With a level ``shift`` (version 5), it holds
    the voxels' context-tree properties ``"props"`` (:func:`.ctxtree.slice_properties`), the
    signed residuals ``"res"`` and where they are coded negated, ``"flip"``, instead of the
    activity classes ``"cls"`` and their token ``"counts"``; the estimated bits are then NaN
    (the tree estimates them). ``xls``: the wide least-squares weights (fitted on ``v`` when
    None and ``mask`` uses them).
    """
    d, h, w = v.shape
    hw, n = h * w, v.size
    nbrs = _Neighbours(d, h, w)
    vflat = np.concatenate([np.zeros(hw, np.int64), v.ravel()])
    k_sub = bin(mask).count("1")
    err = np.zeros((n + hw, k_sub), np.int32)
    tree = shift is not None
    # capped residuals of the decoded voxels: absolute (activity classes) or signed (trees)
    absr = np.zeros(n + hw, np.int64)
    props = np.empty((N_PROPS, n), np.uint8) if tree else None
    flip = np.empty(n, bool) if tree else None
    cls = None if tree else np.empty(n, np.int64)
    res = np.empty(n, np.int64)
    pos = np.arange(hw, dtype=np.int64)
    use_ls = bool(mask >> _SUB_LS & 1)
    use_xls = bool(mask >> _SUB_XLS & 1)
    if use_xls and xls is None:
        xls = fit_xls(v)
    ls = []
    mapped = pmap is not None and bool(np.any(pmap))
    # every sub-predictor (the wide least squares only when the block has its weights)
    all_mask = (1 << _N_SUB_V6) - 1 - (0 if use_xls else 1 << _SUB_XLS)
    options = np.zeros((N_GRAD, 1 + _N_SUB_V6, _MAP_TOKENS), np.int64) if collect else None
    for z in range(d):
        sl = slice((z + 1) * hw, (z + 2) * hw)
        nidx = nbrs.index(pos + z * hw, pos)
        nv = vflat[nidx]
        target = vflat[sl]
        ls_w, ls_b = None, 0
        if use_ls:
            wts, ls_b = ls_params[z] if ls_params is not None else _ls_fit_v2(nv, target, z > 0)
            ls.append(_V2_LS.pack(*[int(x) for x in wts], ls_b))
            ls_w = wts[:, None]
        level = gradient_level(nv) if mapped or collect or use_xls else None
        xpred = None
        if use_xls:
            assert xls is not None and level is not None
            xv = ext_values(v, z, pos, nv)
            xpred = predict_xls(xls, int(z > 0), level, nv, xv)
        subs = _sub_predictions(nv, mask, ls_w, ls_b, xpred)
        err_sums = None
        if k_sub > 1:
            err[sl] = np.minimum(np.abs(target - subs), _V2_CAP).T
            err_sums = _err_sum(err, nidx)
            pred = _blend(subs, err_sums)
        else:
            pred = subs[0]
        if mapped or collect:
            # every sub-predictor (least squares only when the block has its weights)
            every = _sub_predictions(nv, all_mask, ls_w if use_ls else _NO_LS, ls_b, xpred)
            if collect:
                _count_options(options, level, target, pred, every)
            if mapped:
                choice = pmap[level]
                pred = np.where(choice == 0, pred, every[np.maximum(choice - 1, 0), pos])
        r = target - pred
        here = slice(z * hw, (z + 1) * hw)
        res[here] = r
        if tree:
            absr[sl] = np.clip(r, -_V2_CAP, _V2_CAP)
            nres = absr[nidx[:5]]
            props[:, here] = slice_properties(nv, nres, pred, shift, subs, err_sums)
            flip[here] = flip_signs(nres)
        else:
            absr[sl] = np.minimum(np.abs(r), _V2_CAP)
            cls[here] = _ctx_class(absr[nidx[:5]]) + _N_CLS2 * _texture(nv)
    tok, nb, raw = _tokenize(res)
    if tree:
        core = {"tok": tok, "nb": nb, "raw": raw, "ls": ls, "props": props, "res": res}
        core["flip"] = flip
        return core, math.nan
    ntok = max(int(tok.max()) + 1, 2) if tok.size else 2  # constriction needs two symbols
    counts = np.bincount(cls * ntok + tok, minlength=_N_TEX * _N_CLS2 * ntok)
    counts = counts.reshape(_N_TEX, _N_CLS2, ntok)
    tot = counts.sum(axis=0).sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        c2 = counts.sum(axis=0)
        ent = -(c2 * np.log2(np.where(c2 > 0, c2 / np.maximum(tot, 1), 1.0))).sum()
    bits = float(ent + nb.sum()) + 8.0 * _V2_LS.size * len(ls)
    core = {"tok": tok, "nb": nb, "raw": raw, "cls": cls, "counts": counts, "ls": ls}
    if options is not None:
        core["options"] = options
    return core, bits


def _count_options(
    options: np.ndarray, level: np.ndarray, target: np.ndarray, pred: np.ndarray, every: np.ndarray
) -> None:
    """Add a slice's tokens under every option (the blend, each sub-predictor) per level."""
    for k, p in enumerate([pred, *every]):
        tok = np.minimum(_tokenize(target - p)[0], _MAP_TOKENS - 1)
        np.add.at(options, (level, k, tok), 1)


def choose_map(v: np.ndarray, mask: int, xls: XLSParams | None = None) -> np.ndarray:
    """The predictor map of block ``v``: per gradient level, the blend of ``mask`` or the one
    sub-predictor whose tokens and raw bits cost least there (by :data:`_MAP_MARGIN`),
    measured on the middle slices (up to :data:`_MAP_VOXELS` voxels; of a larger slice, its
    middle rows). ``xls``: the block's wide least-squares weights when ``mask`` uses them."""
    d, h, w = v.shape
    k = max(1, min(d, _MAP_VOXELS // max(1, h * w)))
    rows = min(h, max(_MIN_MAP_ROWS, _MAP_VOXELS // max(1, w)))
    z0, y0 = (d - k) // 2, (h - rows) // 2
    sample = np.ascontiguousarray(v[z0 : z0 + k, y0 : y0 + rows])
    options = _encode_v2_core(sample, mask, collect=True, xls=xls)[0]["options"]
    tok = np.arange(_MAP_TOKENS)
    raw = _token_bits(tok)
    tot = options.sum(axis=2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -(options * np.log2(np.where(options > 0, options / np.maximum(tot, 1), 1.0)))
    cost = ent.sum(axis=2) + (options * raw).sum(axis=2)
    if not mask >> _SUB_LS & 1:
        cost[:, 1 + _SUB_LS] = np.inf  # the block stores no least-squares weights
    if not mask >> _SUB_XLS & 1:
        cost[:, 1 + _SUB_XLS] = np.inf
    pmap = np.zeros(N_GRAD, np.int64)
    for g in range(N_GRAD):
        best = int(np.argmin(cost[g, 1:])) + 1
        if cost[g, best] < (1 - _MAP_MARGIN) * cost[g, 0]:
            pmap[g] = best
    return pmap


def _sample_block(v: np.ndarray) -> np.ndarray:
    """A smaller block for choosing the sub-predictors: up to 4 middle slices, 3 row bands
    of 24 rows, 192 middle columns."""
    d, h, w = v.shape
    z0 = max(0, d // 2 - 2)
    sub = v[z0 : z0 + 4]
    if h > 72:
        rows = np.concatenate([np.arange(24) + (h * k) // 4 - 12 for k in (1, 2, 3)])
        sub = sub[:, rows]
    if w > 192:
        sub = sub[:, :, w // 2 - 96 : w // 2 + 96]
    return np.ascontiguousarray(sub)


def rank_masks(v: np.ndarray, xls: XLSParams | None = None) -> list[tuple[float, int]]:
    """Every sub-predictor set of :data:`_MASKS` for block ``v`` with its estimated code
    (bits, on a sample of large blocks), smallest first. Sets with the wide least squares are
    ranked when its weights ``xls`` (fitted on the block) are given; their storage is
    counted."""
    d = v.shape[0]
    masks = [mk for mk in _MASKS if d > 1 or not mk >> 5 & 1]
    if xls is None:
        masks = [mk for mk in masks if not mk >> _SUB_XLS & 1]
    sample = v if v.size <= 1 << 16 else _sample_block(v)
    ranked = []
    for mk in masks:
        bits = _encode_v2_core(sample, mk, xls=xls)[1]
        if mk >> _SUB_XLS & 1:
            assert xls is not None
            bits += 8.0 * xls.nbytes * sample.size / v.size
        # (the wide least squares' 25 taps cost the decoder about two sub-predictors' time)
        bits *= 1 + _SUB_PENALTY * (bin(mk).count("1") - 1 + (mk >> _SUB_XLS & 1))
        ranked.append((float(bits), mk))
    return sorted(ranked, key=lambda r: r[0])  # (ties keep the order of _MASKS)


def choose_mask(v: np.ndarray, xls: XLSParams | None = None) -> int:
    """The sub-predictor set with the smallest estimated code for block ``v``
    (:func:`rank_masks`)."""
    return rank_masks(v, xls)[0][1]
