"""npe2 writer contribution: File > Save an image layer as ``.sciz``.

The target ratio is the one the user last chose in the Compress widget
(:func:`napari_sciz._settings.get_default_ratio`), or 64 when none was chosen. The layer's scale
is stored as the voxel size, its name as the name, and its units / axis labels when napari knows
them. Fitting runs in the calling (GUI) thread: for long jobs with progress and cancel, use the
Compress (INR) widget instead.

This module must stay importable without torch; the codec is imported inside :func:`write_sciz`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .io.formats import axes_from_labels

__all__ = ["LABELS_KEY", "layer_sources", "narrow_labels", "write_sciz", "write_sciz_labels"]

_SUFFIX = ".sciz"
#: header key of a file written from a napari Labels layer (the reader opens it as one)
LABELS_KEY = "layer_type"


def write_sciz(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Compress one image layer to a ``.sciz`` file.

    Parameters
    ----------
    path : str
        Destination; ``.sciz`` is appended when missing. An existing file is replaced (napari's
        save dialog has already asked).
    data : array-like
        The layer data (numpy, dask, a lazy ``.sciz`` layer...); multiscale data saves its
        full-resolution level.
    meta : dict
        The layer attributes napari passes: ``name``, ``scale``, ``units``, ``axis_labels``...

    Returns
    -------
    list of str
        The path written.

    Raises
    ------
    napari_sciz.errors.SciZError
        If the codec rejects the data (unsupported dtype, NaN/Inf...) or cannot reach the ratio,
        if ``path`` is the file the layer was read from, or if its folder is missing or
        read-only (these are checked before the fit).
    """
    from napari_sciz._settings import get_default_ratio

    out, sources = _destination(path, meta)
    from napari_sciz.core.api import compress  # lazy: imports torch

    array = np.asarray(_full_resolution(data, meta))
    # an RGB(A) layer: napari's calibration covers the axes before the colour samples
    rgb = bool(meta.get("rgb")) and array.ndim >= 3
    kwargs = _calibration(meta, array.ndim, samples_last=rgb)
    result = compress(array, ratio=get_default_ratio(), **kwargs)
    result.save(out, force=True, inputs=sources)
    return [str(out)]


