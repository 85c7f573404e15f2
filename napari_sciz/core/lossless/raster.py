"""Lossless payload versions 4 to 6: lanes, symbols grouped by context, a compiled decoder.

The block is cut into ``L`` lanes (slabs of slices or bands of rows of every slice), each
predicted and context-modelled as an independent block (same sub-predictors, shared
histograms); versions 5 and 6 (6 written: 5 with the wide least squares of :mod:`.xls`) take
their contexts from a tree grown for the block (:mod:`.ctxtree`), version 4 (still decoded)
from activity classes and texture levels. The
ANS stream holds every context's tokens together (lane by lane, C order within a lane), so the
decoder decodes each context with one call, then runs one compiled C-order loop per lane
(:func:`.kernels.decode_raster`), the lanes on threads.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import FormatError
from .ctxtree import ContextTree, grow_sample, grow_tree, level_shift
from .entropy import (
    _class_models,
    _pack_bits,
    _quantize_hist,
    _token_tables,
    _tokenize,
)
from .layout import (
    _HEAD2,
    _MAGIC,
    _V4_EXT,
    _V4_LANE_BITS,
    _V5_EXT,
    _V6_EXT,
    _V7_EXT,
    _VERSION,
    LANE_MAJOR_VERSION,
)
from .predict import (
    _CLS_THR,
    _N_SUB,
    _N_SUB_V6,
    _SUB_LS,
    _SUB_XLS,
    _V2_CAP,
    _V2_LS,
    _V2_SHIFT,
    N_GRAD,
)
from .sparse import SparseCoder, SparseTable
from .sparse import choose as choose_sparse
from .tokens import _encode_v2_core, _fit_ls, choose_map, choose_mask
from .values import _FLAG_TABLE, _Mapped, _pack_uints, _unpack_uints
from .xls import N_TAPS, XLSParams, fit_xls

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


#: lane axes: slabs of slices, or bands of rows of every slice
AXIS_Z, AXIS_Y = 0, 1


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


def lane_boxes(shape3: tuple[int, int, int], lanes: int, axis: int) -> list[tuple[int, ...]]:
    """``(z0, z1, y0, y1)`` of every lane."""
    d, h, _w = shape3
    n = d if axis == AXIS_Z else h
    cut = [(i * n) // lanes for i in range(lanes + 1)]
    if axis == AXIS_Z:
        return [(a, b, 0, h) for a, b in zip(cut[:-1], cut[1:], strict=True)]
    return [(0, d, a, b) for a, b in zip(cut[:-1], cut[1:], strict=True)]


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


def _on_threads(fn: Callable[[Any], Any], items: list) -> list:
    """``[fn(x) for x in items]``, on up to one thread per CPU (numpy releases the GIL)."""
    threads = min(len(items), os.cpu_count() or 1)
    if threads < 2:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sciz-lane") as pool:
        return list(pool.map(fn, items))


def _pipelined(first: Callable[[int], None], then: Callable[[int], Any], n: int) -> list:
    """``first(i)`` for ``i`` in order on this thread, each followed by ``then(i)`` on a
    worker thread (``then`` must release the GIL to overlap); the results of ``then``."""
    threads = min(n, os.cpu_count() or 1)
    if threads < 2:
        out = []
        for i in range(n):
            first(i)
            out.append(then(i))
        return out
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sciz-lane") as pool:
        futures = []
        for i in range(n):
            first(i)
            futures.append(pool.submit(then, i))
        return [f.result() for f in futures]


def _zigzag(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, 2 * x, -2 * x - 1)


def encode_v6(m: _Mapped, shape3: tuple[int, int, int]) -> bytes:
    """Version-6 payload of the mapped block ``m`` of shape ``shape3``."""
    d, h, w = shape3
    v = m.values.reshape(d, h, w)
    # the wide least squares are fitted once, on the whole block (a candidate of every search)
    xls = fit_xls(v) if v.size >= _XLS_MIN_VOXELS else None
    mask = choose_mask(v, xls)
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
    crc = zlib.crc32(m.expected.tobytes())
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


class LanePlan:
    """Where each lane's tokens and raw bits are: read from a version-4 payload.

    Attributes
    ----------
    boxes : list of tuple of int
        ``(z0, z1, y0, y1)`` of every lane.
    starts, ends : numpy.ndarray
        ``(lanes, n_ctx)``: each lane's first and past-the-last token of every context in the
        context-grouped token array.
    bit_starts : list of int
        Each lane's first raw bit, and the end of the raw bits.
    lane_major : bool
        Whether the tokens are grouped lane by lane (version 7), else context by context.
    """

    def __init__(
        self,
        boxes: list[tuple[int, ...]],
        starts: np.ndarray,
        ends: np.ndarray,
        bits: list[int],
        lane_major: bool,
    ) -> None:
        self.boxes, self.starts, self.ends, self.bit_starts = boxes, starts, ends, bits
        self.lane_major = lane_major


@dataclass
class LaneExt:
    """The extension of version 4 and 5 headers (see :mod:`.layout`)."""

    n_count: int  # byte length of the context-count stream
    n_lane: int  # byte length of the lane-count stream
    lanes: int
    axis: int
    lane_bits: list[int]  # raw-bit start of every lane after the first
    pmap: np.ndarray  # the predictor map
    flip: bool = False  # version 5: residuals negated where sign(rW) + sign(rN) < 0
    level_shift: int = 0  # version 5: shift of the predicted-intensity property
    tree: bytes | None = None  # version 5: the context tree
    xls: XLSParams | None = None  # version 6: the wide least-squares weights (mask bit 7)
    sparse: bytes = b""  # version 7: the sparse contexts (:class:`.sparse.SparseTable`)


def read_lane_ext(
    payload: bytes, pos: int, shape3: tuple[int, int, int], version: int
) -> tuple[LaneExt, int]:
    """The version-4/5 extension after the header, and the position after it."""
    if len(payload) < pos + _V4_EXT.size:
        raise FormatError("truncated lossless block")
    n_count, n_lane, lanes, axis, pmap_bytes = _V4_EXT.unpack_from(payload, pos)
    pos += _V4_EXT.size
    # any number of lanes of at least one slice or row (the encoder's policy may change)
    if axis not in (AXIS_Z, AXIS_Y) or not 1 <= lanes <= shape3[0 if axis == AXIS_Z else 1]:
        raise FormatError("implausible lanes in a lossless block")
    pmap = np.frombuffer(pmap_bytes, np.uint8).astype(np.int64)
    if np.any(pmap > (_N_SUB_V6 if version >= 6 else _N_SUB)):
        raise FormatError("implausible predictor map in a lossless block")
    if len(payload) < pos + _V4_LANE_BITS.size * (lanes - 1):
        raise FormatError("truncated lossless block")
    bits = [_V4_LANE_BITS.unpack_from(payload, pos + 8 * i)[0] for i in range(lanes - 1)]
    pos += _V4_LANE_BITS.size * (lanes - 1)
    ext = LaneExt(n_count, n_lane, lanes, axis, bits, pmap)
    if version >= 5:
        if len(payload) < pos + _V5_EXT.size:
            raise FormatError("truncated lossless block")
        flip, shift, n_tree = _V5_EXT.unpack_from(payload, pos)
        pos += _V5_EXT.size
        if flip > 1 or shift > 63 or len(payload) < pos + n_tree:
            raise FormatError("implausible context parameters in a lossless block")
        ext.flip, ext.level_shift, ext.tree = bool(flip), shift, payload[pos : pos + n_tree]
        pos += n_tree
    if version >= 6:
        if len(payload) < pos + _V6_EXT.size:
            raise FormatError("truncated lossless block")
        (n_xls,) = _V6_EXT.unpack_from(payload, pos)
        pos += _V6_EXT.size
        if len(payload) < pos + n_xls:
            raise FormatError("truncated lossless block")
        if n_xls:
            ext.xls = XLSParams.from_bytes(payload[pos : pos + n_xls])
        pos += n_xls
    if version >= LANE_MAJOR_VERSION:
        if len(payload) < pos + _V7_EXT.size:
            raise FormatError("truncated lossless block")
        (n_sparse,) = _V7_EXT.unpack_from(payload, pos)
        pos += _V7_EXT.size
        if len(payload) < pos + n_sparse:
            raise FormatError("truncated lossless block")
        ext.sparse = payload[pos : pos + n_sparse]
        pos += n_sparse
    return ext, pos


def lane_plan(
    q: np.ndarray,
    count_bytes: bytes,
    lane_bytes: bytes,
    ext: LaneExt,
    shape3: tuple[int, int, int],
    n_bits: int,
    lane_major: bool,
) -> LanePlan:
    """Token and raw-bit positions of every lane, checked for consistency (``lane_major``:
    the symbols are grouped lane by lane, version 7)."""
    lanes, axis, lane_bits = ext.lanes, ext.axis, ext.lane_bits
    n_ctx = q.shape[0]
    z = _unpack_uints(count_bytes, n_ctx)
    totals = q.sum(axis=1) + ((z >> 1) ^ -(z & 1))
    per_lane = _unpack_uints(lane_bytes, n_ctx * (lanes - 1)).reshape(lanes - 1, n_ctx)
    per_lane = np.concatenate([per_lane, (totals - per_lane.sum(axis=0))[None]])
    boxes = lane_boxes(shape3, lanes, axis)
    sizes = np.array([(z1 - z0) * (y1 - y0) * shape3[2] for z0, z1, y0, y1 in boxes])
    if np.any(per_lane < 0) or not np.array_equal(per_lane.sum(axis=1), sizes):
        raise FormatError("implausible symbol counts in a lossless block")
    if lane_major:  # version 7: lane by lane, context by context inside a lane
        lane_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        starts = lane_start[:, None] + np.cumsum(per_lane, axis=1) - per_lane
    else:  # versions 4-6: context by context, lane by lane inside a context
        ctx_start = np.concatenate([[0], np.cumsum(totals)[:-1]])
        zero = np.zeros((1, n_ctx), np.int64)
        starts = ctx_start + np.concatenate([zero, np.cumsum(per_lane, axis=0)[:-1]])
    bits = [0, *lane_bits, 8 * n_bits]
    if any(b > c for b, c in zip(bits[:-1], bits[1:], strict=True)):
        raise FormatError("implausible raw-bit positions in a lossless block")
    ends = (starts + per_lane).astype(np.int64)
    return LanePlan(boxes, starts.astype(np.int64), ends, bits, lane_major)


def decode_lanes(
    q: np.ndarray,
    plan: LanePlan,
    words: np.ndarray,
    bit_bytes: np.ndarray,
    shape3: tuple[int, int, int],
    mask: int,
    ls_w: np.ndarray,
    ls_b: np.ndarray,
    tree: ContextTree,
    ext: LaneExt,
) -> np.ndarray:
    """Mapped values of a version-4 to -7 payload: every context's symbols in one call
    each, and one compiled pass per lane (lanes on threads; version 7: a lane's pass starts
    once its symbols are decoded, while the next lane's are)."""
    import constriction

    from . import kernels

    n_ctx = q.shape[0]
    models = _class_models(q, trim=plan.lane_major)
    sparse = SparseCoder(SparseTable.from_bytes(ext.sparse, n_ctx, ext.lanes), q)
    coder = constriction.stream.stack.AnsCoder(words)
    tokens = np.empty(int(plan.ends.max(initial=0)), np.int64)

    def decode_symbols(lane: int, runs: list[tuple[int, int, int]]) -> None:
        for c, a, b in runs:  # (context, first, past-the-last token)
            if c in sparse.index:  # (version 7: a run in every lane)
                tokens[a:b] = sparse.decode(coder, c, lane, b - a)
            elif b > a:
                tokens[a:b] = coder.decode(models[c], b - a)

    if not plan.lane_major:  # versions 4-6: every context of every lane first
        totals = plan.ends[-1] - plan.starts[0]
        decode_symbols(-1, [(c, int(plan.starts[0, c]), int(plan.starts[0, c] + totals[c]))
                            for c in range(n_ctx)])  # fmt: skip
    ntok = q.shape[1]
    tok_nb, tok_hi = _token_tables(ntok)
    d, h, w = shape3
    out = np.empty(d * h * w, np.int64)
    sub_ids = np.array([i for i in range(_N_SUB_V6) if mask >> i & 1], np.int64)
    pmap = ext.pmap
    if np.any(pmap == 1 + _SUB_LS) and not mask >> _SUB_LS & 1:
        raise FormatError("predictor map of a lossless block uses missing least squares")
    use_xls = mask >> _SUB_XLS & 1 or np.any(pmap == 1 + _SUB_XLS)
    if use_xls and ext.xls is None:
        raise FormatError("lossless block uses wide least squares without their weights")
    xw = np.zeros((2 * N_GRAD, N_TAPS), np.int64)
    xb = np.zeros(2 * N_GRAD, np.int64)
    xthr = np.zeros(0, np.int64)  # (empty: classes by gradient level)
    if ext.xls is not None:
        xw, xb = ext.xls.w.reshape(2 * N_GRAD, N_TAPS), ext.xls.b.reshape(2 * N_GRAD)
        if ext.xls.thr is not None:
            xthr = ext.xls.thr
    # the blended sub-predictors, then the others the map uses; the map as positions there
    extra = sorted({int(m) - 1 for m in pmap if m} - set(sub_ids.tolist()))
    calc_ids = np.array([*sub_ids.tolist(), *extra], np.int64)
    pos_map = np.array([m and 1 + calc_ids.tolist().index(m - 1) for m in pmap], np.int64)
    cls_lut = kernels.class_table(_CLS_THR)
    tree_arr = np.stack([tree.prop, tree.thr, tree.right, tree.leaf])
    lut, lut_pq = tree.as_table()
    if tree.n_leaves != q.shape[0]:
        raise FormatError("context tree and histograms of a lossless block do not match")
    wt_lut = kernels.weight_table(kernels.WT_LUT)
    padded = np.concatenate([bit_bytes, np.zeros(8, np.uint8)])

    def lane(i: int) -> int:
        z0, z1, y0, y1 = plan.boxes[i]
        return kernels.decode_raster(
            np.array([z1 - z0, y1 - y0, w, z0, y0, h], np.int64), tokens, plan.starts[i],
            plan.ends[i], sub_ids, calc_ids, pos_map, np.ascontiguousarray(ls_w[:, z0:z1]),
            np.ascontiguousarray(ls_b[z0:z1]), xw, xb, xthr, tree_arr, lut, lut_pq, cls_lut, wt_lut,
            ext.flip, ext.level_shift, _V2_SHIFT, tok_nb, tok_hi, padded, plan.bit_starts[i],
            plan.bit_starts[i + 1], _V2_CAP, out,
        )  # fmt: skip

    n = len(plan.boxes)
    if plan.lane_major:  # each lane's loop starts as soon as its symbols are decoded

        def lane_symbols(i: int) -> None:
            decode_symbols(i, [(c, int(plan.starts[i, c]), int(plan.ends[i, c]))
                               for c in range(n_ctx)])  # fmt: skip

        status = _pipelined(lane_symbols, lane, n)
    else:
        status = _on_threads(lane, list(range(n)))
    for i, s in enumerate(status):
        if s == -1:
            raise FormatError("raw bit stream of a lossless block is too short")
        if s < 0:
            raise FormatError("symbol counts of a lossless block do not match its contexts")
        end = plan.bit_starts[i + 1]
        if (i < n - 1 and s != end) or end - s >= 8:
            raise FormatError("raw bit stream of a lossless block has extra bytes")
    return out.reshape(shape3)


__all__ = [
    "AXIS_Y",
    "AXIS_Z",
    "LanePlan",
    "LaneExt",
    "decode_lanes",
    "encode_v6",
    "lane_boxes",
    "lane_plan",
    "max_lanes",
    "plan_lanes",
    "read_lane_ext",
]
