"""Lossless blocks of label images: each voxel copies a causal neighbour, or is a new label.

A segmentation (nuclei, cells, a binary mask) is piecewise constant with arbitrary values:
its label numbers do not vary smoothly, so a predictor of intensities codes them about as well
as a general-purpose compressor (zstd, blosc). Here every voxel is instead described by which
already decoded neighbour it equals, first match in the order ``W, N, P`` (the previous
slice), ``NW, NE``; else it is a label's *first appearance* (the labels are numbered in the
order they first appear, so that costs no index), or *another* label (its index follows in a
separate stream). The seven symbols are ANS-coded with one stored histogram per context: the
equalities among the neighbours (``W = N``, ``W = P``, ``N = P``, ``W = NW``, ``N = NE``,
``W = WW``, ``N = NN``, ``P = PW``, ``P = PN``) and whether a previous slice exists (1024
contexts, most of them empty; small blocks, whose histograms would cost more than they save,
use the first six: 64 contexts). Inside an object every neighbour agrees and the
symbol costs almost nothing; the bits go to the boundaries.

The encoder codes a block this way when it looks like a label image (few distinct values,
most voxels equal to their west neighbour) and keeps the payload only when it is smaller than
the predictive coder's. Integer arithmetic only; the decoded block's CRC-32 is checked.

Payload::

    "SZN" u8 version (1) u8 flags (1: wide contexts) u32 crc32 u32 n_values u32 n_other
    | u32 len + values (zigzag, first-appearance order, :func:`.values._pack_uints`)
    | u32 len + indices of "another" label (:func:`.values._pack_uints`)
    | u32 len + symbol counts (1024 or 64 contexts x 7 symbols, :func:`.values._pack_uints`)
    | ANS u32 words (to the end)
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from ...errors import FormatError
from .entropy import _quantize_hist, trimmed_categorical
from .layout import PayloadReader
from .values import _pack_uints, _unpack_uints, crc_matches, le_bytes

__all__ = ["MAGIC", "decode", "encode", "is_label_block", "looks_like_labels"]

MAGIC = b"SZN"
_VERSION = 1
_HEAD = struct.Struct("<3sBBIII")
_U32 = struct.Struct("<I")
#: symbols: the neighbour copied (``W, N, P, NW, NE``), a first appearance, another label
_NEIGHBOURS = 5
_NEW, _OTHER = 5, 6
_SYMBOLS = 7
_CONTEXTS = 1024
#: flag: contexts of all ten equalities (else the first six: 64 contexts, fewer histograms)
_FLAG_WIDE = 1
_NARROW = 64
#: a block is tried as labels when it has at most one distinct value per this many voxels ...
_VOXELS_PER_VALUE = 16
#: ... and at least this share of its voxels equal their west neighbour
_FLAT_SHARE = 0.5


def is_label_block(payload: bytes) -> bool:
    """Whether ``payload`` is a label block."""
    return payload[:3] == MAGIC


def looks_like_labels(block: np.ndarray) -> bool:
    """Whether a block is worth coding as labels: an integer or boolean block with few
    distinct values, most of its voxels equal to their west neighbour."""
    if block.dtype.kind not in "uib" or block.size < 2 or block.shape[-1] < 2:
        return False
    same = np.count_nonzero(block[..., 1:] == block[..., :-1])
    if same < _FLAT_SHARE * block.size:
        return False
    return np.unique(block).size * _VOXELS_PER_VALUE <= block.size


def _neighbours(idx: np.ndarray) -> list[np.ndarray]:
    """``W, N, P, NW, NE, WW, NN, PW, PN`` of every voxel of ``idx`` (``-1`` outside)."""
    d, h, w = idx.shape
    pad = np.full((d + 1, h + 2, w + 4), -1, np.int64)
    pad[1:, 2:, 2:-2] = idx
    return [
        pad[1:, 2:, 1:-3],  # W
        pad[1:, 1:-1, 2:-2],  # N
        pad[:-1, 2:, 2:-2],  # P
        pad[1:, 1:-1, 1:-3],  # NW
        pad[1:, 1:-1, 3:-1],  # NE
        pad[1:, 2:, :-4],  # WW
        pad[1:, :-2, 2:-2],  # NN
        pad[:-1, 2:, 1:-3],  # PW
        pad[:-1, 1:-1, 2:-2],  # PN
    ]


def _contexts(nb: list[np.ndarray]) -> np.ndarray:
    """Every voxel's context: the equalities ``W = N``, ``W = P``, ``N = P``, ``W = NW``,
    ``N = NE``, whether a previous slice exists, ``W = WW``, ``N = NN``, ``P = PW``,
    ``P = PN`` (bits 0 to 9)."""
    w_, n_, p_, nw, ne, ww, nn, pw, pn = nb
    ctx = (
        (w_ == n_).astype(np.int64)
        + 2 * (w_ == p_)
        + 4 * (n_ == p_)
        + 8 * (w_ == nw)
        + 16 * (n_ == ne)
        + 64 * (w_ == ww)
        + 128 * (n_ == nn)
        + 256 * (p_ == pw)
        + 512 * (p_ == pn)
    )
    ctx[1:] += 32  # slices with a previous one
    return ctx


def encode(block: np.ndarray) -> bytes | None:
    """The label payload of an integer or boolean block ``(D, H, W)`` (with the wide or the
    narrow contexts, whichever is smaller), or None when it has too many distinct values."""
    d, h, w = block.shape
    flat = np.ascontiguousarray(block).ravel()
    values, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    if values.size > flat.size // 2 + 1:
        return None
    order = np.argsort(first, kind="stable")  # labels numbered as they first appear
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    idx = rank[inverse.ravel()].reshape(d, h, w)
    nb = _neighbours(idx)
    sym = np.full(idx.shape, _OTHER, np.int64)
    for i in reversed(range(_NEIGHBOURS)):
        sym[idx == nb[i]] = i
    sym.ravel()[np.sort(first)] = _NEW
    sym = sym.ravel()
    other = idx.ravel()[sym == _OTHER]
    table = values[order].astype(np.int64)
    zigzag = ((table << 1) ^ (table >> 63)).astype(np.uint64)
    common = [*_sized(_pack_uints(zigzag)), *_sized(_pack_uints(other))]
    crc = zlib.crc32(le_bytes(block))
    ctx_wide = _contexts(nb).ravel()
    best = None
    for flags, ctx, n_ctx in ((_FLAG_WIDE, ctx_wide, _CONTEXTS), (0, ctx_wide & 63, _NARROW)):
        counts = np.bincount(ctx * _SYMBOLS + sym, minlength=n_ctx * _SYMBOLS)
        counts = counts.reshape(n_ctx, _SYMBOLS)
        head = _HEAD.pack(MAGIC, _VERSION, flags, crc, values.size, other.size)
        out = b"".join(
            [head, *common, *_sized(_pack_uints(counts.ravel())), _ans_words(sym, ctx, counts)]
        )
        if best is None or len(out) < len(best):
            best = out
    return best


def _sized(data: bytes) -> tuple[bytes, bytes]:
    return _U32.pack(len(data)), data


def _ans_words(sym: np.ndarray, ctx: np.ndarray, counts: np.ndarray) -> bytes:
    """ANS words of the symbols, context by context (raster order within one)."""
    import constriction

    order = np.argsort(ctx, kind="stable")
    runs = np.split(sym[order].astype(np.int32), np.cumsum(counts.sum(axis=1))[:-1])
    models = _models(counts)
    coder = constriction.stream.stack.AnsCoder()
    for c in reversed(range(counts.shape[0])):
        if runs[c].size:
            coder.encode_reverse(runs[c], models[c])
    return np.asarray(coder.get_compressed(), np.uint32).astype("<u4").tobytes()


def _models(counts: np.ndarray) -> list:
    """One categorical model per context with symbols (stored histograms as the coder's)."""
    q = _quantize_hist(counts)
    return [trimmed_categorical(row) if row.any() else None for row in q]


def decode(payload: bytes, dtype: np.dtype, shape3: tuple[int, ...]) -> np.ndarray:
    """The block a label payload codes, in ``dtype``.

    Raises
    ------
    FormatError
        Not such a payload, an unknown version, sizes that do not match the block, a damaged
        stream, or a decode whose CRC-32 is not the stored one.
    """
    import constriction

    from .labelkernels import decode_labels

    dtype = np.dtype(dtype)
    if len(payload) < _HEAD.size or not is_label_block(payload):
        raise FormatError("not a label block")
    _m, version, flags, crc, n_values, n_other = _HEAD.unpack_from(payload)
    if version != _VERSION or flags & ~_FLAG_WIDE:
        raise FormatError(f"unsupported label block version {version} (a newer napari-sciz?)")
    n_ctx = _CONTEXTS if flags & _FLAG_WIDE else _NARROW
    n = int(np.prod(shape3))
    if dtype.kind not in "uib" or not 1 <= n_values <= n or n_other > n:
        raise FormatError("label block does not match the block's dtype or size")
    reader = PayloadReader(payload, _HEAD.size, "label block")
    zigzag = _unpack_uints(reader.section(), n_values).astype(np.uint64)
    table = (zigzag >> np.uint64(1)).astype(np.int64) ^ -(zigzag & np.uint64(1)).astype(np.int64)
    other = _unpack_uints(reader.section(), n_other)
    counts = _unpack_uints(reader.section(), n_ctx * _SYMBOLS).reshape(n_ctx, _SYMBOLS)
    if int(counts.sum()) != n or int(counts[:, _NEW].sum()) != n_values:
        raise FormatError("label block's symbol counts do not match the block")
    if int(counts[:, _OTHER].sum()) != n_other:
        raise FormatError("label block's symbol counts do not match the block")
    words = np.frombuffer(payload[reader.pos :], np.uint8)
    if words.size % 4:
        raise FormatError("label block's ANS stream is truncated")
    try:
        coder = constriction.stream.stack.AnsCoder(words.view("<u4").astype(np.uint32))
        models = _models(counts)
        runs = [
            coder.decode(models[c], int(k)) if k else np.zeros(0, np.int32)
            for c, k in enumerate(counts.sum(axis=1))
        ]
    except Exception as exc:  # noqa: BLE001 - any failure means a damaged stream
        raise FormatError("label block's ANS stream is damaged") from exc
    starts = np.concatenate([[0], np.cumsum(counts.sum(axis=1))]).astype(np.int64)
    symbols = np.concatenate(runs).astype(np.int64)
    idx = np.empty(tuple(shape3), np.int64)
    if decode_labels(idx, symbols, starts, other, n_values, n_ctx - 1) != 0:
        raise FormatError("label block's symbols are damaged")
    lo, hi = (0, 1) if dtype.kind == "b" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
    if table.min() < lo or table.max() > hi:
        raise FormatError("label block's values do not fit its dtype")
    out = table[idx].astype(dtype)
    if not crc_matches(out, crc):
        raise FormatError("label block fails its checksum (corrupted payload)")
    return out
