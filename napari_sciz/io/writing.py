"""Writing image stacks atomically: TIFF (ImageJ hyperstack or plain, with calibration),
OME-TIFF and ``.npy``, whole or plane by plane."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, SciZError
from .atomic import atomic_write, check_output
from .formats import LENGTH_IN_UM, check_extension, default_axes, normalize_unit, one_line

__all__ = ["write_image", "write_image_planes"]

#: Arrays larger than this are written as BigTIFF.
_BIGTIFF_THRESHOLD = 2 * 2**30
_IMAGEJ_DTYPES = frozenset({"u1", "u2", "i2", "f4"})


def _check_metadata(
    ndim: int,
    axes: str | None,
    voxel_size: Sequence[float] | None,
    units: Sequence[str] | None,
) -> tuple[str, tuple[float, ...] | None, tuple[str, ...] | None]:
    axes = default_axes(ndim) if axes is None else str(axes).upper()
    if len(axes) != ndim:
        raise InvalidInputError(f"axes {axes!r} do not match an array with {ndim} dimensions")
    if not axes.isalpha() or (len(set(axes)) != len(axes) and "Q" not in axes):
        raise InvalidInputError(f"axes must be distinct letters, got {axes!r}")
    sizes: tuple[float, ...] | None = None
    if voxel_size is not None:
        sizes = tuple(float(v) for v in voxel_size)
        if len(sizes) != ndim:
            raise InvalidInputError(
                f"voxel_size has {len(sizes)} values for an array with {ndim} dimensions"
            )
        if not all(math.isfinite(v) and v > 0 for v in sizes):
            raise InvalidInputError(f"voxel sizes must be positive and finite, got {sizes}")
    unit_t: tuple[str, ...] | None = None
    if units is not None:
        unit_t = tuple(normalize_unit(u) for u in units)
        if len(unit_t) != ndim:
            raise InvalidInputError(f"units has {len(unit_t)} values for {ndim} dimensions")
    if sizes is not None and unit_t is None:
        unit_t = tuple("" for _ in sizes)
    return axes, sizes, unit_t


#: dtypes a TIFF holds as RGB(A) pixels
_RGB_DTYPES = frozenset({"u1", "u2"})


def _colour_layout(shape: Sequence[int], dtype: np.dtype, axes: str) -> str | None:
    """How a TIFF holds an array whose last axis is ``C`` (colour samples or channels last,
    :mod:`napari_sciz.core.colour`): ``"rgb"``, as RGB(A) pixels (3 or 4 samples of uint8 or
    uint16), or ``"first"``, as planes of a channel axis before Y; None for other arrays.
    Written as they are, the samples would be taken for the X axis of a stack of images."""
    if len(shape) < 3 or not axes.endswith("C"):
        return None
    if shape[-1] in (3, 4) and np.dtype(dtype).str[1:] in _RGB_DTYPES:
        return "rgb"
    return "first"


def _channels_first(axes: str, *per_axis: tuple[Any, ...] | None) -> list[Any]:
    """``axes`` (ending in C) and each per-axis tuple with the last entry moved before Y."""
    out: list[Any] = []
    for seq in (axes, *per_axis):
        if seq is None:
            out.append(None)
            continue
        moved = (*seq[:-3], seq[-1], *seq[-3:-1])
        out.append("".join(moved) if isinstance(seq, str) else tuple(moved))
    return out


def write_image(
    path: str | os.PathLike[str],
    data: np.ndarray,
    *,
    axes: str | None = None,
    voxel_size: Sequence[float] | None = None,
    units: Sequence[str] | None = None,
    force: bool = False,
    inputs: Iterable[object] = (),
) -> Path:
    """Write an array to TIFF, OME-TIFF or ``.npy``, atomically.

    The format follows the file name: ``.ome.tif``/``.ome.tiff`` give OME-TIFF (OME-XML with
    ``PhysicalSize*``/``TimeIncrement``); ``.tif``/``.tiff`` give an ImageJ hyperstack when
    ImageJ can represent it (dtype uint8, uint16, int16 or float32; axes an ordered subset of
    ``TZCYX``; one length unit for X/Y/Z; at most 2 GiB), otherwise a plain TIFF whose JSON
    description records axes, voxel size and units (read back by :func:`read_image`), with X/Y
    resolution tags when the units are lengths. An array whose axes end in ``C`` (colour
    samples last) is written as RGB(A) pixels when it holds 3 or 4 uint8 or uint16 samples, and
    with that axis moved before Y otherwise. Arrays over 2 GiB are written as BigTIFF. ``.npy``
    stores the array only (no calibration). The file is written to a temporary file in the same
    directory and moved into place (see :mod:`napari_sciz.io.atomic`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    data : numpy.ndarray
        The array (any real numeric dtype).
    axes : str, optional
        One letter per dimension; default from :func:`default_axes`.
    voxel_size : sequence of float, optional
        Physical step along each axis.
    units : sequence of str, optional
        Unit of each step (``"µm"``, ``"nm"``, ``"s"``, ``""``...).
    force : bool, default False
        Overwrite an existing file.
    inputs : iterable of paths, optional
        Files that must never be overwritten (even with ``force``).

    Returns
    -------
    pathlib.Path
        ``Path(path)``.

    Raises
    ------
    InvalidInputError
        Unsupported extension, non-numeric data, or metadata that does not match the array.
    OutputExistsError
        ``path`` exists and ``force`` is False, or ``path`` is one of ``inputs``.
    OSError
        The file cannot be written (missing directory, permissions, disk full).
    """
    p = Path(path)
    ext = check_extension(p)
    arr = np.asarray(data)
    _check_writable_dtype(ext, arr.dtype)
    axes, sizes, unit_t = _check_metadata(arr.ndim, axes, voxel_size, units)
    check_output(p, force=force, inputs=inputs)  # fail early, before any work
    if ext == ".npy":
        with atomic_write(p, force=force, inputs=inputs) as fh:
            np.save(fh, arr, allow_pickle=False)
        return p
    layout = _colour_layout(arr.shape, arr.dtype, axes)
    if layout == "first":
        arr = np.moveaxis(arr, -1, -3)
        axes, sizes, unit_t = _channels_first(axes, sizes, unit_t)
    kwargs = _tiff_kwargs(arr, axes, sizes, unit_t, ome=ext.startswith(".ome"), rgb=layout == "rgb")
    return _write_tiff(p, arr, kwargs, force, inputs)


def write_image_planes(
    path: str | os.PathLike[str],
    shape: Sequence[int],
    dtype: np.dtype,
    planes: Iterable[np.ndarray],
    *,
    axes: str | None = None,
    voxel_size: Sequence[float] | None = None,
    units: Sequence[str] | None = None,
    force: bool = False,
    inputs: Iterable[object] = (),
) -> Path:
    """Write an image given plane by plane (TIFF, OME-TIFF or ``.npy``), atomically.

    Like :func:`write_image` (same formats and metadata), but the pixels arrive as an iterable
    of 2D planes (the last two axes, leading axes in C order), so an image larger than memory
    can be written while it is decoded. ``.zarr`` targets go to
    :func:`napari_sciz.io.ome_zarr.write_ome_zarr`.

    Parameters
    ----------
    path : path-like
        Destination file.
    shape, dtype : sequence of int, numpy.dtype
        The whole image.
    planes : iterable of numpy.ndarray
        ``prod(shape[:-2])`` arrays of shape ``shape[-2:]``.
    axes, voxel_size, units, force, inputs
        As in :func:`write_image`.

    Returns
    -------
    pathlib.Path
        ``Path(path)``.
    """
    p = Path(path)
    ext = check_extension(p)
    shape = tuple(int(n) for n in shape)
    dt = np.dtype(dtype)
    _check_writable_dtype(ext, dt)
    axes, sizes, unit_t = _check_metadata(len(shape), axes, voxel_size, units)
    check_output(p, force=force, inputs=inputs)
    n_planes = math.prod(shape[:-2]) if len(shape) > 2 else 1
    plane_shape = shape[-2:]

    def checked() -> Iterable[np.ndarray]:
        count = 0
        for plane in planes:
            plane = np.ascontiguousarray(plane, dtype=dt)
            if plane.shape != plane_shape:
                raise InvalidInputError(f"plane of shape {plane.shape}, expected {plane_shape}")
            count += 1
            yield plane
        if count != n_planes:
            raise InvalidInputError(f"got {count} planes, expected {n_planes}")

    if ext == ".npy":
        with atomic_write(p, force=force, inputs=inputs) as fh:
            header = {
                "descr": np.lib.format.dtype_to_descr(dt),
                "fortran_order": False,
                "shape": shape,
            }
            np.lib.format.write_array_header_2_0(fh, header)
            for plane in checked():
                fh.write(plane.tobytes())
        return p
    meta_arr = _ArrayMeta(dt, math.prod(shape) * dt.itemsize)
    layout = _colour_layout(shape, dt, axes)
    pages: Iterable[np.ndarray] = checked()
    if layout is not None:  # the planes are rows of samples: gathered into whole images
        pages = _images(pages, shape[-3], layout == "first")
    if layout == "first":
        shape = (*shape[:-3], shape[-1], *shape[-3:-1])
        axes, sizes, unit_t = _channels_first(axes, sizes, unit_t)
    kwargs = _tiff_kwargs(
        meta_arr,  # type: ignore[arg-type]
        axes, sizes, unit_t, ome=ext.startswith(".ome"), rgb=layout == "rgb",
    )  # fmt: skip
    return _write_tiff(p, pages, {**kwargs, "shape": shape, "dtype": dt}, force, inputs)


def _images(rows: Iterable[np.ndarray], height: int, split: bool) -> Iterable[np.ndarray]:
    """Every ``height`` consecutive planes of ``rows`` (rows of an image whose samples are
    last) as one ``(Y, X, C)`` image, or, with ``split``, as its ``C`` planes."""
    batch: list[np.ndarray] = []
    for row in rows:
        batch.append(row)
        if len(batch) == height:
            image = np.stack(batch)
            batch = []
            if split:
                yield from (np.ascontiguousarray(image[..., c]) for c in range(image.shape[-1]))
            else:
                yield image


def _write_tiff(
    p: Path, data: Any, kwargs: dict[str, Any], force: bool, inputs: Iterable[object]
) -> Path:
    """``tifffile.imwrite`` into an atomic write of ``p``; tifffile's refusals as our errors."""
    import tifffile

    try:
        with atomic_write(p, force=force, inputs=inputs) as fh:
            tifffile.imwrite(fh, data, **kwargs)
    except (SciZError, OSError, MemoryError):
        raise
    except ValueError as exc:  # tifffile refusing the metadata / dtype
        raise InvalidInputError(f"cannot write {p.name}: {one_line(exc)}") from exc
    return p


@dataclass(frozen=True)
class _ArrayMeta:
    """dtype and size of an array that is never in memory as a whole."""

    dtype: np.dtype
    nbytes: int


def _xy_resolution(
    axes: str, sizes: tuple[float, ...] | None, units: tuple[str, ...] | None
) -> tuple[tuple[float, float], str] | None:
    """``((1/x, 1/y), unit)`` if X and Y share a unit, else None."""
    if sizes is None or units is None or "X" not in axes or "Y" not in axes:
        return None
    ix, iy = axes.index("X"), axes.index("Y")
    if units[ix] != units[iy]:
        return None
    return (1.0 / sizes[ix], 1.0 / sizes[iy]), units[ix]


def _check_writable_dtype(ext: str, dtype: np.dtype) -> None:
    """Refuse, before any work, data that the output format cannot hold."""
    if dtype.kind not in "biuf":
        raise InvalidInputError(f"cannot write data of type {dtype}")
    if ext.startswith(".ome") and dtype == np.float16:
        raise InvalidInputError(
            "OME-TIFF cannot hold float16 data: write a plain .tif or .npy instead"
        )


def _imagej_compatible(
    arr: np.ndarray, axes: str, sizes: tuple[float, ...] | None, units: tuple[str, ...] | None
) -> bool:
    if arr.dtype.str[1:] not in _IMAGEJ_DTYPES or arr.nbytes > _BIGTIFF_THRESHOLD:
        return False
    order = "TZCYX"
    if not axes.endswith("YX") or any(a not in order for a in axes):
        return False
    if [order.index(a) for a in axes] != sorted(order.index(a) for a in axes):
        return False
    if sizes is not None and units is not None:
        spatial = {u for a, u in zip(axes, units, strict=True) if a in "ZYX"}
        if len(spatial) > 1 or not all(u.isascii() or u == "µm" for u in spatial):
            return False
        if "T" in axes and units[axes.index("T")] not in ("s", ""):
            return False
    return True


def _tiff_kwargs(
    arr: np.ndarray,
    axes: str,
    sizes: tuple[float, ...] | None,
    units: tuple[str, ...] | None,
    *,
    ome: bool,
    rgb: bool = False,
) -> dict[str, Any]:
    big = arr.nbytes > _BIGTIFF_THRESHOLD
    pixels: dict[str, Any] = {"photometric": "minisblack"}
    if rgb:  # (the last axis: 3 samples, or 4 with an alpha)
        pixels = {"photometric": "rgb"}
        if ome:
            axes = axes[:-1] + "S"  # (OME-TIFF's letter for samples)
    if ome:
        meta: dict[str, Any] = {"axes": axes}
        if sizes is not None and units is not None:
            for a, s, u in zip(axes, sizes, units, strict=True):
                if a in "XYZ":
                    meta[f"PhysicalSize{a}"] = s
                    if u:
                        meta[f"PhysicalSize{a}Unit"] = u
                elif a == "T":
                    meta["TimeIncrement"] = s
                    if u:
                        meta["TimeIncrementUnit"] = u
        return {"ome": True, "bigtiff": big, **pixels, "metadata": meta}
    res = _xy_resolution(axes, sizes, units)
    if not rgb and _imagej_compatible(arr, axes, sizes, units):
        meta = {"axes": axes}
        kwargs: dict[str, Any] = {"imagej": True, "metadata": meta}
        if sizes is not None and units is not None:
            unit = next((u for a, u in zip(axes, units, strict=True) if a in "XYZ"), "")
            if unit:
                meta["unit"] = "micron" if unit == "µm" else unit
            if res is not None:
                kwargs["resolution"] = res[0]
            if "Z" in axes:
                meta["spacing"] = sizes[axes.index("Z")]
            if "T" in axes:
                meta["finterval"] = sizes[axes.index("T")]
        return kwargs
    # plain TIFF with napari-sciz's JSON description
    meta = {"axes": axes}
    if sizes is not None and units is not None:
        meta["voxel_size"] = list(sizes)
        meta["units"] = list(units)
    kwargs = {"bigtiff": big, **pixels, "metadata": meta}
    if res is not None and res[1] in LENGTH_IN_UM:
        to_cm = LENGTH_IN_UM[res[1]] / 1e4  # size in cm = size * to_cm
        kwargs["resolution"] = (res[0][0] / to_cm, res[0][1] / to_cm)
        kwargs["resolutionunit"] = "CENTIMETER"
    return kwargs
