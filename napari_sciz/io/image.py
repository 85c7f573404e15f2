"""Reading and writing image stacks: TIFF, OME-TIFF and ``.npy``, with axes and voxel size.

Axes conventions
----------------
Axes are upper-case letters, one per array dimension, last two ``"YX"``: ``T`` time, ``C``
channel, ``Z`` depth, ``Y``/``X`` in-plane. When a file does not name its axes (``.npy``, plain
multi-page TIFF, tifffile's ``Q``/``I`` "unknown"/"sequence" axes), the leading axes are named from
the right ``Z``, ``C``, ``T`` — so ``YX``, ``ZYX``, ``CZYX``, ``TCZYX`` by number of dimensions.
TIFF singleton axes are squeezed (never Y or X) together with their axis letter and voxel size;
``.npy`` arrays are returned with their stored shape. An RGB(A) samples axis ``S`` is moved in
front of the spatial axes and named ``C``.

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

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, SciZError
from .atomic import atomic_write, check_output
from .ome_zarr import ZARR_EXTENSIONS, is_zarr_path, open_zarr_image

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "ImageData",
    "default_axes",
    "read_image",
    "write_image",
    "write_image_planes",
]

#: File name endings handled by :func:`read_image` and :func:`write_image`.
SUPPORTED_EXTENSIONS = (".ome.tif", ".ome.tiff", ".tif", ".tiff", ".npy")

#: Files larger than this are memory-mapped when their layout allows it.
_MMAP_THRESHOLD = 256 * 2**20
#: Arrays larger than this are written as BigTIFF.
_BIGTIFF_THRESHOLD = 2 * 2**30

_UNIT_ALIASES = {
    "micron": "µm",
    "microns": "µm",
    "micrometer": "µm",
    "micrometre": "µm",
    "um": "µm",
    "\u03bcm": "µm",  # Greek mu
    "\\u00b5m": "µm",  # escaped in some ImageJ descriptions
    "nanometer": "nm",
    "nanometre": "nm",
    "millimeter": "mm",
    "millimetre": "mm",
    "centimeter": "cm",
    "meter": "m",
    "metre": "m",
    "angstrom": "Å",
    "sec": "s",
    "second": "s",
    "seconds": "s",
    "msec": "ms",
    "min": "min",
    "pixel": "",
    "pixels": "",
    "px": "",
}
_LENGTH_IN_UM = {"nm": 1e-3, "µm": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}
# TIFF ResolutionUnit values with a physical meaning we trust (inch is almost always "dpi").
_RESUNIT_IN_UM = {3: 1e4, 4: 1e3, 5: 1.0}
_IMAGEJ_DTYPES = frozenset({"u1", "u2", "i2", "f4"})


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
        File name without its extension(s).
    """

    data: np.ndarray
    axes: str
    voxel_size: tuple[float, ...] | None = None
    units: tuple[str, ...] | None = None
    name: str = ""


def default_axes(ndim: int) -> str:
    """Return the axes assumed for an unlabeled array with ``ndim`` dimensions.

    Parameters
    ----------
    ndim : int
        Number of dimensions.

    Returns
    -------
    str
        ``"YX"``, ``"ZYX"``, ``"CZYX"``, ``"TCZYX"`` for 2 to 5 dimensions (extra leading axes
        are ``"Q"``); ``"X"`` for 1D and ``""`` for 0D.
    """
    names = "TCZYX"
    if ndim <= len(names):
        return names[len(names) - ndim :]
    return "Q" * (ndim - len(names)) + names


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for ext in SUPPORTED_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def _check_extension(path: Path) -> str:
    ext = _suffix(path)
    if ext not in SUPPORTED_EXTENSIONS:
        shown = ext or "(none)"
        raise InvalidInputError(
            f"unsupported file type {shown!r} for {path.name} "
            "(expected .tif, .tiff, .ome.tif, .ome.tiff or .npy)"
        )
    return ext


