"""What the "Compress" widget reads from a napari layer: its axes, the array to code, its labels.

* :func:`layer_ndim`, :func:`leading_count`, :func:`input_shape_dtype`: the layer's axes, and
  those fixed at the viewer's position when only the current plane / time point is coded;
* :func:`input_array`: the array to compress (checked: at least 2D, a numeric dtype; 64-bit
  integers, a Labels layer's or an image's, in the smallest integer type that holds them);
* :func:`labels_matching`: a Labels layer's data for segmentation guidance, of the image's shape;
* :func:`is_labels`, :func:`rgb_kwargs`: how a result layer of ``layer`` is shown.

No Qt here: these functions take the viewer and layers, and raise
:class:`~napari_sciz.errors.InvalidInputError` with a message for the user.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ._viewer import current_data_index

__all__ = [
    "input_array",
    "input_shape_dtype",
    "is_labels",
    "labels_matching",
    "layer_ndim",
    "leading_count",
    "rgb_kwargs",
]


def _base_data(layer: Any) -> Any:
    """The layer's data at full resolution (the first level of a multiscale layer)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def is_labels(layer: Any) -> bool:
    """Whether ``layer`` is a napari Labels layer (coded losslessly, shown as labels)."""
    if layer is None:
        return False
    from napari.layers import Labels

    return isinstance(layer, Labels)


def rgb_kwargs(layer: Any) -> dict[str, Any]:
    """Keyword arguments that make a result layer of an RGB(A) ``layer`` one as well."""
    return {"rgb": True} if getattr(layer, "rgb", False) else {}


def layer_ndim(layer: Any) -> int:
    """The layer's axes, an RGB(A) layer's colour samples not counted."""
    return int(len(_base_data(layer).shape)) - bool(getattr(layer, "rgb", False))


def leading_count(layer: Any, current_only: bool) -> int:
    """The leading axes fixed at the viewer's position when only the current plane (a 3D
    stack) or time point / channel (4D and more) is coded; 0 when ``current_only`` is off."""
    if not current_only:
        return 0
    ndim = layer_ndim(layer)
    return ndim - 3 if ndim >= 4 else (1 if ndim == 3 else 0)


def input_shape_dtype(layer: Any, n_leading: int) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of what would be coded, without reading the (maybe lazy) data."""
    data = _base_data(layer)
    return tuple(int(n) for n in data.shape)[n_leading:], np.dtype(data.dtype)


def input_array(viewer: Any, layer: Any, n_leading: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """The array to compress and the leading indices fixed at the viewer's position.

    Raises
    ------
    InvalidInputError
        No layer, fewer than two axes, a plane under 2 pixels, or a non-numeric dtype.
    """
    if layer is None:
        raise InvalidInputError("Choose an image layer to compress.")
    data = _base_data(layer)
    leading: tuple[int, ...] = ()
    if n_leading:
        leading = tuple(int(i) for i in current_data_index(viewer, layer)[:n_leading])
        data = data[leading]
    array = np.asarray(data)
    if array.ndim < 2:
        raise InvalidInputError(
            f"Layer {layer.name!r} has {array.ndim} dimension(s): at least 2 (Y, X) are needed."
        )
    if min(array.shape[-2:]) < 2:
        raise InvalidInputError(
            f"Layer {layer.name!r} has shape {array.shape}: its last two axes (Y, X) must be "
            "at least 2 pixels. Is the axis order wrong (e.g. a 3D stack read as 2D, or a "
            "channel axis last)?"
        )
    if array.dtype.kind not in "biuf":
        raise InvalidInputError(f"Layer {layer.name!r} has unsupported dtype {array.dtype}.")
    if is_labels(layer):
        from .._writer import narrow_labels

        array = narrow_labels(array)  # napari's int64 labels in the smallest type
    else:  # (numpy's default integer: every value kept in the smallest type .sciz stores)
        from ..core.validate import narrowed_integers

        array = narrowed_integers(array)
    return array, leading


def labels_matching(
    viewer: Any, layer_id: Any, data: np.ndarray, leading: tuple[int, ...]
) -> np.ndarray | None:
    """The data of the Labels layer ``layer_id`` (an ``id()``) matching ``data``.

    Returns None for ``layer_id`` None (automatic labels). A layer of the whole stack is cut
    at ``leading`` when only the current plane is coded.

    Raises
    ------
    InvalidInputError
        The layer was removed, its shape is not the image's, or it marks no object.
    """
    if layer_id is None:
        return None
    layer = next((la for la in viewer.layers if id(la) == layer_id), None)
    if layer is None:
        raise InvalidInputError("The chosen Labels layer no longer exists; choose another.")
    labels = _base_data(layer)
    if leading and tuple(labels.shape) != tuple(data.shape):
        labels = labels[leading]
    labels = np.asarray(labels)
    if labels.shape != data.shape:
        raise InvalidInputError(
            f"Labels layer {layer.name!r} has shape {labels.shape}, but the image to "
            f"compress has shape {data.shape}: segmentation guidance needs labels of the "
            "same shape."
        )
    if not np.any(labels > 0):
        raise InvalidInputError(
            f"Labels layer {layer.name!r} marks no object yet: paint the objects to keep, or "
            "choose automatic labels (Otsu threshold)."
        )
    return labels
