"""SPERR streams without what the hybrid payload already says: 21 bytes less per 3D stream.

A SPERR stream begins with its dimensions (three ``uint32``), a 3D stream then with the byte
length of each chunk (``uint32``), and each coded chunk's SPECK header holds its number of
coded bits as a ``uint64``. In a hybrid block the dimensions are the block's, a single chunk's
length is what is left of the stream, and the bit count is small: the *packed* form drops the
first two and writes the third as a varint (LEB128). On a 1 kB file (a 256x ratio of a small
stack) that gives the base 2.5 % more bytes. :func:`unpack_sperr` rebuilds the exact bytes
SPERR wrote (tested byte for byte), which then go through the size checks of :mod:`.headers`
before SPERR sees them.

Packed form (``ndim`` 2 or 3, the block's; SPERR's own fields in its little-endian layout)::

    u8 version | u8 flags | [3D multi-chunk: 3 x u16 chunk dims, n x varint chunk lengths]
    | chunks, each: u8 chunk flags | f64 mean | f64 step
                    | [coded chunk: u8 bit planes | varint coded bits] | SPECK bits

(the chunk lengths of a multi-chunk stream are those of the packed chunks; a single chunk, and
the one chunk of a 2D stream, runs to the end).

*Coded* form (hybrid payloads of version 4): the same, but a coded chunk's SPECK bits are
arithmetic-coded by the context-mixing model of :mod:`.bitmix` (11 % fewer bytes on average),
and after SPERR's bit count a second varint says how many SPECK bits the code holds::

    chunks, each: u8 chunk flags | f64 mean | f64 step
                  | [coded chunk: u8 bit planes | varint SPERR's bit count | varint n
                     | bitmix code of the first n SPECK bits]

SPERR's rate mode codes one embedded stream (all bit planes down to a fine step) and cuts its
*bytes* at the budget, keeping the declared bit count: the decoder reads zeros past the end
(and decodes the same stream cut elsewhere just as well). So with a byte ``budget``
:func:`pack_sperr` keeps the longest prefix of each chunk whose code fits (chunks share the
budget as SPERR gave them bytes): the stream lands on its budget to the byte, and one SPERR
stream serves every smaller size. :func:`unpack_sperr` decodes the ``n`` bits and rebuilds
SPERR's stream (byte for byte when ``n`` is a whole number of its bytes).
"""

from __future__ import annotations

import math
import struct

import numpy as np

from ...errors import FormatError
from ..bitstream.layout import _varint, read_varint

__all__ = ["cut_sperr", "pack_sperr", "unpack_sperr"]

#: SPERR's packed flags: 3D, multi-chunk (see :mod:`.headers`)
_3D, _MULTI = 0x40, 0x10
#: chunk flags of a coded and of a constant chunk; conditioner bytes (flags, mean, step)
_CODED, _CONSTANT, _CONDITIONER = 0x80, 0x81, 17
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_WHAT = "hybrid base layer (SPERR)"
#: a coded chunk's head: conditioner and bit planes
_SPECK_AT = _CONDITIONER + 1
#: most SPECK bits one byte of a bitmix code can hold (its probabilities stop at 1/4096: at
#: least 0.00035 bits per bit): a larger declared count is a damaged stream
_BITS_PER_CODE_BYTE = 23_000


def _dims(shape: tuple[int, ...]) -> bytes:
    return struct.pack(f"<{len(shape)}I", *reversed(shape))  # SPERR stores X first


