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

    The gradient is numpy's (:func:`numpy.gradient`, over the axes of more than one
    sample: a single-plane stack's axis of one sample has none), computed by a compiled
    kernel with numpy's very operations (:func:`.kernels.distance_classes`; the files
    record a checksum of the contexts).

    Parameters
    ----------
    smoothed : numpy.ndarray
        ``S``, the smoothed decoded volume (2D or 3D).
    threshold : float
        ``T``.
    """
    from .gauss import pool, row_parts
    from .kernels import distance_classes

    if smoothed.ndim not in (2, 3):
        raise ValueError(f"contexts of a 2D or 3D volume, not {smoothed.ndim}D")

    values = np.ascontiguousarray(smoothed, np.float64)
    cube = values.reshape((1,) * (3 - values.ndim) + values.shape)
    out = np.empty(cube.shape, np.uint8)
    last = DISTANCE_CLASSES - 1
    with pool(cube.size) as threads:
        parts = row_parts(cube.shape[1], threads)
        run = [(cube, float(threshold), DISTANCE_STEP, last, out, a, b) for a, b in parts]
        if threads is None:
            for args in run:
                distance_classes(*args)
        else:
            for future in [threads.submit(distance_classes, *args) for args in run]:
                future.result()
    return out.reshape(smoothed.shape)
