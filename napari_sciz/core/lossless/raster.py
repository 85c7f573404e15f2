"""The encoder of lossless payload version 7: lanes, a context tree, symbols grouped by lane.

The block is cut into ``L`` lanes (slabs of slices or bands of rows of every slice,
:func:`plan_lanes` chooses how many by their measured cost), each predicted and
context-modelled as an independent block (same sub-predictors, shared histograms), its
contexts the leaves of a tree grown for the block (:mod:`.ctxtree`), the wide least squares of
:mod:`.xls` among the sub-predictors. The ANS stream holds the tokens lane by lane, context by
context inside a lane (C order), nearly-all-zero contexts coded as gaps (:mod:`.sparse`).
:mod:`.lanes` decodes versions 4 to 7.
"""

from __future__ import annotations

import zlib

import numpy as np

from .ctxtree import ContextTree, grow_sample, grow_tree, level_shift
from .entropy import (
    _class_models,
    _pack_bits,
    _quantize_hist,
    _tokenize,
)
from .lanes import AXIS_Y, AXIS_Z, _on_threads, lane_boxes
from .layout import (
    _HEAD2,
    _MAGIC,
    _V4_EXT,
    _V4_LANE_BITS,
    _V5_EXT,
    _V6_EXT,
    _V7_EXT,
    _VERSION,
)
from .predict import (
    _SUB_LS,
    _SUB_XLS,
    _V2_LS,
)
from .sparse import SparseCoder, SparseTable
from .sparse import choose as choose_sparse
from .tokens import _encode_v2_core, _fit_ls, choose_map, choose_mask, rank_masks
from .values import _FLAG_TABLE, _Mapped, _pack_uints, le_bytes
from .xls import XLSParams, fit_xls

#: a block may have one lane per this many voxels (at most :data:`_MAX_LANES`; row-band lanes
#: of at least :data:`_MIN_LANE_ROWS` rows): lanes decode on threads, each costs a little ratio
_LANE_VOXELS = 1 << 17


_MAX_LANES = 4


_MIN_LANE_ROWS = 32


#: lanes are cut while their estimated cost stays under this share of the block's bits
_LANE_COST_SHARE = 0.005


#: blocks smaller than this do not try the wide least squares (their weights would cost more
#: than they save)
_XLS_MIN_VOXELS = 1 << 14


#: residuals negated where ``sign(rW) + sign(rN) < 0``: None, whichever is estimated smaller
_NEGATE: bool | None = None


