"""Lanes of lossless payload versions 4 to 7: their geometry, header extension and decoder.

A block is cut into ``L`` lanes (slabs of slices, or bands of rows of every slice), each
predicted and context-modelled as an independent block sharing the block's histograms
(:mod:`.raster` is the encoder). The decoder reads the extension of the header
(:func:`read_lane_ext`), finds every lane's tokens and raw bits (:func:`lane_plan`), decodes
each context's tokens with one ANS call and runs one compiled loop per lane
(:func:`.rasterkernels.decode_raster`) on threads; version 7's tokens are grouped lane by
lane, so a lane's loop starts while the next lane's tokens are decoded.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import FormatError
from ..parallel import on_threads, pipelined
from .ctxtree import ContextTree
from .entropy import _class_models, _token_tables
from .layout import _V4_EXT, _V4_LANE_BITS, _V5_EXT, _V6_EXT, _V7_EXT, LANE_MAJOR_VERSION
from .predict import _CLS_THR, _N_SUB, _N_SUB_V6, _SUB_LS, _SUB_XLS, _V2_CAP, _V2_SHIFT, N_GRAD
from .sparse import SparseCoder, SparseTable
from .values import _unpack_uints
from .xls import N_TAPS, XLSParams

#: lane axes: slabs of slices, or bands of rows of every slice
AXIS_Z, AXIS_Y = 0, 1


def lane_boxes(shape3: tuple[int, int, int], lanes: int, axis: int) -> list[tuple[int, ...]]:
    """``(z0, z1, y0, y1)`` of every lane."""
    d, h, _w = shape3
    n = d if axis == AXIS_Z else h
    cut = [(i * n) // lanes for i in range(lanes + 1)]
    if axis == AXIS_Z:
        return [(a, b, 0, h) for a, b in zip(cut[:-1], cut[1:], strict=True)]
    return [(0, d, a, b) for a, b in zip(cut[:-1], cut[1:], strict=True)]


def _on_threads(fn: Callable[[Any], Any], items: list) -> list:
    """:func:`~napari_sciz.core.parallel.on_threads` on lane threads."""
    return on_threads(fn, items, "sciz-lane")


def _pipelined(first: Callable[[int], None], then: Callable[[int], Any], n: int) -> list:
    """:func:`~napari_sciz.core.parallel.pipelined` on lane threads."""
    return pipelined(first, then, n, "sciz-lane")


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
        xls, pos = _sized_section(payload, pos, _V6_EXT)
        ext.xls = XLSParams.from_bytes(xls) if xls else None
    if version >= LANE_MAJOR_VERSION:
        ext.sparse, pos = _sized_section(payload, pos, _V7_EXT)
    return ext, pos


def _sized_section(payload: bytes, pos: int, length: struct.Struct) -> tuple[bytes, int]:
    """The section at ``pos`` that its ``length`` field says is next, and the position after."""
    if len(payload) < pos + length.size:
        raise FormatError("truncated lossless block")
    (n,) = length.unpack_from(payload, pos)
    pos += length.size
    if len(payload) < pos + n:
        raise FormatError("truncated lossless block")
    return payload[pos : pos + n], pos + n


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

    from . import kernels, rasterkernels

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
        return rasterkernels.decode_raster(
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
    "LaneExt",
    "LanePlan",
    "decode_lanes",
    "lane_boxes",
    "lane_plan",
    "read_lane_ext",
]
