"""Isolated extreme voxels (hot pixels, zingers, dead pixels) coded exactly, apart from the rest.

A handful of voxels far outside the value range of everything else (a hot pixel at 65535 in a
CT slice whose tissue spans 0-1800, a zinger in a synchrotron projection) cost a lossy codec
far more than their number: HEVC's base maps the block's whole range onto its sample depth,
so the bulk keeps a fraction of its precision, and a wavelet codec spends its bits on the
spikes. 20 such voxels in a 16x256x256 CT cost the default codec 12.8 dB on the rest at 64x.

The encoder finds them (:func:`find_outliers`): at most :data:`MAX_SHARE` of the voxels (and at
least :data:`MIN_COUNT`), lying beyond the largest gap of the sorted values at either end of the
range, each end's gap at least as wide as the range left, and only when leaving them out
shrinks the range by at least :data:`RANGE_GAIN`. Each
is replaced by the median of its non-outlier neighbours before coding, and its position and
exact value are stored in one extra payload (:func:`encode_outliers`; ``docs/format.md``,
*Outlier payload*), which the reader writes back into every decoded region. The file's
``value_range`` is then the range of the coded voxels (the outliers lie outside it).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import FormatError
from .bitstream.layout import _varint, payload_head, read_varint

__all__ = [
    "MAX_SHARE",
    "MIN_COUNT",
    "RANGE_GAIN",
    "Outliers",
    "attach_outliers",
    "block_ends",
    "coded_share",
    "decode_outliers",
    "encode_outliers",
    "find_outliers",
    "merge_ends",
    "most_outliers",
    "outlier_bounds",
    "outlier_header",
    "outlier_note",
    "outside",
    "with_outlier_payload",
    "worth_listing",
]

#: at most this share of the voxels are taken as outliers ...
MAX_SHARE = 1e-4
#: ... or this many, whichever is more
MIN_COUNT = 16
#: the outliers must lie beyond a gap that leaves the other values at most this share of the
#: whole range
RANGE_GAIN = 0.5

_MAGIC = b"OUT"
_VERSION = 1
_HEAD = struct.Struct("<3sB")


@dataclass
class Outliers:
    """Outlier voxels of an array: flat (C order) indices, ascending, and their values;
    ``bounds``: the smallest and largest value of the other voxels, when known."""

    indices: np.ndarray  # int64
    values: np.ndarray  # the array's dtype
    bounds: tuple[float, float] | None = None

    def __len__(self) -> int:
        return int(self.indices.size)

    def cleaned(self, arr: np.ndarray) -> np.ndarray:
        """A copy of ``arr`` with every outlier replaced by the median of its non-outlier
        neighbours (the 3x3(x3) neighbourhood in the last two or three axes; the nearest
        in-range bound when it has none)."""
        out = np.array(arr, copy=True)
        flat = out.reshape(-1)
        is_out = np.zeros(arr.size, bool)
        is_out[self.indices] = True
        spatial = arr.shape[-3:] if arr.ndim >= 3 else arr.shape
        coords = np.array(np.unravel_index(self.indices, arr.shape))  # (ndim, n)
        lead = arr.ndim - len(spatial)
        offsets = np.array(np.meshgrid(*([(-1, 0, 1)] * len(spatial)), indexing="ij"))
        offsets = offsets.reshape(len(spatial), -1)  # (k, 27 or 9)
        near = coords[lead:, :, None] + offsets[:, None, :]  # (k, n, m)
        inside = np.all((near >= 0) & (near < np.array(spatial)[:, None, None]), axis=0)
        near = np.clip(near, 0, np.array(spatial)[:, None, None] - 1)
        full = np.concatenate([np.repeat(coords[:lead, :, None], near.shape[2], 2), near])
        idx = np.ravel_multi_index(tuple(full), arr.shape)
        usable = inside & ~is_out[idx]
        vals = np.where(usable, flat[idx].astype(np.float64), np.nan)
        have = usable.any(axis=1)
        if self.bounds is not None:
            lo, hi = self.bounds
        else:
            kept = flat[~is_out]
            lo, hi = (kept.min(), kept.max()) if kept.size else (0, 0)
        fallback = np.clip(flat[self.indices].astype(np.float64), lo, hi)
        median = np.full(len(self), np.nan)
        if have.any():
            median[have] = np.nanmedian(vals[have], axis=1)
        fill = np.where(have, median, fallback)
        if out.dtype.kind in "iu":
            fill = np.rint(fill)
        flat[self.indices] = fill.astype(out.dtype)
        return out

    def patch(
        self, region: np.ndarray, box: tuple[tuple[int, int], ...], shape: tuple[int, ...]
    ) -> np.ndarray:
        """Write the outliers that fall inside ``box`` (of an array of ``shape``) into
        ``region`` (the decoded ``box``), in place; returns ``region``."""
        if not len(self):
            return region
        coords = np.array(np.unravel_index(self.indices, shape))
        lo = np.array([a for a, _b in box])[:, None]
        hi = np.array([b for _a, b in box])[:, None]
        inside = np.all((coords >= lo) & (coords < hi), axis=0)
        if inside.any():
            local = tuple(coords[:, inside] - lo)
            region[local] = self.values[inside]
        return region


def find_outliers(arr: np.ndarray) -> Outliers | None:
    """The isolated extreme voxels of ``arr`` worth coding apart (see the module), or None.

    Reads ``arr`` slab by slab (:data:`_SLAB` values at a time), so it needs no copy of it.
    """
    k = most_outliers(arr.size)
    if k is None:
        return None
    flat = arr.reshape(-1)
    bounds = outlier_bounds(*_ends(flat, k + 1))
    if bounds is None:
        return None
    found = [start + np.flatnonzero(outside(part, bounds)) for start, part in _slabs(flat)]
    indices = np.concatenate(found).astype(np.int64)
    if not worth_listing(indices.size, arr.size):
        return None
    return Outliers(indices, flat[indices].copy(), bounds)


def outside(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """Where ``values`` are outliers: outside ``bounds`` (:func:`outlier_bounds`)."""
    lo, hi = bounds
    return (values > hi) | (values < lo)


def most_outliers(n: int) -> int | None:
    """How many of ``n`` voxels may be taken as outliers at one end (:data:`MAX_SHARE`,
    :data:`MIN_COUNT`), or None when the array is too small to have any."""
    k = min(max(MIN_COUNT, int(n * MAX_SHARE)), n // 2)
    return None if k < 1 or n < 4 * MIN_COUNT else k


def worth_listing(count: int, n: int) -> bool:
    """Whether ``count`` voxels beyond the bounds are listed (some, and not too many)."""
    k = most_outliers(n)
    return k is not None and 0 < count <= 2 * k


def outlier_bounds(top: np.ndarray, bottom: np.ndarray) -> tuple[float, float] | None:
    """The range ``(lo, hi)`` of the voxels that are not outliers, from the ``k + 1`` largest
    and smallest values of an array (ascending, :func:`block_ends` merged), or None when
    there are no outliers worth coding apart. Every voxel outside ``[lo, hi]`` is one; ``lo``
    and ``hi`` are values of the array."""
    lo_all, hi_all = bottom[0], top[-1]
    span = hi_all - lo_all
    if not span > 0:
        return None
    # each end: the largest gap among its k + 1 values; beyond it, outliers, when the gap is
    # at least as wide as what is left of the range (an end without such a gap is kept)
    hi_cut, lo_cut = _cut(top), _cut(-bottom[::-1])
    hi_bound = top[hi_cut] if hi_cut is not None else hi_all
    lo_bound = bottom[::-1][lo_cut] if lo_cut is not None else lo_all
    rest = hi_bound - lo_bound
    if hi_cut is not None and top[hi_cut + 1] - hi_bound < rest:
        hi_bound = hi_all
    if lo_cut is not None and lo_bound - bottom[::-1][lo_cut + 1] < rest:
        lo_bound = lo_all
    if hi_bound - lo_bound > RANGE_GAIN * span:
        return None
    return float(lo_bound), float(hi_bound)


def block_ends(block: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` largest and ``m`` smallest values of ``block``, ascending (float64); those of
    the blocks of an array merge into the array's (:func:`merge_ends`)."""
    return _ends(block.reshape(-1), m)


