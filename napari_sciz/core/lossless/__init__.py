"""Lossless and error-bounded block coding (``mode="lossless"`` and ``mode="bounded"``).

Method (see ``docs/lossless.md``; byte layout in ``docs/format.md``): predict every voxel of a
block with a deterministic integer causal predictor and code the prediction residual
losslessly.

1. **Value mapping.** Integers are used as they are; ``float32`` is coded by bit pattern (the
   bits are mapped to an order-preserving unsigned integer so that neighbouring values stay
   numerically close). In bounded mode the values are first quantized on a uniform grid
   ``lo + q * step`` with ``step = 2E + 1`` for integers and ``step = 2E`` for floats, so that
   ``|decoded - original| <= E`` (checked at encode). The minimum is subtracted; when the block
   uses few distinct values (sparse histograms), values are replaced by their index in the
   sorted table of distinct values (the table is stored delta-coded with zlib).
2. **Prediction (payload version 2).** Every voxel is predicted from 11 causal neighbours
   (``W, N, NW, NE, WW, NN`` in its slice, ``P, PN, PS, PW, PE`` in the previous slice) by
   one sub-predictor or an inverse-squared-error blend of several (``W``, ``N``, planar
   ``W + N - NW``, ``W + NE - N``, a least-squares predictor fitted per slice, ``P + W - PW``,
   the LOCO-I median edge detector); the encoder picks the set on a sample of the block. The
   left neighbour is causal because the decoder walks the block along wavefronts
   ``3z + 2y + x`` (each wavefront is one vectorised numpy step).
3. **Residual coding.** Residuals are zigzag-mapped and split into a token (values below 16
   directly, above: exponent and next bit) and raw bits. Tokens are coded with constriction's
   ANS coder and one stored histogram per context: the activity of the neighbours' residuals
   (``2|r_W| + 2|r_N| + |r_NW| + |r_NE| + |r_P|``, log classes, adjacent classes merged when
   that saves bits) optionally times a texture level (flat neighbourhood or not).

Version-1 payloads (row-wise coder, Laplace model) are still decoded. The decoder recomputes
everything from already decoded data with integer (and fixed-order IEEE binary64) arithmetic;
a CRC32 of the expected decoded block is stored and checked, so a corrupted payload raises
:class:`FormatError` instead of returning wrong data. The INR prediction is not used here.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...errors import FormatError, InvalidInputError
from ..blocks import BlockGrid

__all__ = [
    "LOSSLESS_DTYPES",
    "MODES",
    "check_mode",
    "decode_block",
    "encode_array",
    "encode_block",
    "quantization_step",
]

#: modes handled by this module
MODES = ("lossless", "bounded")
#: dtypes supported by lossless mode (float64 only in bounded mode)
LOSSLESS_DTYPES = ("uint8", "uint16", "int16", "uint32", "float32")

_MAGIC = b"SZL"
_RAW_MAGIC = b"SZR"
#: version of the coded payloads written (1 = row-wise coder, 2 = wavefront coder with one
#: probability model per symbol; both still decoded). Version 3 is version 2 with the entropy
#: coder's symbols of each wavefront sorted by context class, so that the decoder runs one
#: fixed model per class (compiled kernels around it, :mod:`.kernels`)
_VERSION = 3
_VERSIONS = (1, 2, 3)
#: version byte of stored (raw) blocks
_RAW_VERSION = 1
#: value kinds
_KIND_INT, _KIND_FLOAT_BITS, _KIND_QUANT_INT, _KIND_QUANT_FLOAT = 0, 1, 2, 3
_FLAG_TABLE = 1
#: number of activity classes of the context model
_N_CLASSES = 24
#: largest central range of the coded alphabet
_T_MAX = 1 << 16
#: predictors: (spatial operator, difference along z)
#: spatial operator 0: none, 1: dx (left), 2: dy (up), 3: dx dy (planar)
_PREDICTORS = ((1, False), (2, False), (3, False), (0, True), (1, True), (2, True), (3, True))
#: ids of the least-squares predictors (on the values, and on their differences along x)
_LS_VALUES, _LS_DX = len(_PREDICTORS), len(_PREDICTORS) + 1
_N_PRED = len(_PREDICTORS) + 2
#: integer weights of a least-squares predictor are in 1/64ths
_LS_SHIFT = 6
_LS_FEATS = 8
_LS_PARAMS = struct.Struct("<8hi")
_HEAD = struct.Struct("<3sBBBIIIIqddII")


def quantization_step(dtype: np.dtype, max_error: float) -> float:
    """Grid step of bounded mode: ``2E + 1`` for integer dtypes, ``2E`` for floats.

    Parameters
    ----------
    dtype : numpy.dtype
        dtype of the data.
    max_error : float
        Largest allowed absolute error ``E``.

    Returns
    -------
    float
        The step.
    """
    if np.dtype(dtype).kind in "ui":
        return float(2 * math.floor(max_error) + 1)
    return float(2 * max_error)


# ----------------------------------------------------------------------------------------
# helpers


def _pack_uints(values: np.ndarray) -> bytes:
    """Non-negative integers -> width byte + byte-shuffled little-endian planes, zlib."""
    values = np.asarray(values, dtype=np.uint64)
    if values.size == 0:
        return b"\x00"
    top = int(values.max())
    width = 1 if top < 1 << 8 else 2 if top < 1 << 16 else 4 if top < 1 << 32 else 8
    raw = values.astype(f"<u{width}").view(np.uint8).reshape(-1, width).T.tobytes()
    return bytes([width]) + zlib.compress(raw, 9)


def _unpack_uints(data: bytes, count: int) -> np.ndarray:
    if count == 0:
        return np.zeros(0, np.int64)
    width = data[0]
    if width not in (1, 2, 4, 8):
        raise FormatError("bad integer stream in a lossless block")
    raw = zlib.decompress(data[1:])
    if len(raw) != width * count:
        raise FormatError("truncated integer stream in a lossless block")
    planes = np.frombuffer(raw, np.uint8).reshape(width, count).T.copy()
    return planes.view(f"<u{width}").reshape(count).astype(np.int64)


def _float_to_ordered(bits: np.ndarray) -> np.ndarray:
    """float32 bit patterns (as int64) -> order-preserving non-negative integers."""
    return np.where(bits >= 1 << 31, (1 << 32) - 1 - bits, bits + (1 << 31))


def _ordered_to_float(m: np.ndarray) -> np.ndarray:
    return np.where(m >= 1 << 31, m - (1 << 31), (1 << 32) - 1 - m)


def _spatial_diff(x: np.ndarray, op: int) -> np.ndarray:
    """Finite difference of a 2D int64 slice (zero padding before the first row/column)."""
    out = x
    if op in (1, 3):
        out = np.diff(out, axis=1, prepend=0)
    if op in (2, 3):
        out = np.diff(out, axis=0, prepend=0)
    return out


def _spatial_undiff(r: np.ndarray, op: int) -> np.ndarray:
    out = r
    if op in (2, 3):
        out = np.cumsum(out, axis=0)
    if op in (1, 3):
        out = np.cumsum(out, axis=1)
    return out


# 2 ** (k / 8), k = 0..7, correctly rounded: written out, since numpy's exp2 may differ in the
# last bit between SIMD levels and a decoder must compute the model its encoder did
_EIGHTH_POWERS = np.array(
    [
        float.fromhex(x)
        for x in (
            "0x1.0000000000000p+0",
            "0x1.172b83c7d517bp+0",
            "0x1.306fe0a31b715p+0",
            "0x1.4bfdad5362a27p+0",
            "0x1.6a09e667f3bcdp+0",
            "0x1.8ace5422aa0dbp+0",
            "0x1.ae89f995ad3adp+0",
            "0x1.d5818dcfba487p+0",
        )
    ]  # fmt: skip
)


def _scale_of(byte: np.ndarray | int) -> np.ndarray:
    """Laplace scale of a class byte: ``2 ** (b / 8 - 4)``, identical on every CPU."""
    b = np.asarray(byte, np.int64)
    return np.ldexp(_EIGHTH_POWERS[b & 7], (b >> 3) - 4)


def _classes(a_up: np.ndarray, a_prev: np.ndarray | None) -> np.ndarray:
    """Activity classes of one row from the absolute symbols of the row above/previous slice.

    ``a_up`` and ``a_prev`` are rows padded by one on each side (int64).
    """
    c = a_up[:-2] + 2 * a_up[1:-1] + a_up[2:]
    if a_prev is not None:
        c = c + a_prev[:-2] + 2 * a_prev[1:-1] + a_prev[2:]
    return np.minimum((np.log2(c + 1.0) * 1.5).astype(np.int64), _N_CLASSES - 1)


def _all_classes(a: np.ndarray) -> np.ndarray:
    """Activity classes of every symbol of a block (vectorised version of :func:`_classes`)."""
    d, h, w = a.shape
    pad = np.zeros((d + 1, h + 1, w + 2), np.int64)
    pad[1:, 1:, 1:-1] = a
    up = pad[1:, :-1]
    prev = pad[:-1, 1:]
    c = up[..., :-2] + 2 * up[..., 1:-1] + up[..., 2:]
    c = c + prev[..., :-2] + 2 * prev[..., 1:-1] + prev[..., 2:]
    return np.minimum((np.log2(c + 1.0) * 1.5).astype(np.int64), _N_CLASSES - 1)


def _ls_domain(x: np.ndarray, pid: int) -> np.ndarray:
    """The slice in the domain of a least-squares predictor (values or x differences)."""
    return np.diff(x, axis=-1, prepend=0) if pid == _LS_DX else x


def _prev_features(prev: np.ndarray | None, h: int, w: int) -> list[np.ndarray]:
    """Previous-slice features: same position, up, down, left, right (edge padded)."""
    if prev is None:
        return [np.zeros((h, w), np.int64)] * 5
    p = np.pad(prev, 1, mode="edge")
    return [p[1:-1, 1:-1], p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]]


def _up_features(rows: np.ndarray) -> list[np.ndarray]:
    """Row-above features (up, up-left, up-right) of rows ``1..`` of ``rows`` (row 0 = above)."""
    r = np.concatenate([rows[:, :1], rows, rows[:, -1:]], axis=1)
    return [r[:-1, 1:-1], r[:-1, :-2], r[:-1, 2:]]


def _ls_predict(feats: list[np.ndarray], weights: np.ndarray, bias: int) -> np.ndarray:
    acc = np.full(feats[0].shape, bias, np.int64)
    for f, wgt in zip(feats, weights, strict=True):
        if wgt:
            acc += f * int(wgt)
    return acc >> _LS_SHIFT


def _ls_fit(u: np.ndarray, prev: np.ndarray | None) -> tuple[np.ndarray, int, np.ndarray]:
    """Least-squares integer predictor of slice ``u`` (domain values); returns weights, bias
    and the residual."""
    h, w = u.shape
    above = np.concatenate([np.zeros((1, w), np.int64), u], axis=0)
    feats = _up_features(above) + _prev_features(prev, h, w)
    n = 3 if prev is None else _LS_FEATS
    a = np.stack([f.ravel().astype(np.float64) for f in feats[:n]], axis=1)
    target = u.ravel().astype(np.float64)
    if target.size > 8192:  # a sample is enough for 8 weights
        idx = np.linspace(0, target.size - 1, 8192).astype(np.int64)
        a_fit, t_fit = a[idx], target[idx]
    else:
        a_fit, t_fit = a, target
    # normal equations (centred, lightly regularised): fast and deterministic at encode only
    mu_a, mu_t = a_fit.mean(axis=0), t_fit.mean()
    ac = a_fit - mu_a
    gram = ac.T @ ac
    gram += np.eye(n) * (1e-6 * np.trace(gram) / n + 1e-9)
    try:
        coef = np.linalg.solve(gram, ac.T @ (t_fit - mu_t))
    except np.linalg.LinAlgError:
        coef = np.zeros(n)
    if not np.all(np.isfinite(coef)):
        coef = np.zeros(n)
    weights = np.zeros(_LS_FEATS, np.int64)
    weights[:n] = np.clip(np.rint(coef * (1 << _LS_SHIFT)), -32768, 32767)
    raw = _ls_predict(feats, weights, 0)
    mean = float((u - raw).mean()) if u.size else 0.0
    bias = int(
        np.clip(round(mean * (1 << _LS_SHIFT)) + (1 << (_LS_SHIFT - 1)), -(2**31), 2**31 - 1)
    )
    return weights, bias, u - _ls_predict(feats, weights, bias)


def _cost(r: np.ndarray) -> float:
    """Code-length proxy of a residual slice (bits, up to constants)."""
    return float(np.log2(np.abs(r) + 1.0).sum())


# ----------------------------------------------------------------------------------------
# encoding


@dataclass
class _Mapped:
    values: np.ndarray  # int64, >= 0
    kind: int
    offset: int
    lo: float
    step: float
    table: np.ndarray | None
    expected: np.ndarray  # what the decoder must return


def _map_values(block: np.ndarray, mode: str, max_error: float | None) -> _Mapped:
    dtype = block.dtype
    lo = step = 0.0
    if mode == "bounded" and max_error is None:
        raise InvalidInputError("bounded mode needs max_error")
    if mode == "bounded" and float(max_error) > 0 and not (dtype.kind in "ui" and max_error < 1):
        e = float(max_error)
        step = quantization_step(dtype, e)
        if dtype.kind in "ui":
            x = block.astype(np.int64)
            lo_i = int(x.min())
            s = int(step)
            q = (x - lo_i + int(math.floor(e))) // s
            info = np.iinfo(dtype)
            expected = np.clip(lo_i + q * s, info.min, info.max).astype(dtype)
            lo, kind = float(lo_i), _KIND_QUANT_INT
            values = q
        else:
            x = block.astype(np.float64)
            lo = float(x.min())
            span = (float(x.max()) - lo) / step
            if span > 2.0**40:
                raise InvalidInputError(
                    f"max_error={max_error!r} is too small for the value range of the data"
                )
            q = np.rint((x - lo) / step).astype(np.int64)
            expected = (lo + q * step).astype(dtype)
            if np.abs(expected.astype(np.float64) - x).max() > e:
                # float rounding broke the bound: code this block losslessly instead
                if dtype == np.float32:
                    return _map_values(block, "lossless", None)
                raise InvalidInputError(
                    f"max_error={max_error!r} is below the float64 precision of the data"
                )
            kind = _KIND_QUANT_FLOAT
            values = q
    else:
        if dtype.name not in LOSSLESS_DTYPES:
            raise InvalidInputError(
                f"lossless mode supports {', '.join(LOSSLESS_DTYPES)}; got {dtype.name}"
            )
        expected = block
        if dtype == np.float32:
            values = _float_to_ordered(block.view(np.uint32).astype(np.int64))
            kind = _KIND_FLOAT_BITS
        else:
            values = block.astype(np.int64)
            kind = _KIND_INT
    offset = int(values.min())
    values = values - offset
    table = None
    uniq = np.unique(values)
    span = int(uniq[-1]) + 1
    # a value table pays when the histogram is sparse (few distinct values in the range)
    if len(uniq) * 4 <= span and len(uniq) < values.size:
        table = uniq
        values = np.searchsorted(uniq, values).astype(np.int64)
    return _Mapped(values, kind, offset, lo, step, table, np.ascontiguousarray(expected))


def encode_block(
    block: np.ndarray, mode: str = "lossless", max_error: float | None = None
) -> bytes:
    """Code one block losslessly or within ``max_error``.

    Parameters
    ----------
    block : numpy.ndarray
        3D block ``(D, H, W)`` (2D images as ``D = 1``).
    mode : {"lossless", "bounded"}
        Coding mode.
    max_error : float, optional
        Largest absolute error of bounded mode (``E >= 0``; integers use ``floor(E)``).

    Returns
    -------
    bytes
        The block payload (layout in ``docs/format.md``).

    Raises
    ------
    InvalidInputError
        Unsupported dtype or error bound.
    """
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {MODES}, got {mode!r}")
    if block.ndim != 3:
        raise InvalidInputError("encode_block expects a 3D block")
    out = _encode(block, mode, max_error)
    if mode == "bounded" and block.dtype.kind in "ui" and block.size:
        # sparse histograms (few distinct values far apart): the grid of bounded mode can
        # cost more than the value table of lossless mode; keep the smaller (both within E)
        uniq = np.unique(block)
        if len(uniq) * 4 <= int(uniq[-1]) - int(uniq[0]) + 1:
            exact = _encode(block, "lossless", None)
            if len(exact) < len(out):
                return exact
    return out


def _encode(block: np.ndarray, mode: str, max_error: float | None) -> bytes:
    d, h, w = block.shape
    m = _map_values(np.ascontiguousarray(block), mode, max_error)

    out = _encode_v2(m, (d, h, w))
    if m.table is not None and len(m.table) * 8 > m.values.size:
        # a table of many distinct values can cost more than it saves: try without
        plain = _Mapped(m.table[m.values], m.kind, m.offset, m.lo, m.step, None, m.expected)
        other = _encode_v2(plain, (d, h, w))
        if len(other) < len(out):
            out = other
    raw = m.expected.tobytes()
    if len(out) > len(raw) + 8:
        # incompressible block (e.g. noise): stored as it is
        return _RAW_MAGIC + struct.pack("<BI", _RAW_VERSION, zlib.crc32(raw)) + raw
    return out


# ----------------------------------------------------------------------------------------
# version 2: per-voxel causal prediction, decoded along wavefronts


#: sub-predictors of version 2 (bit i of the payload's mask enables sub-predictor i)
_SUB_NAMES = ("W", "N", "W+N-NW", "W+NE-N", "LS", "P+W-PW", "MED")
_SUB_LS = 4
_N_SUB = len(_SUB_NAMES)
#: sub-predictor sets the encoder tries (the smallest estimated code wins, with a small
#: penalty per extra sub-predictor since each one slows decoding down)
_MASKS = (16, 64, 4, 68, 88, 26, 19, 35, 112, 92, 124)
_SUB_PENALTY = 0.004
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
#: histograms with more symbols than this are scaled to this total (else exact counts)
_HIST_TOTAL = 1 << 16
#: tokens: zigzag value u < 16 is its own token; above, exponent and next bit, rest raw bits
_TOK_DIRECT = 16
_HEAD2 = struct.Struct("<3sBBBIIIIqddIBBBBIIIIQ")
#: wavefront of voxel (z, y, x): 3z + 2y + x (every neighbour used lies on an earlier one)
_WAVE = (3, 2, 1)


def _class_of(c: np.ndarray, thr: np.ndarray = _CLS_THR) -> np.ndarray:
    """``min(39, floor(2 log2(1 + c)))`` in integer arithmetic (``c >= 0``).

    With a subset ``thr`` of the thresholds: the index of the bin of merged classes.
    """
    # class k is reached when (1 + c)^2 >= 2^k, i.e. c >= isqrt(2^k - 1)
    return np.searchsorted(thr, c, side="right")


def _hist_cost(c: np.ndarray) -> float:
    """Code length of the symbols of one histogram plus an estimate of its storage (bits)."""
    nz = c[c > 0]
    if nz.size == 0:
        return 0.0
    return float(-(nz * np.log2(nz / nz.sum())).sum()) + 12.0 * nz.size


def _merge_classes(counts: np.ndarray) -> tuple[np.ndarray, float]:
    """Which activity thresholds to keep (adjacent classes merged while that saves bits).

    ``counts``: ``(n_tex, n_classes, n_tokens)``; the same merge applies to every texture
    level. Returns the mask of kept thresholds and the estimated total bits.
    """

    def cost(c: np.ndarray) -> float:
        return sum(_hist_cost(row) for row in c)

    n = counts.shape[1]
    bins = [counts[:, k].astype(np.int64) for k in range(n)]
    keep = np.ones(n - 1, bool)
    where = list(range(n - 1))  # threshold index between bins i and i + 1
    costs = [cost(b) for b in bins]
    while len(bins) > 1:
        deltas = [
            cost(bins[i] + bins[i + 1]) - costs[i] - costs[i + 1] for i in range(len(bins) - 1)
        ]
        i = int(np.argmin(deltas))
        if deltas[i] > 0:
            break
        bins[i : i + 2] = [bins[i] + bins[i + 1]]
        costs[i : i + 2] = [costs[i] + costs[i + 1] + deltas[i]]
        keep[where.pop(i)] = False
    return keep, float(sum(costs))


def _tokenize(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Residuals -> (token, number of raw bits, raw bits) (hybrid integer code)."""
    u = np.where(r >= 0, 2 * r, -2 * r - 1)
    e = np.frexp(np.maximum(u, 1).astype(np.float64))[1].astype(np.int64) - 1  # floor(log2 u)
    big = u >= _TOK_DIRECT
    nb = np.where(big, e - 1, 0)
    tok = np.where(big, _TOK_DIRECT + 2 * (e - 4) + ((u >> nb) & 1), u)
    raw = u & ((np.int64(1) << nb) - 1)
    return tok, nb, raw


