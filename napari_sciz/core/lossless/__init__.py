"""Lossless and error-bounded block coding (``mode="lossless"`` and ``mode="bounded"``).

Method (see ``docs/lossless.md``; byte layout in ``docs/format.md``): predict every voxel of a
block with a deterministic integer causal predictor and code the prediction residual
losslessly.

1. **Value mapping.** Integers are used as they are; ``float32`` and ``float16`` are coded by
   bit pattern (the bits are mapped to an order-preserving unsigned integer so that neighbouring
   values stay numerically close). In bounded mode the values are first quantized on a uniform
   grid ``lo + q * step`` with ``step = 2E + 1`` for integers and ``step = 2E`` for floats, so
   that ``|decoded - original| <= E`` (checked at encode). The minimum is subtracted; when the
   block uses few distinct values (sparse histograms), values are replaced by their index in the
   sorted table of distinct values (the table is stored delta-coded with zlib). A block whose
   frequent values sit next to gaps of its histogram (a contrast stretch that uses every other
   value, a camera range scaled by 2 or 3) is coded both ways, or a sample of it when it is
   large, and the smaller kept.
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

4. **Bounded blocks coded otherwise.** In bounded mode each block is also coded by SPERR's
   point-wise error mode (:mod:`.sperrblock`), by SZ3 (:mod:`.szblock`, in a helper process)
   and, for integers, by SZ3's interpolation with in-loop quantization in this module's
   entropy coder (:mod:`.interpblock`); the smallest payload whose decode is within ``E`` is
   kept.

Version-1 payloads (row-wise coder, Laplace model) are still decoded. The decoder recomputes
everything from already decoded data with integer (and fixed-order IEEE binary64) arithmetic;
a CRC32 of the expected decoded block is stored and checked, so a corrupted payload raises
:class:`FormatError` instead of returning wrong data. The INR prediction is not used here.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Callable

import numpy as np

from ...errors import FormatError, InvalidInputError
from ..blocks import BlockGrid
from ..validate import native_order
from . import interpblock, labelblock, resampled, sperrblock, szblock
from .layout import _HEAD2, _MAGIC, _RAW_MAGIC, _RAW_VERSION, _VERSIONS
from .raster import TRIAL_VOXELS, encode_raster, sample_box, trial_size
from .v1 import _HEAD, decode_v1
from .values import (
    LOSSLESS_DTYPES,
    _finish,
    _map_values,
    _Mapped,
    le_bytes,
    quantization_step,
    unsupported_lossless,
)
from .wavefront import _decode_v2

__all__ = [
    "LOSSLESS_DTYPES",
    "MODES",
    "check_mode",
    "code_verified",
    "decode_block",
    "encode_array",
    "encode_block",
    "model_version",
    "quantization_step",
]


#: modes handled by this module
MODES = ("lossless", "bounded")


def model_version(payloads: list[bytes]) -> int:
    """The header's model version of a lossless/bounded file of ``payloads`` (older readers
    say "upgrade"): 7 when a block is a resampled block (:mod:`.resampled`: lossless mode, or
    a bounded block with few distinct values coded exactly),
    else 6 when a block is a label block (:mod:`.labelblock`, either mode), else
    (bounded mode) 5 when a block is coded by interpolation in payload version 2 (floats, or
    index contexts), else 4 when one is in version 1 (:mod:`.interpblock`), else 3 when one is
    coded by SZ3 (:mod:`.szblock`), else 2 when one is coded by SPERR (:mod:`.sperrblock`), 1
    otherwise."""
    for version, kind in (
        (7, resampled.is_resampled_block),
        (6, labelblock.is_label_block),
        (5, interpblock.is_interp_v2_block),
        (4, interpblock.is_interp_block),
        (3, szblock.is_sz3_block),
        (2, sperrblock.is_sperr_block),
    ):
        if any(kind(p) for p in payloads):
            return version
    return 1


def encode_block(
    block: np.ndarray,
    mode: str = "lossless",
    max_error: float | None = None,
    search: bool = False,
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
    search : bool
        Code the closest candidate predictor sets on a sample and keep the smallest
        (``effort="best"``: about twice the time, 0-2 % smaller).

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
    # the payloads' checksums and value mappings read native bytes (a big-endian TIFF, zarr or
    # memmap block would otherwise be checked against its swapped bytes)
    block = native_order(block)
    out = _encode(block, mode, max_error, search)
    if mode != "bounded" or not block.size:
        return out
    if block.dtype.kind in "ui":
        # sparse histograms (few distinct values far apart): the grid of bounded mode can
        # cost more than the value table of lossless mode; keep the smaller (both within E)
        uniq = np.unique(block)
        if len(uniq) * 4 <= int(uniq[-1]) - int(uniq[0]) + 1:
            exact = _encode(block, "lossless", None, search)
            if len(exact) < len(out):
                out = exact
        else:
            out = _as_labels_if_smaller(block, out)  # (exact: within any bound)
    # at large bounds on smooth data SPERR's point-wise error mode, SZ3's in-loop
    # quantization and its interpolation predictor in our entropy coder beat the grid
    for coder in (sperrblock, szblock, interpblock):
        other = coder.encode(block, float(max_error or 0))
        if other is not None and len(other) < len(out):
            out = other
    return out


def _encode(
    block: np.ndarray, mode: str, max_error: float | None, search: bool, depth: int = 0
) -> bytes:
    d, h, w = block.shape
    m = _map_values(np.ascontiguousarray(block), mode, max_error)
    other = _table_alternative(m)
    if other is not None and m.values.size > _TABLE_TRIAL_VOXELS:
        # a large block: the two mappings are compared on a sample, the winner coded once
        box = sample_box((d, h, w), _TABLE_TRIAL_VOXELS)
        if trial_size(other, (d, h, w), box) < trial_size(m, (d, h, w), box):
            m = other
        other = None
    out = encode_raster(m, (d, h, w), search)
    if other is not None:
        alt = encode_raster(other, (d, h, w), search)
        if len(alt) < len(out):
            out = alt
    if mode == "lossless":
        out = _as_labels_if_smaller(block, out)
        out = _as_resampled_if_smaller(block, out, search, depth)
    raw = le_bytes(m.expected).tobytes()
    if len(out) > len(raw) + 8:
        # incompressible block (e.g. noise): stored as it is
        return _RAW_MAGIC + struct.pack("<BI", _RAW_VERSION, zlib.crc32(raw)) + raw
    return out


def _as_labels_if_smaller(block: np.ndarray, payload: bytes) -> bytes:
    """The label block of ``block`` (a segmentation or mask: each voxel a copy of a
    neighbour) when it looks like one and codes smaller than ``payload``, else ``payload``."""
    if not labelblock.looks_like_labels(block):
        return payload
    labels = labelblock.encode(block)
    return labels if labels is not None and len(labels) < len(payload) else payload


def _as_resampled_if_smaller(block: np.ndarray, payload: bytes, search: bool, depth: int) -> bytes:
    """The resampled block of ``block`` (an axis upsampled 2x by linear interpolation: its
    coarse grid coded as a block, the rest as corrections) when it looks like one and codes
    smaller than ``payload``, else ``payload``."""
    if depth >= resampled.MAX_DEPTH:
        return payload
    coded = resampled.encode(
        block, lambda coarse: _encode(coarse, "lossless", None, search, depth + 1)
    )
    return coded if coded is not None and len(coded) < len(payload) else payload


#: a block without a value table tries one when this share of its voxels have a value next to
#: a gap of the histogram (regular gaps: a contrast stretch, a scaled camera range)
_GAP_SHARE = 0.01


#: blocks larger than this compare the mappings on a sample of about this many voxels
_TABLE_TRIAL_VOXELS = TRIAL_VOXELS


def _table_alternative(m: _Mapped) -> _Mapped | None:
    """The other value mapping worth measuring against ``m``, or None.

    A table of many distinct values can cost more than it saves; values without a table whose
    histogram has gaps among its frequent values (every other value used, say) may code
    smaller as table indices. Both are decided by the coded size, not by the density alone.
    """
    if m.table is not None:
        if len(m.table) * 8 <= m.values.size:
            return None
        return _Mapped(m.table[m.values], m.kind, m.offset, m.lo, m.step, None, m.expected)
    span = int(m.values.max()) + 1 if m.values.size else 0
    if span <= max(1 << 16, 4 * m.values.size):
        counts = np.bincount(m.values.ravel(), minlength=span)
        table = np.flatnonzero(counts)
        counts = counts[table]
    else:
        table, counts = np.unique(m.values, return_counts=True)
    if table.size == 0:
        return None
    if table.size == int(table[-1]) + 1:
        return None  # no gaps
    step1 = np.diff(table) == 1  # value i and the next used value are adjacent
    next_to_gap = ~(np.r_[True, step1] & np.r_[step1, True])
    if counts[next_to_gap].sum() < _GAP_SHARE * m.values.size:
        return None
    values = np.searchsorted(table, m.values).astype(np.int64)
    return _Mapped(values, m.kind, m.offset, m.lo, m.step, table, m.expected)


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
        return _decode(payload, np.dtype(dtype).newbyteorder("="), tuple(shape3))
    except FormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means a bad payload
        raise FormatError(f"lossless block cannot be decoded: {exc}") from exc


def _decode(payload: bytes, dtype: np.dtype, shape3: tuple[int, ...], depth: int = 0) -> np.ndarray:
    if resampled.is_resampled_block(payload):
        if depth >= resampled.MAX_DEPTH:
            raise FormatError("resampled lossless block nested too deep (corrupted payload)")
        return resampled.decode(
            payload, dtype, shape3, lambda inner, shape: _decode(inner, dtype, shape, depth + 1)
        )
    if labelblock.is_label_block(payload):
        return labelblock.decode(payload, dtype, shape3)
    if sperrblock.is_sperr_block(payload):
        return sperrblock.decode(payload, dtype, shape3)
    if szblock.is_sz3_block(payload):
        return szblock.decode(payload, dtype, shape3)
    if interpblock.is_interp_block(payload):
        return interpblock.decode(payload, dtype, shape3)
    if payload[:3] == _RAW_MAGIC and len(payload) >= 8:
        _v, crc_raw = struct.unpack_from("<BI", payload, 3)
        body = payload[8:]
        n = math.prod(shape3) * dtype.itemsize
        if len(body) != n or zlib.crc32(body) != crc_raw:
            raise FormatError("stored lossless block fails its checksum (corrupted payload)")
        return np.frombuffer(body, dtype.newbyteorder("<")).astype(dtype).reshape(shape3)
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
    v, (kind, flags, crc, offset, lo, step, table) = decode_v1(payload, shape3)
    return _finish(v, dtype, kind, table, offset, lo, step, crc)


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
            raise InvalidInputError(unsupported_lossless(dtype))
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


def code_verified(
    block: np.ndarray, mode: str, max_error: float | None, search: bool = False
) -> tuple[bytes, np.ndarray]:
    """:func:`encode_block` of a 3D block and what the decoder returns for it, checked (bit
    for bit in lossless mode, within ``max_error`` in bounded mode) before it counts."""
    block = native_order(block)
    payload = encode_block(block, mode, max_error, search)
    decoded = decode_block(payload, block.dtype, block.shape)
    if mode == "lossless":
        ok = np.array_equal(decoded.view(np.uint8), block.view(np.uint8))
    else:
        diff = np.abs(decoded.astype(np.float64) - block.astype(np.float64))
        ok = not diff.size or bool(diff.max() <= float(max_error or 0))
    if not ok:  # pragma: no cover - a bug, never silently wrong data
        raise RuntimeError("a block failed its encode-time verification")
    return payload, decoded


def encode_array(
    arr: np.ndarray,
    grid: BlockGrid,
    mode: str,
    max_error: float | None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    search: bool = False,
) -> tuple[list[bytes], np.ndarray]:
    """Code every block of ``arr``; returns the payloads and the decoded array.

    Blocks are coded on up to :data:`_BLOCK_THREADS` threads (the encoder is numpy and
    numba, which release the GIL), at most one per CPU and as many as a quarter of the memory
    cap holds (:data:`_ENCODE_BYTES_PER_VOXEL` each); every block is decoded and checked before
    it counts.

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
        Called with ``(blocks_done, n_blocks)`` after each block (in block order).
    cancel : callable, optional
        Checked before each block is started and after each one; returning True raises
        ``CancelledError`` (blocks under way finish first, nothing is returned).
    search : bool
        As in :func:`encode_block`.

    Returns
    -------
    payloads : list of bytes
    reconstruction : numpy.ndarray
        What the decoder returns (identical to ``arr`` in lossless mode).
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from ...errors import CancelledError

    def code(index: int) -> tuple[bytes, np.ndarray]:
        block = np.ascontiguousarray(arr[grid.block_slices(index)])
        return code_verified(block.reshape(grid.block_shape3(index)), mode, max_error, search)

    def cancelled() -> bool:
        return cancel is not None and bool(cancel())

    n = grid.n_blocks
    payloads: list[bytes] = []
    recon = np.empty_like(arr)
    # blocks at a time: CPUs, and a quarter of the memory cap at ~200 bytes per voxel each
    from ..validate import memory_cap

    largest = max((math.prod(grid.block_shape3(i)) for i in range(n)), default=1)
    by_memory = memory_cap() // 4 // max(1, _ENCODE_BYTES_PER_VOXEL * largest)
    threads = max(1, min(n, _BLOCK_THREADS, os.cpu_count() or 1, by_memory))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sciz-block") as pool:
        pending: deque = deque()
        started = 0
        for index in range(n):
            while started < n and len(pending) < threads and not cancelled():
                pending.append(pool.submit(code, started))
                started += 1
            if not pending:  # cancelled before this block started
                raise CancelledError("compression cancelled")
            payload, decoded = pending.popleft().result()
            sl = grid.block_slices(index)
            recon[sl] = decoded.reshape(recon[sl].shape)
            payloads.append(payload)
            if progress is not None:
                progress(index + 1, n)
            if index + 1 < n and cancelled():
                for future in pending:
                    future.cancel()
                raise CancelledError("compression cancelled")
    return payloads, recon


#: blocks coded at the same time by :func:`encode_array` (each also uses its lanes' threads)
_BLOCK_THREADS = 4


#: the encoder's peak memory per voxel of a block (182 measured on a 60x256x256 uint16 block)
_ENCODE_BYTES_PER_VOXEL = 200
