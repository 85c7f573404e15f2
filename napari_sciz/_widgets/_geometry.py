"""Qt-free helpers of the napari widgets: ratio stops, formatting and region geometry.

Nothing here imports Qt, napari or torch, so it can be unit-tested on its own.

Pixel-centre convention
-----------------------
napari puts the centre of voxel ``i`` at data coordinate ``i``; the voxel covers
``[i - 0.5, i + 0.5)``. The decoder, asked for a region starting at voxel ``start`` with a
sampling factor ``s``, returns samples at voxel positions ``start + (j + 0.5) / s - 0.5``
(``j = 0, 1, ...``), i.e. ``s`` sub-samples evenly spread over each voxel. A layer showing those
samples must therefore use ``scale' = scale / s`` and
``translate' = translate + L @ (start - 0.5 + 0.5 / s)`` where ``L`` is the linear part of the
source layer's data-to-physical transform (``diag(scale)`` without rotation or shear). With
``s = 1`` this is simply ``translate + scale * start``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..core.plan import EFFORT_PRESETS as _CORE_PRESETS

__all__ = [
    "EFFORT_PRESETS",
    "RATIO_STOPS",
    "bounds_to_slice",
    "format_bytes",
    "format_duration",
    "nearest_ratio_index",
    "region_placement",
]

#: Smallest time budgets (seconds) of the effort presets (they grow with the data:
#: :data:`napari_sciz.core.plan.EFFORT_PRESETS`).
EFFORT_PRESETS: dict[str, int] = {k: int(v[0]) for k, v in _CORE_PRESETS.items()}


def _ratio_stops(low: int = 4, high: int = 2048) -> tuple[int, ...]:
    """Integer ratios spaced about a quarter octave apart (x, 1.25x, 1.5x, 1.75x per octave)."""
    stops: list[int] = []
    octave = low
    while octave <= high:
        for factor in (1.0, 1.25, 1.5, 1.75):
            value = int(round(octave * factor))
            if value <= high:
                stops.append(value)
        octave *= 2
    return tuple(stops)


#: The target ratios offered by the ratio slider: 4x ... 2048x on a logarithmic scale.
RATIO_STOPS: tuple[int, ...] = _ratio_stops()


def nearest_ratio_index(ratio: float) -> int:
    """Index of the slider stop closest to ``ratio`` (in log space).

    Parameters
    ----------
    ratio : float
        A compression ratio (> 0).

    Returns
    -------
    int
        Index into :data:`RATIO_STOPS`.
    """
    target = math.log(max(float(ratio), 1e-9))
    return int(np.argmin([abs(math.log(r) - target) for r in RATIO_STOPS]))


def format_bytes(n: float) -> str:
    """Human-readable size with decimal units (``"1.5 MB"``).

    Parameters
    ----------
    n : float
        A number of bytes.

    Returns
    -------
    str
        The size, e.g. ``"980 B"``, ``"12.3 kB"``, ``"4.56 MB"``.
    """
    n = float(n)
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000.0
        if n < 1000 or unit == "TB":
            digits = 2 if n < 10 else 1 if n < 100 else 0
            return f"{n:.{digits}f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def format_duration(seconds: float | None) -> str:
    """Format a duration as ``"42 s"``, ``"3 min 05 s"`` or ``"1 h 02 min"`` (``"?"`` if unknown).

    Parameters
    ----------
    seconds : float or None
        A duration in seconds.

    Returns
    -------
    str
        The formatted duration.
    """
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    total = int(round(seconds))
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def bounds_to_slice(low: float, high: float, size: int) -> slice:
    """Voxel indices whose footprint ``[i - 0.5, i + 0.5)`` meets the interval ``[low, high]``.

    Parameters
    ----------
    low, high : float
        Interval in data (voxel) coordinates; swapped if given in the wrong order.
    size : int
        Length of the axis; the result is clipped to ``[0, size]``.

    Returns
    -------
    slice
        ``slice(start, stop)`` with ``0 <= start <= stop <= size`` (empty when outside the axis).
    """
    if high < low:
        low, high = high, low
    start = int(math.floor(low + 0.5))
    stop = int(math.floor(high + 0.5)) + 1
    start = min(max(start, 0), size)
    stop = min(max(stop, start), size)
    return slice(start, stop)


def region_placement(
    start: Sequence[float],
    factors: Sequence[float],
    scale: Sequence[float],
    translate: Sequence[float],
    linear: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale and translate of a layer showing a decoded region (see the module docstring).

    Parameters
    ----------
    start : sequence of float
        First voxel index of the region along each axis of the source layer.
    factors : sequence of float
        Sampling factor along each axis (1 = native sampling, 2 = twice finer...).
    scale, translate : sequence of float
        The source layer's ``scale`` and ``translate``.
    linear : ndarray, optional
        Linear part (``ndim x ndim``) of the source layer's data-to-physical transform, i.e.
        ``rotate @ shear @ diag(scale)``; ``diag(scale)`` when omitted.

    Returns
    -------
    scale, translate : ndarray
        Values for the new layer (its rotate, shear and affine are those of the source).
    """
    start_a = np.asarray(start, dtype=float)
    fac = np.asarray(factors, dtype=float)
    scale_a = np.asarray(scale, dtype=float)
    translate_a = np.asarray(translate, dtype=float)
    if linear is None:
        linear = np.diag(scale_a)
    offset = start_a - 0.5 + 0.5 / fac
    return scale_a / fac, translate_a + np.asarray(linear, dtype=float) @ offset
