"""Checks of user input: arrays, axes, ratios, and regions of interest."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InvalidInputError

__all__ = [
    "SUPPORTED_DTYPES",
    "check_array",
    "check_shape_dtype",
    "check_axes",
    "check_ratio",
    "check_decode_memory",
    "parse_roi",
    "default_axes",
    "check_calibration",
    "check_labels",
    "native_order",
    "narrowest_integer",
    "narrowed_integers",
]

#: dtypes that can be compressed (decoded arrays keep the dtype).
SUPPORTED_DTYPES = (
    *("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32"),
    *("float16", "float32", "float64"),
)
MIN_RATIO = 1.0
MAX_RATIO = 1e6
MAX_NDIM = 6


def default_axes(ndim: int) -> str:
    """Axis letters assumed for an array of ``ndim`` dimensions (``YX``, ``ZYX``, ``CZYX``...)."""
    return {2: "YX", 3: "ZYX", 4: "CZYX", 5: "TCZYX", 6: "QTCZYX"}.get(ndim, "")


def native_order(arr: np.ndarray) -> np.ndarray:
    """``arr`` in the machine's byte order (a copy only when it is not already: big-endian
    TIFF, zarr or memory-mapped data on a little-endian machine)."""
    if arr.dtype.isnative:
        return arr
    return arr.astype(arr.dtype.newbyteorder("="))


def check_array(data: Any) -> np.ndarray:
    """Validate an image array and return it as a numpy array (no copy when possible).

    Raises
    ------
    InvalidInputError
        For unsupported dtypes, dimensionality, empty or 1-pixel images and NaN/Inf values.
    """
    try:
        arr = np.asarray(data)
    except Exception as exc:  # noqa: BLE001 - any array-like failure is a user input problem
        raise InvalidInputError(f"cannot read the input as an array: {exc}") from exc
    if arr.dtype.kind in "iu" and arr.dtype.itemsize == 8 and arr.size:
        raise InvalidInputError(_narrower_hint(arr))
    check_shape_dtype(arr.shape, arr.dtype)
    arr = native_order(arr)
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            bad = int(arr.size - np.count_nonzero(finite))
            raise InvalidInputError(f"the image contains {bad} NaN or infinite values")
    return arr


def narrowest_integer(lo: int, hi: int) -> np.dtype | None:
    """The smallest supported integer type that holds every value from ``lo`` to ``hi``
    (uint8, int8, uint16, int16, uint32, int32 in that order), or None."""
    for name in ("uint8", "int8", "uint16", "int16", "uint32", "int32"):
        info = np.iinfo(name)
        if info.min <= lo and hi <= info.max:
            return np.dtype(name)
    return None


def narrowed_integers(array: np.ndarray, what: str = "values") -> np.ndarray:
    """A 64-bit integer array (numpy's default integer, napari's labels) in the smallest
    supported integer type that holds its values (every value kept); other arrays as they are.

    Raises
    ------
    InvalidInputError
        Values that do not fit 32-bit integers (the message calls them ``what``).
    """
    if array.dtype.kind not in "iu" or array.dtype.itemsize < 8 or array.size == 0:
        return array
    lo, hi = int(array.min()), int(array.max())
    dtype = narrowest_integer(lo, hi)
    if dtype is None:
        raise InvalidInputError(
            f"{what} from {lo} to {hi} do not fit 32-bit integers, the largest .sciz stores"
        )
    return array.astype(dtype)


def _narrower_hint(arr: np.ndarray) -> str:
    """What to do with a 64-bit integer image (numpy's default integer, napari's labels):
    the smallest supported integer type that holds its values, when one does."""
    lo, hi = int(arr.min()), int(arr.max())
    message = f"unsupported dtype {arr.dtype.name} (64-bit integers)"
    dtype = narrowest_integer(lo, hi)
    if dtype is not None:
        return (
            f"{message}: its values ({lo} to {hi}) fit {dtype.name}, so "
            f"data.astype(np.{dtype.name}) keeps every value (a label image codes losslessly "
            "with mode='lossless')"
        )
    return f"{message}: its values ({lo} to {hi}) do not fit 32 bits, the most .sciz stores"


def check_shape_dtype(shape: Sequence[int], dtype: Any) -> None:
    """Validate an image's shape and dtype without looking at its values.

    Raises
    ------
    InvalidInputError
        For unsupported dtypes, dimensionality, empty or too small images.
    """
    shape = tuple(int(n) for n in shape)
    dtype = np.dtype(dtype)
    if dtype.name not in SUPPORTED_DTYPES:
        raise InvalidInputError(
            f"unsupported dtype {dtype.name}; supported: {', '.join(SUPPORTED_DTYPES)}"
        )
    if len(shape) < 2:
        raise InvalidInputError(f"need an image with at least 2 dimensions (YX), got shape {shape}")
    if len(shape) > MAX_NDIM:
        raise InvalidInputError(f"at most {MAX_NDIM} dimensions are supported, got shape {shape}")
    if math.prod(shape) == 0:
        raise InvalidInputError(f"the image is empty (shape {shape})")
    if shape[-1] < 2 or shape[-2] < 2:
        raise InvalidInputError(
            f"the image is too small to compress: its last two axes (YX) are {shape[-2:]}"
            "; need at least 2x2 pixels"
        )


def memory_cap() -> int:
    """Bytes a decode may allocate: 3/4 of this machine's physical memory (16 GiB if unknown)."""
    try:
        import os

        return int(0.75 * os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return 16 * 2**30


def check_decode_memory(nbytes: float, what: str = "this region") -> None:
    """Raise :class:`InvalidInputError` before a decode that would need more than
    :func:`memory_cap` bytes."""
    cap = memory_cap()
    if nbytes > cap:
        raise InvalidInputError(
            f"decoding {what} needs {nbytes / 2**30:.1f} GiB, more than the "
            f"{cap / 2**30:.1f} GiB this machine allows; decode a smaller region or scale"
        )


def check_axes(axes: str | None, ndim: int) -> str:
    """Validate axis letters (one per dimension, unique), or return the default for ``ndim``."""
    if axes is None or axes == "":
        return default_axes(ndim)
    axes = str(axes).upper()
    if len(axes) != ndim or len(set(axes)) != ndim or not axes.isalpha():
        raise InvalidInputError(
            f"axes {axes!r} do not describe a {ndim}-D array (one unique letter per axis)"
        )
    return axes


def check_ratio(ratio: Any) -> float:
    """Validate a target compression ratio."""
    try:
        value = float(ratio)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"ratio must be a number, got {ratio!r}") from exc
    if not math.isfinite(value) or value < MIN_RATIO or value > MAX_RATIO:
        raise InvalidInputError(
            f"ratio must be between {MIN_RATIO:g} and {MAX_RATIO:g}, got {ratio!r}"
        )
    return value


