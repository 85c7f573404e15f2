"""Reading and writing image stacks: TIFF, OME-TIFF and ``.npy``, with axes and voxel size.

Axes conventions
----------------
Axes are upper-case letters, one per array dimension, last two ``"YX"``: ``T`` time, ``C``
channel, ``Z`` depth, ``Y``/``X`` in-plane. When a file does not name its axes (``.npy``, plain
multi-page TIFF, tifffile's ``Q``/``I`` "unknown"/"sequence" axes), the leading axes are named from
the right ``Z``, ``C``, ``T`` — so ``YX``, ``ZYX``, ``CZYX``, ``TCZYX`` by number of dimensions.
TIFF singleton axes are squeezed (never Y or X) together with their axis letter and voxel size;
``.npy`` arrays are returned with their stored shape. A samples axis ``S`` (RGB(A) pixels) is
named ``C`` where it is: last for contiguous pixels (``YXC``, as napari's RGB layers hold
them), first for planar ones; a file that also has channels gets its samples moved in front
of the spatial axes.

Voxel size and units
--------------------
``voxel_size`` has one physical size per axis and ``units`` one unit string per axis (``"µm"``,
``"nm"``, ``"s"``...; ``""`` and size 1.0 for uncalibrated axes such as channels), or both are
``None`` when the file carries no calibration. They are read from OME-XML (``PhysicalSize*``,
``TimeIncrement``), ImageJ metadata (resolution tags, ``spacing``, ``finterval``, ``unit``), the
JSON description napari-sciz writes into plain TIFFs, and TIFF resolution tags in centimetres,
millimetres or micrometres. ``.npy`` files carry no calibration.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, SciZError
from .calibration import tiff_calibration
from .formats import SUPPORTED_EXTENSIONS, check_extension, default_axes, one_line, stem
from .ome_zarr import ZARR_EXTENSIONS, is_zarr_path, open_zarr_image
from .writing import write_image, write_image_planes

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "ImageData",
    "default_axes",
    "read_image",
    "write_image",
    "write_image_planes",
]

#: Files larger than this are memory-mapped when their layout allows it.
_MMAP_THRESHOLD = 256 * 2**20


@dataclass
class ImageData:
    """An image array with its axes, physical calibration and name.

    Attributes
    ----------
    data : numpy.ndarray
        The pixels (possibly a read-only ``numpy.memmap`` for large files).
    axes : str
        One upper-case letter per dimension, e.g. ``"ZYX"``, ``"YX"``, ``"TYX"``, ``"CZYX"``.
    voxel_size : tuple of float or None
        Physical size of a step along each axis, or ``None`` if unknown.
    units : tuple of str or None
        Unit of each entry of ``voxel_size`` (``""`` for uncalibrated axes), or ``None``.
    name : str
        File name without its extension(s) (and ``"(series N)"`` for a TIFF series other
        than the first).
    series_count : int
        Image series in the file (a multi-position TIFF holds several; one is read).
    """

    data: np.ndarray
    axes: str
    voxel_size: tuple[float, ...] | None = None
    units: tuple[str, ...] | None = None
    name: str = ""
    series_count: int = 1


def read_image(path: str | os.PathLike[str], *, lazy: bool = False, series: int = 0) -> ImageData:
    """Read a TIFF, OME-TIFF, ``.npy`` or (OME-)Zarr image with its axes and voxel size.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.tif``/``.tiff`` (plain, ImageJ or OME), ``.ome.tif``/``.ome.tiff`` or ``.npy`` file,
        or a ``.zarr``/``.ome.zarr`` store (see :mod:`napari_sciz.io.ome_zarr`).
    lazy : bool
        Never read the whole image: ``data`` is then a read-only memory map (contiguous TIFF,
        ``.npy``), a lazy view of the TIFF's strips or tiles (compressed TIFF), or the lazy Zarr
        array; slicing it reads only what the slice needs.
    series : int
        Which image series of a TIFF file to read (a multi-position file holds several:
        ``series_count`` of the result says how many); other files hold one image.

    Returns
    -------
    ImageData
        The array (memory-mapped read-only when larger than 256 MiB and stored contiguously),
        axes, voxel size, units and name. See the module docstring for the conventions.

    Raises
    ------
    InvalidInputError
        If the file does not exist, has an unsupported extension, cannot be read or parsed,
        holds non-numeric data, or has no image series ``series``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> out = os.path.join(tempfile.mkdtemp(), "stack.tif")
    >>> _ = write_image(out, np.zeros((3, 8, 8), np.uint16), voxel_size=(2.0, 0.5, 0.5),
    ...                 units=("µm", "µm", "µm"))
    >>> img = read_image(out)
    >>> img.axes, img.voxel_size, img.units, img.name
    ('ZYX', (2.0, 0.5, 0.5), ('µm', 'µm', 'µm'), 'stack')
    """
    p = Path(path)
    if is_zarr_path(p):
        _single_series(p, series)
        return _read_zarr(p, lazy)
    ext = check_extension(p)
    if not p.exists():
        raise InvalidInputError(f"no such file: {p}")
    if not p.is_file():
        raise InvalidInputError(f"not a file: {p}")
    if ext == ".npy":
        _single_series(p, series)
    try:
        image = _read_npy(p, lazy) if ext == ".npy" else _read_tiff(p, lazy, series)
    except (SciZError, MemoryError):
        raise
    except Exception as exc:  # tifffile/numpy raise many types for broken files
        raise InvalidInputError(f"cannot read {p.name}: {one_line(exc)}") from exc
    if image.data.dtype.kind not in "biuf":
        raise InvalidInputError(f"cannot read {p.name}: unsupported data type {image.data.dtype}")
    return image


def _single_series(path: Path, series: int) -> None:
    """Refuse a series other than the first of a file that holds one image."""
    if series != 0:
        raise InvalidInputError(
            f"{path.name} holds a single image (series 0); image series are for TIFF files"
        )


def _series_of(tif: Any, path: Path, series: int) -> Any:
    """Series ``series`` of an open TIFF file (a clear error where it has none)."""
    count = len(tif.series)
    if not count:
        raise InvalidInputError(f"cannot read {path.name}: no image data in the file")
    if not 0 <= series < count:
        have = "one image series (0)" if count == 1 else f"{count} image series (0 to {count - 1})"
        raise InvalidInputError(f"{path.name} holds {have}, not series {series}")
    return tif.series[series]


def _read_zarr(path: Path, lazy: bool) -> ImageData:
    arr, axes, voxel_size, units = open_zarr_image(path)
    if arr.dtype.kind not in "biuf":
        raise InvalidInputError(f"cannot read {path.name}: unsupported data type {arr.dtype}")
    data = arr if lazy else np.asarray(arr[...])
    name = path.name.rstrip("/")
    for ext in ZARR_EXTENSIONS:
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return ImageData(
        data=data,
        axes=axes or default_axes(arr.ndim),
        voxel_size=voxel_size,
        units=units,
        name=name,
    )


class _SqueezedView:
    """Read-only lazy view of an array-like without some of its singleton axes."""

    def __init__(self, raw: Any, keep: Sequence[int]) -> None:
        self._raw = raw
        self._keep = list(keep)
        self.shape = tuple(int(raw.shape[i]) for i in self._keep)
        self.dtype = np.dtype(raw.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        full: list[Any] = [0] * len(self._raw.shape)
        for axis, k in zip(self._keep, key, strict=True):
            full[axis] = k
        return np.asarray(self._raw[tuple(full)])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[tuple(slice(None) for _ in self.shape)]
        return out if dtype is None else out.astype(dtype)


def _lazy_tiff(path: Path, shape: tuple[int, ...], axes: str, series: int) -> Any:
    """Strips/tiles of a TIFF series read on demand (through tifffile's Zarr store)."""
    import tifffile

    zarr = _zarr_module()
    store = tifffile.imread(path, aszarr=True, series=series)
    raw = zarr.open(store, mode="r")
    if isinstance(raw, zarr.Group):  # pyramidal file: level 0
        raw = raw["0"]
    if tuple(raw.shape) != shape:  # pragma: no cover - tifffile keeps them in sync
        raise InvalidInputError(f"cannot read {path.name} lazily: unexpected layout")
    if "S" in axes and "C" in axes and axes.index("S") != 0:
        raise InvalidInputError(
            f"cannot read {path.name} block by block: it has channels and colour samples; "
            "convert it to one channel per plane (or to Zarr) first"
        )
    return raw


def _zarr_module() -> Any:
    try:
        import zarr
    except ModuleNotFoundError as exc:  # pragma: no cover - zarr is in the test environment
        raise InvalidInputError(
            "reading a compressed TIFF block by block needs the zarr package: "
            "pip install 'napari-sciz[dask]'"
        ) from exc
    return zarr


def _read_npy(path: Path, lazy: bool = False) -> ImageData:
    mmap = "r" if lazy or path.stat().st_size > _MMAP_THRESHOLD else None
    data = np.load(path, mmap_mode=mmap, allow_pickle=False)
    if not isinstance(data, np.ndarray):  # pragma: no cover - np.load of .npy is an array
        raise InvalidInputError(f"cannot read {path.name}: not a single array")
    return ImageData(data=data, axes=default_axes(data.ndim), name=stem(path))


def _rename_unknown_axes(axes: str) -> str:
    """Name tifffile's unknown/sequence axes (``Q``, ``I``) Z, C, T from the right."""
    unknown = [i for i, a in enumerate(axes) if a in "QI"]
    if not unknown:
        return axes
    letters = list(axes)
    free = [c for c in "ZCT" if c not in axes]
    for i in reversed(unknown):
        letters[i] = free.pop(0) if free else "Q"
    return "".join(letters)


def _samples_as_channels(
    data: np.ndarray, axes: str, calib: dict[str, tuple[float, str]]
) -> tuple[np.ndarray, str]:
    """A TIFF's samples axis ``S`` named ``C``: kept last where the file stores its samples
    last (RGB(A) pixels: the array of napari's RGB layers, and ``sciz decompress`` writes it
    back as such pixels), moved before the spatial axes where the file has its own ``C``."""
    if "S" not in axes:
        return data, axes
    pos = axes.index("S")
    if "C" not in axes:
        calib.setdefault("C", calib.pop("S", (1.0, "")))
        return data, axes.replace("S", "C")
    first_spatial = min(axes.index(a) for a in "ZYX" if a in axes)
    if pos > first_spatial:  # (a file with channels and samples: samples before space)
        data = np.moveaxis(data, pos, first_spatial)
        rest = axes[:pos] + axes[pos + 1 :]
        axes = rest[:first_spatial] + "S" + rest[first_spatial:]
    return data, axes


def _read_tiff(path: Path, lazy: bool = False, series: int = 0) -> ImageData:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        found = _series_of(tif, path, series)
        count = len(tif.series)
        shape = tuple(found.shape)
        axes = str(found.axes).upper()
        data: Any = None
        if (lazy or path.stat().st_size > _MMAP_THRESHOLD) and found.dataoffset is not None:
            try:
                data = tifffile.memmap(path, series=series, mode="r").reshape(shape)
            except (ValueError, OSError):  # not memory-mappable: fall back to reading
                data = None
        calib = tiff_calibration(tif, path, series)
    name = stem(path) if series == 0 else f"{stem(path)} (series {series})"
    if data is None and lazy:
        raw = _lazy_tiff(path, shape, axes, series)
        keep = [i for i, (a, n) in enumerate(zip(axes, shape, strict=True)) if n != 1 or a in "YX"]
        data = _SqueezedView(raw, keep)
        # (samples and no C, checked by _lazy_tiff: renamed in place, nothing moved)
        data, axes = _samples_as_channels(data, "".join(axes[i] for i in keep), calib)
        axes = _rename_unknown_axes(axes)
        pairs = [calib.get(a, (1.0, "")) for a in axes] if calib else None
        return ImageData(
            data=data,
            axes=axes,
            voxel_size=None if pairs is None else tuple(float(s) for s, _ in pairs),
            units=None if pairs is None else tuple(u for _, u in pairs),
            name=name,
            series_count=count,
        )
    if data is None:
        with tifffile.TiffFile(path) as tif:
            data = np.asarray(tif.series[series].asarray()).reshape(shape)

    if len(axes) != data.ndim:  # pragma: no cover - defensive, tifffile keeps them in sync
        axes = default_axes(data.ndim)
    # squeeze singleton axes (never Y or X)
    keep = [i for i, (a, n) in enumerate(zip(axes, data.shape, strict=True)) if n != 1 or a in "YX"]
    if len(keep) != data.ndim:
        data = data.reshape(tuple(data.shape[i] for i in keep))
        axes = "".join(axes[i] for i in keep)
    data, axes = _samples_as_channels(data, axes, calib)
    axes = _rename_unknown_axes(axes)

    voxel_size: tuple[float, ...] | None = None
    units: tuple[str, ...] | None = None
    if calib:
        pairs = [calib.get(a, (1.0, "")) for a in axes]
        voxel_size = tuple(float(s) for s, _ in pairs)
        units = tuple(u for _, u in pairs)
    return ImageData(
        data=data, axes=axes, voxel_size=voxel_size, units=units, name=name, series_count=count
    )
