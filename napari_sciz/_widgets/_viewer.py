"""Small helpers that smooth over differences between napari versions (no Qt, no torch)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "camera",
    "current_data_index",
    "delta_colormap",
    "delta_limit",
    "grid",
    "layer_linear",
    "placement_kwargs",
    "show_side_by_side",
    "to_world",
]


def grid(viewer: Any) -> Any:
    """The grid model: ``viewer.canvas.grid`` (napari >= 0.9) or ``viewer.grid``."""
    canvas = getattr(viewer, "canvas", None)
    if canvas is not None and hasattr(canvas, "grid"):
        return canvas.grid
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return viewer.grid


def camera(viewer: Any) -> Any:
    """The camera model: ``viewer.scene.camera`` (napari >= 0.9) or ``viewer.camera``."""
    scene = getattr(viewer, "scene", None)
    if scene is not None and hasattr(scene, "camera"):
        return scene.camera
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return viewer.camera


def viewbox_size(viewer: Any) -> tuple[float, float]:
    """Size (height, width) in screen pixels of one grid cell (the whole canvas without grid)."""
    canvas = getattr(viewer, "canvas", None)
    if canvas is not None and callable(getattr(canvas, "viewbox_size", None)):
        h, w = canvas.viewbox_size(viewer.layers)
        return float(h), float(w)
    if canvas is not None and hasattr(canvas, "size"):
        h, w = canvas.size
        return float(h), float(w)
    qt_viewer = viewer.window._qt_viewer  # pragma: no cover - napari < 0.5
    size = qt_viewer.canvas.size  # pragma: no cover
    return float(size[0]), float(size[1])  # pragma: no cover


def field_of_view_corners(viewer: Any) -> np.ndarray:
    """The four corners (full world coordinates) of the 2D view's field of view (one grid
    cell)."""
    cam = camera(viewer)
    h, w = viewbox_size(viewer)
    center = np.asarray(cam.center, dtype=float)[-2:]
    half = np.array([h, w]) / (2.0 * float(cam.zoom))
    ay, ax = viewer.dims.displayed[-2:]
    corners = np.tile(np.asarray(viewer.dims.point, dtype=float), (4, 1))
    for i, (sy, sx) in enumerate(((-1, -1), (-1, 1), (1, -1), (1, 1))):
        corners[i, ay] = center[0] + sy * half[0]
        corners[i, ax] = center[1] + sx * half[1]
    return corners


def layer_linear(layer: Any) -> np.ndarray:
    """Linear part (``rotate @ shear @ diag(scale)``) of a layer's data-to-physical transform."""
    try:
        linear = np.asarray(layer._transforms["data2physical"].linear_matrix, dtype=float)
        if linear.shape == (layer.ndim, layer.ndim):
            return linear
    except (AttributeError, KeyError, TypeError):  # pragma: no cover - defensive
        pass
    return np.diag(np.asarray(layer.scale, dtype=float))