def _pack_chunk(chunk: bytes, coded: bool, budget: int | None) -> bytes:
    if not _has_speck_bits(chunk):
        return chunk
    (bits,) = _U64.unpack_from(chunk, _SPECK_AT)
    head, speck = chunk[:_SPECK_AT], chunk[_SPECK_AT + 8 :]
    if not coded:
        return head + _varint(bits) + speck
    from .bitmix import encode_bits, encode_prefix

    # SPERR's rate mode cuts the bytes of one embedded stream, not its declared bit count
    # (the decoder reads zeros past the end; cutting the count instead decodes worse)
    n = min(bits, 8 * len(speck))
    stream = np.unpackbits(np.frombuffer(speck, np.uint8), count=n, bitorder="little")
    head += _varint(bits)
    if budget is None:
        return head + _varint(n) + encode_bits(stream)
    kept, code = encode_prefix(stream, budget - len(head) - len(_varint(n)))
    if kept == 0 and n:  # SPERR cannot decode an empty chunk: one bit, over the budget
        kept, code = 1, encode_bits(stream[:1])
    return head + _varint(kept) + code


def _unpack_chunk(chunk: bytes, coded: bool, voxels: int) -> bytes:
    if not chunk:
        raise FormatError(f"{_WHAT} is truncated (chunk)")
    if chunk[0] != _CODED:
        return chunk
    if len(chunk) < _SPECK_AT + 1:
        raise FormatError(f"{_WHAT} is truncated (chunk)")
    bits, pos = read_varint(chunk, _SPECK_AT)
    if bits >= 1 << 64:
        raise FormatError(f"{_WHAT} declares an invalid bit count")
    if not coded:
        return chunk[:_SPECK_AT] + _U64.pack(bits) + chunk[pos:]
    from .bitmix import decode_bits

    n, pos = read_varint(chunk, pos)
    code = chunk[pos:]
    if n > min(bits, 64 * voxels + 4096, _BITS_PER_CODE_BYTE * max(len(code), 1)):
        raise FormatError(f"{_WHAT} declares more coded bits than its block holds")
    speck = np.packbits(decode_bits(code, n), bitorder="little").tobytes()
    return chunk[:_SPECK_AT] + _U64.pack(bits) + speck


def _has_speck_bits(chunk: bytes) -> bool:
    """Whether ``chunk`` is one of SPERR's coded chunks (not a constant one)."""
    return chunk[:1] == bytes([_CODED]) and len(chunk) >= _SPECK_AT + 8