def _token_bits(tok: np.ndarray) -> np.ndarray:
    """Number of raw bits that follow each token."""
    return np.where(tok >= _TOK_DIRECT, (tok - (_TOK_DIRECT - 6)) >> 1, 0)


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
    nv: np.ndarray, mask: int, ls_w: np.ndarray | None, ls_b: np.ndarray | int
) -> np.ndarray:
    """Sub-predictions ``(K, m)`` from the neighbour values ``nv`` ``(11, m)`` (int64).

    ``ls_w``: least-squares weights ``(11, m)`` or ``(11, 1)``; ``ls_b``: bias.
    """
    subs = []
    for i in range(_N_SUB):
        if not mask >> i & 1:
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


def _wave_order(d: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Decoding order (flat indices sorted by wavefront, then C order) and group bounds."""
    t = (
        _WAVE[0] * np.arange(d, dtype=np.int64)[:, None, None]
        + _WAVE[1] * np.arange(h, dtype=np.int64)[None, :, None]
        + _WAVE[2] * np.arange(w, dtype=np.int64)[None, None, :]
    ).ravel()
    from .kernels import class_runs

    return class_runs(t, int(t.max()) + 1 if t.size else 0)  # a stable counting sort


def _pack_bits(nb: np.ndarray, raw: np.ndarray) -> bytes:
    """Raw bits of every symbol (most significant first, in decoding order), packed."""
    sel = nb > 0
    nb, raw = nb[sel], raw[sel]
    out = []
    carry = np.zeros(0, np.uint8)
    step = 1 << 18
    for s in range(0, nb.size, step):
        n_c, r_c = nb[s : s + step], raw[s : s + step]
        owner = np.repeat(np.arange(n_c.size), n_c)
        bitpos = np.arange(owner.size) - (np.cumsum(n_c) - n_c)[owner]
        bits = ((r_c[owner] >> (n_c[owner] - 1 - bitpos)) & 1).astype(np.uint8)
        bits = np.concatenate([carry, bits])
        cut = bits.size - bits.size % 8
        out.append(np.packbits(bits[:cut]).tobytes())
        carry = bits[cut:]
    if carry.size:
        out.append(np.packbits(carry).tobytes())
    return b"".join(out)


def _encode_v2_core(v: np.ndarray, mask: int) -> tuple[dict, float]:
    """Tokens of block ``v`` ``(d, h, w)`` with the sub-predictors of ``mask``; est. bits."""
    d, h, w = v.shape
    hw, n = h * w, v.size
    nbrs = _Neighbours(d, h, w)
    vflat = np.concatenate([np.zeros(hw, np.int64), v.ravel()])
    k_sub = bin(mask).count("1")
    err = np.zeros((n + hw, k_sub), np.int32)
    absr = np.zeros(n + hw, np.int64)
    res = np.empty(n, np.int64)
    cls = np.empty(n, np.int64)
    pos = np.arange(hw, dtype=np.int64)
    use_ls = bool(mask >> _SUB_LS & 1)
    ls = []
    for z in range(d):
        sl = slice((z + 1) * hw, (z + 2) * hw)
        nidx = nbrs.index(pos + z * hw, pos)
        nv = vflat[nidx]
        target = vflat[sl]
        ls_w, ls_b = None, 0
        if use_ls:
            wts, ls_b = _ls_fit_v2(nv, target, z > 0)
            ls.append(_V2_LS.pack(*[int(x) for x in wts], ls_b))
            ls_w = wts[:, None]
        subs = _sub_predictions(nv, mask, ls_w, ls_b)
        if k_sub > 1:
            err[sl] = np.minimum(np.abs(target - subs), _V2_CAP).T
            pred = _blend(subs, _err_sum(err, nidx))
        else:
            pred = subs[0]
        r = target - pred
        res[z * hw : (z + 1) * hw] = r
        absr[sl] = np.minimum(np.abs(r), _V2_CAP)
        cls[z * hw : (z + 1) * hw] = _ctx_class(absr[nidx[:5]]) + _N_CLS2 * _texture(nv)
    tok, nb, raw = _tokenize(res)
    ntok = max(int(tok.max()) + 1, 2)  # constriction needs two symbols at least
    counts = np.bincount(cls * ntok + tok, minlength=_N_TEX * _N_CLS2 * ntok)
    counts = counts.reshape(_N_TEX, _N_CLS2, ntok)
    tot = counts.sum(axis=0).sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        c2 = counts.sum(axis=0)
        ent = -(c2 * np.log2(np.where(c2 > 0, c2 / np.maximum(tot, 1), 1.0))).sum()
    bits = float(ent + nb.sum()) + 8.0 * _V2_LS.size * len(ls)
    return {"tok": tok, "nb": nb, "raw": raw, "cls": cls, "counts": counts, "ls": ls}, bits


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


def _quantize_hist(counts: np.ndarray) -> np.ndarray:
    """Histograms as stored: exact counts, or scaled to a total of ``2^16`` when larger."""
    tot = counts.sum(axis=1, keepdims=True)
    q = np.where(tot > _HIST_TOTAL, (counts * _HIST_TOTAL) // np.maximum(tot, 1), counts)
    return np.where(counts > 0, np.maximum(q, 1), 0)


def _class_models(q: np.ndarray) -> list:
    """One fixed categorical model per context class (an unused class: uniform)."""
    import constriction

    probs = np.where(q.sum(axis=1, keepdims=True) > 0, q, 1).astype(np.float64)
    return [constriction.stream.model.Categorical(row, perfect=False) for row in probs]


def _ans_encode_by_class(
    tok: np.ndarray, cls: np.ndarray, bounds: np.ndarray, models: list
) -> bytes:
    """ANS words of the tokens (wavefront order), each wavefront's sorted by class (stable)."""
    import constriction

    wave = np.repeat(np.arange(bounds.size - 1), np.diff(bounds))
    key = wave * len(models) + cls
    perm = np.argsort(key, kind="stable")
    key, tok = key[perm], tok[perm].astype(np.int32)
    cut = np.flatnonzero(np.diff(key)) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [key.size]])
    coder = constriction.stream.stack.AnsCoder()
    for a, b in zip(starts[::-1], ends[::-1], strict=True):  # a stack: last run first
        coder.encode_reverse(tok[a:b], models[int(key[a]) % len(models)])
    return coder.get_compressed().astype("<u4").tobytes()


