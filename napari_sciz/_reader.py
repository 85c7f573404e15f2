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
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ._planes import PlaneLoader

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
    list of (data, kwargs, layer type)
        ``data`` is a :class:`LazySciZArray` (nothing decoded yet); ``kwargs`` holds ``name``
        (header ``name`` or the file stem), ``scale`` (voxel size), ``contrast_limits`` (header
        ``value_range``), ``units``/``axis_labels`` when known, and ``metadata`` (the header).
        The layer type is ``"image"``, or ``"labels"`` for a file written from a labels layer
        (header ``"layer_type": "labels"``).

    Raises
    ------
    napari_sciz.errors.FormatError
        If a file is not a valid ``.sciz`` file.
    """
    paths = [path] if isinstance(path, str | Path) else list(path)
    from napari_sciz.core.api import open_sciz  # lazy: imports torch

    layers = [_layer_data(Path(p), open_sciz(p)) for p in paths]
    _slice_in_background_once_shown([data for data, _, _ in layers])
    return layers


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
        self._loader: PlaneLoader | None = None
        self._loader_finalizer: weakref.finalize | None = None
        self._shown: dict[tuple[int, ...], np.ndarray] = {}  # last real region of each shape
        self._last_step: tuple[int, int] | None = None  # (axis, index) of the last request

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
            if hit is not None:
                return self._show(hit)
            if self._loader is not None and _called_by_napari_slicing():
                self._loader.request(ckey, key)
                self._prefetch_after(key)
                return self._stand_in(key)
        out = np.asarray(self._reader[key])
        if ckey is not None:
            self._remember(ckey, out)
        return self._show(out)

    def _remember(self, ckey: tuple[Any, ...], out: np.ndarray) -> None:
        if not 0 < out.nbytes <= self._cache_bytes:
            return
        out.flags.writeable = False
        with self._lock:
            if ckey not in self._cache:
                self._cache[ckey] = out
                self._cached += out.nbytes
            while self._cached > self._cache_bytes and self._cache:
                _, dropped = self._cache.popitem(last=False)
                self._cached -= dropped.nbytes

    # -- background slicing (napari's main thread never waits for a decode) ---------------
    def slice_in_background(
        self, on_ready: Callable[[], None], on_error: Callable[[BaseException], None] | None = None
    ) -> None:
        """Decode napari's slice requests on a background thread from now on.

        A request napari's slicing makes for a region not yet decoded returns at once: the
        last decoded region of the same shape (or zeros) stands in while the region, then its
        neighbours in the direction of the scroll, are decoded; ``on_ready()`` is called (from
        the worker thread) when a requested region is ready, to redraw the layer. Other callers
        (``np.asarray``, widgets, scripts) still get the decoded data.

        Parameters
        ----------
        on_ready : callable
            Called without arguments when a requested region has been decoded.
        on_error : callable, optional
            Called with the exception when a decode fails.
        """
        if self._loader is None:
            # The worker holds the reader and a weak reference to this array only: once the
            # array is gone (its layer deleted), the worker stops and the file is released.
            remember = weakref.WeakMethod(self._remember)
            reader = self._reader

            def store(ckey: Hashable, out: np.ndarray) -> None:
                method = remember()
                if method is not None:
                    method(ckey, out)

            loader = PlaneLoader(
                lambda key: np.asarray(reader[key]), store, lambda _key: on_ready(), on_error
            )
            self._loader = loader
            self._loader_finalizer = weakref.finalize(self, loader.close)

    def stop_background(self) -> None:
        """Stop decoding in the background (queued requests are dropped); indexing decodes
        synchronously again. Called when the layer leaves the viewer."""
        loader, self._loader = self._loader, None
        finalizer, self._loader_finalizer = self._loader_finalizer, None
        if finalizer is not None:
            finalizer.detach()
        if loader is not None:
            loader.close()

    @property
    def loader(self) -> PlaneLoader | None:
        """The background decoder, when :meth:`slice_in_background` was called."""
        return self._loader

    def _show(self, region: np.ndarray) -> np.ndarray:
        self._shown[region.shape] = region
        return region

    def _stand_in(self, key: Any) -> np.ndarray:
        """What napari shows until the region is decoded: the last region of its shape."""
        shape = np.broadcast_to(np.zeros((), np.uint8), self.shape)[key].shape
        shown = self._shown.get(shape)
        if shown is not None:
            return shown
        return np.broadcast_to(np.zeros((), self.dtype), shape)

    def _prefetch_after(self, key: Any) -> None:
        """Queue the next planes in the direction of the scroll (and the one behind)."""
        items = key if isinstance(key, tuple) else (key,)
        ints = [i for i, item in enumerate(items) if isinstance(item, int)]
        if not ints or self._loader is None or len(items) != self.ndim:
            return
        axis = ints[-1]  # the axis napari steps along when the user scrolls
        index = items[axis] % self.shape[axis]
        step = 1
        if self._last_step is not None and self._last_step[0] == axis:
            step = -1 if index < self._last_step[1] else 1
        self._last_step = (axis, index)
        for delta in (step, 2 * step, -step):
            nxt = index + delta
            if 0 <= nxt < self.shape[axis]:
                moved = tuple(nxt if i == axis else item for i, item in enumerate(items))
                ckey = _cache_key(moved)
                with self._lock:
                    known = ckey in self._cache
                if ckey is not None and not known:
                    self._loader.request(ckey, moved, prefetch=True)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        full = np.asarray(self._reader[tuple(slice(None) for _ in self.shape)])
        return full if dtype is None else full.astype(dtype, copy=False)

    def clear_cache(self) -> None:
        """Forget the decoded regions kept in memory."""
        with self._lock:
            self._cache.clear()
            self._cached = 0
        self._shown.clear()


def _called_by_napari_slicing() -> bool:
    """Whether ``LazySciZArray.__getitem__`` was called by napari's layer slicing."""
    frame = sys._getframe(2)  # 0: this function, 1: __getitem__, 2: its caller
    return str(frame.f_globals.get("__name__", "")).startswith("napari.layers.")


