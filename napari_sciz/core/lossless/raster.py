"""Lossless payload version 4: row-band lanes, symbols grouped by context, a compiled decoder.

The block is cut into ``L`` lanes (bands of rows of every slice), each predicted and
context-modelled as an independent block (same sub-predictors, least-squares weights fitted on
whole slices, shared histograms). The ANS stream holds every context's tokens together (lane by
lane, C order within a lane), so the decoder decodes each context with one call, then runs one
compiled C-order loop per lane (:func:`.kernels.decode_raster`), the lanes on threads.
"""

from __future__ import annotations

import os
import zlib

import numpy as np

from ...errors import FormatError
from .entropy import (
    _TOK_DIRECT,
    _ans_encode_by_class,
    _class_models,
    _merge_classes,
    _pack_bits,
    _quantize_hist,
    _token_bits,
)
from .layout import _HEAD2, _MAGIC, _V4_EXT, _V4_LANE_BITS, _VERSION
from .predict import _N_CLS2, _N_SUB, _N_TEX, _SUB_LS, _V2_CAP, _V2_SHIFT
from .tokens import _encode_v2_core, _fit_ls, choose_mask
from .values import _FLAG_TABLE, _Mapped, _pack_uints, _unpack_uints

#: a block gets one lane per this many voxels (at most :data:`_MAX_LANES`, lanes of at least
#: :data:`_MIN_LANE_ROWS` rows): lanes decode on threads, and each costs a little ratio
_LANE_VOXELS = 1 << 19


_MAX_LANES = 4


_MIN_LANE_ROWS = 32


