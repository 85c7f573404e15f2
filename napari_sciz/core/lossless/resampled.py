"""Lossless blocks of resampled data: a 2x linear interpolation coded as its coarse grid plus
the corrections to the interpolation.

Images are often stored larger than they were acquired: a clinical CT zoomed to 512x512
from 256x256, a stack resampled to a finer grid, a binned camera read out at full size. Where
an axis was upsampled 2x by linear interpolation, every other voxel along it is (up to the
rounding of the tool that did it) the mean of its two neighbours along that axis, which a
causal predictor cannot use: it never sees the neighbour that follows. Here such a block is
coded as its *coarse grid* (every other voxel along each interpolated axis, coded as a block
of its own by the lossless coder, which may again be a resampled block) and then, one axis at
a time, the other voxels. Each is predicted by the mean (halves rounded up) of its coarse
*corners*: its two neighbours along the axis, and along each axis refined before where it is
not on the coarse grid, their neighbours too (4 or 8 corners: a bilinear zoom computes such a
voxel from the four coarse ones, and rounds once). Its symbol is a copy of the neighbour
before or after it along the axis (a mask or a clip applied after the zoom) or the token of
its difference to the prediction (the predictive coder's tokens), ANS-coded with one
histogram per context: the pass, the bit length of the difference between the two sides, and
the corners' sum modulo twice their number (which tells how the tool rounded a half: up, down
or to the even neighbour, as numpy does).

Which axes were interpolated, and at which phase, is measured on a sample: the share of
non-flat voxels that equal the mean of their neighbours (rounded up or down) must reach 60 %,
or the share of voxels between neighbours 2 or more apart that copy one of them 90 % (a
nearest-neighbour zoom, pixels repeated: each such voxel is then a copy symbol).
The encoder codes such a block both ways and keeps the smaller payload; the decoded block's
CRC-32 is checked. Integer arithmetic only.

Payload::

    "SZU" u8 version (1) u8 axes (bit a: axis a refined) u8 phases (bit a: the coarse grid is
    at the odd indices of axis a) u8 n_tok u32 crc32
    | u32 len + the coarse grid's lossless block payload
    | u32 len + histograms (zlib of n_ctx x n_tok u32 counts) | u32 n_words + ANS u32 words
    | raw bits (to the end)
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import numpy as np

from ...errors import FormatError
from .ctxans import TokenReader, ans_decoder, code_passes, order_by_context, read_packed_histograms
from .entropy import _pack_bits, _token_tables, _tokenize
from .layout import PayloadReader
from .values import crc_matches, le_bytes

__all__ = [
    "MAGIC",
    "MAX_DEPTH",
    "decode",
    "encode",
    "interpolated_axes",
    "is_resampled_block",
    "refined_axes",
]

MAGIC = b"SZU"
_VERSION = 1
_HEAD = struct.Struct("<3sBBBBBI")
_U32 = struct.Struct("<I")
#: contexts per pass (as :data:`.resamplekernels.PER_PASS`, without importing numba):
#: activity (8 classes) x rounding residue (28: the corners' sum modulo 4, 8 or 16)
_PER_PASS = 8 * 28
_N_CTX = 3 * _PER_PASS
#: symbols before the residual tokens: the voxel equals ``A``, or ``B`` (and not the mean)
_SNAP_A, _SNAP_B, _SNAPS = 0, 1, 2
#: the largest alphabet: the two copies and the tokens of zigzag values below 2^63
_MAX_TOKENS = _SNAPS + 134
#: coarse grids nested in coarse grids (each halves an axis): at most this many
MAX_DEPTH = 4
#: an axis is tried when at least this share of its non-flat targets are the mean of their
#: neighbours, rounded either way (smooth CT slices that were not resampled reach 0.48) ...
_EXACT_SHARE = 0.6
#: ... or this share of the targets between neighbours 2 or more apart copy one of them
#: (pixels repeated; unzoomed stacks and images: at most 0.21)
_COPY_SHARE = 0.9
#: ... measured on at most this many targets per axis and phase, with at least this many
_SAMPLE, _MIN_TARGETS = 1 << 18, 256
#: integer dtypes of at most this many bytes (their sums and differences fit int64 exactly)
_MAX_ITEMSIZE = 4
_WHAT = "resampled lossless block"


def is_resampled_block(payload: bytes) -> bool:
    """Whether ``payload`` is a resampled lossless block."""
    return payload[:3] == MAGIC


def refined_axes(payload: bytes) -> tuple[tuple[int, ...], bytes]:
    """The axes a resampled payload refines and its coarse grid's payload (for ``sciz info``).

    Raises
    ------
    FormatError
        Not a resampled payload, or truncated.
    """
    if len(payload) < _HEAD.size or not is_resampled_block(payload):
        raise FormatError(f"not a {_WHAT}")
    axes_bits = _HEAD.unpack_from(payload)[2]
    reader = PayloadReader(payload, _HEAD.size, _WHAT)
    return tuple(a for a in range(3) if axes_bits >> a & 1), reader.section()


def interpolated_axes(block: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The axes of ``block`` (3D, integer) that look upsampled 2x, and the phase of each (1:
    the coarse grid is at the odd indices).

    Measured on a sample of at most 2^18 targets per axis and phase. An axis qualifies when
    at least 60 % of the targets that are not flat (the three voxels not all equal) are the
    mean of their neighbours, rounded up or down (a linear zoom), or when at least 90 % of the
    targets whose neighbours differ by 2 or more are a copy of one of them (a nearest-neighbour
    zoom: pixels repeated).
    """
    axes: list[int] = []
    phases: list[int] = []
    if block.dtype.kind not in "ui" or block.dtype.itemsize > _MAX_ITEMSIZE:
        return (), ()
    for axis in range(3):
        n = block.shape[axis]
        if n < 3:
            continue
        rows = np.moveaxis(block, axis, -1).reshape(-1, n)
        keep = max(1, rows.shape[0] * n // 2 // _SAMPLE)
        rows = rows[:: keep if keep > 1 else 1].astype(np.int64)
        shares = [_zoom_shares(rows, phase) for phase in (0, 1)]
        score = [max(mean / _EXACT_SHARE, copy / _COPY_SHARE) for mean, copy in shares]
        best = int(np.argmax(score))
        if score[best] >= 1:
            axes.append(axis)
            phases.append(best)
    return tuple(axes), tuple(phases)


def _zoom_shares(rows: np.ndarray, phase: int) -> tuple[float, float]:
    """Of the interior targets of ``rows`` (coarse grid at ``phase``): the share of the
    non-flat ones that equal the mean of their two neighbours, rounded up or down, and the
    share of those whose neighbours differ by 2 or more that copy one of them (0 with too few
    of them)."""
    a, c, b = rows[:, phase:-2:2], rows[:, phase + 1 : -1 : 2], rows[:, phase + 2 :: 2]
    m = min(a.shape[1], c.shape[1], b.shape[1])
    a, c, b = a[:, :m], c[:, :m], b[:, :m]
    moving = (a != b) | (c != a)
    n = int(np.count_nonzero(moving))
    mean = float(np.count_nonzero((np.abs(2 * c - a - b) <= 1) & moving)) / max(n, 1)
    apart = np.abs(a - b) >= 2
    n_apart = int(np.count_nonzero(apart))
    copies = max(np.count_nonzero((c == a) & apart), np.count_nonzero((c == b) & apart))
    copy = float(copies) / max(n_apart, 1)
    return (mean if n >= _MIN_TARGETS else 0.0), (copy if n_apart >= _MIN_TARGETS else 0.0)


def _coarse_selection(axes: tuple[int, ...], phases: tuple[int, ...], done: set[int]) -> list:
    """The slices of the grid known before refining the axes not in ``done``."""
    sel: list = [slice(None)] * 3
    for axis, phase in zip(axes, phases, strict=True):
        if axis not in done:
            sel[axis] = slice(phase, None, 2)
    return sel


def _passes(axes: tuple[int, ...], phases: tuple[int, ...]) -> list[tuple[int, int, list, set]]:
    """Every refinement pass in coding order (the last axis first): its index, axis, the
    slices of the region it refines and the axes refined before it."""
    out = []
    done: set[int] = set()
    for k, axis in enumerate(sorted(axes, reverse=True)):
        sel = _coarse_selection(axes, phases, done | {axis})
        out.append((k, axis, sel, set(done)))
        done.add(axis)
    return out


def _pass_view(
    x: np.ndarray, sel: list, axis: int, grid: dict[int, int]
) -> tuple[np.ndarray, int, int]:  # fmt: skip
    """The region a pass refines, as a view with ``axis`` last, and the coarse-grid phases of
    its first two axes (-1: not refined yet)."""
    m = np.moveaxis(x[tuple(sel)], axis, -1)
    others = [a for a in range(3) if a != axis]
    return m, grid.get(others[0], -1), grid.get(others[1], -1)


def encode(
    block: np.ndarray, code_coarse: Callable[[np.ndarray], bytes]
) -> bytes | None:  # fmt: skip
    """The resampled payload of ``block`` (3D), its coarse grid coded by ``code_coarse``, or
    None when no axis of it looks interpolated (:func:`interpolated_axes`)."""
    axes, phases = interpolated_axes(block)
    if not axes:
        return None
    x = np.ascontiguousarray(block, np.int64)
    coarse = np.ascontiguousarray(block[tuple(_coarse_selection(axes, phases, set()))])
    inner = code_coarse(coarse)
    phase_of = dict(zip(axes, phases, strict=True))
    toks, ctxs, nbs, raws = [], [], [], []
    corner_bits = 0
    for k, axis, sel, done in _passes(axes, phases):
        m, g0, g1 = _pass_view(x, sel, axis, {a: phase_of[a] for a in done})
        # targets off the coarse grid of an earlier axis: from their corners too; a voxel that
        # is both the prediction and a neighbour's copy: either symbol (the cheaper coding)
        options = [
            (corners, _pass_symbols(m, phase_of[axis], k, g0, g1, corners, copies))
            for corners in ((False, True) if done else (False,))
            for copies in (False, True)
        ]
        corners, (sym, ctx, nb, raw) = min(options, key=lambda o: _cost(*o[1]))
        corner_bits |= int(corners) << k
        o, _counts = order_by_context(ctx)
        toks.append(sym[o])
        ctxs.append(ctx[o])
        nbs.append(nb)  # raw bits in C order
        raws.append(raw)
    n_tok = int(max(int(t.max()) for t in toks)) + 1
    axes_bits = sum(1 << a for a in axes)
    phase_bits = sum(p << a for a, p in zip(axes, phases, strict=True))
    crc = zlib.crc32(le_bytes(block))
    head = _HEAD.pack(MAGIC, _VERSION, axes_bits, phase_bits, corner_bits, n_tok, crc)
    raw_bits = _pack_bits(np.concatenate(nbs), np.concatenate(raws))
    body = code_passes(toks, ctxs, _N_CTX, skip_certain=True, compact=True) + raw_bits
    return head + _U32.pack(len(inner)) + inner + body


def _pass_symbols(
    m: np.ndarray, phase: int, k: int, g0: int, g1: int, corners: bool, copies: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Symbols, contexts, raw-bit counts and raw bits of one pass (C order of its targets),
    predicted from the two neighbours along the axis or (``corners``) from every corner;
    ``copies``: a voxel equal to a neighbour is its copy even where the prediction is right
    (pixels repeated: every target one symbol)."""
    from .resamplekernels import pass_contexts

    ctx, pred = pass_contexts(m, phase, k * _PER_PASS, g0, g1, corners)
    n = m.shape[-1]
    t = np.arange(1 - phase, n, 2)
    a = m[..., np.where(t > 0, t - 1, t + 1)].ravel()
    b = m[..., np.where(t + 1 < n, t + 1, t - 1)].ravel()
    sym, nb, raw = _symbols(m[..., t].ravel(), a, b, pred, copies)
    return sym, ctx.astype(np.int64), nb, raw


def _cost(sym: np.ndarray, ctx: np.ndarray, nb: np.ndarray, _raw: np.ndarray) -> float:
    """Estimated bits of a pass: the symbols' entropy per context, with 12 bits per
    histogram entry, and the raw bits."""
    pairs, counts = np.unique(ctx * (_MAX_TOKENS + 1) + sym, return_counts=True)
    owner = pairs // (_MAX_TOKENS + 1)
    totals = np.bincount(owner, weights=counts)[owner]
    return float(-(counts * np.log2(counts / totals)).sum() + 12 * pairs.size + nb.sum())


def _symbols(
    x: np.ndarray, a: np.ndarray, b: np.ndarray, pred: np.ndarray, copies: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Symbols, raw-bit counts and raw bits of targets ``x``: a copy of ``A`` or ``B`` where
    the voxel is not the prediction (or, with ``copies``, wherever) but equals one of them (a
    mask or a clip applied after the interpolation, repeated pixels), else the token of its
    difference to the prediction."""
    r = x - pred
    tok, nb, raw = _tokenize(r)
    tok += _SNAPS
    free = np.ones(r.shape, bool) if copies else r != 0
    snap_a = free & (x == a)
    snap_b = free & (x == b) & ~snap_a
    tok[snap_a], tok[snap_b] = _SNAP_A, _SNAP_B
    nb[snap_a | snap_b] = 0
    return tok, nb, raw


def decode(
    payload: bytes,
    dtype: np.dtype,
    shape3: tuple[int, ...],
    decode_coarse: Callable[[bytes, tuple[int, ...]], np.ndarray],
) -> np.ndarray:
    """The block a resampled payload codes, in ``dtype``; ``decode_coarse(payload, shape3)``
    decodes the coarse grid's payload.

    Raises
    ------
    FormatError
        Not such a payload, an unknown version, axes that do not fit the block, a damaged
        stream, or a decode whose CRC-32 is not the stored one.
    """
    from .resamplekernels import pass_contexts, refine_pass

    dtype = np.dtype(dtype)
    if len(payload) < _HEAD.size or not is_resampled_block(payload):
        raise FormatError(f"not a {_WHAT}")
    _m, version, axes_bits, phase_bits, corner_bits, n_tok, crc = _HEAD.unpack_from(payload)
    if version != _VERSION:
        raise FormatError(f"unsupported {_WHAT} version {version} (a newer napari-sciz?)")
    axes = tuple(a for a in range(3) if axes_bits >> a & 1)
    phases = tuple(phase_bits >> a & 1 for a in axes)
    if (
        axes_bits >> 3 or phase_bits & ~axes_bits or corner_bits >> len(axes)
        or corner_bits & 1 or not axes or not 1 <= n_tok <= _MAX_TOKENS
        or any(shape3[a] < 3 for a in axes) or dtype.kind not in "ui"
        or dtype.itemsize > _MAX_ITEMSIZE
    ):  # fmt: skip
        raise FormatError(f"{_WHAT} has invalid parameters")
    reader = PayloadReader(payload, _HEAD.size, _WHAT)
    coarse_sel = tuple(_coarse_selection(axes, phases, set()))
    x = np.zeros(shape3, np.int64)
    coarse_shape = x[coarse_sel].shape
    coarse = decode_coarse(reader.section(), coarse_shape)
    if coarse.shape != coarse_shape:
        raise FormatError(f"{_WHAT}'s coarse grid has the wrong shape")
    x[coarse_sel] = coarse
    stored = read_packed_histograms(reader, _N_CTX, n_tok, _WHAT)
    tokens = TokenReader(ans_decoder(reader, _WHAT), stored, _WHAT, skip_certain=True)
    bits = np.unpackbits(np.frombuffer(payload[reader.pos :], np.uint8))
    nb_table, base_table = _token_tables(max(n_tok - _SNAPS, 1))
    bitpos = 0
    phase_of = dict(zip(axes, phases, strict=True))
    for k, axis, sel, done in _passes(axes, phases):
        m, g0, g1 = _pass_view(x, sel, axis, {a: phase_of[a] for a in done})
        ctx, pred = pass_contexts(m, phase_of[axis], 0, g0, g1, bool(corner_bits >> k & 1))
        counts = np.bincount(ctx, minlength=_PER_PASS)
        symbols = tokens.grouped(counts, k * _PER_PASS)
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        bitpos = refine_pass(
            m, phase_of[axis], ctx, pred, symbols, starts, bits, bitpos, nb_table, base_table
        )
        if bitpos < 0:
            raise FormatError(f"{_WHAT}'s symbols or raw bits are damaged")
    info = np.iinfo(dtype)
    if x.size and (x.min() < info.min or x.max() > info.max):
        raise FormatError(f"{_WHAT} decodes outside its dtype (corrupted payload)")
    out = x.astype(dtype)
    if not crc_matches(out, crc):
        raise FormatError(f"{_WHAT} fails its checksum (corrupted payload)")
    return out
