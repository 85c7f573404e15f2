"""Where the segmentation pipeline's threshold surface lies in a decoded volume.

The pipeline a biologist runs (:func:`napari_sciz.core.task.score.segment`) thresholds the
Gaussian-smoothed volume ``S = G*x`` at a level ``T``. A voxel's side of that surface in the
decoded volume differs from its side in the original mostly within a voxel or two of the
decoded surface: the *signed distance* ``(S - T) / |grad S|`` (in voxels) is the context the
flags that correct the sides are coded in (:mod:`.flags`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: width (voxels) of one distance class
DISTANCE_STEP = 0.25
#: distance classes per side; the last holds every voxel at least this many steps away
DISTANCE_CLASSES = 17
#: contexts: distance class x side of the decoded surface
N_CONTEXTS = 2 * DISTANCE_CLASSES


def smooth(volume: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """``volume`` (float64) smoothed as the segmentation pipeline smooths it (the values of
    :func:`scipy.ndimage.gaussian_filter`, :func:`.gauss.gaussian`)."""
    from .gauss import gaussian

    return gaussian(volume, sigmas)


def otsu(smoothed: np.ndarray) -> float:
    """The Otsu level of ``smoothed`` (the pipeline's threshold)."""
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(smoothed))


def contexts(smoothed: np.ndarray, threshold: float) -> np.ndarray:
    """Context of every voxel (uint8): ``2 * distance class + (S > T)``.

    Parameters
    ----------
    smoothed : numpy.ndarray
        ``S``, the smoothed decoded volume.
    threshold : float
        ``T``.
    """
    # (an axis of one sample, a single-plane stack's, has no gradient)
    axes = [ax for ax in range(smoothed.ndim) if smoothed.shape[ax] > 1]
    grads = np.gradient(smoothed, axis=axes) if axes else []
    if len(axes) == 1:
        grads = [grads]
    norm = np.sqrt(sum((g * g for g in grads), np.zeros(smoothed.shape)))
    above = smoothed > threshold
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.abs(smoothed - threshold) / norm
    dist = np.where(np.isfinite(dist), dist, np.inf)
    cls = np.minimum(dist / DISTANCE_STEP, DISTANCE_CLASSES - 1).astype(np.uint8)
    return (2 * cls + above).astype(np.uint8)
