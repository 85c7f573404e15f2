"""Error-bounded blocks coded by multilevel interpolation with in-loop quantization
(bounded mode, model version 4; payload version 2, floats or index contexts: model version 5).

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

Payload version 2 adds a flags byte. *Index contexts* (flag 2) split every context by the
quantization indices the two neighbours were coded with (4 classes of ``|qA| + |qB|``): the
encoder codes each block with and without them and keeps the smaller (FIB-SEM crop at E = 16:
-2.5 %). A *float* block (flag 1) is first put on a grid ``lo + d k`` fine enough to cost
little (``d = E / 1024``: each value within ``d / 2`` of its grid point, the code's step
``2047 d`` instead of SZ3's ``2 E``), coded as integers within ``floor((E - d / 2) / d)``
steps, and decoded as ``lo + d rec`` in binary64 (one product and one sum, the same bits on
every machine) cast to the dtype; the encoder checks the bound after that cast.

Payload::

    "SZI" u8 version (1 or 2) u8 levels u8 n_tok u16 n_ctx i64 lo (0 for floats) i64 step
    u32 crc32 | version 2: u8 flags | flag 1: f64 lo f64 d |
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
from .ctxans import TokenReader, ans_decoder, code_passes, order_by_context, read_histograms
from .entropy import _pack_bits, _token_tables, _tokenize
from .layout import PayloadReader
from .values import crc_matches, le_bytes

__all__ = [
    "MAGIC",
    "decode",
    "encode",
    "interp_index_contexts",
    "is_interp_block",
    "is_interp_v2_block",
]

MAGIC = b"SZI"
_VERSION = 1
#: payload version 2: a flags byte after the header (:data:`_FLAG_FLOAT`, :data:`_FLAG_QCTX`)
_VERSION_2 = 2
#: version 2 flag: a float block on a grid ``lo + d k`` around the integer code
_FLAG_FLOAT = 1
#: version 2 flag: contexts also split by the neighbours' absolute quantization indices
_FLAG_QCTX = 2
_FLOAT = struct.Struct("<dd")
#: grid steps per bound of a float block (``d = E / 1024``: the code's step is 2047 d)
_FLOAT_STEPS = 1024.0
_HEAD = struct.Struct("<3sBBBHqqI")
#: activity classes per level and classes of the neighbours' indices (as
#: :data:`.interpkernels.ACTIVITY` and ``INDEX_CLASSES``, without importing numba)
_ACTIVITY, _INDEX_CLASSES = 7, 4
#: the largest token alphabet: tokens of zigzag values below 2^63
_MAX_TOKENS = 134


def is_interp_block(payload: bytes) -> bool:
    """Whether ``payload`` is an interpolation-coded bounded block."""
    return payload[:3] == MAGIC


def is_interp_v2_block(payload: bytes) -> bool:
    """Whether ``payload`` is an interpolation block of payload version 2 (a float block, or
    one with index contexts; bounded model version 5)."""
    return is_interp_block(payload) and len(payload) > 3 and payload[3] == _VERSION_2


def interp_index_contexts(payload: bytes) -> bool:
    """Whether an interpolation block splits its contexts by the neighbours' indices."""
    return (
        is_interp_v2_block(payload)
        and len(payload) > _HEAD.size
        and bool(payload[_HEAD.size] & _FLAG_QCTX)
    )


def _levels(shape3: tuple[int, ...]) -> int:
    return max(int(math.ceil(math.log2(max(shape3)))), 0) if max(shape3) > 1 else 0


def _contexts(levels: int, qctx: bool = False) -> int:
    return 1 + _ACTIVITY * levels * (_INDEX_CLASSES if qctx else 1)


def _passes(shape3: tuple[int, ...]) -> Iterator[tuple[int, int]]:
    """Every (level, axis) pass with targets, in coding order."""
    for level in range(_levels(shape3), 0, -1):
        h = 1 << (level - 1)
        for axis in range(3):
            if h < shape3[axis]:
                yield level, axis


