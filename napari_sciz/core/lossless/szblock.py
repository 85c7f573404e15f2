"""Error-bounded blocks coded by SZ3 (bounded mode, model version 3).

SZ3 (the error-bounded compressor of the SZ family: interpolation and Lorenzo predictors with
the quantization *inside* the prediction loop, then Huffman and zstd) codes smooth data at
large bounds in fewer bytes than both the predictive coder's grid of step ``2E + 1`` and
SPERR's wavelets: at ``E = 16`` the FIB-SEM crop (15.0x against 12.4x) and 6 of 16 points on
scikit-image images nobody tuned on (retina 156x against 102x). The encoder codes a bounded
block with SZ3 too and keeps the smallest payload, after decoding it and checking every
voxel against the bound (:func:`encode`).

SZ3's decoder trusts its stream: a few changed bytes made it abort or segfault on 71 of 300
streams tried. Every SZ3 stream is therefore coded and decoded in a helper process
(:mod:`napari_sciz.core.helperproc`) whose memory and time are bounded; a crash there is a
:class:`~napari_sciz.errors.FormatError` here, never the end of napari. Where no helper
process can run (a frozen application without a Python interpreter), blocks are coded
without SZ3, and SZ3 blocks are decoded in this process with a warning.

SZ3 codes floats. Integer blocks are coded as float32 (exact below 2^24; float64 above) with
the bound ``floor(E)``, and the decode is rounded to the nearest integer, which cannot cross
the bound whatever way another machine's floating point rounds the predictions' last bits;
float blocks keep a margin of four units in the last place of their largest magnitude, as
SPERR blocks do (:mod:`.sperrblock`).

Payload::

    "SZ3" u8 version (1) u8 coded type (0: float32, 1: float64) | SZ3 stream
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from ...errors import FormatError
from .. import helperproc
from .values import codec_module, float_codec_tolerance, wavelet_values_as

__all__ = ["MAGIC", "decode", "decode_job", "encode", "encode_job", "is_sz3_block"]

MAGIC = b"SZ3"
_VERSION = 1
_TYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: the largest integer magnitude float32 holds exactly
_FLOAT32_EXACT = 1 << 24
#: what the helper's address space may grow by while it decodes, per byte of the output, and
#: on top of that (SZ3 holds the quantization codes, the Huffman tree and zstd's window)
_MEMORY_PER_BYTE, _MEMORY_BASE = 12, 256 << 20
#: seconds the helper has to answer, and per voxel on top (SZ3 decodes a 4 Mi-voxel block in
#: ~0.1 s here, 80 times less; some damaged streams make it loop)
_TIME_BASE, _TIME_PER_VOXEL = 2.0, 2e-6


def is_sz3_block(payload: bytes) -> bool:
    """Whether ``payload`` is an SZ3-coded bounded block."""
    return payload[:3] == MAGIC


def _squeezed(shape3: tuple[int, ...]) -> tuple[int, ...]:
    """The shape SZ3 codes: the block's without axes of one voxel (at least one axis)."""
    return tuple(n for n in shape3 if n > 1) or (1,)


def _coded_type(block: np.ndarray) -> np.dtype:
    if block.dtype == np.float32:
        return _TYPES[0]
    if block.dtype.kind in "iu":  # (Python integers: abs of int32's minimum overflows in numpy)
        largest = max(abs(int(block.min())), abs(int(block.max())))
        return _TYPES[0] if largest < _FLOAT32_EXACT else _TYPES[1]
    return _TYPES[1]


def encode_job(head: dict[str, Any], body: bytes) -> bytes:
    """The helper's job: the SZ3 stream of ``body`` (``head``: shape, dtype, bound)."""
    import imagecodecs

    data = np.frombuffer(body, dtype=head["dtype"]).reshape(head["shape"])
    return bytes(imagecodecs.sz3_encode(data, mode="abs", abs=float(head["bound"])))