def n_lanes(shape3: tuple[int, int, int]) -> int:
    """Number of lanes of a block of shape ``shape3``."""
    d, h, w = shape3
    return int(max(1, min(_MAX_LANES, (d * h * w) // _LANE_VOXELS, h // _MIN_LANE_ROWS)))


def lane_rows(h: int, lanes: int) -> np.ndarray:
    """Row bounds of the lanes (``lanes + 1`` increasing values from 0 to ``h``)."""
    return (np.arange(lanes + 1, dtype=np.int64) * h) // lanes


def _zigzag(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, 2 * x, -2 * x - 1)


def encode_v4(m: _Mapped, shape3: tuple[int, int, int]) -> bytes:
    """Version-4 payload of the mapped block ``m`` of shape ``shape3``."""
    d, h, w = shape3
    v = m.values.reshape(d, h, w)
    mask = choose_mask(v)
    ls_params = _fit_ls(v) if mask >> _SUB_LS & 1 else None
    rows = lane_rows(h, n_lanes(shape3))
    cores = [
        _encode_v2_core(np.ascontiguousarray(v[:, a:b]), mask, ls_params)[0]
        for a, b in zip(rows[:-1], rows[1:], strict=True)
    ]
    ntok = max(c["counts"].shape[2] for c in cores)
    counts3 = sum(
        np.pad(c["counts"], ((0, 0), (0, 0), (0, ntok - c["counts"].shape[2]))) for c in cores
    )
    # context: activity classes (adjacent ones merged) x texture levels (or none)
    keep, est = _merge_classes(counts3)
    keep1, est1 = _merge_classes(counts3.sum(axis=0, keepdims=True))
    n_tex = _N_TEX
    if est1 <= est:
        keep, n_tex, counts3 = keep1, 1, counts3.sum(axis=0, keepdims=True)
    to_bin = np.concatenate([[0], np.cumsum(keep)])
    n_bins = int(to_bin[-1]) + 1
    counts = np.zeros((n_bins, n_tex, ntok), np.int64)
    np.add.at(counts, to_bin, counts3.transpose(1, 0, 2))
    q = _quantize_hist(counts.reshape(n_bins * n_tex, -1))
    lane_cls = []
    for c in cores:
        tex, act = np.divmod(c["cls"], _N_CLS2)
        lane_cls.append(to_bin[act] * n_tex + (tex if n_tex > 1 else 0))
    tok = np.concatenate([c["tok"] for c in cores])
    cls = np.concatenate(lane_cls)
    words = _ans_encode_by_class(tok, cls, np.array([0, tok.size]), _class_models(q))
    nb = np.concatenate([c["nb"] for c in cores])
    bits = _pack_bits(nb, np.concatenate([c["raw"] for c in cores]))
    lane_bits = np.cumsum([int(c["nb"].sum()) for c in cores])[:-1]
    # symbols per class: what the histograms do not say (scaled ones), and per lane but the last
    excess = np.bincount(cls, minlength=q.shape[0]) - q.sum(axis=1)
    count_bytes = _pack_uints(_zigzag(excess))
    per_lane = [np.bincount(c, minlength=q.shape[0]) for c in lane_cls[:-1]]
    lane_bytes = _pack_uints(np.concatenate(per_lane)) if per_lane else b""

    hist_bytes = _pack_uints(q.ravel())
    table_bytes = b""
    n_table = flags = 0
    if m.table is not None:
        flags |= _FLAG_TABLE
        n_table = len(m.table)
        table_bytes = _pack_uints(np.diff(m.table, prepend=0))
    crc = zlib.crc32(m.expected.tobytes())
    ls_bytes = cores[0]["ls"]
    head = _HEAD2.pack(
        _MAGIC, _VERSION, m.kind, flags, d, h, w, crc, m.offset, m.lo, m.step, n_table,
        q.shape[1], n_bins, mask, n_tex, len(hist_bytes), len(table_bytes), len(bits),
        len(ls_bytes), int(np.sum(keep.astype(np.int64) << np.arange(keep.size))),
    )  # fmt: skip
    ext = _V4_EXT.pack(len(count_bytes), len(lane_bytes), len(cores))
    ext += b"".join(_V4_LANE_BITS.pack(int(b)) for b in lane_bits)
    parts = [head, ext, hist_bytes, count_bytes, lane_bytes, *ls_bytes, table_bytes, bits]
    return b"".join([*parts, words])


class LanePlan:
    """Where each lane's tokens and raw bits are: read from a version-4 payload.

    Attributes
    ----------
    rows : numpy.ndarray
        Row bounds of the lanes.
    starts, ends : numpy.ndarray
        ``(lanes, n_ctx)``: each lane's first and past-the-last token of every context in the
        context-grouped token array.
    bit_starts : list of int
        Each lane's first raw bit, and the end of the raw bits.
    """

    def __init__(self, rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, bits: list[int]):
        self.rows, self.starts, self.ends, self.bit_starts = rows, starts, ends, bits


def read_v4_ext(payload: bytes, pos: int, shape3: tuple[int, int, int]) -> tuple[tuple, int]:
    """The version-4 extension after the header: ``((n_count_bytes, n_lane_bytes, lanes,
    lane_bits), new position)``."""
    if len(payload) < pos + _V4_EXT.size:
        raise FormatError("truncated lossless block")
    n_count, n_lane, lanes = _V4_EXT.unpack_from(payload, pos)
    pos += _V4_EXT.size
    if lanes != n_lanes(shape3):
        raise FormatError("implausible lane count in a lossless block")
    if len(payload) < pos + _V4_LANE_BITS.size * (lanes - 1):
        raise FormatError("truncated lossless block")
    bits = [_V4_LANE_BITS.unpack_from(payload, pos + 8 * i)[0] for i in range(lanes - 1)]
    return (n_count, n_lane, lanes, bits), pos + _V4_LANE_BITS.size * (lanes - 1)


def lane_plan(
    q: np.ndarray,
    count_bytes: bytes,
    lane_bytes: bytes,
    ext: tuple,
    shape3: tuple[int, int, int],
    n_bits: int,
) -> LanePlan:
    """Token and raw-bit positions of every lane, checked for consistency."""
    _nc, _nl, lanes, lane_bits = ext
    n_ctx = q.shape[0]
    z = _unpack_uints(count_bytes, n_ctx)
    totals = q.sum(axis=1) + ((z >> 1) ^ -(z & 1))
    per_lane = _unpack_uints(lane_bytes, n_ctx * (lanes - 1)).reshape(lanes - 1, n_ctx)
    per_lane = np.concatenate([per_lane, (totals - per_lane.sum(axis=0))[None]])
    rows = lane_rows(shape3[1], lanes)
    sizes = shape3[0] * np.diff(rows) * shape3[2]
    if np.any(per_lane < 0) or not np.array_equal(per_lane.sum(axis=1), sizes):
        raise FormatError("implausible symbol counts in a lossless block")
    ctx_start = np.concatenate([[0], np.cumsum(totals)[:-1]])
    before = np.concatenate([np.zeros((1, n_ctx), np.int64), np.cumsum(per_lane, axis=0)[:-1]])
    starts = ctx_start + before
    bits = [0, *lane_bits, 8 * n_bits]
    if any(b > c for b, c in zip(bits[:-1], bits[1:], strict=True)):
        raise FormatError("implausible raw-bit positions in a lossless block")
    return LanePlan(rows, starts.astype(np.int64), (starts + per_lane).astype(np.int64), bits)


def decode_v4(
    q: np.ndarray,
    plan: LanePlan,
    words: np.ndarray,
    bit_bytes: np.ndarray,
    shape3: tuple[int, int, int],
    mask: int,
    ls_w: np.ndarray,
    ls_b: np.ndarray,
    thr: np.ndarray,
    n_tex: int,
) -> np.ndarray:
    """Mapped values of a version-4 payload: every context's symbols in one call each, then
    one compiled pass per lane (lanes on threads)."""
    import constriction

    from . import kernels

    models = _class_models(q)
    coder = constriction.stream.stack.AnsCoder(words)
    totals = plan.ends[-1] - plan.starts[0]
    parts = [coder.decode(models[c], int(k)) for c, k in enumerate(totals) if k]
    tokens = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    ntok = q.shape[1]
    tok_all = np.arange(ntok, dtype=np.int64)
    tok_nb = _token_bits(tok_all)
    tok_hi = np.where(tok_all >= _TOK_DIRECT, (2 + (tok_all & 1)) << tok_nb, tok_all)
    d, h, w = shape3
    out = np.empty(d * h * w, np.int64)
    sub_ids = np.array([i for i in range(_N_SUB) if mask >> i & 1], np.int64)
    cls_lut = kernels.class_table(thr)
    wt_lut = kernels.weight_table(kernels.WT_LUT)
    padded = np.concatenate([bit_bytes, np.zeros(8, np.uint8)])

    def lane(i: int) -> int:
        y0, y1 = int(plan.rows[i]), int(plan.rows[i + 1])
        return kernels.decode_raster(
            np.array([d, y1 - y0, w, y0, h], np.int64), tokens, plan.starts[i], plan.ends[i],
            sub_ids, ls_w, ls_b, thr, cls_lut, wt_lut, n_tex, _V2_SHIFT, tok_nb, tok_hi,
            padded, plan.bit_starts[i], plan.bit_starts[i + 1], _V2_CAP, out,
        )  # fmt: skip

    n = len(plan.rows) - 1
    threads = min(n, os.cpu_count() or 1)
    if threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sciz-lane") as pool:
            status = list(pool.map(lane, range(n)))
    else:
        status = [lane(i) for i in range(n)]
    for i, s in enumerate(status):
        if s == -1:
            raise FormatError("raw bit stream of a lossless block is too short")
        if s < 0:
            raise FormatError("symbol counts of a lossless block do not match its contexts")
        end = plan.bit_starts[i + 1]
        if (i < n - 1 and s != end) or end - s >= 8:
            raise FormatError("raw bit stream of a lossless block has extra bytes")
    return out.reshape(shape3)


__all__ = ["LanePlan", "decode_v4", "encode_v4", "lane_plan", "lane_rows", "n_lanes", "read_v4_ext"]
