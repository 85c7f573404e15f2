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
"""

from __future__ import annotations

import math
import struct

from ...errors import FormatError
from ..bitstream.container import _varint
from ..lossy.entropy import _read_varint

__all__ = ["pack_sperr", "unpack_sperr"]

#: SPERR's packed flags: 3D, multi-chunk (see :mod:`.headers`)
_3D, _MULTI = 0x40, 0x10
#: chunk flags of a coded and of a constant chunk; conditioner bytes (flags, mean, step)
_CODED, _CONSTANT, _CONDITIONER = 0x80, 0x81, 17
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_WHAT = "hybrid base layer (SPERR)"


def _dims(shape: tuple[int, ...]) -> bytes:
    return struct.pack(f"<{len(shape)}I", *reversed(shape))  # SPERR stores X first


def _pack_chunk(chunk: bytes) -> bytes:
    if chunk[:1] == bytes([_CODED]) and len(chunk) >= _CONDITIONER + 9:
        (bits,) = _U64.unpack_from(chunk, _CONDITIONER + 1)
        head = chunk[: _CONDITIONER + 1]
        return head + _varint(bits) + chunk[_CONDITIONER + 9 :]
    return chunk


def _unpack_chunk(chunk: bytes) -> bytes:
    if not chunk:
        raise FormatError(f"{_WHAT} is truncated (chunk)")
    if chunk[0] != _CODED:
        return chunk
    if len(chunk) < _CONDITIONER + 2:
        raise FormatError(f"{_WHAT} is truncated (chunk)")
    bits, pos = _read_varint(chunk, _CONDITIONER + 1)
    if bits >= 1 << 64:
        raise FormatError(f"{_WHAT} declares an invalid bit count")
    return chunk[: _CONDITIONER + 1] + _U64.pack(bits) + chunk[pos:]


def pack_sperr(stream: bytes, shape: tuple[int, ...]) -> bytes:
    """The packed form of a SPERR ``stream`` of an array of ``shape`` (2 or 3 dimensions).

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
    if ndim == 2:
        return head + _pack_chunk(stream[start:])
    if not flags & _MULTI:
        return head + _pack_chunk(stream[start + 4 :])
    chunk_dims = stream[start : start + 6]
    dims = struct.unpack("<3H", chunk_dims)
    n = math.prod(-(-d // c) for d, c in zip(reversed(shape), dims, strict=True))
    pos = start + 6 + 4 * n
    lengths = [_U32.unpack_from(stream, start + 6 + 4 * i)[0] for i in range(n)]
    chunks = []
    for length in lengths:
        chunks.append(_pack_chunk(stream[pos : pos + length]))
        pos += length
    return head + chunk_dims + b"".join(_varint(len(c)) for c in chunks) + b"".join(chunks)


def unpack_sperr(packed: bytes, shape: tuple[int, ...]) -> bytes:
    """The SPERR stream :func:`pack_sperr` made ``packed`` from; :class:`FormatError` if it
    is truncated or inconsistent."""
    ndim = len(shape)
    if len(packed) < 2:
        raise FormatError(f"{_WHAT} is truncated")
    head, flags = packed[:2], packed[1]
    if bool(flags & _3D) != (ndim == 3):
        raise FormatError(f"{_WHAT} does not match the block's shape")
    if ndim == 2:
        return head + _dims(shape) + _unpack_chunk(packed[2:])
    if not flags & _MULTI:
        chunk = _unpack_chunk(packed[2:])
        return head + _dims(shape) + _U32.pack(len(chunk)) + chunk
    if len(packed) < 8:
        raise FormatError(f"{_WHAT} is truncated")
    dims = struct.unpack_from("<3H", packed, 2)
    if min(dims) < 1:
        raise FormatError(f"{_WHAT} declares empty chunks")
    n = math.prod(-(-d // c) for d, c in zip(reversed(shape), dims, strict=True))
    pos, lengths = 8, []
    for _ in range(n):
        length, pos = _read_varint(packed, pos)
        lengths.append(length)
    if pos + sum(lengths) != len(packed):
        raise FormatError(f"{_WHAT} has inconsistent chunk lengths")
    chunks = []
    for length in lengths:
        chunks.append(_unpack_chunk(packed[pos : pos + length]))
        pos += length
    table = b"".join(_U32.pack(len(c)) for c in chunks)
    return head + _dims(shape) + packed[2:8] + table + b"".join(chunks)
