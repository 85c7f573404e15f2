"""npe2 reader contribution: open ``.sciz`` files lazily in napari.

Opening a ``.sciz`` file decodes nothing: the layer's data is a :class:`LazySciZArray`, an
array-like (``shape``, ``dtype``, ``ndim``, ``__getitem__``) whose indexing runs a region decode of
only the voxels asked for. napari slices its layers plane by plane, so only the planes being viewed
are ever decoded, and a file of any size opens at once. Contrast limits come from the value range
stored in the header, so napari does not decode the whole volume to compute them.

This module must stay importable without torch: napari imports contributions at start-up, and
the codec (:mod:`napari_sciz.core.api`) is only imported inside :func:`read_sciz`.
"""

from __future__ import annotations

import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LazySciZArray", "napari_get_reader", "read_sciz"]

PathOrPaths = str | Path | Sequence[str | Path]
LayerData = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[PathOrPaths], list[LayerData]]

_SUFFIX = ".sciz"
#: Bytes of decoded regions kept per open file, so scrolling back and forth does not decode again.
_CACHE_BYTES = 256 * 2**20


def _is_sciz(path: Any) -> bool:
    return isinstance(path, str | Path) and str(path).lower().endswith(_SUFFIX)


def napari_get_reader(path: PathOrPaths) -> ReaderFunction | None:
    """Return :func:`read_sciz` if ``path`` names ``.sciz`` file(s), else None.

    Parameters
    ----------
    path : str, pathlib.Path or sequence of them
        What the user dropped or chose in File > Open.

    Returns
    -------
    callable or None
        :func:`read_sciz` when every path ends with ``.sciz`` (case-insensitive), otherwise None so
        napari can try another reader.
    """
    if isinstance(path, str | Path):
        return read_sciz if _is_sciz(path) else None
    if isinstance(path, Sequence) and len(path) > 0 and all(_is_sciz(p) for p in path):
        return read_sciz
    return None


def read_sciz(path: PathOrPaths) -> list[LayerData]:
    """Open ``.sciz`` file(s) as lazy napari image layers, one per file.

    Parameters
    ----------
    path : str, pathlib.Path or sequence of them
        ``.sciz`` file(s).

    Returns
    -------
    list of (data, kwargs, "image")
        ``data`` is a :class:`LazySciZArray` (nothing decoded yet); ``kwargs`` holds ``name``
        (header ``name`` or the file stem), ``scale`` (voxel size), ``contrast_limits`` (header
        ``value_range``), ``units``/``axis_labels`` when known, and ``metadata`` (the header).

    Raises
    ------
    napari_sciz.errors.FormatError
        If a file is not a valid ``.sciz`` file.
    """
    paths = [path] if isinstance(path, str | Path) else list(path)
    from napari_sciz.core.api import open_sciz  # lazy: imports torch

    return [_layer_data(Path(p), open_sciz(p)) for p in paths]


class LazySciZArray:
    """Array-like view of an open ``.sciz`` file that decodes only what is indexed.

    Parameters
    ----------
    reader : napari_sciz.core.api.SciZReader
        An open reader (``shape``, ``dtype``, ``__getitem__`` doing region decode).
    cache_bytes : int, optional
        Bytes of recently decoded regions to keep (least recently used dropped first).

    Notes
    -----
    napari accepts any object with ``shape``, ``dtype``, ``ndim`` and ``__getitem__`` as layer data
    and indexes it with one integer per non-displayed axis, so viewing a plane decodes that plane.
    ``np.asarray(array)`` decodes everything (e.g. when the layer is saved).

    No dask wrapper is used: napari's exact index goes straight to the region decoder, so a plane
    along any axis (after rolling the dims) decodes just that plane, where fixed dask chunks
    would decode every chunk the plane crosses.
    """

    def __init__(self, reader: Any, cache_bytes: int = _CACHE_BYTES) -> None:
        self._reader = reader
        self.shape: tuple[int, ...] = tuple(int(s) for s in reader.shape)
        self.dtype: np.dtype = np.dtype(reader.dtype)
        self._cache: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self._cache_bytes = int(cache_bytes)
        self._cached = 0
        self._lock = threading.Lock()

    @property
    def reader(self) -> Any:
        """The underlying :class:`~napari_sciz.core.api.SciZReader`."""
        return self._reader

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of voxels."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded array (not of the file)."""
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazySciZArray(shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key: Any) -> np.ndarray:
        key = _normalize_key(key)
        ckey = _cache_key(key)
        if ckey is not None:
            with self._lock:
                hit = self._cache.get(ckey)
                if hit is not None:
                    self._cache.move_to_end(ckey)
                    return hit
        out = np.asarray(self._reader[key])
        if ckey is not None and 0 < out.nbytes <= self._cache_bytes:
            out.flags.writeable = False
            with self._lock:
                if ckey not in self._cache:
                    self._cache[ckey] = out
                    self._cached += out.nbytes
                while self._cached > self._cache_bytes and self._cache:
                    _, dropped = self._cache.popitem(last=False)
                    self._cached -= dropped.nbytes
        return out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        full = np.asarray(self._reader[tuple(slice(None) for _ in self.shape)])
        return full if dtype is None else full.astype(dtype, copy=False)

    def clear_cache(self) -> None:
        """Forget the decoded regions kept in memory."""
        with self._lock:
            self._cache.clear()
            self._cached = 0


