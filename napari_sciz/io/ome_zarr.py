"""Reading and writing (OME-)Zarr stores: lazy, chunk by chunk, for arrays larger than memory.

Reading accepts a plain Zarr array, or an OME-Zarr image group (NGFF 0.4 ``multiscales`` in
the group attributes, or NGFF 0.5 under ``"ome"``), of which the full-resolution level is read
with its axis names and ``scale`` transformation. Writing produces an OME-Zarr 0.4 image (Zarr
format 2, one resolution level), which napari (``napari-ome-zarr``), Fiji (MoBIE/N5 viewers)
and ``ome-zarr-py`` open. The store is written into a temporary directory beside the target
and renamed into place when complete, so a failed or cancelled write leaves nothing behind.

``zarr`` is an optional dependency (the ``dask`` extra); without it these functions raise
:class:`~napari_sciz.errors.InvalidInputError` saying how to install it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, OutputExistsError
from .atomic import check_output_folder, exchange_paths, sweep_stale_temps, temp_name

__all__ = [
    "ZARR_EXTENSIONS",
    "check_zarr_output",
    "is_zarr_path",
    "open_zarr_image",
    "write_ome_zarr",
]

ZARR_EXTENSIONS = (".ome.zarr", ".zarr")
_NGFF_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
_UNIT_NAMES = {"µm": "micrometer", "nm": "nanometer", "mm": "millimeter", "s": "second"}
_UNIT_SHORT = {v: k for k, v in _UNIT_NAMES.items()}


def is_zarr_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a Zarr store (by its extension)."""
    return str(path).lower().rstrip("/").endswith(ZARR_EXTENSIONS)


def _zarr() -> Any:
    try:
        import zarr
    except ModuleNotFoundError as exc:  # pragma: no cover - zarr is in the test environment
        raise InvalidInputError(
            "reading or writing Zarr needs the zarr package: pip install 'napari-sciz[dask]'"
        ) from exc
    return zarr


def _multiscales(attrs: dict) -> list | None:
    if "multiscales" in attrs:
        return attrs["multiscales"]
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return ome["multiscales"]
    return None