def merge_ends(ends: list[tuple[np.ndarray, np.ndarray]], m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` largest and smallest values of an array from its blocks' :func:`block_ends`."""
    top = np.sort(np.concatenate([t for t, _b in ends]))[-m:]
    bottom = np.sort(np.concatenate([b for _t, b in ends]))[:m]
    return top, bottom


#: values of the flattened array read at a time
_SLAB = 1 << 22


def _slabs(flat: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, flat.size, _SLAB):
        yield start, flat[start : start + _SLAB]


def _ends(flat: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` largest and ``m`` smallest values of ``flat``, ascending (float64)."""
    tops, bottoms = [], []
    for _start, part in _slabs(flat):
        j = min(m, part.size)
        parted = np.partition(part, (j - 1, part.size - j)) if part.size > j else part
        tops.append(parted[part.size - j :].astype(np.float64))
        bottoms.append(parted[:j].astype(np.float64))
    top, bottom = np.concatenate(tops), np.concatenate(bottoms)
    return np.sort(top)[-m:], np.sort(bottom)[:m]


def _cut(ascending: np.ndarray) -> int | None:
    """Index of the value just before the largest gap of ``ascending`` values (one end of
    the range), or None when they are all equal."""
    gaps = np.diff(ascending)
    if gaps.size == 0 or not gaps.max() > 0:
        return None
    return int(np.argmax(gaps))


def encode_outliers(out: Outliers, dtype: np.dtype) -> bytes:
    """The outlier payload: magic, version, count, ascending indices as LEB128 gaps, values
    in the array's dtype (little-endian)."""
    gaps = np.diff(out.indices, prepend=0)
    body = bytearray(_HEAD.pack(_MAGIC, _VERSION))
    body += _varint(len(out))
    for g in gaps.tolist():
        body += _varint(int(g))
    body += np.asarray(out.values, np.dtype(dtype).newbyteorder("<")).tobytes()
    return bytes(body)


def decode_outliers(payload: bytes, dtype: np.dtype, size: int) -> Outliers:
    """Read an outlier payload of an array of ``size`` voxels.

    Raises
    ------
    FormatError
        Bad magic or version, indices not ascending or out of the array, or a truncated or
        overlong payload.
    """
    payload_head(payload, _HEAD, _MAGIC, _VERSION, "outlier list")
    pos = _HEAD.size
    count, pos = read_varint(payload, pos)
    if count > size or count > len(payload):
        raise FormatError("outlier payload lists more voxels than it can hold")
    gaps = np.empty(count, np.int64)
    for i in range(count):
        gaps[i], pos = read_varint(payload, pos)
    indices = np.cumsum(gaps)
    if count and (indices[-1] >= size or np.any(gaps[1:] == 0)):
        raise FormatError("outlier payload indices are outside the array or repeated")
    dt = np.dtype(dtype).newbyteorder("<")
    if len(payload) - pos != count * dt.itemsize:
        raise FormatError("outlier payload has the wrong length")
    values = np.frombuffer(payload, dt, count, pos).astype(np.dtype(dtype))
    return Outliers(indices, values)


#: bytes an outlier list adds to a file besides its payload: its index entry (8) and the
#: header's ``outliers`` key (about 30, deflated)
_FILE_BYTES = 40


def coded_share(found: Outliers, dtype: np.dtype, file_bytes: float) -> float | None:
    """Bytes left for the rest of a file of ``file_bytes`` once ``found`` is stored, or None
    when the list would take more than half of it (a tiny file: coded as it is)."""
    extra = len(encode_outliers(found, dtype)) + _FILE_BYTES
    room = file_bytes - extra
    return room if room >= 0.5 * file_bytes else None


def attach_outliers(result: Any, original: np.ndarray, found: Outliers, ratio: float) -> Any:
    """``result`` (a :class:`~napari_sciz.core.result.CompressResult` of the cleaned array)
    with ``found`` appended as the file's last payload, the header saying so, and the
    reconstruction and its metrics those of the ``original``."""
    from .metrics import max_abs_error, psnr, ssim

    header, blob = with_outlier_payload(result.data, result.header, found, ratio)
    recon = result.reconstruction
    recon.reshape(-1)[found.indices] = found.values
    note = outlier_note(found, result.header)
    return replace(
        result,
        data=blob,
        header=header,
        nbytes=len(blob),
        ratio=original.nbytes / len(blob),
        reconstruction=recon,
        psnr=psnr(original, recon),
        ssim=ssim(original, recon),
        max_error=max_abs_error(original, recon),
        messages=[*result.messages, note],
    )


def with_outlier_payload(
    data: bytes, header: dict, found: Outliers, ratio: float
) -> tuple[dict, bytes]:
    """The header and bytes of the file ``data`` (of the cleaned array; ``header``: its
    header) with ``found`` listed as its last payload (:func:`outlier_header`)."""
    from .bitstream import container

    new_header = outlier_header(header, found, ratio)
    with container.SciZFile(data) as f:
        payloads = [f.payload(i) for i in range(f.n_payloads)]
    dtype = np.dtype(header["dtype"])
    return new_header, container.pack(new_header, [*payloads, encode_outliers(found, dtype)])


def outlier_header(header: dict, found: Outliers, ratio: float) -> dict:
    """``header`` (of the file of the cleaned array) for the file that also lists ``found``:
    the ``outliers`` key, the model version that has it, the ratio asked for."""
    from .header import OUTLIER_MODEL_VERSION

    model = header["model"]
    return {
        **header,
        "model": {**model, "version": max(int(model["version"]), OUTLIER_MODEL_VERSION)},
        "outliers": {"version": 1, "count": len(found)},
        "target_ratio": float(ratio),
    }


def outlier_note(found: Outliers, header: dict) -> str:
    """The message of a file that lists ``found`` (``header``: its header)."""
    lo, hi = header["value_range"]
    return (
        f"{len(found)} outlier voxels (hot pixels or spikes beyond {hi} or below {lo}, the "
        "range of the rest) are stored exactly, apart from the coded volume"
    )
