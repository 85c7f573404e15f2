"""Byte layout of a segmentation lock (the file's last payload; see ``docs/format.md``).

Version 2 (written since session 54)::

    "SZK" u8 version (2), u8 spatial dims (2 or 3), f32 sigma per spatial axis,
    f32 target threshold - context threshold, f32 margin,
    u32 crc32 of the contexts, u32 crc32 of the flags,
    5 bytes: a bit per context (LSB first) set when its count follows,
    varint flagged voxels of each context whose bit is set | ANS u32 words

The context threshold is not stored: it is the Otsu level of the smoothed base decode,
which the decoder computes from its own decode (the contexts' checksum checks it). Version 1
(read only; 96 bytes or more before the words)::

    "SZK" u8 version (1), u8 spatial dims (2 or 3), 3 x f64 sigmas (unused axes 0),
    f64 context threshold, f64 target threshold, f64 margin,
    u32 crc32 of the contexts, u32 crc32 of the flags, u8 contexts,
    varint flagged voxels per context | ANS u32 words

All little-endian. A lock payload is written once per volume (a stack's), so its fixed
fields count: version 2 takes 34 bytes in 2D before the counts.

A 2D time-lapse's frames share one lock (:class:`FramesLockPayload`, since session 55; the
frames of older files have a version-2 payload each, :mod:`.stacked`)::

    "SZF" u8 version (1), u8 spatial dims (2), f32 sigma per spatial axis, f32 margin,
    u32 crc32 of the contexts (every frame's, in order), u32 crc32 of the flags,
    varint frames, varint frames whose offset is not 0,
    for each of them: varint frame index minus the previous one's (first: the index), f32
    target threshold - context threshold (the frame's own levels, :meth:`LockPayload.levels`),
    5 bytes: a bit per context set when its count follows,
    varint flagged pixels of each context whose bit is set | ANS u32 words
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from ...errors import FormatError
from ..bitstream.layout import _varint, payload_head, read_varint
from .geometry import N_CONTEXTS

MAGIC = b"SZK"
VERSION = 2
_HEAD = struct.Struct("<3sBB3d3dIIB")  # (version 1)
_HEAD2 = struct.Struct("<3sBB")
_TAIL2 = struct.Struct("<ffII")
_BITMAP = (N_CONTEXTS + 7) // 8
FRAMES_MAGIC = b"SZF"
FRAMES_VERSION = 1
_FRAMES_HEAD = struct.Struct("<3sBB")


def stored(value: float) -> float:
    """``value`` as version 2 stores it (float32): the encoder computes with these values."""
    return float(np.float32(value))


@dataclass(frozen=True)
class LockPayload:
    """A parsed segmentation lock.

    Attributes
    ----------
    sigmas : tuple of float
        The smoothing's Gaussian sigma per spatial axis (voxels).
    context_threshold : float
        The Otsu level of the smoothed base decode (the contexts' surface; version 2: not
        stored, 0 here, :meth:`levels`).
    threshold, margin : float
        The level the corrected volume is locked to (version 2: its offset from the context
        threshold), and the margin kept from it.
    context_crc, flags_crc : int
        CRC32 of the contexts (uint8) and of the flags (uint8) the encoder had.
    ones : numpy.ndarray
        Flagged voxels per context (uint64).
    words : bytes
        The ANS stream.
    version : int
        1 (every level stored) or 2 (:data:`VERSION`: the context threshold is the
        decoder's to compute, :meth:`levels`; sigmas, margin and the threshold's offset
        from it as float32, :func:`stored`).
    """

    sigmas: tuple[float, ...]
    context_threshold: float
    threshold: float
    margin: float
    context_crc: int
    flags_crc: int
    ones: np.ndarray
    words: bytes
    version: int = VERSION

    def levels(self, smoothed: np.ndarray) -> tuple[float, float]:
        """The context threshold and the target threshold for the smoothed base decode
        ``smoothed`` (version 2: its Otsu level, and that plus the offset ``threshold``)."""
        if self.version == 1:
            return self.context_threshold, self.threshold
        from .geometry import otsu

        t_ctx = otsu(smoothed)
        return t_ctx, t_ctx + self.threshold

    def pack(self) -> bytes:
        """The payload's bytes (version 2: ``threshold`` is the offset from the context
        threshold, and it, the sigmas and the margin are float32 values, :func:`stored`)."""
        if self.version != VERSION:
            raise ValueError("only version-2 lock payloads are written")
        offset = self.threshold
        if any(stored(v) != v for v in (*self.sigmas, offset, self.margin)):
            raise ValueError("a lock's sigmas, offset and margin must be float32 values")
        head = _HEAD2.pack(MAGIC, VERSION, len(self.sigmas))
        head += struct.pack(f"<{len(self.sigmas)}f", *self.sigmas)
        head += _TAIL2.pack(offset, self.margin, self.context_crc, self.flags_crc)
        return head + _pack_counts(self.ones) + self.words

    @classmethod
    def parse(cls, data: bytes, spatial_ndim: int) -> LockPayload:
        """Parse ``data`` (:class:`~napari_sciz.errors.FormatError` when it is not valid).

        A version-2 payload's levels are relative: ``context_threshold`` is 0 and
        ``threshold`` the offset from it (:meth:`levels` gives the real ones).
        """
        if data[3:4] == bytes([1]):
            return _parse_v1(data, spatial_ndim)
        (ndim,) = payload_head(data, _HEAD2, MAGIC, VERSION, "segmentation lock")
        if ndim != spatial_ndim:
            raise FormatError("segmentation lock: does not fit the file's volume")
        pos = _HEAD2.size + 4 * ndim
        if len(data) < pos + _TAIL2.size + _BITMAP:
            raise FormatError("segmentation lock: truncated payload")
        sigmas = tuple(float(s) for s in struct.unpack_from(f"<{ndim}f", data, _HEAD2.size))
        offset, margin, ctx_crc, flags_crc = _TAIL2.unpack_from(data, pos)
        _check(sigmas, (offset, margin), margin)
        ones, pos = _parse_counts(data, pos + _TAIL2.size)
        words = bytes(data[pos:])
        return cls(sigmas, 0.0, float(offset), float(margin), ctx_crc, flags_crc, ones, words, 2)


@dataclass(frozen=True)
class FramesLockPayload:
    """The one lock of a 2D time-lapse's frames (``"SZF"``, see the module's layout).

    Attributes
    ----------
    sigmas : tuple of float
        The smoothing's Gaussian sigma per axis of a frame (pixels; float32 values).
    margin : float
        The margin kept from each frame's threshold (float32 value).
    context_crc, flags_crc : int
        CRC32 of every frame's contexts (uint8), and of the flags, in frame order.
    frames : int
        Frames of the time-lapse.
    offsets : dict
        Frame index: its target threshold minus its context threshold (the frames not
        listed: 0), float32 values.
    ones : numpy.ndarray
        Flagged pixels per context over every frame (uint64).
    words : bytes
        The ANS stream of the flags of every frame (contexts pooled over the frames).
    """

    sigmas: tuple[float, ...]
    margin: float
    context_crc: int
    flags_crc: int
    frames: int
    offsets: dict[int, float]
    ones: np.ndarray
    words: bytes

    def pack(self) -> bytes:
        """The payload's bytes."""
        values = (*self.sigmas, self.margin, *self.offsets.values())
        if any(stored(v) != v for v in values):
            raise ValueError("a lock's sigmas, margin and offsets must be float32 values")
        head = _FRAMES_HEAD.pack(FRAMES_MAGIC, FRAMES_VERSION, len(self.sigmas))
        head += struct.pack(f"<{len(self.sigmas)}f", *self.sigmas)
        head += struct.pack("<fII", self.margin, self.context_crc, self.flags_crc)
        head += _varint(self.frames) + _varint(len(self.offsets))
        previous = 0
        for index in sorted(self.offsets):
            head += _varint(index - previous) + struct.pack("<f", self.offsets[index])
            previous = index
        return head + _pack_counts(self.ones) + self.words

    @classmethod
    def parse(cls, data: bytes, frames: int) -> FramesLockPayload:
        """Parse ``data``, the lock of a time-lapse of ``frames`` frames
        (:class:`~napari_sciz.errors.FormatError` when it is not valid)."""
        (ndim,) = payload_head(
            data, _FRAMES_HEAD, FRAMES_MAGIC, FRAMES_VERSION, "segmentation lock of frames"
        )
        pos = _FRAMES_HEAD.size
        if ndim != 2 or len(data) < pos + 4 * ndim + 12:
            raise FormatError("segmentation lock: truncated payload or not a time-lapse's")
        sigmas = tuple(float(s) for s in struct.unpack_from(f"<{ndim}f", data, pos))
        margin, ctx_crc, flags_crc = struct.unpack_from("<fII", data, pos + 4 * ndim)
        _check(sigmas, (margin,), margin)
        count, pos = _counted(data, pos + 4 * ndim + 12)
        listed, pos = _counted(data, pos)
        if count != frames or listed > frames:
            raise FormatError(f"segmentation lock: {count} frames' lock for {frames} frames")
        offsets: dict[int, float] = {}
        index = 0
        for k in range(listed):
            step, pos = _counted(data, pos)
            index += step
            if (k and not step) or index >= frames or len(data) < pos + 4:
                raise FormatError("segmentation lock: invalid frame offsets")
            (offsets[index],) = struct.unpack_from("<f", data, pos)
            pos += 4
        _check(sigmas, tuple(offsets.values()), margin)
        ones, pos = _parse_counts(data, pos)
        words = bytes(data[pos:])
        return cls(sigmas, float(margin), ctx_crc, flags_crc, count, offsets, ones, words)


