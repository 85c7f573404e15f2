"""Error-bounded blocks coded by SPERR's point-wise error mode (bounded mode, model version 2).

The predictive coder of bounded mode quantizes the values on a grid of step ``2E + 1``
before predicting them. At large bounds on smooth data that grid's staircase costs more than
a wavelet transform with an error guarantee: SPERR's *point-wise error* mode codes the block
with wavelets and then corrects every voxel whose error would exceed the tolerance. The
encoder codes a bounded block both ways and keeps the smaller payload (:func:`encode`), after
decoding it and checking every voxel against the bound.

The decoded values are SPERR's float64 output, rounded to the nearest integer (and clipped
to the dtype) for integer dtypes, cast for float dtypes. For integers the tolerance is the
integer bound itself: a value within ``E`` of an integer rounds to an integer within ``E``,
whatever way another machine's floating point rounds the last bits of the wavelet transform.
For floats the tolerance keeps a margin of four units in the last place of the block's
largest magnitude (in the dtype), so that neither the cast nor such differences can cross the
bound.

Payload::

    "SZS" u8 version (1) | SPERR stream (its own header: dimensions, chunk lengths)

The stream's declared size is checked before SPERR decodes it
(:func:`napari_sciz.core.hybrid.headers.check_sperr_header`), and the container's CRC-32 of
the payload guards its bytes.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import FormatError
from .values import codec_module, float_codec_tolerance, wavelet_values_as

__all__ = ["MAGIC", "decode", "encode", "is_sperr_block"]

MAGIC = b"SZS"
_VERSION = 1

#: SPERR needs at least this many voxels along each of a block's axes (2D: its two)
_MIN_SIDE = 4


def is_sperr_block(payload: bytes) -> bool:
    """Whether ``payload`` is a SPERR-coded bounded block."""
    return payload[:3] == MAGIC


def _plane_shape(shape3: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape3[1:]) if shape3[0] == 1 else tuple(shape3)


def encode(block: np.ndarray, bound: float) -> bytes | None:
    """The SPERR payload of ``block`` (3D, ``(D, H, W)``) within ``bound``, or None when SPERR
    is missing, the block is too small or flat for it, or its decode misses the bound."""
    ic = codec_module("SPERR")
    shape = _plane_shape(block.shape)
    if ic is None or block.dtype.kind not in "iuf" or min(shape) < _MIN_SIDE:
        return None
    tol = float_codec_tolerance(block, bound)
    data = np.ascontiguousarray(block, dtype=np.float64).reshape(shape)
    if not tol > 0 or float(data.max()) == float(data.min()):
        return None
    try:
        stream = bytes(ic.sperr_encode(data, tol, "pwe"))
    except Exception:  # noqa: BLE001 - SPERR refused the block: the predictive code stays
        return None
    payload = MAGIC + bytes([_VERSION]) + stream
    try:
        decoded = decode(payload, block.dtype, block.shape)
    except FormatError:  # a stream our reader would refuse (an empty chunk of a block whose
        return None  # values all lie within the bound): the other codings stay
    error = np.abs(decoded.astype(np.float64) - block.astype(np.float64)).max()
    return payload if error <= bound else None


def decode(payload: bytes, dtype: np.dtype, shape3: tuple[int, ...]) -> np.ndarray:
    """The block a SPERR payload codes, in ``dtype``.

    Raises
    ------
    FormatError
        Not such a payload, an unknown version, a stream that does not declare the block's
        size, or one SPERR cannot decode; or SPERR is not installed.
    """
    from ..hybrid.headers import check_sperr_header

    if len(payload) < 4 or not is_sperr_block(payload):
        raise FormatError("not a SPERR-coded bounded block")
    if payload[3] != _VERSION:
        raise FormatError(f"unsupported SPERR bounded block version {payload[3]}")
    ic = codec_module("SPERR")
    if ic is None:  # pragma: no cover - a dependency of napari-sciz
        raise FormatError("this bounded file needs SPERR (imagecodecs) to decode")
    shape = _plane_shape(shape3)
    stream = payload[4:]
    check_sperr_header(stream, shape)  # before SPERR allocates what the stream declares
    try:
        values = np.asarray(ic.sperr_decode(stream, shape=shape, dtype=np.float64))
    except Exception as exc:  # noqa: BLE001 - any SPERR failure means a bad stream
        raise FormatError(f"SPERR bounded block cannot be decoded: {exc}") from exc
    if values.size != math.prod(shape3):
        raise FormatError("SPERR bounded block does not match the block's shape")
    return wavelet_values_as(values.reshape(shape3), dtype, "SPERR")