def _normalize_key(key: Any) -> Any:
    """Turn numpy integers into ints so that the reader and the cache see plain Python indices."""
    items = key if isinstance(key, tuple) else (key,)
    out: list[Any] = []
    for item in items:
        if isinstance(item, np.integer):
            out.append(int(item))
        elif isinstance(item, slice):
            bounds = (item.start, item.stop, item.step)
            out.append(slice(*(None if v is None else operator.index(v) for v in bounds)))
        else:
            out.append(item)
    return tuple(out) if isinstance(key, tuple) else out[0]


def _cache_key(key: Any) -> tuple[Any, ...] | None:
    """A hashable key for basic indexing (ints, slices, Ellipsis, None); None for fancy indexing."""
    items = key if isinstance(key, tuple) else (key,)
    out: list[Any] = []
    for item in items:
        if isinstance(item, slice):
            out.append(("s", item.start, item.stop, item.step))
        elif item is Ellipsis or item is None or isinstance(item, int):
            out.append(item)
        else:
            return None
    return tuple(out)


def _layer_data(path: Path, reader: Any) -> LayerData:
    data = LazySciZArray(reader)
    header: dict[str, Any] = dict(getattr(reader, "header", None) or {})
    ndim = data.ndim
    kwargs: dict[str, Any] = {
        "name": str(header.get("name") or path.stem),
        "rgb": False,
        "metadata": {"sciz_path": str(path), "sciz_header": header},
    }
    scale = _per_axis(getattr(reader, "voxel_size", None), ndim, 1.0)
    if scale is not None:
        kwargs["scale"] = [_positive(s) for s in scale]
    units = _units(getattr(reader, "units", None), ndim)
    if units is not None:
        kwargs["units"] = units
    axes = getattr(reader, "axes", None)
    if axes is not None and len(axes) == ndim and len(set(axes)) == ndim:
        kwargs["axis_labels"] = tuple(str(a).lower() for a in axes)
    kwargs["contrast_limits"] = _contrast_limits(header, data)
    return data, kwargs, "image"


def _per_axis(values: Any, ndim: int, fill: Any) -> list[Any] | None:
    """Right-align per-axis ``values`` (which may cover only the last axes) to ``ndim`` axes."""
    if values is None:
        return None
    if isinstance(values, str) or np.isscalar(values):
        values = [values]
    values = list(values)
    if not values or len(values) > ndim:
        return None
    return [fill] * (ndim - len(values)) + values


def _positive(value: Any) -> float:
    """``value`` as a float if it is a finite positive number, else 1.0."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return 1.0
    return out if np.isfinite(out) and out > 0 else 1.0


def _units(units: Any, ndim: int) -> list[str] | None:
    """Per-axis unit names that pint (napari's unit library) understands, else None."""
    if units is None:
        return None
    if isinstance(units, str):
        units = [units] * ndim
    names = _per_axis(units, ndim, "pixel")
    if names is None:
        return None
    try:
        import pint

        registry = pint.get_application_registry()
        for name in names:
            registry.parse_expression(str(name or "pixel"))
    except Exception:  # noqa: BLE001 - unknown unit or no pint: show without units
        return None
    return [str(name or "pixel") for name in names]


def _contrast_limits(header: dict[str, Any], data: LazySciZArray) -> list[float]:
    """Contrast limits from the header's ``value_range``; without it, from the middle plane."""
    value_range = header.get("value_range")
    try:
        lo, hi = (float(v) for v in value_range)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        if data.ndim > 2:
            plane = data[tuple(s // 2 for s in data.shape[:-2])]
        else:
            plane = data[tuple(slice(None) for _ in data.shape)]
        lo, hi = float(np.min(plane)), float(np.max(plane))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        hi = lo + 1.0
    return [lo, hi]