def _pack_counts(ones: np.ndarray) -> bytes:
    """A bit per context with flags, then their counts (varints)."""
    bits = sum(1 << k for k, n in enumerate(ones) if int(n))
    return bits.to_bytes(_BITMAP, "little") + b"".join(_varint(int(n)) for n in ones if int(n))


def _parse_counts(data: bytes, pos: int) -> tuple[np.ndarray, int]:
    """The counts :func:`_pack_counts` wrote at ``pos``, and the position after them."""
    if len(data) < pos + _BITMAP:
        raise FormatError("segmentation lock: truncated payload")
    bits = int.from_bytes(data[pos : pos + _BITMAP], "little")
    if bits >> N_CONTEXTS:
        raise FormatError("segmentation lock: invalid parameters")
    pos += _BITMAP
    counts = []
    for k in range(N_CONTEXTS):
        value = 0
        if bits >> k & 1:
            value, pos = _counted(data, pos)
        counts.append(value)
    return np.array(counts, np.uint64), pos


def _counted(data: bytes, pos: int) -> tuple[int, int]:
    try:
        return read_varint(data, pos)
    except FormatError as exc:
        raise FormatError("segmentation lock: truncated payload") from exc


def _check(sigmas: tuple[float, ...], values: tuple[float, ...], margin: float) -> None:
    if not all(math.isfinite(v) for v in (*sigmas, *values)) or min(sigmas) <= 0 or margin < 0:
        raise FormatError("segmentation lock: invalid parameters")


def _parse_v1(data: bytes, spatial_ndim: int) -> LockPayload:
    """A version-1 payload (every level stored as f64)."""
    ndim, *rest = payload_head(data, _HEAD, MAGIC, 1, "segmentation lock")
    sig, (t_ctx, t, margin), (ctx_crc, flags_crc, n_ctx) = rest[:3], rest[3:6], rest[6:]
    if ndim != spatial_ndim or n_ctx != N_CONTEXTS:
        raise FormatError("segmentation lock: does not fit the file's volume")
    sigmas = tuple(float(s) for s in sig[:ndim])
    _check(sigmas, (t_ctx, t), margin)
    pos, counts = _HEAD.size, []
    for _ in range(N_CONTEXTS):
        value, pos = _counted(data, pos)
        counts.append(value)
    ones = np.array(counts, np.uint64)
    return LockPayload(sigmas, t_ctx, t, margin, ctx_crc, flags_crc, ones, bytes(data[pos:]), 1)