def _stem(path: Path) -> str:
    ext = _suffix(path)
    name = path.name
    return name[: len(name) - len(ext)] if name.lower().endswith(ext) else path.stem


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _normalize_unit(unit: object) -> str:
    if unit is None:
        return ""
    text = str(unit).strip()
    return _UNIT_ALIASES.get(text.lower(), text)


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike[str], *, lazy: bool = False) -> ImageData:
    """Read a TIFF, OME-TIFF, ``.npy`` or (OME-)Zarr image with its axes and voxel size.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.tif``/``.tiff`` (plain, ImageJ or OME), ``.ome.tif``/``.ome.tiff`` or ``.npy`` file,
        or a ``.zarr``/``.ome.zarr`` store (see :mod:`napari_sciz.io.ome_zarr`). Only the first
        TIFF series is read.
    lazy : bool
        Never read the whole image: ``data`` is then a read-only memory map (contiguous TIFF,
        ``.npy``), a lazy view of the TIFF's strips or tiles (compressed TIFF), or the lazy Zarr
        array; slicing it reads only what the slice needs.

    Returns
    -------
    ImageData
        The array (memory-mapped read-only when larger than 256 MiB and stored contiguously),
        axes, voxel size, units and name. See the module docstring for the conventions.

    Raises
    ------
    InvalidInputError
        If the file does not exist, has an unsupported extension, cannot be read or parsed, or
        holds non-numeric data.

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
        return _read_zarr(p, lazy)
    ext = _check_extension(p)
    if not p.exists():
        raise InvalidInputError(f"no such file: {p}")
    if not p.is_file():
        raise InvalidInputError(f"not a file: {p}")
    try:
        image = _read_npy(p, lazy) if ext == ".npy" else _read_tiff(p, lazy)
    except (SciZError, MemoryError):
        raise
    except Exception as exc:  # tifffile/numpy raise many types for broken files
        raise InvalidInputError(f"cannot read {p.name}: {_one_line(exc)}") from exc
    if image.data.dtype.kind not in "biuf":
        raise InvalidInputError(f"cannot read {p.name}: unsupported data type {image.data.dtype}")
    return image


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


def _lazy_tiff(path: Path, shape: tuple[int, ...], axes: str) -> Any:
    """Strips/tiles of a TIFF series read on demand (through tifffile's Zarr store)."""
    import tifffile

    zarr = _zarr_module()
    store = tifffile.imread(path, aszarr=True, series=0)
    raw = zarr.open(store, mode="r")
    if isinstance(raw, zarr.Group):  # pyramidal file: level 0
        raw = raw["0"]
    if tuple(raw.shape) != shape:  # pragma: no cover - tifffile keeps them in sync
        raise InvalidInputError(f"cannot read {path.name} lazily: unexpected layout")
    if "S" in axes and axes.index("S") != 0 and len(shape) > 2:
        raise InvalidInputError(
            f"cannot read the RGB(A) file {path.name} block by block; convert it to one "
            "channel per plane (or to Zarr) first"
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
    return ImageData(data=data, axes=default_axes(data.ndim), name=_stem(path))


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


def _read_tiff(path: Path, lazy: bool = False) -> ImageData:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise InvalidInputError(f"cannot read {path.name}: no image data in the file")
        series = tif.series[0]
        shape = tuple(series.shape)
        axes = str(series.axes).upper()
        data: Any = None
        if (lazy or path.stat().st_size > _MMAP_THRESHOLD) and series.dataoffset is not None:
            try:
                data = tifffile.memmap(path, series=0, mode="r").reshape(shape)
            except (ValueError, OSError):  # not memory-mappable: fall back to reading
                data = None
        calib = _tiff_calibration(tif, path)
    if data is None and lazy:
        raw = _lazy_tiff(path, shape, axes)
        keep = [i for i, (a, n) in enumerate(zip(axes, shape, strict=True)) if n != 1 or a in "YX"]
        data = _SqueezedView(raw, keep)
        axes = _rename_unknown_axes("".join(axes[i] for i in keep))
        pairs = [calib.get(a, (1.0, "")) for a in axes] if calib else None
        return ImageData(
            data=data,
            axes=axes,
            voxel_size=None if pairs is None else tuple(float(s) for s, _ in pairs),
            units=None if pairs is None else tuple(u for _, u in pairs),
            name=_stem(path),
        )
    if data is None:
        with tifffile.TiffFile(path) as tif:
            data = np.asarray(tif.series[0].asarray()).reshape(shape)

    if len(axes) != data.ndim:  # pragma: no cover - defensive, tifffile keeps them in sync
        axes = default_axes(data.ndim)
    # squeeze singleton axes (never Y or X)
    keep = [i for i, (a, n) in enumerate(zip(axes, data.shape, strict=True)) if n != 1 or a in "YX"]
    if len(keep) != data.ndim:
        data = data.reshape(tuple(data.shape[i] for i in keep))
        axes = "".join(axes[i] for i in keep)
    # RGB(A) samples -> a leading channel axis
    if "S" in axes and axes.index("S") != 0 and data.ndim > 2:
        pos = axes.index("S")
        first_spatial = min(axes.index(a) for a in "ZYX" if a in axes)
        if pos > first_spatial:
            data = np.moveaxis(data, pos, first_spatial)
            rest = axes[:pos] + axes[pos + 1 :]
            axes = rest[:first_spatial] + "S" + rest[first_spatial:]
        if "C" not in axes:
            calib.setdefault("C", calib.pop("S", (1.0, "")))
            axes = axes.replace("S", "C")
    axes = _rename_unknown_axes(axes)

    voxel_size: tuple[float, ...] | None = None
    units: tuple[str, ...] | None = None
    if calib:
        pairs = [calib.get(a, (1.0, "")) for a in axes]
        voxel_size = tuple(float(s) for s, _ in pairs)
        units = tuple(u for _, u in pairs)
    return ImageData(data=data, axes=axes, voxel_size=voxel_size, units=units, name=_stem(path))


def _positive(value: object) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _resolution_size(page: Any, tag: str) -> float | None:
    """Pixel size (in the resolution unit) from an X/YResolution tag, or None."""
    t = page.tags.get(tag)
    if t is None:
        return None
    value = t.value
    try:
        num, den = value if isinstance(value, tuple) else (value, 1)
        ppu = float(num) / float(den)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return 1.0 / ppu if ppu > 0 and math.isfinite(ppu) else None


def _tiff_calibration(tif: Any, path: Path) -> dict[str, tuple[float, str]]:
    """Voxel size and unit per axis letter, from the best metadata source of the file."""
    # 1. napari-sciz's own JSON description (plain TIFF written by write_image)
    shaped = getattr(tif, "shaped_metadata", None)
    if shaped:
        meta = shaped[0]
        axes, sizes, units = meta.get("axes"), meta.get("voxel_size"), meta.get("units")
        if isinstance(axes, str) and isinstance(sizes, list) and len(sizes) == len(axes):
            if not isinstance(units, list) or len(units) != len(axes):
                units = [""] * len(axes)
            calib = {}
            for a, s, u in zip(axes.upper(), sizes, units, strict=True):
                v = _positive(s)
                calib[a] = (v if v is not None else 1.0, _normalize_unit(u))
            return calib
    # 2. OME-XML
    if tif.is_ome and tif.ome_metadata:
        calib = _ome_calibration(tif.ome_metadata)
        if calib:
            return calib
    page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
    # 3. ImageJ
    if tif.is_imagej:
        ij = tif.imagej_metadata or {}
        unit = _normalize_unit(ij.get("unit"))
        calib = {}
        if unit:
            for axis, tag in (("X", "XResolution"), ("Y", "YResolution")):
                size = _resolution_size(page, tag)
                if size is not None:
                    calib[axis] = (size, unit)
            spacing = _positive(ij.get("spacing"))
            if spacing is not None:
                calib["Z"] = (spacing, unit)
        finterval = _positive(ij.get("finterval"))
        if finterval is not None:
            calib["T"] = (finterval, _normalize_unit(ij.get("tunit", "s")) or "s")
        if calib:
            for axis in "XYZ":
                if unit:
                    calib.setdefault(axis, (1.0, unit))
            return calib
        return {}
    # 4. plain TIFF resolution tags in physical units
    resunit = page.tags.get("ResolutionUnit")
    factor = _RESUNIT_IN_UM.get(int(resunit.value)) if resunit is not None else None
    if factor is not None:
        calib = {}
        for axis, tag in (("X", "XResolution"), ("Y", "YResolution")):
            size = _resolution_size(page, tag)
            if size is not None:
                calib[axis] = (size * factor, "µm")
        return calib
    return {}


def _ome_calibration(xml: str) -> dict[str, tuple[float, str]]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return {}
    calib = {}
    for axis in "XYZ":
        size = _positive(pixels.get(f"PhysicalSize{axis}"))
        if size is not None:
            unit = _normalize_unit(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
            calib[axis] = (size, unit)
    dt = _positive(pixels.get("TimeIncrement"))
    if dt is not None:
        calib["T"] = (dt, _normalize_unit(pixels.get("TimeIncrementUnit", "s")))
    return calib


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------


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
        unit_t = tuple(_normalize_unit(u) for u in units)
        if len(unit_t) != ndim:
            raise InvalidInputError(f"units has {len(unit_t)} values for {ndim} dimensions")
    if sizes is not None and unit_t is None:
        unit_t = tuple("" for _ in sizes)
    return axes, sizes, unit_t


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
    resolution tags when the units are lengths. Arrays over 2 GiB are written as BigTIFF. ``.npy``
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
    ext = _check_extension(p)
    arr = np.asarray(data)
    _check_writable_dtype(ext, arr.dtype)
    axes, sizes, unit_t = _check_metadata(arr.ndim, axes, voxel_size, units)
    check_output(p, force=force, inputs=inputs)  # fail early, before any work
    if ext == ".npy":
        with atomic_write(p, force=force, inputs=inputs) as fh:
            np.save(fh, arr, allow_pickle=False)
        return p
    kwargs = _tiff_kwargs(arr, axes, sizes, unit_t, ome=ext.startswith(".ome"))
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
    ext = _check_extension(p)
    shape = tuple(int(n) for n in shape)
    dt = np.dtype(dtype)
    _check_writable_dtype(ext, dt)
    axes, sizes, unit_t = _check_metadata(len(shape), axes, voxel_size, units)
    check_output(p, force=force, inputs=inputs)
    n_planes = math.prod(shape[:-2]) if len(shape) > 2 else 1

    def checked() -> Iterable[np.ndarray]:
        count = 0
        for plane in planes:
            plane = np.ascontiguousarray(plane, dtype=dt)
            if plane.shape != shape[-2:]:
                raise InvalidInputError(f"plane of shape {plane.shape}, expected {shape[-2:]}")
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
    kwargs = _tiff_kwargs(meta_arr, axes, sizes, unit_t, ome=ext.startswith(".ome"))  # type: ignore[arg-type]
    return _write_tiff(p, checked(), {**kwargs, "shape": shape, "dtype": dt}, force, inputs)


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
        raise InvalidInputError(f"cannot write {p.name}: {_one_line(exc)}") from exc
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
) -> dict[str, Any]:
    big = arr.nbytes > _BIGTIFF_THRESHOLD
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
        return {"ome": True, "bigtiff": big, "photometric": "minisblack", "metadata": meta}
    res = _xy_resolution(axes, sizes, units)
    if _imagej_compatible(arr, axes, sizes, units):
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
    kwargs = {
        "bigtiff": big,
        "photometric": "minisblack",
        "metadata": meta,
    }
    if res is not None and res[1] in _LENGTH_IN_UM:
        to_cm = _LENGTH_IN_UM[res[1]] / 1e4  # size in cm = size * to_cm
        kwargs["resolution"] = (res[0][0] / to_cm, res[0][1] / to_cm)
        kwargs["resolutionunit"] = "CENTIMETER"
    return kwargs