def open_zarr_image(
    path: str | os.PathLike[str],
) -> tuple[Any, str | None, tuple[float, ...] | None, tuple[str, ...] | None]:
    """Open a Zarr array or an OME-Zarr image lazily.

    Parameters
    ----------
    path : path-like
        A ``.zarr`` / ``.ome.zarr`` directory.

    Returns
    -------
    tuple
        ``(array, axes, voxel_size, units)``: the lazy ``zarr.Array`` (full resolution), axis
        letters (``None`` when the store does not name them), and the physical step and unit of
        each axis (``None`` without calibration).

    Raises
    ------
    InvalidInputError
        Missing store, not a Zarr store, or an OME-Zarr group without a readable image.
    """
    zarr = _zarr()
    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"no such file: {p}")
    try:
        node = zarr.open(str(p), mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises many types for broken stores
        raise InvalidInputError(f"cannot read {p.name}: not a Zarr store ({exc})") from exc
    if isinstance(node, zarr.Array):
        return node, None, None, None
    ms = _multiscales(dict(node.attrs))
    if not ms:
        raise InvalidInputError(f"cannot read {p.name}: a Zarr group without OME multiscales")
    first = ms[0]
    datasets = first.get("datasets") or []
    if not datasets:
        raise InvalidInputError(f"cannot read {p.name}: OME multiscales without datasets")
    try:
        arr = node[datasets[0]["path"]]
    except (KeyError, TypeError) as exc:
        raise InvalidInputError(f"cannot read {p.name}: missing level {datasets[0]!r}") from exc
    axes_meta = first.get("axes")
    axes = None
    units: tuple[str, ...] | None = None
    if axes_meta:
        names = [a["name"] if isinstance(a, dict) else str(a) for a in axes_meta]
        axes = "".join(n[0].upper() for n in names)
        units = tuple(
            _UNIT_SHORT.get(str(a.get("unit", "")), str(a.get("unit", "")))
            if isinstance(a, dict)
            else ""
            for a in axes_meta
        )
    voxel: tuple[float, ...] | None = None
    for transform in datasets[0].get("coordinateTransformations") or []:
        if transform.get("type") == "scale":
            voxel = tuple(float(v) for v in transform["scale"])
    if voxel is not None and len(voxel) != arr.ndim:
        voxel = None
    if units is not None and (voxel is None or len(units) != arr.ndim):
        units = None if voxel is None else tuple("" for _ in voxel)
    if voxel is not None and units is None:
        units = tuple("" for _ in voxel)
    if axes is not None and (len(axes) != arr.ndim or len(set(axes)) != len(axes)):
        axes = None
    return arr, axes, voxel, units


def check_zarr_output(path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Check that a Zarr store may be written at ``path``, without writing anything.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``force`` is False, or it exists and is not a Zarr store (a
        directory that is not a store is never replaced).
    OutputFolderError
        The parent directory does not exist or is not writable.
    """
    target = Path(path)
    if os.path.lexists(target):
        if not force:
            raise OutputExistsError(f"{target} exists; use --force to overwrite")
        markers = (".zgroup", ".zarray", "zarr.json")
        if not target.is_dir() or not any((target / m).exists() for m in markers):
            raise OutputExistsError(f"{target} exists and is not a Zarr store; not replacing it")
    check_output_folder(target)
    return target


def _chunks_for(shape: Sequence[int], itemsize: int) -> tuple[int, ...]:
    """Chunks of about 4 MiB: whole rows and planes, as many leading planes as fit."""
    chunks = [1] * len(shape)
    chunks[-1] = int(shape[-1])
    if len(shape) >= 2:
        chunks[-2] = int(shape[-2])
    budget = max(1, (4 * 2**20) // max(1, itemsize * chunks[-1] * chunks[-2]))
    if len(shape) >= 3:
        chunks[-3] = int(min(shape[-3], budget))
    return tuple(chunks)


def _channels_before_space(
    shape: Sequence[int],
    axes: str,
    voxel_size: Sequence[float] | None,
    units: Sequence[str] | None,
    regions: Iterable[tuple[tuple[slice, ...], np.ndarray]],
) -> tuple[Any, str, Any, Any, Iterable[tuple[tuple[slice, ...], np.ndarray]]]:
    """A channels-last image (axes ending in ``C``, a decoded colour file) with that axis moved
    before its first spatial axis, as OME-Zarr orders axes (time, channel, space)."""
    at = min(i for i, a in enumerate(axes.upper()) if a in "ZYX")

    def moved(seq: Sequence[Any] | None) -> Any:
        return None if seq is None else (*seq[:at], seq[-1], *seq[at:-1])

    def moved_regions() -> Iterable[tuple[tuple[slice, ...], np.ndarray]]:
        for index, values in regions:
            # every axis as a slice (an integer index drops its axis from the values)
            padded = (*index, *[slice(None)] * (len(shape) - len(index)))
            full = tuple(
                slice(int(i), int(i) + 1) if isinstance(i, (int, np.integer)) else i for i in padded
            )
            extent = [len(range(*sl.indices(n))) for sl, n in zip(full, shape, strict=True)]
            values = np.asarray(values).reshape(extent)
            yield moved(full), np.moveaxis(values, -1, at)

    return moved(shape), "".join(moved(axes)), moved(voxel_size), moved(units), moved_regions()


def write_ome_zarr(
    path: str | os.PathLike[str],
    shape: Sequence[int],
    dtype: np.dtype,
    regions: Iterable[tuple[tuple[slice, ...], np.ndarray]],
    *,
    axes: str,
    voxel_size: Sequence[float] | None = None,
    units: Sequence[str] | None = None,
    force: bool = False,
) -> Path:
    """Write an OME-Zarr 0.4 image region by region, atomically.

    Parameters
    ----------
    path : path-like
        Target ``.zarr`` / ``.ome.zarr`` directory.
    shape, dtype : sequence of int, numpy.dtype
        The whole image.
    regions : iterable of (index, array)
        ``(tuple of slices, values)`` pairs that together cover the image; only one is held
        at a time.
    axes : str
        One letter per axis (``T``, ``C``, ``Z``, ``Y``, ``X``...).
    voxel_size, units : sequence, optional
        Physical step and unit per axis (the ``scale`` transformation and axis units).
    force : bool
        Replace an existing store.

    Returns
    -------
    pathlib.Path
        ``Path(path)``.
    """
    zarr = _zarr()
    target = check_zarr_output(path, force=force)
    if len(shape) >= 3 and axes.upper().endswith("C"):  # (NGFF: channels before space)
        shape, axes, voxel_size, units, regions = _channels_before_space(
            shape, axes, voxel_size, units, regions
        )
    sweep_stale_temps(target)
    tmp: Path | None = temp_name(target)
    try:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        arr = group.create_array(
            "0",
            shape=tuple(int(n) for n in shape),
            dtype=np.dtype(dtype),
            chunks=_chunks_for(shape, np.dtype(dtype).itemsize),
            fill_value=0,
        )
        for index, values in regions:
            arr[index] = values
        axes_meta = []
        for i, letter in enumerate(axes.lower()):
            entry: dict[str, Any] = {"name": letter}
            kind = _NGFF_AXIS_TYPES.get(letter)
            if kind:
                entry["type"] = kind
            unit = units[i] if units is not None else ""
            if unit and kind in ("space", "time"):
                entry["unit"] = _UNIT_NAMES.get(unit, unit)
            axes_meta.append(entry)
        scale = [float(v) for v in voxel_size] if voxel_size is not None else [1.0] * len(shape)
        group.attrs["multiscales"] = [
            {
                "version": "0.4",
                "name": target.name.split(".")[0],
                "axes": axes_meta,
                "datasets": [
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
                ],
            }
        ]
        old = exchange_paths(tmp, target)
        tmp = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