def _encode_v2(m: _Mapped, shape3: tuple[int, int, int]) -> bytes:
    d, h, w = shape3
    v = m.values.reshape(d, h, w)
    masks = [mk for mk in _MASKS if d > 1 or not mk >> 5 & 1]
    small = v.size <= 1 << 16
    sample = v if small else _sample_block(v)
    best = None
    for mk in masks:
        core, bits = _encode_v2_core(sample, mk)
        bits *= 1 + _SUB_PENALTY * (bin(mk).count("1") - 1)
        if best is None or bits < best[0]:
            best = (bits, mk, core)
    assert best is not None
    _bits, mask, core = best
    if not small:
        core = _encode_v2_core(v, mask)[0]
    order, bounds = _wave_order(d, h, w)
    tok = core["tok"][order]
    cls = core["cls"][order]
    # context: activity classes (adjacent ones merged) x texture levels (or none)
    counts3 = core["counts"]
    keep, est = _merge_classes(counts3)
    keep1, est1 = _merge_classes(counts3.sum(axis=0, keepdims=True))
    n_tex = _N_TEX
    if est1 <= est:
        keep, n_tex, counts3 = keep1, 1, counts3.sum(axis=0, keepdims=True)
    to_bin = np.concatenate([[0], np.cumsum(keep)])
    n_bins = int(to_bin[-1]) + 1
    tex, act = np.divmod(cls, _N_CLS2)
    cls = to_bin[act] * n_tex + (tex if n_tex > 1 else 0)
    counts = np.zeros((n_bins, n_tex, counts3.shape[2]), np.int64)
    np.add.at(counts, to_bin, counts3.transpose(1, 0, 2))
    q = _quantize_hist(counts.reshape(n_bins * n_tex, -1))
    words = _ans_encode_by_class(tok, cls, bounds, _class_models(q))
    bits = _pack_bits(core["nb"][order], core["raw"][order])

    hist_bytes = _pack_uints(q.ravel())
    table_bytes = b""
    n_table = flags = 0
    if m.table is not None:
        flags |= _FLAG_TABLE
        n_table = len(m.table)
        table_bytes = _pack_uints(np.diff(m.table, prepend=0))
    crc = zlib.crc32(m.expected.tobytes())
    head = _HEAD2.pack(
        _MAGIC, _VERSION, m.kind, flags, d, h, w, crc, m.offset, m.lo, m.step, n_table,
        q.shape[1], n_bins, mask, n_tex, len(hist_bytes), len(table_bytes), len(bits),
        len(core["ls"]), int(np.sum(keep.astype(np.int64) << np.arange(keep.size))),
    )  # fmt: skip
    return b"".join([head, hist_bytes, *core["ls"], table_bytes, bits, words])