def decode_job(head: dict[str, Any], body: bytes) -> bytes:
    """The helper's job: the values an SZ3 stream codes (``head``: shape, dtype)."""
    import imagecodecs

    shape, dtype = tuple(int(n) for n in head["shape"]), np.dtype(head["dtype"])
    values = np.asarray(imagecodecs.sz3_decode(body, shape, dtype))
    if values.dtype != dtype or values.size != math.prod(shape):
        raise ValueError("SZ3 decoded a different size or type than asked")
    return values.tobytes()


def encode(block: np.ndarray, bound: float) -> bytes | None:
    """The SZ3 payload of ``block`` (3D, ``(D, H, W)``) within ``bound``, or None when SZ3 or
    a helper process is missing, the block is flat, SZ3 fails or its decode misses the
    bound."""
    if codec_module("SZ3") is None or block.dtype.kind not in "iuf" or not block.size:
        return None
    tol = float_codec_tolerance(block, bound)
    if not tol > 0 or block.max() == block.min():
        return None
    coded = _coded_type(block)
    data = np.ascontiguousarray(block, dtype=coded)
    head = {"shape": list(_squeezed(block.shape)), "dtype": coded.str, "bound": tol}
    try:
        stream = helperproc.call(
            f"{__name__}:encode_job", head, memoryview(data).cast("B"),
            timeout=_TIME_BASE + _TIME_PER_VOXEL * block.size,
            memory=_MEMORY_BASE + _MEMORY_PER_BYTE * data.nbytes,
        )  # fmt: skip
    except (helperproc.HelperUnavailable, helperproc.HelperDied, helperproc.JobFailed):
        return None
    payload = MAGIC + bytes([_VERSION, _TYPES.index(coded)]) + stream
    try:
        decoded = decode(payload, block.dtype, block.shape)
    except FormatError:
        return None
    error = np.abs(decoded.astype(np.float64) - block.astype(np.float64)).max()
    return payload if error <= bound else None


def decode(payload: bytes, dtype: np.dtype, shape3: tuple[int, ...]) -> np.ndarray:
    """The block an SZ3 payload codes, in ``dtype``.

    Raises
    ------
    FormatError
        Not such a payload, an unknown version or coded type, or a stream SZ3 cannot decode
        (its decoder failed, crashed, ran out of its memory or time); or SZ3 is not
        installed.
    """
    if len(payload) < 5 or not is_sz3_block(payload):
        raise FormatError("not an SZ3-coded bounded block")
    if payload[3] != _VERSION:
        raise FormatError(f"unsupported SZ3 bounded block version {payload[3]}")
    if payload[4] >= len(_TYPES):
        raise FormatError(f"unknown coded type {payload[4]} of an SZ3 bounded block")
    if codec_module("SZ3") is None:  # pragma: no cover - a dependency of napari-sciz
        raise FormatError("this bounded file needs SZ3 (imagecodecs) to decode")
    coded = _TYPES[payload[4]]
    head = {"shape": list(_squeezed(shape3)), "dtype": coded.str}
    size = math.prod(shape3)
    try:
        raw = helperproc.call(
            f"{__name__}:decode_job", head, payload[5:],
            timeout=_TIME_BASE + _TIME_PER_VOXEL * size,
            memory=_MEMORY_BASE + _MEMORY_PER_BYTE * size * coded.itemsize,
        )  # fmt: skip
    except helperproc.HelperUnavailable:
        warnings.warn(
            "napari-sciz: no helper process can run here; an SZ3 block is decoded in this "
            "process", RuntimeWarning, stacklevel=2,
        )  # fmt: skip
        try:
            raw = decode_job(head, payload[5:])
        except Exception as exc:  # noqa: BLE001 - any SZ3 failure means a bad stream
            raise FormatError(f"SZ3 bounded block cannot be decoded: {exc}") from exc
    except helperproc.HelperDied as exc:
        raise FormatError(f"SZ3 bounded block cannot be decoded: SZ3 crashed ({exc})") from exc
    except helperproc.JobFailed as exc:
        raise FormatError(f"SZ3 bounded block cannot be decoded: {exc}") from exc
    if len(raw) != size * coded.itemsize:
        raise FormatError("SZ3 bounded block does not match the block's shape")
    return wavelet_values_as(np.frombuffer(raw, dtype=coded).reshape(shape3), dtype, "SZ3")