def _shares(chunks: list[bytes], budget: int) -> list[int | None]:
    """``budget`` bytes split between the coded chunks in proportion to their lengths
    (rounded down), after the others (constant chunks: kept as they are)."""
    budget -= sum(len(c) for c in chunks if not _has_speck_bits(c))
    total = max(sum(len(c) for c in chunks if _has_speck_bits(c)), 1)
    return [budget * len(c) // total if _has_speck_bits(c) else None for c in chunks]


def pack_sperr(
    stream: bytes, shape: tuple[int, ...], *, coded: bool = False, budget: int | None = None
) -> bytes:
    """The packed form of a SPERR ``stream`` of an array of ``shape`` (2 or 3 dimensions).

    ``coded``: the coded form (SPECK bits arithmetic-coded), cut to at most ``budget`` bytes
    when one is given (a chunk keeps at least one bit, so a budget smaller than the heads is
    exceeded).

    Raises
    ------
    ValueError
        The stream's header does not describe ``shape`` (a bug of the caller, not a bad file).
    """
    ndim = len(shape)
    start = 2 + 4 * ndim
    if len(stream) < start or stream[2:start] != _dims(shape):
        raise ValueError("SPERR stream does not describe an array of this shape")
    head, flags = stream[:2], stream[1]
    room = None if budget is None else budget - 2
    if ndim == 2:
        return head + _pack_chunk(stream[start:], coded, room)
    if not flags & _MULTI:
        return head + _pack_chunk(stream[start + 4 :], coded, room)
    chunk_dims = stream[start : start + 6]
    dims = struct.unpack("<3H", chunk_dims)
    n = math.prod(-(-d // c) for d, c in zip(reversed(shape), dims, strict=True))
    pos = start + 6 + 4 * n
    lengths = [_U32.unpack_from(stream, start + 6 + 4 * i)[0] for i in range(n)]
    raw = []
    for length in lengths:
        raw.append(stream[pos : pos + length])
        pos += length
    # with a budget: the chunk dimensions and a 3-byte length per chunk come first
    rooms = [None] * n if room is None else _shares(raw, room - 6 - 3 * n)
    chunks = [_pack_chunk(c, coded, r) for c, r in zip(raw, rooms, strict=True)]
    return head + chunk_dims + b"".join(_varint(len(c)) for c in chunks) + b"".join(chunks)


def unpack_sperr(packed: bytes, shape: tuple[int, ...], *, coded: bool = False) -> bytes:
    """The SPERR stream :func:`pack_sperr` made ``packed`` from (``coded`` as it was packed);
    :class:`FormatError` if it is truncated or inconsistent."""
    ndim = len(shape)
    if len(packed) < 2:
        raise FormatError(f"{_WHAT} is truncated")
    head, flags = packed[:2], packed[1]
    if bool(flags & _3D) != (ndim == 3):
        raise FormatError(f"{_WHAT} does not match the block's shape")
    voxels = math.prod(shape)
    if ndim == 2:
        return head + _dims(shape) + _unpack_chunk(packed[2:], coded, voxels)
    if not flags & _MULTI:
        chunk = _unpack_chunk(packed[2:], coded, voxels)
        return head + _dims(shape) + _U32.pack(len(chunk)) + chunk
    if len(packed) < 8:
        raise FormatError(f"{_WHAT} is truncated")
    dims = struct.unpack_from("<3H", packed, 2)
    if min(dims) < 1:
        raise FormatError(f"{_WHAT} declares empty chunks")
    n = math.prod(-(-d // c) for d, c in zip(reversed(shape), dims, strict=True))
    pos, lengths = 8, []
    for _ in range(n):
        length, pos = read_varint(packed, pos)
        lengths.append(length)
    if pos + sum(lengths) != len(packed):
        raise FormatError(f"{_WHAT} has inconsistent chunk lengths")
    chunk_voxels = math.prod(dims)
    chunks = []
    for length in lengths:
        chunks.append(_unpack_chunk(packed[pos : pos + length], coded, chunk_voxels))
        pos += length
    table = b"".join(_U32.pack(len(c)) for c in chunks)
    return head + _dims(shape) + packed[2:8] + table + b"".join(chunks)


def cut_sperr(stream: bytes, shape: tuple[int, ...], nbytes: int) -> bytes:
    """A SPERR ``stream`` of an array of ``shape`` cut to about ``nbytes`` bytes.

    SPERR's rate mode codes one embedded stream and cuts its bytes at the budget, keeping the
    declared bit count (see the module doc), so the cut stream is, to within a few bytes of
    chunk headers, what SPERR would have written at the smaller rate: one encode at the
    highest rate serves a whole rate-distortion curve. The coded chunks share the cut in
    proportion to their lengths (a chunk keeps at least its head).
    """
    ndim = len(shape)
    start = 2 + 4 * ndim
    if len(stream) <= nbytes or len(stream) < start:
        return stream
    flags = stream[1]
    if ndim == 2 or not flags & _MULTI:
        at = start if ndim == 2 else start + 4
        chunk = stream[at : max(nbytes, at + _SPECK_AT + 8)]
        return stream[:start] + (b"" if ndim == 2 else _U32.pack(len(chunk))) + chunk
    dims = struct.unpack_from("<3H", stream, start)
    n = math.prod(-(-d // c) for d, c in zip(reversed(shape), dims, strict=True))
    table_end = start + 6 + 4 * n
    lengths = [_U32.unpack_from(stream, start + 6 + 4 * i)[0] for i in range(n)]
    chunks, pos = [], table_end
    for length in lengths:
        chunks.append(stream[pos : pos + length])
        pos += length
    rooms = _shares(chunks, nbytes - table_end)
    keep = [None if r is None else max(r, _SPECK_AT + 8) for r in rooms]
    cut = [c[:k] for c, k in zip(chunks, keep, strict=True)]
    table = b"".join(_U32.pack(len(c)) for c in cut)
    return stream[: start + 6] + table + b"".join(cut)
