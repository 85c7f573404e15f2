"""Values of a lossless or error-bounded block as the coder sees them, and back.

Integers are used as they are; ``float32`` and ``float16`` by bit pattern (mapped to an
order-preserving unsigned integer); bounded mode quantizes on a uniform grid first. The minimum
is subtracted and sparse histograms are replaced by indices into a stored table of distinct
values.
:func:`_finish` undoes all of it and checks the block's CRC32.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import FormatError, InvalidInputError

#: dtypes supported by lossless mode (float64 only in bounded mode)
LOSSLESS_DTYPES = (
    *("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "float16", "float32"),
)


#: value kinds
_KIND_INT, _KIND_FLOAT_BITS, _KIND_QUANT_INT, _KIND_QUANT_FLOAT = 0, 1, 2, 3


_FLAG_TABLE = 1


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
    # (never more than the stream can hold: a damaged stream cannot inflate without bound)
    raw = zlib.decompressobj().decompress(data[1:], width * count + 1)
    if len(raw) != width * count:
        raise FormatError("truncated integer stream in a lossless block")
    planes = np.frombuffer(raw, np.uint8).reshape(width, count).T.copy()
    return planes.view(f"<u{width}").reshape(count).astype(np.int64)


def _float_to_ordered(bits: np.ndarray, width: int = 32) -> np.ndarray:
    """Float bit patterns of ``width`` bits (as int64) -> order-preserving non-negative integers."""
    sign = 1 << (width - 1)
    return np.where(bits >= sign, (1 << width) - 1 - bits, bits + sign)


def _ordered_to_float(m: np.ndarray, width: int = 32) -> np.ndarray:
    sign = 1 << (width - 1)
    return np.where(m >= sign, m - sign, (1 << width) - 1 - m)


def _float_bits(dtype: np.dtype) -> tuple[int, np.dtype]:
    """Width and unsigned view dtype of a float dtype coded by bit pattern."""
    width = np.dtype(dtype).itemsize * 8
    return width, np.dtype(f"uint{width}")


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
    if mode == "bounded" and dtype.kind == "b":
        mode, max_error = "lossless", None  # a mask: exact is within any bound
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
            if span > 2.0**40 and dtype in (np.float32, np.float16):
                # a grid finer than the data's own precision: the exact code is within E
                return _map_values(block, "lossless", None)
            if span > 2.0**40:
                least = (float(x.max()) - lo) / 2.0**41
                raise InvalidInputError(
                    f"max_error={max_error!r} is too small for the value range of the data "
                    f"(float64: use at least {least:.3g})"
                )
            q = np.rint((x - lo) / step).astype(np.int64)
            expected = (lo + q * step).astype(dtype)
            if np.abs(expected.astype(np.float64) - x).max() > e:
                # float rounding broke the bound: code this block losslessly instead
                if dtype in (np.float32, np.float16):
                    return _map_values(block, "lossless", None)
                raise InvalidInputError(
                    f"max_error={max_error!r} is below the float64 precision of the data"
                )
            kind = _KIND_QUANT_FLOAT
            values = q
    else:
        if dtype.name not in LOSSLESS_DTYPES:
            raise InvalidInputError(unsupported_lossless(dtype))
        expected = block
        if dtype.kind == "f":
            width, view = _float_bits(dtype)
            values = _float_to_ordered(block.view(view).astype(np.int64), width)
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
    if offset:
        v = v + offset
    if kind == _KIND_INT:
        out = v.astype(dtype)
    elif kind == _KIND_FLOAT_BITS:
        if dtype.name not in ("float16", "float32"):  # (float64 is never coded by bits)
            raise FormatError(f"a bit-pattern-coded lossless block in a {dtype.name} file")
        width, view = _float_bits(dtype)
        out = _ordered_to_float(v, width).astype(view).view(dtype)
    elif kind == _KIND_QUANT_INT:
        info = np.iinfo(dtype)
        out = np.clip(int(lo) + v * int(step), info.min, info.max).astype(dtype)
    else:
        out = (lo + v * step).astype(dtype)
    out = np.ascontiguousarray(out)
    if not crc_matches(out, crc):
        raise FormatError("lossless block fails its checksum (corrupted payload)")
    return out


def unsupported_lossless(dtype: np.dtype) -> str:
    """What to tell a user whose ``dtype`` has no lossless mode (and what to do instead)."""
    text = f"lossless mode supports {', '.join(LOSSLESS_DTYPES)}; got {np.dtype(dtype).name}"
    if np.dtype(dtype).name == "float64":
        text += (
            " (for float64 use mode='bounded' with a max_error below what matters, or cast to "
            "float32 where that changes no value: np.array_equal(a.astype(np.float32), a))"
        )
    return text


def le_bytes(arr: np.ndarray) -> np.ndarray:
    """The bytes of ``arr`` in C order, each value little-endian (what a block's CRC-32 and a
    stored block hold on every machine), as a uint8 array (no copy on little-endian hosts)."""
    le = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    return le.reshape(-1).view(np.uint8)


def crc_matches(out: np.ndarray, crc: int) -> bool:
    """Whether ``out`` is the block of CRC-32 ``crc``: of its little-endian bytes, or of its
    big-endian ones (files coded from big-endian arrays before 2026-12-05 hold that CRC; the
    values were right)."""
    if zlib.crc32(le_bytes(out)) == crc:
        return True
    if out.dtype.itemsize == 1:
        return False
    big = np.ascontiguousarray(out, dtype=out.dtype.newbyteorder(">"))
    return zlib.crc32(big.reshape(-1).view(np.uint8)) == crc


def codec_module(name: str) -> Any | None:
    """imagecodecs when it has the codec ``name`` (``"SPERR"``, ``"SZ3"``) built in, else None."""
    try:
        import imagecodecs
    except ModuleNotFoundError:  # pragma: no cover - a dependency of napari-sciz
        return None
    codec = getattr(imagecodecs, name, None)
    return imagecodecs if codec is not None and codec.available else None


def float_codec_tolerance(block: np.ndarray, bound: float) -> float:
    """The bound a float codec (SPERR, SZ3) is asked for so that the decode stays within
    ``bound`` on any machine: ``floor(E)`` for integers (the decode is rounded), else ``E``
    less four units in the last place of the block's largest magnitude."""
    if block.dtype.kind in "iu":
        return float(math.floor(bound))
    largest = np.abs(block).max().astype(block.dtype)
    return bound - 4.0 * float(np.spacing(largest))


def wavelet_values_as(values: np.ndarray, dtype: np.dtype, codec: str) -> np.ndarray:
    """A float codec's decoded block (SPERR, SZ3: bounded mode) in the file's ``dtype``:
    rounded to the nearest integer and clipped for integer dtypes, cast for floats.

    Raises
    ------
    FormatError
        A value is NaN or infinite: the coded block had none (bounded mode refuses them), so
        the stream is damaged.
    """
    if not np.isfinite(values).all():
        raise FormatError(f"{codec} bounded block decodes to NaN or infinite values")
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    with np.errstate(over="ignore"):  # (a float64 value beyond float32: inf, then refused)
        out = values.astype(dtype)
    if not np.isfinite(out).all():
        raise FormatError(f"{codec} bounded block decodes beyond the range of {dtype}")
    return out