def _quantized(
    block: np.ndarray, bound: int, qctx: bool
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """The indices and contexts of every pass (the corner first), and the reconstruction.

    A pass's predictions and contexts read only earlier passes (the decoder's kernel,
    :func:`.interpkernels.pass_context`), so its targets are quantized together."""
    from .interpkernels import pass_context

    x = np.ascontiguousarray(block, np.int64)
    step = 2 * bound + 1
    rec = np.zeros_like(x)
    qabs = np.zeros(x.shape, np.uint8)
    q0 = (x[0, 0, 0] + bound) // step
    rec[0, 0, 0] = q0 * step
    qabs[0, 0, 0] = min(abs(int(q0)), 255)
    qs, ctxs = [np.array([q0], np.int64)], [np.zeros(1, np.int64)]
    for level, axis in _passes(x.shape):
        h = 1 << (level - 1)
        where = tuple(
            slice(0, None, h) if a < axis else slice(h, None, 2 * h) if a == axis else
            slice(0, None, 2 * h)
            for a in range(3)
        )  # fmt: skip
        pred, ctx = pass_context(rec, qabs, level, axis, step, qctx)
        pred = pred.reshape(rec[where].shape)
        q = (x[where] - pred + bound) // step
        rec[where] = pred + q * step
        qabs[where] = np.minimum(np.abs(q), 255)
        qs.append(q.ravel())
        ctxs.append(ctx)
    return qs, ctxs, rec


def encode(block: np.ndarray, bound: float) -> bytes | None:
    """The interpolation payload of ``block`` (3D) within ``bound``, or None when the block
    is empty or flat, the bound is below 1 (integers) or not positive (floats), or a float
    block's decode would miss the bound."""
    if not block.size or block.dtype.kind not in "iuf":
        return None
    if block.dtype.kind == "f":
        return _encode_float(block, bound)
    if not bound >= 1:
        return None
    lo = int(block.min())
    if int(block.max()) == lo:
        return None
    e = int(math.floor(bound))
    body, n_tok, rec, qctx = _code(block.astype(np.int64) - lo, e)
    decoded = np.clip(rec + lo, *_dtype_range(block.dtype)).astype(block.dtype)
    levels = _levels(block.shape)
    crc = zlib.crc32(le_bytes(decoded))
    version = _VERSION_2 if qctx else _VERSION
    head = _HEAD.pack(MAGIC, version, levels, n_tok, _contexts(levels, qctx), lo, 2 * e + 1, crc)
    return head + (bytes([_FLAG_QCTX]) if qctx else b"") + body


def _encode_float(block: np.ndarray, bound: float) -> bytes | None:
    """Version 2: the float block on a fine integer grid ``lo + d k`` (``d`` = ``E / 1024``,
    coarser when the range would pass 2^40 steps; each value within ``d / 2``), coded as an
    integer block within ``floor((E - d / 2) / d)`` steps of ``d``, then checked."""
    x = block.astype(np.float64)
    lo, hi = float(x.min()), float(x.max())
    if not (bound > 0 and math.isfinite(bound)) or hi == lo:
        return None
    d = bound / min(_FLOAT_STEPS, max(1.0, 2.0**40 * bound / (hi - lo)))
    e = math.floor((bound - d / 2) / d * (1 - 1e-9))
    if e < 1:
        return None
    body, n_tok, rec, qctx = _code(np.rint((x - lo) / d).astype(np.int64), e)
    decoded = _float_values(rec, lo, d, block.dtype)
    if not np.abs(decoded.astype(np.float64) - x).max() <= bound:
        return None  # the cast to the dtype rounded past the bound: other codings stay
    levels = _levels(block.shape)
    crc = zlib.crc32(le_bytes(decoded))
    n_ctx = _contexts(levels, qctx)
    head = _HEAD.pack(MAGIC, _VERSION_2, levels, n_tok, n_ctx, 0, 2 * e + 1, crc)
    flags = _FLAG_FLOAT | (_FLAG_QCTX if qctx else 0)
    return head + bytes([flags]) + _FLOAT.pack(lo, d) + body


def _float_values(rec: np.ndarray, lo: float, d: float, dtype: np.dtype) -> np.ndarray:
    """``lo + d rec`` in binary64 (a product, then a sum: the same bits on every machine),
    cast to ``dtype``."""
    with np.errstate(over="ignore", invalid="ignore"):
        return (rec.astype(np.float64) * d + lo).astype(dtype)


def _code(values: np.ndarray, e: int) -> tuple[bytes, int, np.ndarray, bool]:
    """The smaller body of the non-negative integer ``values`` within ``e``, with and without
    the neighbours' indices in the contexts (the smaller: the index contexts' histograms
    cost more than they save on small or flat blocks), its alphabet size, the reconstruction
    and whether it uses index contexts."""
    plain = _body(values, e, False)
    split = _body(values, e, True)
    best = split if len(split[0]) < len(plain[0]) else plain
    return best[0], best[1], best[2], best is split


def _body(values: np.ndarray, e: int, qctx: bool) -> tuple[bytes, int, np.ndarray]:
    """The body of a payload (histograms, ANS words, raw bits) of the non-negative integer
    ``values`` within ``e``, its alphabet size and the reconstruction."""
    qs, ctxs, rec = _quantized(values, e, qctx)
    n_ctx = _contexts(_levels(values.shape), qctx)
    toks, nbs, raws, order_ctx = [], [], [], []
    for q, ctx in zip(qs, ctxs, strict=True):
        o, _counts = order_by_context(ctx)
        tok, nb, raw = _tokenize(q[o])
        toks.append(tok)
        nbs.append(nb)
        raws.append(raw)
        order_ctx.append(ctx[o])
    n_tok = int(max(int(t.max()) for t in toks)) + 1
    raw_bits = _pack_bits(np.concatenate(nbs), np.concatenate(raws))
    return code_passes(toks, order_ctx, n_ctx) + raw_bits, n_tok, rec


def _dtype_range(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def decode(payload: bytes, dtype: np.dtype, shape3: tuple[int, ...]) -> np.ndarray:
    """The block an interpolation payload codes, in ``dtype``.

    Raises
    ------
    FormatError
        Not such a payload, an unknown version, sizes that do not match the block, a damaged
        stream, or a decode whose CRC-32 is not the stored one.
    """
    dtype = np.dtype(dtype)
    if len(payload) < _HEAD.size or not is_interp_block(payload):
        raise FormatError("not an interpolation bounded block")
    _m, version, levels, n_tok, n_ctx, lo, step, crc = _HEAD.unpack_from(payload)
    if version not in (_VERSION, _VERSION_2):
        raise FormatError(f"unsupported interpolation bounded block version {version}")
    reader = PayloadReader(payload, _HEAD.size, "interpolation bounded block")
    flags = reader.take(1)[0] if version == _VERSION_2 else 0
    if flags & ~(_FLAG_FLOAT | _FLAG_QCTX):
        raise FormatError("interpolation bounded block has unknown flags (a newer napari-sciz)")
    floats, qctx = bool(flags & _FLAG_FLOAT), bool(flags & _FLAG_QCTX)
    if (dtype.kind == "f") != floats or dtype.kind not in "iuf":
        raise FormatError(f"an interpolation bounded block of {'float' if floats else 'integer'} "
                          f"values in a file of dtype {dtype.name}")  # fmt: skip
    if levels != _levels(shape3) or n_ctx != _contexts(levels, qctx):
        raise FormatError("interpolation bounded block does not match the block's shape")
    if not 1 <= n_tok <= _MAX_TOKENS or step < 3 or step % 2 == 0 or step > 1 << 40:
        raise FormatError("interpolation bounded block has invalid parameters")
    if not -(1 << 62) < lo < 1 << 62:
        raise FormatError("interpolation bounded block has invalid parameters")
    if floats:
        flo, d = _FLOAT.unpack(reader.take(_FLOAT.size))
        if not (math.isfinite(flo) and math.isfinite(d) and d > 0):
            raise FormatError("interpolation bounded block has an invalid float grid")
    rec = _reconstruct(reader, payload, tuple(shape3), (n_ctx, n_tok, step), qctx)
    if floats:
        out = _float_values(rec, flo, d, dtype)
    else:
        out = np.clip(rec + lo, *_dtype_range(dtype)).astype(dtype)
    if not crc_matches(out, crc):
        raise FormatError("interpolation bounded block fails its checksum (corrupted payload)")
    return out


def _reconstruct(
    reader: PayloadReader, payload: bytes, shape3: tuple[int, ...], sizes: tuple[int, int, int],
    qctx: bool,
) -> np.ndarray:  # fmt: skip
    """The integer reconstruction ``rec`` (int64) of a payload's body (histograms on);
    ``sizes``: contexts, tokens and the quantization step."""
    from .interpkernels import decode_pass, pass_context

    n_ctx, n_tok, step = sizes
    what = "interpolation bounded block"
    stored = read_histograms(reader, n_ctx, n_tok, what)
    coder = ans_decoder(reader, what)
    bits = np.unpackbits(np.frombuffer(payload[reader.pos :], np.uint8))
    nb_table, base_table = _token_tables(n_tok)
    tokens = TokenReader(coder, stored, what)
    rec = np.zeros(shape3, np.int64)
    qabs = np.zeros(shape3, np.uint8)
    tok0 = int(tokens(np.zeros(1, np.int64))[0])
    if not 0 <= tok0 < n_tok or int(nb_table[tok0]) > bits.size:
        raise FormatError("interpolation bounded block's tokens or raw bits are damaged")
    bitpos = int(nb_table[tok0])
    u0 = int(base_table[tok0]) + int("".join(map(str, bits[:bitpos])) or "0", 2)
    q0 = (u0 >> 1) ^ -(u0 & 1)
    rec[0, 0, 0], qabs[0, 0, 0] = q0 * step, min(abs(q0), 255)
    for level, axis in _passes(shape3):
        if bitpos < 0:
            break
        pred, ctx = pass_context(rec, qabs, level, axis, step, qctx)
        bitpos = decode_pass(rec, qabs, level, axis, step, pred, ctx, tokens(ctx), bits,
                             bitpos, nb_table, base_table)  # fmt: skip
    if bitpos < 0:
        raise FormatError("interpolation bounded block's tokens or raw bits are damaged")
    return rec