def placement_kwargs(
    layer: Any,
    leading: Sequence[int] = (),
    start: Sequence[float] | None = None,
    factors: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Keyword arguments placing a new layer in the same world frame as ``layer``.

    Parameters
    ----------
    layer : napari.layers.Layer
        The reference layer.
    leading : sequence of int
        Indices along the first ``len(leading)`` axes of ``layer`` where the new data (given with
        singleton leading axes) sits.
    start : sequence of float, optional
        First voxel of the new data along the remaining axes (defaults to 0).
    factors : sequence of float, optional
        Sampling factors along the remaining axes (defaults to 1).

    Returns
    -------
    dict
        ``scale``, ``translate``, ``rotate``, ``shear``, ``affine`` (and ``units``,
        ``axis_labels`` where napari has them) for the new layer.
    """
    from ._geometry import region_placement

    ndim = layer.ndim
    rest = ndim - len(leading)
    start_full = list(leading) + list(start if start is not None else [0] * rest)
    fac_full = [1.0] * len(leading) + list(factors if factors is not None else [1.0] * rest)
    if len(start_full) != ndim or len(fac_full) != ndim:
        raise ValueError("start/factors do not match the layer's dimensions")
    scale, translate = region_placement(
        start_full, fac_full, layer.scale, layer.translate, layer_linear(layer)
    )
    kwargs: dict[str, Any] = {
        "scale": scale,
        "translate": translate,
        "rotate": np.asarray(layer.rotate),
        "shear": np.asarray(layer.shear),
        "affine": layer.affine.affine_matrix,
    }
    # same units / axis labels as the reference, so napari does not warn about mixed units
    for name in ("units", "axis_labels"):
        value = getattr(layer, name, None)
        if value is not None:
            kwargs[name] = tuple(value)
    return kwargs


def to_world(viewer: Any, layer: Any, data_points: np.ndarray) -> np.ndarray:
    """Map points from a layer's data coordinates to full world coordinates (viewer ndim).

    Coordinates of world axes that ``layer`` does not have are taken from ``viewer.dims.point``.
    """
    points = np.atleast_2d(np.asarray(data_points, dtype=float))
    world_ndim = viewer.dims.ndim
    out = np.tile(np.asarray(viewer.dims.point, dtype=float), (len(points), 1))
    for i, p in enumerate(points):
        w = np.asarray(layer.data_to_world(p), dtype=float)
        out[i, world_ndim - len(w) :] = w
    return out


def world_to_layer(layer: Any, world_points: np.ndarray) -> np.ndarray:
    """Map full world points to a layer's (continuous) data coordinates."""
    points = np.atleast_2d(np.asarray(world_points, dtype=float))
    return np.array([np.asarray(layer.world_to_data(p[-layer.ndim :])) for p in points])


def current_data_index(viewer: Any, layer: Any) -> np.ndarray:
    """The data index of ``layer`` at the viewer's current dims position (rounded, clipped)."""
    data = np.asarray(world_to_layer(layer, np.asarray(viewer.dims.point)[None])[0])
    shape = np.asarray(layer.data.shape if not layer.multiscale else layer.data[0].shape)
    shape = shape[: layer.ndim]  # (an RGB(A) layer's colour samples are not a data axis)
    index = np.floor(data + 0.5).astype(int)
    return np.clip(index, 0, np.maximum(shape - 1, 0))


def show_side_by_side(viewer: Any, layers: Sequence[Any], reset_view: bool = False) -> None:
    """Show ``layers`` side by side: grid mode (one shared camera), in list order, left to right.

    The layers are moved next to each other in the layer list and the grid stride is chosen so
    that ``layers[0]`` comes first (top-left) in the grid. The view is reset (fit to the
    grid) when the grid layout changes or ``reset_view`` is true.
    """
    if not layers:
        return
    first = viewer.layers.index(layers[0])
    for offset, layer in enumerate(layers[1:], start=1):
        index = viewer.layers.index(layer)
        target = first + offset
        if index != target:
            viewer.layers.move(index, target if index > target else target + 1)
    g = grid(viewer)
    before = (g.enabled, g.stride, tuple(g.shape))
    n_visible = sum(1 for layer in viewer.layers if layer.visible)
    g.shape = (1, n_visible) if 1 < n_visible <= 4 else (-1, -1)
    g.enabled = True
    # napari 0.9 puts the first layer of the list top-left with stride 1; older versions put the
    # last one there: pick the stride that puts `layers[0]` before `layers[1]`
    g.stride = 1
    try:
        order = [g.position(viewer.layers.index(layer), viewer.layers) for layer in layers[:2]]
        if len(order) == 2 and order[0] > order[1]:
            g.stride = -1
    except (AttributeError, TypeError, ValueError):  # pragma: no cover - other napari versions
        pass
    if reset_view or before != (g.enabled, g.stride, tuple(g.shape)):
        viewer.reset_view()
    label_panels(viewer, layers)


#: the name overlays' font size (points) where the names fit, and the smallest used
_FONT_MAX, _FONT_MIN = 12.0, 7.0
#: screen pixels per character of the overlay's font, per point of its size (measured on
#: napari 0.9 under Xvfb: 16 characters of a 12-point name fill a 180-pixel panel)
_PX_PER_CHAR_PT = 0.93


def panel_font_size(viewer: Any, layers: Sequence[Any]) -> float:
    """A font size at which the longest of the ``layers``' names fits its grid panel (the
    names of a long source image otherwise show the same cut-off start in every panel)."""
    width = 250.0  # a panel's width where napari cannot say (pixels)
    canvas = getattr(viewer, "canvas", None)
    try:
        width = float(canvas.viewbox_size(viewer.layers)[1]) - 16.0  # less the box's margins
    except (AttributeError, TypeError, ValueError, IndexError):
        pass
    longest = max((len(str(layer.name)) for layer in layers), default=1)
    return float(np.clip(width / (_PX_PER_CHAR_PT * max(longest, 1)), _FONT_MIN, _FONT_MAX))


def label_panels(viewer: Any, layers: Sequence[Any]) -> None:
    """Write each layer's name in its grid cell (napari >= 0.6 ``layer.name_overlay``), or,
    where napari has no per-layer overlay, all names in the canvas' text overlay."""
    overlays = [getattr(layer, "name_overlay", None) for layer in layers]
    if all(o is not None for o in overlays):
        size = panel_font_size(viewer, layers)
        for overlay in overlays:
            overlay.visible = True
            if hasattr(overlay, "box"):
                overlay.box = True
            if hasattr(overlay, "font_size"):
                overlay.font_size = size
        return
    text = getattr(viewer, "text_overlay", None)  # pragma: no cover - older napari
    if text is not None:  # pragma: no cover
        text.text = "   |   ".join(layer.name for layer in layers)
        text.visible = True


#: dark-centred diverging colours of the delta (negative: blue, zero: black, positive: orange)
_DELTA_COLORS = (
    (0.65, 0.9, 1.0, 1.0),
    (0.1, 0.45, 0.95, 1.0),
    (0.0, 0.0, 0.0, 1.0),
    (0.95, 0.35, 0.05, 1.0),
    (1.0, 0.85, 0.5, 1.0),
)


def delta_colormap() -> Any:
    """The delta's colormap: black at zero, blue below, orange above (reads on a dark canvas)."""
    from napari.utils.colormaps import Colormap

    controls = np.linspace(0.0, 1.0, len(_DELTA_COLORS))
    return Colormap(np.asarray(_DELTA_COLORS), controls=controls, name="sciz delta")


def delta_limit(delta: np.ndarray, percentile: float = 99.5) -> float:
    """Symmetric contrast limit of a delta: the ``percentile`` of ``|delta|`` (robust to a few
    outliers), else its largest magnitude, else 1."""
    magnitude = np.abs(np.asarray(delta, dtype=np.float64))
    magnitude = magnitude[np.isfinite(magnitude)]
    if magnitude.size == 0:
        return 1.0
    limit = float(np.percentile(magnitude, percentile))
    if limit <= 0.0:
        limit = float(magnitude.max())
    return limit if limit > 0.0 else 1.0
