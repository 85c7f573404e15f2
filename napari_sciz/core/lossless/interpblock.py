"""Error-bounded integer blocks coded by multilevel interpolation with in-loop quantization
(bounded mode, model version 4).

SZ3's predictor, coded with this package's entropy coder: the block is predicted coarse to
fine, one axis at a time (at each level the voxels halfway between known ones, by cubic
interpolation of the four nearest known voxels along the axis, linear or a copy at the
edges), and every prediction error is quantized *in the loop* on a grid of step
``2 floor(E) + 1``: ``q = floor((x - p + floor(E)) / step)``, reconstruction ``p + q step``,
so each error is at most ``floor(E)`` and later predictions use reconstructed values. All of
it is integer arithmetic: every machine decodes the same bits (the payload stores the CRC-32
of the decoded block). The indices are tokenized as the predictive coder's residuals (hybrid
integers) and ANS-coded with one stored histogram per context: the level and a 7-class
activity of the two reconstructed neighbours the prediction interpolates between. Where SZ3
sets a block's size today, this codes 5-49 % smaller (estimated: ``scripts/interp_estimate.py``);
the encoder keeps it when it is the smallest of the block's codings.

Payload::

    "SZI" u8 version (1) u8 levels u8 n_tok u16 n_ctx i64 lo i64 step u32 crc32
    u32 hist_len | histograms (zlib of n_ctx x n_tok u32 counts)
    u32 n_words | ANS u32 words | raw bits (to the end)
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterator

import numpy as np

from ...errors import FormatError
from .entropy import _pack_bits, _quantize_hist, _token_tables, _tokenize, trimmed_categorical
from .values import crc_matches, le_bytes

__all__ = ["MAGIC", "decode", "encode", "is_interp_block"]

MAGIC = b"SZI"
_VERSION = 1
_HEAD = struct.Struct("<3sBBBHqqI")
_U32 = struct.Struct("<I")
#: activity classes per level (as :data:`.interpkernels.ACTIVITY`, without importing numba)
_ACTIVITY = 7
#: the largest token alphabet: tokens of zigzag values below 2^63
_MAX_TOKENS = 134


def is_interp_block(payload: bytes) -> bool:
    """Whether ``payload`` is an interpolation-coded bounded block."""
    return payload[:3] == MAGIC


def _levels(shape3: tuple[int, ...]) -> int:
    return max(int(math.ceil(math.log2(max(shape3)))), 0) if max(shape3) > 1 else 0


def _contexts(levels: int) -> int:
    return 1 + _ACTIVITY * levels


def _passes(shape3: tuple[int, ...]) -> Iterator[tuple[int, int]]:
    """Every (level, axis) pass with targets, in coding order."""
    for level in range(_levels(shape3), 0, -1):
        h = 1 << (level - 1)
        for axis in range(3):
            if h < shape3[axis]:
                yield level, axis


def _quantized(
    block: np.ndarray, bound: int
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """The indices and contexts of every pass (the corner first), and the reconstruction."""
    from .interpkernels import encode_pass

    x = np.ascontiguousarray(block, np.int64)
    step = 2 * bound + 1
    rec = np.zeros_like(x)
    q0 = (x[0, 0, 0] + bound) // step
    rec[0, 0, 0] = q0 * step
    qs, ctxs = [np.array([q0], np.int64)], [np.zeros(1, np.int64)]
    for level, axis in _passes(x.shape):
        q, ctx = encode_pass(x, rec, level, axis, bound)
        qs.append(q)
        ctxs.append(ctx)
    return qs, ctxs, rec


def _order(ctx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coding order within a pass (by context, raster order inside one), and the number of
    voxels of each context."""
    counts = np.bincount(ctx)
    present = np.flatnonzero(counts)
    if present.size == 1:
        return np.arange(ctx.size), counts
    return np.concatenate([np.flatnonzero(ctx == c) for c in present]), counts


def encode(block: np.ndarray, bound: float) -> bytes | None:
    """The interpolation payload of an integer ``block`` (3D) within ``bound``, or None when
    the block is not integer, the bound is below 1 or the block is empty or flat."""
    import constriction

    if block.dtype.kind not in "iu" or not block.size or not bound >= 1:
        return None
    lo = int(block.min())
    if int(block.max()) == lo:
        return None
    e = int(math.floor(bound))
    step = 2 * e + 1
    values = block.astype(np.int64) - lo
    qs, ctxs, rec = _quantized(values, e)
    levels = _levels(block.shape)
    n_ctx = _contexts(levels)
    toks, nbs, raws, order_ctx = [], [], [], []
    for q, ctx in zip(qs, ctxs, strict=True):
        o, _counts = _order(ctx)
        tok, nb, raw = _tokenize(q[o])
        toks.append(tok)
        nbs.append(nb)
        raws.append(raw)
        order_ctx.append(ctx[o])
    tok_all = np.concatenate(toks)
    ctx_all = np.concatenate(order_ctx)
    n_tok = int(tok_all.max()) + 1
    counts = np.zeros((n_ctx, n_tok), np.int64)
    np.add.at(counts, (ctx_all, tok_all), 1)
    stored = _quantize_hist(counts)
    models = [trimmed_categorical(row) if row.any() else None for row in stored]
    coder = constriction.stream.stack.AnsCoder()
    segments = []
    start = 0
    for ctx in order_ctx:
        for c in np.unique(ctx):
            n = int(np.count_nonzero(ctx == c))
            segments.append((int(c), start, start + n))
            start += n
    for c, a, b in reversed(segments):
        coder.encode_reverse(tok_all[a:b].astype(np.int32), models[c])
    words = np.asarray(coder.get_compressed(), np.uint32)
    hist = zlib.compress(stored.astype("<u4").tobytes(), 9)
    decoded = np.clip(rec + lo, *_dtype_range(block.dtype)).astype(block.dtype)
    crc = zlib.crc32(le_bytes(decoded))
    head = _HEAD.pack(MAGIC, _VERSION, levels, n_tok, n_ctx, lo, step, crc)
    return b"".join(
        [
            head,
            _U32.pack(len(hist)),
            hist,
            _U32.pack(words.size),
            words.astype("<u4").tobytes(),
            _pack_bits(np.concatenate(nbs), np.concatenate(raws)),
        ]
    )


