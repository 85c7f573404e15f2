"""Byte layout of a segmentation lock (the file's last payload; see ``docs/format.md``).

::

    "SZK" u8 version (1), u8 spatial dims (2 or 3), 3 x f64 sigmas (unused axes 0),
    f64 context threshold, f64 target threshold, f64 margin,
    u32 crc32 of the contexts, u32 crc32 of the flags, u8 contexts,
    varint flagged voxels per context | ANS u32 words

All little-endian.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from ...errors import FormatError
from ..bitstream.layout import _varint, payload_head
from ..lossy.entropy import _read_varint
from .geometry import N_CONTEXTS

MAGIC = b"SZK"
VERSION = 1
_HEAD = struct.Struct("<3sBB3d3dIIB")


@dataclass(frozen=True)
class LockPayload:
    """A parsed segmentation lock.

    Attributes
    ----------
    sigmas : tuple of float
        The smoothing's Gaussian sigma per spatial axis (voxels).
    context_threshold : float
        The Otsu level of the smoothed base decode (the contexts' surface).
    threshold, margin : float
        The level the corrected volume is locked to, and the margin kept from it.
    context_crc, flags_crc : int
        CRC32 of the contexts (uint8) and of the flags (uint8) the encoder had.
    ones : numpy.ndarray
        Flagged voxels per context (uint64).
    words : bytes
        The ANS stream.
    """

    sigmas: tuple[float, ...]
    context_threshold: float
    threshold: float
    margin: float
    context_crc: int
    flags_crc: int
    ones: np.ndarray
    words: bytes

    def pack(self) -> bytes:
        """The payload's bytes."""
        sig = (*self.sigmas, *([0.0] * (3 - len(self.sigmas))))
        head = _HEAD.pack(
            MAGIC, VERSION, len(self.sigmas), *sig, self.context_threshold, self.threshold,
            self.margin, self.context_crc, self.flags_crc, N_CONTEXTS,
        )  # fmt: skip
        return head + b"".join(_varint(int(k)) for k in self.ones) + self.words

    @classmethod
    def parse(cls, data: bytes, spatial_ndim: int) -> LockPayload:
        """Parse ``data`` (:class:`~napari_sciz.errors.FormatError` when it is not valid)."""
        ndim, *rest = payload_head(data, _HEAD, MAGIC, VERSION, "segmentation lock")
        sig, (t_ctx, t, margin), (ctx_crc, flags_crc, n_ctx) = rest[:3], rest[3:6], rest[6:]
        if ndim != spatial_ndim or n_ctx != N_CONTEXTS:
            raise FormatError("segmentation lock: does not fit the file's volume")
        sigmas = tuple(float(s) for s in sig[:ndim])
        values = (*sigmas, t_ctx, t, margin)
        if not all(math.isfinite(v) for v in values) or min(sigmas) <= 0 or margin < 0:
            raise FormatError("segmentation lock: invalid parameters")
        pos, counts = _HEAD.size, []
        for _ in range(N_CONTEXTS):
            try:
                value, pos = _read_varint(data, pos)
            except FormatError as exc:
                raise FormatError("segmentation lock: truncated payload") from exc
            counts.append(value)
        ones = np.array(counts, np.uint64)
        return cls(sigmas, t_ctx, t, margin, ctx_crc, flags_crc, ones, bytes(data[pos:]))