def max_lanes(shape3: tuple[int, int, int], axis: int) -> int:
    """Most lanes a block of shape ``shape3`` may have along ``axis``."""
    d, h, w = shape3
    room = d if axis == AXIS_Z else h // _MIN_LANE_ROWS
    return int(max(1, min(_MAX_LANES, (d * h * w) // _LANE_VOXELS, room)))


def _shared_bits(cores: list[dict]) -> float:
    """Estimated bits of lanes whose tokens share the histograms (per activity class)."""
    ntok = max(c["counts"].shape[2] for c in cores)
    counts = sum(
        np.pad(c["counts"], ((0, 0), (0, 0), (0, ntok - c["counts"].shape[2]))) for c in cores
    ).sum(axis=0)
    tot = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -(counts * np.log2(np.where(counts > 0, counts / np.maximum(tot, 1), 1.0))).sum()
    return float(ent) + sum(float(c["nb"].sum()) + 8.0 * _V2_LS.size * len(c["ls"]) for c in cores)


def plan_lanes(
    v: np.ndarray, mask: int, pmap: np.ndarray | None = None, xls: XLSParams | None = None
) -> tuple[int, int]:
    """Number of lanes and their axis for block ``v``, by measured cost (``xls``: the
    block's wide least-squares weights when ``mask`` uses them).

    The cost of one cut along each axis is measured on a middle sample (up to 8 slices, 256
    rows, 128 columns: the bits of its two halves coded apart, less those of the whole),
    scaled to the block; the cheaper axis is kept, with as many lanes as the block allows
    while their cost stays under :data:`_LANE_COST_SHARE` of the block's estimated bits.
    """
    d, h, w = v.shape
    top = {ax: max_lanes(v.shape, ax) for ax in (AXIS_Z, AXIS_Y)}
    if max(top.values()) == 1:
        return 1, AXIS_Y

    def middle(n: int, k: int) -> slice:
        return slice(max(0, n // 2 - k // 2), max(0, n // 2 - k // 2) + min(n, k))

    s = np.ascontiguousarray(v[middle(d, 8), middle(h, 256), middle(w, 128)])
    ds, hs, ws = s.shape
    use_ls = bool(mask >> _SUB_LS & 1)
    ls_s = _fit_ls(s) if use_ls else None

    def bits(*pieces: tuple[np.ndarray, object]) -> float:
        """Bits of the pieces coded as lanes: shared histograms (and lane's own LS sets)."""
        cores = [
            _encode_v2_core(np.ascontiguousarray(b), mask, ls, pmap, xls=xls)[0] for b, ls in pieces
        ]
        return _shared_bits(cores)

    whole = bits((s, ls_s))
    total = whole * v.size / s.size
    cost = {}
    if top[AXIS_Z] > 1 and ds > 1:
        a, b = s[: ds // 2], s[ds // 2 :]
        fit = _fit_ls if use_ls else (lambda _b: None)
        cost[AXIS_Z] = (bits((a, fit(a)), (b, fit(b))) - whole) * (h * w) / (hs * ws)
    if top[AXIS_Y] > 1:
        per_cut = bits((s[:, : hs // 2], ls_s), (s[:, hs // 2 :], ls_s)) - whole
        cost[AXIS_Y] = per_cut * (d * w) / (ds * ws)
    if not cost:
        return 1, AXIS_Y
    axis = min(cost, key=cost.__getitem__)
    lanes = top[axis]
    while lanes > 1 and (lanes - 1) * cost[axis] > _LANE_COST_SHARE * total:
        lanes -= 1
    return lanes, axis


def _zigzag(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, 2 * x, -2 * x - 1)


#: with ``search``, the sub-predictor sets estimated within this share of the best one are
#: coded (the estimate, on a small sample with a simpler context model, misranks close sets
#: by up to ~2 %) ...
_SEARCH_MARGIN = 0.015

#: ... at most this many of them ...
_SEARCH_FINALISTS = 3

#: ... on a sample of about this many voxels (the whole block when it is smaller)
TRIAL_VOXELS = 1 << 18


def encode_raster(m: _Mapped, shape3: tuple[int, int, int], search: bool = False) -> bytes:
    """Version-7 payload of the mapped block ``m`` of shape ``shape3``.

    The sub-predictor set is the one of smallest estimated code (:func:`.tokens.rank_masks`);
    with ``search`` (lossless ``effort="best"``), the sets estimated within
    :data:`_SEARCH_MARGIN` of it are coded on a sample of the block (the whole block when
    it is small: the smallest payload is returned) and the one of smallest code is kept.
    """
    v = m.values.reshape(shape3)
    # the wide least squares are fitted once, on the whole block (a candidate of every search)
    xls = fit_xls(v) if v.size >= _XLS_MIN_VOXELS else None
    ranked = rank_masks(v, xls)
    limit = ranked[0][0] * (1 + _SEARCH_MARGIN)
    finalists = [mk for bits, mk in ranked[:_SEARCH_FINALISTS] if bits <= limit]
    if not search or len(finalists) == 1:
        return _encode_with(m, shape3, finalists[0], xls)
    box = sample_box(shape3, TRIAL_VOXELS)
    if (box[0].stop - box[0].start, box[1].stop - box[1].start) == shape3[:2]:
        return min((_encode_with(m, shape3, mk, xls) for mk in finalists), key=len)
    sizes = [trial_size(m, shape3, box, mk, xls) for mk in finalists]
    return _encode_with(m, shape3, finalists[int(np.argmin(sizes))], xls)


def sample_box(shape3: tuple[int, int, int], voxels: int) -> tuple[slice, slice]:
    """Middle slices of a block holding about ``voxels`` voxels (middle rows of its middle
    slice when one slice holds more)."""
    d, h, w = shape3
    if h * w <= voxels:
        k = min(d, max(1, voxels // (h * w)))
        z0 = (d - k) // 2
        return slice(z0, z0 + k), slice(0, h)
    rows = min(h, max(2, voxels // w))
    y0 = (h - rows) // 2
    return slice(d // 2, d // 2 + 1), slice(y0, y0 + rows)


def trial_size(
    m: _Mapped,
    shape3: tuple[int, int, int],
    box: tuple[slice, slice],
    mask: int | None = None,
    xls: XLSParams | None = None,
) -> int:
    """Coded size of the sub-block ``box`` of ``m`` (a table is restricted to its values),
    with the sub-predictor set ``mask`` and the block's wide least squares ``xls``, or, when
    ``mask`` is None, the set of smallest estimate for the sub-block."""
    zs, ys = box
    sub = m.values.reshape(shape3)[zs, ys]
    shape = sub.shape
    expected = m.expected.reshape(shape3)[zs, ys]
    table = m.table
    if table is not None:
        used = np.unique(sub)
        sub, table = np.searchsorted(used, sub), table[used]
    part = _Mapped(np.ascontiguousarray(sub).ravel().astype(np.int64), m.kind, m.offset,
                   m.lo, m.step, table, np.ascontiguousarray(expected))  # fmt: skip
    if mask is None:
        v = part.values.reshape(shape)
        xls = fit_xls(v) if v.size >= _XLS_MIN_VOXELS else None
        mask = choose_mask(v, xls)
    return len(_encode_with(part, shape, mask, xls))


def _encode_with(
    m: _Mapped, shape3: tuple[int, int, int], mask: int, xls: XLSParams | None
) -> bytes:
    """The payload of ``m`` with the sub-predictor set ``mask`` (``xls``: the wide least
    squares' weights, used when ``mask`` has them)."""
    d, h, w = shape3
    v = m.values.reshape(d, h, w)
    if not mask >> _SUB_XLS & 1:
        xls = None
    pmap = choose_map(v, mask, xls)
    lanes, axis = plan_lanes(v, mask, pmap, xls)
    boxes = lane_boxes(shape3, lanes, axis)
    use_ls = bool(mask >> _SUB_LS & 1)
    shift = level_shift(int(v.max()) if v.size else 0)
    # least squares: fitted on whole slices (row bands), or on each slab (its first slice
    # has no previous one)
    whole_ls = _fit_ls(v) if use_ls and axis == AXIS_Y else None

    def code_lane(box: tuple[int, ...]) -> dict:
        z0, z1, y0, y1 = box
        lane = np.ascontiguousarray(v[z0:z1, y0:y1])
        ls_params = whole_ls if whole_ls is not None else (_fit_ls(lane) if use_ls else None)
        return _encode_v2_core(lane, mask, ls_params, pmap, shift=shift, xls=xls)[0]

    cores = _on_threads(code_lane, boxes)
    tok, nb, raw, flip, ctx, tree = _context_tree(cores)
    ntok = max(int(tok.max()) + 1 if tok.size else 0, 2)
    n_ctx = tree.n_leaves
    counts = np.bincount(ctx * ntok + tok, minlength=n_ctx * ntok).reshape(n_ctx, ntok)
    q = _quantize_hist(counts)
    cuts = np.cumsum([c["tok"].size for c in cores])[:-1]  # where each lane's voxels start
    lane_ctx = np.split(ctx, cuts)
    lane_cuts = np.concatenate([[0], cuts, [tok.size]])
    sparse = choose_sparse(tok, ctx, lane_cuts, q)
    words = _encode_symbols(tok, ctx, lane_cuts, q, sparse)
    bits = _pack_bits(nb, raw)
    lane_bits = np.cumsum([int(x.sum()) for x in np.split(nb, cuts)])[:-1]
    # symbols per context: what the histograms do not say (scaled ones), and per lane but the
    # last
    excess = np.bincount(ctx, minlength=n_ctx) - q.sum(axis=1)
    count_bytes = _pack_uints(_zigzag(excess))
    per_lane = [np.bincount(c, minlength=n_ctx) for c in lane_ctx[:-1]]
    lane_bytes = _pack_uints(np.concatenate(per_lane)) if per_lane else b""

    hist_bytes = _pack_uints(q.ravel())
    table_bytes = b""
    n_table = flags = 0
    if m.table is not None:
        flags |= _FLAG_TABLE
        n_table = len(m.table)
        table_bytes = _pack_uints(np.diff(m.table, prepend=0))
    crc = zlib.crc32(le_bytes(m.expected))
    ls_bytes = cores[0]["ls"] if axis == AXIS_Y else [b for c in cores for b in c["ls"]]
    head = _HEAD2.pack(
        _MAGIC, _VERSION, m.kind, flags, d, h, w, crc, m.offset, m.lo, m.step, n_table,
        ntok, n_ctx, mask, 1, len(hist_bytes), len(table_bytes), len(bits), len(ls_bytes), 0,
    )  # fmt: skip
    tree_bytes = tree.to_bytes()
    ext = _V4_EXT.pack(len(count_bytes), len(lane_bytes), len(cores), axis, bytes(pmap.tolist()))
    ext += b"".join(_V4_LANE_BITS.pack(int(b)) for b in lane_bits)
    ext += _V5_EXT.pack(int(flip), shift, len(tree_bytes)) + tree_bytes
    xls_bytes = xls.to_bytes() if xls is not None else b""
    ext += _V6_EXT.pack(len(xls_bytes)) + xls_bytes
    sparse_bytes = sparse.to_bytes()
    ext += _V7_EXT.pack(len(sparse_bytes)) + sparse_bytes
    parts = [head, ext, hist_bytes, count_bytes, lane_bytes, *ls_bytes, table_bytes, bits]
    return b"".join([*parts, words])


def _encode_symbols(
    tok: np.ndarray, ctx: np.ndarray, lane_cuts: np.ndarray, q: np.ndarray, sparse: SparseTable
) -> bytes:
    """ANS words of version 7: the tokens lane by lane, context by context inside a lane (C
    order), sparse contexts as gaps and nonzero tokens (:mod:`.sparse`)."""
    import constriction

    n_ctx = q.shape[0]
    models = _class_models(q, trim=True)
    coder_sparse = SparseCoder(sparse, q)
    lane_of = np.repeat(np.arange(lane_cuts.size - 1), np.diff(lane_cuts))
    key = lane_of * n_ctx + ctx
    order = np.argsort(key, kind="stable")
    bounds = np.searchsorted(key[order], np.arange((lane_cuts.size - 1) * n_ctx + 1))
    segments: list[tuple] = []
    for k in range(bounds.size - 1):
        c = k % n_ctx
        run = tok[order[bounds[k] : bounds[k + 1]]]
        if c in coder_sparse.index:  # (every lane, even without tokens of c)
            segments += coder_sparse.segments(c, run)
        elif run.size:
            segments.append((run.astype(np.int32), models[c]))
    coder = constriction.stream.stack.AnsCoder()
    for symbols, model, *params in segments[::-1]:  # a stack: the last segment first
        coder.encode_reverse(symbols, model, *params)
    return coder.get_compressed().astype("<u4").tobytes()


def _context_tree(
    cores: list[dict],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool, np.ndarray, ContextTree]:
    """Tokens, raw-bit counts and raw bits of the lanes' voxels, whether residuals are coded
    negated where ``sign(rW) + sign(rN) < 0``, every voxel's context and the tree: with and
    without the negation, whichever is estimated smaller."""

    def joined(key: str, axis: int = 0) -> np.ndarray:  # (no copy of a single lane's)
        parts = [c[key] for c in cores]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=axis)

    props, res, flip = joined("props", axis=1), joined("res"), joined("flip")
    plain = (joined("tok"), joined("nb"), joined("raw"))
    # both options are grown and compared on the same sample of voxels
    sample = grow_sample(res.size)
    scale = res.size / max(sample.size, 1)
    s_props, s_res, s_flip = props[:, sample], res[sample], flip[sample]
    best = None
    for negate in (False, True) if _NEGATE is None else (_NEGATE,):
        if negate and not flip.any() and _NEGATE is None:
            continue
        if negate:
            s_tok, s_nb, _raw = _tokenize(np.where(s_flip, -s_res, s_res))
        else:
            s_tok, s_nb = plain[0][sample], plain[1][sample]
        ntok = max(int(s_tok.max()) + 1 if s_tok.size else 0, 2)
        tree, est = grow_tree(s_props, s_tok, ntok, scale)
        est += float(s_nb.sum()) * scale
        if best is None or est < best[0]:
            best = (est, negate, tree)
    assert best is not None
    _est, negate, tree = best
    tok, nb, raw = _tokenize(np.where(flip, -res, res)) if negate else plain
    return tok, nb, raw, negate, tree.apply(props), tree


__all__ = [
    "AXIS_Y",
    "AXIS_Z",
    "TRIAL_VOXELS",
    "encode_raster",
    "max_lanes",
    "plan_lanes",
    "sample_box",
    "trial_size",
]