_RANGE = re.compile(r"^\s*(-?\d*)\s*(?::\s*(-?\d*)\s*)?$")


def _from_end(bound: int, n: int) -> int:
    """A region bound, negative ones counted from the end of an axis of ``n`` (Python's)."""
    return bound + n if bound < 0 else bound


def parse_roi(roi: Any, shape: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Turn a region of interest into ``(start, stop)`` per axis, checked against ``shape``.

    Parameters
    ----------
    roi : str, sequence or None
        ``None`` (everything); a string ``"z0:z1,y0:y1,x0:x1"`` (bounds may be empty, a single
        number selects one plane); or a sequence of slices, ``(start, stop)`` pairs or ints. When
        fewer entries than axes are given they apply to the last axes. Negative bounds and
        indices count from the end of their axis, as in Python (``"-3:"``: the last three).
    shape : sequence of int
        Shape of the array.

    Raises
    ------
    InvalidInputError
        If the region is malformed, empty or outside the array.
    """
    ndim = len(shape)
    if roi is None:
        return tuple((0, int(n)) for n in shape)
    entries: list[Any]
    if isinstance(roi, str):
        parts = [p for p in roi.split(",")]
        entries = []
        for part in parts:
            m = _RANGE.match(part)
            if m is None or (m.group(1) == "" and m.group(2) is None and ":" not in part):
                raise InvalidInputError(
                    f"cannot parse region {roi!r}; expected e.g. '0:10,20:120,30:130'"
                )
            a, b = m.group(1), m.group(2)
            if ":" not in part:
                entries.append(int(a))
            else:
                entries.append(slice(int(a) if a else None, int(b) if b else None))
    else:
        try:
            entries = list(roi)
        except TypeError as exc:
            raise InvalidInputError(
                f"cannot understand region {roi!r}; give a string like '0:10,20:30,:' or one "
                "slice, (start, stop) pair or index per axis"
            ) from exc
    if len(entries) > ndim:
        raise InvalidInputError(f"region has {len(entries)} axes but the image has {ndim}")
    entries = [slice(None)] * (ndim - len(entries)) + entries
    out = []
    for axis, (entry, n) in enumerate(zip(entries, shape, strict=True)):
        if isinstance(entry, slice):
            if entry.step not in (None, 1):
                raise InvalidInputError("region slices cannot have a step")
            bounds = (entry.start, entry.stop)
        elif isinstance(entry, (int, np.integer)):
            bounds = (entry, int(entry) + 1)
        elif isinstance(entry, Sequence) and not isinstance(entry, str) and len(entry) == 2:
            bounds = (entry[0], entry[1])
        else:
            raise InvalidInputError(f"cannot understand region entry {entry!r} for axis {axis}")
        if not all(b is None or isinstance(b, (int, np.integer)) for b in bounds):
            raise InvalidInputError(
                f"region bounds must be integers, got {entry!r} for axis {axis}"
            )
        if isinstance(entry, (int, np.integer)) and entry < 0:  # (an index from the end)
            bounds = (int(entry) + int(n), int(entry) + int(n) + 1)
        start = 0 if bounds[0] is None else _from_end(int(bounds[0]), int(n))
        stop = int(n) if bounds[1] is None else _from_end(int(bounds[1]), int(n))
        if not 0 <= start < stop <= n:
            given = ":".join("" if b is None else str(int(b)) for b in bounds)
            raise InvalidInputError(
                f"region {given} is out of range for axis {axis} of size {n}"
                + ("" if given == f"{start}:{stop}" else f" ({start}:{stop})")
            )
        out.append((start, stop))
    return tuple(out)


def check_calibration(
    ndim: int, voxel_size: Sequence[float] | None, units: Sequence[str] | None
) -> None:
    """Raise :class:`InvalidInputError` unless voxel size and units have one entry per axis."""
    if voxel_size is not None and len(voxel_size) != ndim:
        raise InvalidInputError(f"voxel_size needs {ndim} values, got {len(voxel_size)}")
    if units is not None and len(units) != ndim:
        raise InvalidInputError(f"units needs {ndim} values, got {len(units)}")


def check_labels(labels: Any, guidance_mode: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """Validate segmentation-guidance labels (an array of the image's shape) or None."""
    if labels is None:
        return None
    if guidance_mode != "segmentation":
        raise InvalidInputError("labels are used by segmentation guidance only")
    try:
        label_arr = np.asarray(labels)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is a bad input
        raise InvalidInputError(f"labels could not be read as an array: {exc}") from exc
    if label_arr.shape != tuple(shape):
        raise InvalidInputError(
            f"labels must have the image's shape {tuple(shape)}, got {label_arr.shape}"
        )
    if not (np.issubdtype(label_arr.dtype, np.integer) or label_arr.dtype == bool):
        raise InvalidInputError(f"labels must be integers or booleans, not {label_arr.dtype}")
    if not np.any(label_arr > 0):  # (e.g. a new, unpainted labels layer)
        raise InvalidInputError(
            "the labels mark no object (no value above 0): paint the objects to keep, or leave "
            "the labels out to have the image segmented at its Otsu threshold"
        )
    return label_arr