def _slice_in_background_once_shown(arrays: Sequence[LazySciZArray]) -> None:
    """Bind each array to the layer napari makes of it, so that it slices in the background.

    The reader runs before napari creates the layers; the current viewer's ``inserted`` event
    finds the layer holding each array. Without a viewer (scripts, tests of the reader alone)
    nothing changes and indexing decodes synchronously.
    """
    try:
        import napari
    except ImportError:  # pragma: no cover - napari-sciz as a library only
        return
    viewer = napari.current_viewer()
    if viewer is None:
        return
    pending = {id(a): weakref.ref(a) for a in arrays}

    def on_inserted(event: Any) -> None:
        layer = event.value
        ref = pending.pop(id(getattr(layer, "data", None)), None)
        array = ref() if ref is not None else None
        if array is not None and layer.data is array:
            _bind_layer(layer, array)
            _stop_when_removed(viewer, layer, array)
        if not pending:
            viewer.layers.events.inserted.disconnect(on_inserted)

    viewer.layers.events.inserted.connect(on_inserted)


def _bind_layer(layer: Any, array: LazySciZArray) -> None:
    """Redraw ``layer`` on the main thread whenever its background decode has a region ready."""
    from napari.utils.notifications import show_error

    caller = _main_thread_caller()
    layer_ref = weakref.ref(layer)

    def redraw() -> None:
        target = layer_ref()
        if target is not None and getattr(target.data, "loader", None) is not None:
            target.refresh()  # (not once the layer has left the viewer)

    def report(text: str) -> None:
        target = layer_ref()
        show_error(f"Cannot decode {target.name if target is not None else 'a layer'}: {text}")

    array.slice_in_background(
        lambda: caller.call.emit(redraw), lambda exc: caller.call.emit(partial(report, str(exc)))
    )


_CALLER: Any = None


def _main_thread_caller() -> Any:
    """One QObject of the main thread whose ``call`` signal runs a callable there.

    Created once (from the main thread) and never deleted: worker threads hold only this
    object and plain functions, so no Qt object is ever released on a worker thread.
    """
    global _CALLER
    if _CALLER is None:
        from qtpy.QtCore import QObject, Signal

        class _Caller(QObject):
            call = Signal(object)

        _CALLER = _Caller()
        _CALLER.call.connect(lambda fn: fn())
    return _CALLER


def _stop_when_removed(viewer: Any, layer: Any, array: LazySciZArray) -> None:
    """Stop ``array``'s background decoding when ``layer`` leaves ``viewer`` (or it closes)."""
    layer_ref, array_ref = weakref.ref(layer), weakref.ref(array)

    def on_removed(event: Any) -> None:
        if event.value is not layer_ref():
            return
        viewer.layers.events.removed.disconnect(on_removed)
        target = array_ref()
        if target is not None:
            target.stop_background()

    viewer.layers.events.removed.connect(on_removed)


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
    # a colour image with its samples last (RGB or RGBA) is shown as one: napari's layer then
    # has one axis less, and the samples' calibration is dropped
    rgb = bool(getattr(reader, "channels_last", False)) and data.shape[-1] in (3, 4)
    ndim = data.ndim - rgb

    def spatial(values: Any) -> Any:
        return values[:-1] if rgb and values is not None and len(values) == data.ndim else values

    kwargs: dict[str, Any] = {
        "name": str(header.get("name") or path.stem),
        "rgb": rgb,
        "metadata": {"sciz_path": str(path), "sciz_header": header},
    }
    scale = _per_axis(spatial(getattr(reader, "voxel_size", None)), ndim, 1.0)
    if scale is not None:
        kwargs["scale"] = [_positive(s) for s in scale]
    units = _units(spatial(getattr(reader, "units", None)), ndim)
    if units is not None:
        kwargs["units"] = units
    axes = spatial(getattr(reader, "axes", None))
    if axes is not None and len(axes) == ndim and len(set(axes)) == ndim:
        kwargs["axis_labels"] = tuple(str(a).lower() for a in axes)
    if header.get("layer_type") == "labels" and data.dtype.kind in "iub":
        del kwargs["rgb"]  # written from a labels layer: opened as one
        return data, kwargs, "labels"
    if rgb and data.dtype == np.uint8:
        kwargs["contrast_limits"] = [0.0, 255.0]  # as napari shows an 8-bit colour image
    else:
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