def _words_and_table(
    payload: bytes, pos: int, flags: int, table_bytes: bytes, n_table: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """The ANS words from ``pos`` to the end of a payload, and the value table if flagged."""
    if (len(payload) - pos) % 4:
        raise FormatError("truncated lossless block")
    words = np.frombuffer(payload, "<u4", offset=pos).astype(np.uint32)
    table = None
    if flags & _FLAG_TABLE:
        table = np.cumsum(_unpack_uints(table_bytes, n_table))
    return words, table


def _decode_v2(payload: bytes, shape3: tuple[int, ...]) -> tuple[np.ndarray, tuple]:
    """Mapped values of a version-2 or -3 payload, and the fields :func:`_finish` needs."""
    import constriction

    (_m, _v, kind, flags, d, h, w, crc, offset, lo, step, n_table, ntok, n_cls, mask,
     n_tex, n_hist, n_tb, n_bits, n_ls, keep_bits) = _HEAD2.unpack_from(payload)  # fmt: skip
    if (d, h, w) != shape3:
        raise FormatError(f"block shape {(d, h, w)} does not match the grid {shape3}")
    keep = (keep_bits >> np.arange(_N_CLS2 - 1, dtype=np.uint64)) & 1 == 1
    thr = _CLS_THR[keep]
    if (
        kind > _KIND_QUANT_FLOAT
        or keep_bits >> (_N_CLS2 - 1)
        or n_cls != thr.size + 1
        or n_tex not in (1, _N_TEX)
        or not 0 < mask < 1 << _N_SUB
        or ntok < 2
    ):
        raise FormatError("implausible lossless block parameters")
    if kind in (_KIND_INT, _KIND_FLOAT_BITS) and (lo != 0.0 or step != 0.0):
        raise FormatError("implausible lossless block parameters")
    use_ls = bool(mask >> _SUB_LS & 1)
    if n_ls != (d if use_ls else 0):
        raise FormatError("bad predictor parameters in a lossless block")
    pos = _HEAD2.size
    q = _unpack_uints(payload[pos : pos + n_hist], n_cls * n_tex * ntok)
    q = q.reshape(n_cls * n_tex, ntok)
    pos += n_hist
    ls_w = np.zeros((_N_NBR, max(d, 1)), np.int64)
    ls_b = np.zeros(max(d, 1), np.int64)
    for z in range(n_ls):
        *wts, bias = _V2_LS.unpack_from(payload, pos)
        ls_w[:, z], ls_b[z] = wts, bias
        pos += _V2_LS.size
    table_bytes = payload[pos : pos + n_tb]
    pos += n_tb
    bit_bytes = np.frombuffer(payload[pos : pos + n_bits], np.uint8)
    if bit_bytes.size != n_bits:
        raise FormatError("truncated lossless block")
    words, table = _words_and_table(payload, pos + n_bits, flags, table_bytes, n_table)

    if _v == 3:
        v = _decode_waves(q, words, bit_bytes, (d, h, w), mask, ls_w, ls_b, thr, n_tex, ntok)
        return v, (kind, flags, crc, offset, lo, step, table)
    probs_cls = np.where(q.sum(axis=1, keepdims=True) > 0, q, 1).astype(np.float64)
    # 64-bit big-endian window of the raw bit stream at every byte
    bb = np.concatenate([bit_bytes, np.zeros(8, np.uint8)]).astype(np.uint64)
    win64 = bb[: n_bits + 1] << np.uint64(56)
    for k in range(1, 8):
        win64 |= bb[k : n_bits + 1 + k] << np.uint64(56 - 8 * k)
    coder = constriction.stream.stack.AnsCoder(words)
    family = constriction.stream.model.Categorical(perfect=False)
    hw, n = h * w, d * h * w
    nbrs = _Neighbours(d, h, w)
    order, bounds = _wave_order(d, h, w)
    b_local, b_cells, b_start = nbrs.plan(order, bounds)
    offsets = nbrs.offsets
    vflat = np.zeros(n + hw, np.int64)
    k_sub = bin(mask).count("1")
    err = np.zeros((n + hw, k_sub), np.int32) if k_sub > 1 else None
    absr = np.zeros(n + hw, np.int64)
    cursor = 0
    # per token: number of raw bits, their mask, the value without them
    tok_all = np.arange(ntok, dtype=np.int64)
    tok_nb = _token_bits(tok_all)
    tok_nbu = tok_nb.astype(np.uint64)
    tok_mask = (np.uint64(1) << tok_nbu) - np.uint64(1)
    tok_hi = np.where(tok_all >= _TOK_DIRECT, (2 + (tok_all & 1)) << tok_nb, tok_all)
    u64_64 = np.uint64(64)
    for g in range(len(bounds) - 1):
        idx = order[bounds[g] : bounds[g + 1]]
        nidx = idx + offsets
        if b_start[g] < b_start[g + 1]:
            nidx[:, b_local[b_start[g] : b_start[g + 1]]] = b_cells[:, b_start[g] : b_start[g + 1]]
        idx = idx + hw  # cells
        nv = vflat[nidx]
        if not use_ls:
            subs = _sub_predictions(nv, mask, None, 0)
        else:
            z = idx // hw - 1  # slice of each voxel
            if z[0] == z[-1]:
                subs = _sub_predictions(nv, mask, ls_w[:, z[:1]], ls_b[z[0]])
            else:
                subs = _sub_predictions(nv, mask, ls_w[:, z], ls_b[z])
        if err is not None:
            pred = _blend(subs, _err_sum(err, nidx))
        else:
            pred = subs[0]
        cls = _ctx_class(absr[nidx[:5]], thr)
        if n_tex > 1:
            cls = cls * n_tex + _texture(nv)
        tok = coder.decode(family, probs_cls[cls])
        nb = tok_nb[tok]
        cs = np.cumsum(nb)
        if cs[-1]:
            off = cs - nb + cursor
            cursor += int(cs[-1])
            if cursor > 8 * n_bits:
                raise FormatError("raw bit stream of a lossless block is too short")
            # tokens without raw bits have a zero mask (whatever their shift)
            sh = u64_64 - (off & 7).astype(np.uint64) - tok_nbu[tok]
            bits = (win64[off >> 3] >> sh) & tok_mask[tok]
            u = tok_hi[tok] + bits.astype(np.int64)
        else:
            u = tok.astype(np.int64)
        r = (u >> 1) ^ -(u & 1)
        val = pred + r
        vflat[idx] = val
        if err is not None:
            err[idx] = np.minimum(np.abs(val - subs), _V2_CAP).T
        absr[idx] = np.minimum(np.abs(r), _V2_CAP)
    if 8 * n_bits - cursor >= 8:
        raise FormatError("raw bit stream of a lossless block has extra bytes")
    return vflat[hw:].reshape(d, h, w), (kind, flags, crc, offset, lo, step, table)


def _decode_waves(
    q: np.ndarray,
    words: np.ndarray,
    bit_bytes: np.ndarray,
    shape3: tuple[int, int, int],
    mask: int,
    ls_w: np.ndarray,
    ls_b: np.ndarray,
    thr: np.ndarray,
    n_tex: int,
    ntok: int,
) -> np.ndarray:
    """Mapped values of a version-3 payload: compiled wavefronts, one model per class run."""
    import constriction

    from . import kernels

    d, h, w = shape3
    models = _class_models(q)
    coder = constriction.stream.stack.AnsCoder(words)
    hw, n = h * w, d * h * w
    nbrs = _Neighbours(d, h, w)
    order, bounds = _wave_order(d, h, w)
    b_local, b_cells, b_start = nbrs.plan(order, bounds)
    offsets = np.ascontiguousarray(nbrs.offsets[:, 0])
    sub_ids = np.array([i for i in range(_N_SUB) if mask >> i & 1], np.int64)
    vflat = np.zeros(n + hw, np.int64)
    err = np.zeros((n + hw, sub_ids.size), np.int32)
    absr = np.zeros(n + hw, np.int64)
    tok_all = np.arange(ntok, dtype=np.int64)
    tok_nb = _token_bits(tok_all)
    tok_hi = np.where(tok_all >= _TOK_DIRECT, (2 + (tok_all & 1)) << tok_nb, tok_all)
    padded_bits = np.concatenate([bit_bytes, np.zeros(8, np.uint8)])
    n_bits = bit_bytes.size
    n_cls = len(models)
    cursor = 0
    for g in range(len(bounds) - 1):
        idx = order[bounds[g] : bounds[g + 1]]
        sel = slice(b_start[g], b_start[g + 1])
        subs, pred, runs, starts = kernels.wave_context(
            idx, offsets, b_local[sel], b_cells[:, sel], hw, vflat, err, absr,
            sub_ids, ls_w, ls_b, thr, n_tex, _V2_SHIFT, n_cls,
        )  # fmt: skip
        counts = np.diff(starts).tolist()
        parts = [coder.decode(models[c], k) for c, k in enumerate(counts) if k]
        tok_sorted = parts[0] if len(parts) == 1 else np.concatenate(parts)
        cursor = kernels.wave_finish(
            idx, hw, runs, tok_sorted, tok_nb, tok_hi, padded_bits, n_bits, cursor,
            subs, pred, vflat, err, absr, _V2_CAP,
        )  # fmt: skip
        if cursor < 0:
            raise FormatError("raw bit stream of a lossless block is too short")
    if 8 * n_bits - cursor >= 8:
        raise FormatError("raw bit stream of a lossless block has extra bytes")
    return vflat[hw:].reshape(d, h, w)


# ----------------------------------------------------------------------------------------
# decoding


def decode_block(payload: bytes, dtype: np.dtype, shape3: tuple[int, int, int]) -> np.ndarray:
    """Decode a block payload of :func:`encode_block`.

    Parameters
    ----------
    payload : bytes
        The payload.
    dtype : numpy.dtype
        dtype of the original data.
    shape3 : tuple of int
        Expected block shape ``(D, H, W)``.

    Returns
    -------
    numpy.ndarray
        The decoded block (bit-identical in lossless mode).

    Raises
    ------
    FormatError
        The payload is malformed or fails its checksum.
    """
    try:
        return _decode(payload, np.dtype(dtype), tuple(shape3))
    except FormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means a bad payload
        raise FormatError(f"lossless block cannot be decoded: {exc}") from exc


def _decode(payload: bytes, dtype: np.dtype, shape3: tuple[int, ...]) -> np.ndarray:
    import constriction

    if payload[:3] == _RAW_MAGIC and len(payload) >= 8:
        _v, crc_raw = struct.unpack_from("<BI", payload, 3)
        body = payload[8:]
        n = math.prod(shape3) * dtype.itemsize
        if len(body) != n or zlib.crc32(body) != crc_raw:
            raise FormatError("stored lossless block fails its checksum (corrupted payload)")
        return np.frombuffer(body, dtype).reshape(shape3).copy()
    if len(payload) < 4 or payload[:3] != _MAGIC:
        raise FormatError("not a lossless block payload")
    version = payload[3]
    if version not in _VERSIONS:
        raise FormatError(f"unsupported lossless block version {version}")
    if len(payload) < (_HEAD2 if version >= 2 else _HEAD).size:
        raise FormatError("truncated lossless block")
    if version >= 2:
        v, (kind, flags, crc, offset, lo, step, table) = _decode_v2(payload, shape3)
        return _finish(v, dtype, kind, table, offset, lo, step, crc)
    magic, version, kind, flags, d, h, w, crc, offset, lo, step, t, n_table = _HEAD.unpack_from(
        payload
    )
    if (d, h, w) != shape3:
        raise FormatError(f"block shape {(d, h, w)} does not match the grid {shape3}")
    if t > _T_MAX or kind > _KIND_QUANT_FLOAT:
        raise FormatError("implausible lossless block parameters")
    pos = _HEAD.size
    scale_bytes = np.frombuffer(payload, np.uint8, _N_CLASSES, pos)
    pos += _N_CLASSES
    preds = np.frombuffer(payload, np.uint8, d, pos)
    pos += d
    if np.any(preds >= _N_PRED) or (d and preds[0] < _LS_VALUES and _PREDICTORS[preds[0]][1]):
        raise FormatError("bad predictor in a lossless block")
    ls_params = {}
    for z in np.nonzero(preds >= _LS_VALUES)[0]:
        *wts, bias = _LS_PARAMS.unpack_from(payload, pos)
        ls_params[int(z)] = (np.array(wts, np.int64), int(bias))
        pos += _LS_PARAMS.size
    n_tb, n_esc, n_eb = struct.unpack_from("<III", payload, pos)
    pos += 12
    table_bytes = payload[pos : pos + n_tb]
    pos += n_tb
    esc = _unpack_uints(payload[pos : pos + n_eb], n_esc)
    words, table = _words_and_table(payload, pos + n_eb, flags, table_bytes, n_table)

    scales_cls = _scale_of(scale_bytes)
    coder = constriction.stream.stack.AnsCoder(words)
    model = constriction.stream.model.QuantizedLaplace(-(t + 1), t + 1)
    zeros = np.zeros(w)
    sym = np.zeros((d, h + 1, w + 2), np.int64)  # padded: row 0 and columns 0, -1 are zero
    a_prev_slice = None
    v = np.empty((d, h, w), np.int64)
    esc_pos = 0
    for z in range(d):
        pid = int(preds[z])
        ls = ls_params.get(z)
        if ls is not None:
            prev_feats = _prev_features(None if z == 0 else _ls_domain(v[z - 1], pid), h, w)
            wts, bias = ls
            # previous-slice part of the (unshifted) prediction, for the whole slice at once
            part = np.full((h, w), bias, np.int64)
            for f, wgt in zip(prev_feats, wts[3:], strict=True):
                if wgt:
                    part += f * int(wgt)
            w_up, w_ul, w_ur = (int(x) for x in wts[:3])
            u = np.zeros((h + 1, w), np.int64)  # row 0: above the slice
        for y in range(h):
            cls = _classes(
                np.abs(sym[z, y]), a_prev_slice[y + 1] if a_prev_slice is not None else None
            )
            row = coder.decode(model, zeros, scales_cls[cls]).astype(np.int64)
            hit = np.nonzero(np.abs(row) == t + 1)[0]
            if hit.size:
                extra = esc[esc_pos : esc_pos + hit.size]
                if extra.size != hit.size:
                    raise FormatError("escape stream of a lossless block is too short")
                esc_pos += hit.size
                row[hit] = np.sign(row[hit]) * (t + 1 + extra)
                sym[z, y + 1, 1:-1] = np.clip(row, -(t + 1), t + 1)
            else:
                sym[z, y + 1, 1:-1] = row
            if ls is not None:
                up = u[y]
                acc = part[y] + w_up * up
                acc[1:] += w_ul * up[:-1]
                acc[0] += w_ul * up[0]
                acc[:-1] += w_ur * up[1:]
                acc[-1] += w_ur * up[-1]
                u[y + 1] = row + (acc >> _LS_SHIFT)
            else:
                v[z, y] = row
        a_prev_slice = np.abs(sym[z])
        if ls is not None:
            v[z] = np.cumsum(u[1:], axis=1) if pid == _LS_DX else u[1:]
        else:
            op, dz = _PREDICTORS[pid]
            base = _spatial_undiff(v[z], op)
            v[z] = base + v[z - 1] if dz else base
    if esc_pos != n_esc:
        raise FormatError("escape stream of a lossless block has extra values")
    return _finish(v, dtype, kind, table, offset, lo, step, crc)


def _finish(
    v: np.ndarray,
    dtype: np.dtype,
    kind: int,
    table: np.ndarray | None,
    offset: int,
    lo: float,
    step: float,
    crc: int,
) -> np.ndarray:
    """Mapped values -> the block in its dtype; checks the CRC32."""
    if table is not None:
        if v.min() < 0 or v.max() >= len(table):
            raise FormatError("value index out of the table of a lossless block")
        v = table[v]
    v = v + offset
    if kind == _KIND_INT:
        out = v.astype(dtype)
    elif kind == _KIND_FLOAT_BITS:
        out = _ordered_to_float(v).astype(np.uint32).view(np.float32).astype(dtype)
    elif kind == _KIND_QUANT_INT:
        info = np.iinfo(dtype)
        out = np.clip(int(lo) + v * int(step), info.min, info.max).astype(dtype)
    else:
        out = (lo + v * step).astype(dtype)
    out = np.ascontiguousarray(out)
    if zlib.crc32(out.tobytes()) != crc:
        raise FormatError("lossless block fails its checksum (corrupted payload)")
    return out


# ----------------------------------------------------------------------------------------
# whole arrays (used by napari_sciz.core.api)


def check_mode(mode: str, max_error: float | None, dtype: np.dtype) -> float | None:
    """Validate ``mode`` and ``max_error`` for an input dtype.

    Parameters
    ----------
    mode : str
        ``"lossless"`` or ``"bounded"``.
    max_error : float or None
        Error bound of bounded mode (must be None in lossless mode).
    dtype : numpy.dtype
        dtype of the data.

    Returns
    -------
    float or None
        The validated error bound.

    Raises
    ------
    InvalidInputError
        Bad mode, bound or dtype.
    """
    if mode not in MODES:
        raise InvalidInputError(
            f"mode must be 'lossy', 'hybrid', 'lossless' or 'bounded', got {mode!r}"
        )
    if mode == "lossless":
        if max_error is not None:
            raise InvalidInputError("max_error is for mode='bounded' only")
        if np.dtype(dtype).name not in LOSSLESS_DTYPES:
            raise InvalidInputError(
                f"lossless mode supports {', '.join(LOSSLESS_DTYPES)}; got {np.dtype(dtype).name}"
            )
        return None
    if max_error is None:
        raise InvalidInputError("mode='bounded' needs max_error")
    try:
        e = float(max_error)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"max_error must be a number, got {max_error!r}") from exc
    if not (math.isfinite(e) and e >= 0):
        raise InvalidInputError(f"max_error must be a finite number >= 0, got {max_error!r}")
    if np.dtype(dtype) == np.float64 and e == 0:
        raise InvalidInputError("float64 data needs max_error > 0 (no lossless float64 mode)")
    return e