def _dtype_range(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


class _Reader:
    """Sequential reads of a payload, every length checked."""

    def __init__(self, payload: bytes, pos: int) -> None:
        self.payload, self.pos = payload, pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.payload):
            raise FormatError("interpolation bounded block is truncated")
        out = self.payload[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]


def decode(payload: bytes, dtype: np.dtype, shape3: tuple[int, ...]) -> np.ndarray:
    """The block an interpolation payload codes, in ``dtype``.

    Raises
    ------
    FormatError
        Not such a payload, an unknown version, sizes that do not match the block, a damaged
        stream, or a decode whose CRC-32 is not the stored one.
    """
    import constriction

    from .interpkernels import decode_pass, pass_context

    dtype = np.dtype(dtype)
    if len(payload) < _HEAD.size or not is_interp_block(payload):
        raise FormatError("not an interpolation bounded block")
    _m, version, levels, n_tok, n_ctx, lo, step, crc = _HEAD.unpack_from(payload)
    if version != _VERSION:
        raise FormatError(f"unsupported interpolation bounded block version {version}")
    if dtype.kind not in "iu":
        raise FormatError("an interpolation bounded block in a file of non-integer dtype")
    if levels != _levels(shape3) or n_ctx != _contexts(levels):
        raise FormatError("interpolation bounded block does not match the block's shape")
    if not 1 <= n_tok <= _MAX_TOKENS or step < 3 or step % 2 == 0 or step > 1 << 40:
        raise FormatError("interpolation bounded block has invalid parameters")
    if not -(1 << 62) < lo < 1 << 62:
        raise FormatError("interpolation bounded block has invalid parameters")
    reader = _Reader(payload, _HEAD.size)
    inflate = zlib.decompressobj()
    expected = n_ctx * n_tok * 4
    try:
        raw_hist = inflate.decompress(reader.take(reader.u32()), expected + 1)
    except zlib.error as exc:
        raise FormatError("interpolation bounded block's histograms are damaged") from exc
    if len(raw_hist) != expected:
        raise FormatError("interpolation bounded block's histograms have the wrong size")
    stored = np.frombuffer(raw_hist, "<u4").reshape(n_ctx, n_tok).astype(np.int64)
    n_words = reader.u32()
    words = np.frombuffer(reader.take(4 * n_words), "<u4").astype(np.uint32)
    bits = np.unpackbits(np.frombuffer(payload[reader.pos :], np.uint8))
    nb_table, base_table = _token_tables(n_tok)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
    except Exception as exc:  # noqa: BLE001 - constriction refuses the words
        raise FormatError("interpolation bounded block's ANS stream is damaged") from exc
    models: dict[int, object] = {}

    def tokens(ctx: np.ndarray) -> np.ndarray:
        """The pass's tokens in coding order (by context, raster order within one)."""
        counts = np.bincount(ctx)
        tok = np.empty(ctx.size, np.int64)
        start = 0
        for c in np.flatnonzero(counts):
            c, n = int(c), int(counts[c])
            if not stored[c].any():
                raise FormatError("interpolation bounded block: a context without histogram")
            if c not in models:
                models[c] = trimmed_categorical(stored[c])
            try:
                tok[start : start + n] = coder.decode(models[c], n)
            except Exception as exc:  # noqa: BLE001 - any failure means a bad stream
                raise FormatError("interpolation bounded block's ANS stream is damaged") from exc
            start += n
        return tok

    rec = np.zeros(shape3, np.int64)
    tok0 = int(tokens(np.zeros(1, np.int64))[0])
    if not 0 <= tok0 < n_tok or int(nb_table[tok0]) > bits.size:
        raise FormatError("interpolation bounded block's tokens or raw bits are damaged")
    bitpos = int(nb_table[tok0])
    u0 = int(base_table[tok0]) + int("".join(map(str, bits[:bitpos])) or "0", 2)
    rec[0, 0, 0] = ((u0 >> 1) ^ -(u0 & 1)) * step
    for level, axis in _passes(tuple(shape3)):
        if bitpos < 0:
            break
        pred, ctx = pass_context(rec, level, axis, step)
        bitpos = decode_pass(rec, level, axis, step, pred, ctx, tokens(ctx), bits, bitpos,
                             nb_table, base_table)  # fmt: skip
    if bitpos < 0:
        raise FormatError("interpolation bounded block's tokens or raw bits are damaged")
    out = np.clip(rec + lo, *_dtype_range(dtype)).astype(dtype)
    if not crc_matches(out, crc):
        raise FormatError("interpolation bounded block fails its checksum (corrupted payload)")
    return out
