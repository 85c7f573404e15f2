"""The task band of segmentation guidance: where a voxel's noise can change the segmentation.

The pipeline a biologist runs (:func:`napari_sciz.core.task.score.segment`) thresholds the
Gaussian-smoothed volume at its Otsu level, so the noise of a voxel matters only where the
smoothed value lies near that level. :func:`banded` keeps the voxels of that band and replaces
the others by their smoothed value (:mod:`.prefilter` chooses the band's width).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["band_levels", "band_mask", "banded", "smoothed"]

#: voxels the band grows by (the smoothing's reach)
_GROW = 2
#: Gaussian sigma (voxels along the finest axis) of the segmentation and of the smoothing
_SIGMA = 1.0


def smoothed(
    volume: np.ndarray, voxel_size: Sequence[float] | None = None, sigma: float = _SIGMA
) -> np.ndarray:
    """``volume`` (float64) smoothed by a Gaussian of ``sigma`` voxels along the finest axis."""
    from scipy import ndimage as ndi

    from .score import _sigmas

    v = np.asarray(volume, np.float64)
    return ndi.gaussian_filter(v, _sigmas(v.ndim, voxel_size, sigma))


def band_levels(
    volume: np.ndarray, voxel_size: Sequence[float] | None = None
) -> tuple[float, float] | None:
    """The band's threshold ``T`` (the Otsu level of ``G*v``) and noise level (the standard
    deviation of ``v - G*v``); None for a volume that smooths to a constant."""
    v = np.asarray(volume, np.float64)
    return _levels(v, smoothed(v, voxel_size))


def _levels(v: np.ndarray, smooth: np.ndarray) -> tuple[float, float] | None:
    from skimage.filters import threshold_otsu

    if float(smooth.max()) == float(smooth.min()):
        return None
    return float(threshold_otsu(smooth)), float(np.std(v - smooth))


def band_mask(
    volume: np.ndarray,
    width: float,
    voxel_size: Sequence[float] | None = None,
    labels: np.ndarray | None = None,
    levels: tuple[float, float] | None = None,
) -> np.ndarray:
    """Voxels whose noise can change the segmentation (bool, the volume's shape).

    Without ``labels``: ``|G*v - T| < width * noise`` (``T`` and the noise from
    :func:`band_levels`, or ``levels`` when given: those of a larger volume that ``volume``
    is a part of); with ``labels``: within ``width`` voxels of a boundary between labels.
    Both grown by two voxels.
    """
    if labels is not None:
        return _label_band(labels, width)
    v = np.asarray(volume, np.float64)
    return _noise_band(v, smoothed(v, voxel_size), width, levels)


def _label_band(labels: np.ndarray, width: float) -> np.ndarray:
    """Voxels within ``width`` (+ two) of a boundary between labels."""
    from scipy import ndimage as ndi

    lab = np.asarray(labels)
    edge = np.zeros(lab.shape, bool)
    for axis in range(lab.ndim):
        step = np.diff(lab, axis=axis) != 0
        lead = [slice(None)] * lab.ndim
        lead[axis] = slice(1, None)
        edge[tuple(lead)] |= step
        lead[axis] = slice(None, -1)
        edge[tuple(lead)] |= step
    return ndi.binary_dilation(edge, iterations=int(round(width)) + _GROW)


def _noise_band(
    v: np.ndarray, smooth: np.ndarray, width: float, levels: tuple[float, float] | None
) -> np.ndarray:
    """``|smooth - T| < width * noise``, grown by two voxels (``smooth``: ``G*v``)."""
    from scipy import ndimage as ndi

    levels = _levels(v, smooth) if levels is None else levels
    if levels is None:
        return np.zeros(v.shape, bool)
    threshold, noise = levels
    near = np.abs(smooth - threshold) < width * noise
    return ndi.binary_dilation(near, iterations=_GROW)


def banded(
    volume: np.ndarray,
    width: float,
    voxel_size: Sequence[float] | None = None,
    labels: np.ndarray | None = None,
    levels: tuple[float, float] | None = None,
) -> np.ndarray:
    """``volume`` (float64) with the voxels outside :func:`band_mask` smoothed."""
    v = np.asarray(volume, np.float64)
    smooth = smoothed(v, voxel_size)  # (once: the mask's threshold surface and the outside)
    mask = (
        _label_band(labels, width) if labels is not None else _noise_band(v, smooth, width, levels)
    )
    return np.where(mask, v, smooth)