def encode_array(
    arr: np.ndarray,
    grid: BlockGrid,
    mode: str,
    max_error: float | None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[list[bytes], np.ndarray]:
    """Code every block of ``arr``; returns the payloads and the decoded array.

    Parameters
    ----------
    arr : numpy.ndarray
        The whole array.
    grid : BlockGrid
        Its block grid.
    mode : {"lossless", "bounded"}
        Coding mode.
    max_error : float or None
        Error bound of bounded mode.
    progress : callable, optional
        Called with ``(blocks_done, n_blocks)`` after each block.
    cancel : callable, optional
        Checked before each block; returning True raises ``CancelledError``.

    Returns
    -------
    payloads : list of bytes
    reconstruction : numpy.ndarray
        What the decoder returns (identical to ``arr`` in lossless mode).
    """
    from ...errors import CancelledError

    payloads = []
    recon = np.empty_like(arr)
    for index in range(grid.n_blocks):
        if cancel is not None and cancel():
            raise CancelledError("compression cancelled")
        sl = grid.block_slices(index)
        shape3 = grid.block_shape3(index)
        block = np.ascontiguousarray(arr[sl]).reshape(shape3)
        payload = encode_block(block, mode, max_error)
        # verified at encode: the decoder's output (checks the bound and the round trip)
        decoded = decode_block(payload, arr.dtype, shape3)
        if mode == "lossless":
            ok = np.array_equal(decoded.view(np.uint8), block.view(np.uint8))
        else:
            diff = np.abs(decoded.astype(np.float64) - block.astype(np.float64))
            ok = bool(diff.max() <= float(max_error or 0))
        if not ok:  # pragma: no cover - a bug, never silently wrong data
            raise RuntimeError(f"block {index} failed its encode-time verification")
        recon[sl] = decoded.reshape(recon[sl].shape)
        payloads.append(payload)
        if progress is not None:
            progress(index + 1, grid.n_blocks)
    return payloads, recon