def write_sciz_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Compress one labels layer losslessly to a ``.sciz`` file (it opens as a labels layer).

    Label images code as which neighbour each voxel copies (lossless label blocks: a
    segmentation takes a few hundredths of its raw size). Labels stored as 64-bit integers
    (napari's default for new labels layers) are saved in the smallest integer type that holds
    their values, and read back in it.

    Parameters
    ----------
    path : str
        Destination; ``.sciz`` is appended when missing. An existing file is replaced (napari's
        save dialog has already asked).
    data : array-like
        The labels (any integer type; multiscale data saves its full-resolution level).
    meta : dict
        The layer attributes napari passes: ``name``, ``scale``, ``units``, ``axis_labels``...

    Returns
    -------
    list of str
        The path written.

    Raises
    ------
    napari_sciz.errors.SciZError
        Labels beyond 32-bit integers, or the checks of :func:`write_sciz`.
    """
    from napari_sciz.core.api import compress
    from napari_sciz.core.result import with_header_keys

    out, sources = _destination(path, meta)
    array = narrow_labels(np.asarray(_full_resolution(data, meta)))
    kwargs = _calibration(meta, array.ndim)
    result = with_header_keys(compress(array, mode="lossless", **kwargs), {LABELS_KEY: "labels"})
    result.save(out, force=True, inputs=sources)
    return [str(out)]


def narrow_labels(array: np.ndarray) -> np.ndarray:
    """Labels of a 64-bit type in the smallest integer type that holds them.

    Parameters
    ----------
    array : numpy.ndarray
        Labels (integer or boolean; other types are refused).

    Returns
    -------
    numpy.ndarray
        ``array`` itself when it is narrower than 64 bits or empty, else a copy in the
        smallest integer type that holds its range
        (:func:`~napari_sciz.core.validate.narrowed_integers`).

    Raises
    ------
    InvalidInputError
        Not integers, or labels outside the 32-bit range.
    """
    from napari_sciz.core.validate import narrowed_integers
    from napari_sciz.errors import InvalidInputError

    if array.dtype.kind not in "uib":
        raise InvalidInputError(f"labels must be integers, not {array.dtype}")
    return narrowed_integers(array, "labels")


def _destination(path: str, meta: dict[str, Any]) -> tuple[Path, list[str]]:
    """The file to write (``.sciz`` appended when missing) and the files the layer was read
    from, checked before any coding: a missing folder, or the layer's own file, is refused."""
    from napari_sciz.io import check_output

    out = Path(path)
    if out.suffix.lower() != _SUFFIX:
        out = out.with_name(out.name + _SUFFIX)
    sources = layer_sources(meta.get("metadata"))
    check_output(out, force=True, inputs=sources)
    return out, sources


def _full_resolution(data: Any, meta: dict[str, Any]) -> Any:
    """The layer's data, its full-resolution level when it is multiscale."""
    if meta.get("multiscale") and isinstance(data, list | tuple):
        return data[0]
    return data


def _calibration(meta: dict[str, Any], ndim: int, samples_last: bool = False) -> dict[str, Any]:
    """``name``, ``voxel_size``, ``units`` and ``axes`` of a layer's attributes for an array of
    ``ndim`` axes; with ``samples_last`` (an RGB(A) layer) napari's calibration covers the axes
    before the colour samples, which get scale 1 and the axis letter C."""
    from napari_sciz.core.colour import default_axes

    rgb = int(samples_last)
    ndim -= rgb
    kwargs: dict[str, Any] = {}
    name = meta.get("name")
    if name:
        kwargs["name"] = str(name)
    scale = meta.get("scale")
    if scale is not None and len(scale) == ndim:
        kwargs["voxel_size"] = tuple(float(s) for s in scale) + (1.0,) * rgb
    units = _unit_names(meta.get("units"), ndim)
    if units is not None:
        kwargs["units"] = units + ("pixel",) * rgb
    axes = _axes(meta.get("axis_labels"), ndim)
    if axes is not None and not (rgb and "C" in axes):
        kwargs["axes"] = axes + "C" * rgb
    elif rgb:
        kwargs["axes"] = default_axes(ndim + rgb)  # the samples are the last axis
    return kwargs


def layer_sources(metadata: Any) -> list[str]:
    """The files a layer was read from, as napari-sciz records them in ``layer.metadata``.

    Parameters
    ----------
    metadata : dict or None
        ``layer.metadata``: ``sciz_path`` (a layer opened from a ``.sciz`` file) and
        ``sciz["path"]`` (a reconstruction or region decoded from one).

    Returns
    -------
    list of str
        Paths that a save must never overwrite.
    """
    if not isinstance(metadata, dict):
        return []
    found = [metadata.get("sciz_path")]
    info = metadata.get("sciz")
    if isinstance(info, dict):
        found.append(info.get("path"))
    return [str(p) for p in found if isinstance(p, str) and p]


def _unit_names(units: Any, ndim: int) -> tuple[str, ...] | None:
    """Per-axis unit names (``"micrometer"``...), or None when napari only knows pixels."""
    if units is None:
        return None
    if isinstance(units, str) or not hasattr(units, "__len__"):
        units = [units] * ndim
    names = tuple(str(u) for u in units)
    if len(names) != ndim or all(n in ("pixel", "") for n in names):
        return None
    return names


def _axes(labels: Any, ndim: int) -> str | None:
    """An axes string like ``"ZYX"`` when the layer's axis labels are distinct T/C/Z/Y/X letters."""
    return axes_from_labels(labels, ndim)
