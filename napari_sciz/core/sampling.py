"""Where the samples of a region decoded at a ``scale`` sit, and linear sampling between voxels.

A region ``start:stop`` of an axis sampled at ``scale`` has ``max(1, round((stop - start) *
scale))`` samples; sample ``j`` sits at coordinate ``start + (j + 0.5) / scale - 0.5`` (voxel
centres at integers), so ``scale = 1`` gives the voxels themselves. The lossy mode evaluates its
field at these coordinates; the modes that decode voxels (hybrid, lossless, bounded) sample the
decoded voxels there by separable linear interpolation (:func:`sample_linear`), which returns
the voxels exactly at integer coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["sample_coordinates", "sample_linear", "source_box"]


def sample_coordinates(
    spatial_box: Sequence[tuple[int, int]], scales: Sequence[float]
) -> list[np.ndarray]:
    """The coordinates (global voxel units) of the samples along each spatial axis."""
    coords = []
    for (a, b), s in zip(spatial_box, scales, strict=True):
        n = max(1, int(round((b - a) * s)))
        coords.append(a + (np.arange(n) + 0.5) / s - 0.5)
    return coords


def source_box(coords: Sequence[np.ndarray], sizes: Sequence[int]) -> list[tuple[int, int]]:
    """The voxels linear sampling at ``coords`` reads, per axis of length ``sizes``."""
    box = []
    for c, n in zip(coords, sizes, strict=True):
        pos = np.clip(c, 0, n - 1)
        box.append((int(np.floor(pos.min())), min(n, int(np.floor(pos.max())) + 2)))
    return box


def sample_linear(
    values: np.ndarray,
    origin: Sequence[int],
    coords: Sequence[np.ndarray],
    sizes: Sequence[int],
) -> np.ndarray:
    """Sample ``values`` at ``coords`` by separable linear interpolation.

    Parameters
    ----------
    values : numpy.ndarray
        Voxels whose last ``len(coords)`` axes are spatial; the others are kept.
    origin : sequence of int
        Global index of the first voxel of ``values`` along each spatial axis.
    coords : sequence of numpy.ndarray
        Global coordinates of the samples per spatial axis (clamped to the image).
    sizes : sequence of int
        Length of each spatial axis of the whole image (for the clamping).

    Returns
    -------
    numpy.ndarray
        Float64 samples; exactly the voxels at integer coordinates.
    """
    out = np.asarray(values, dtype=np.float64)
    lead = out.ndim - len(coords)
    for i, (c, o, n) in enumerate(zip(coords, origin, sizes, strict=True)):
        axis = lead + i
        pos = np.clip(c, 0, n - 1) - o
        i0 = np.floor(pos).astype(np.intp)
        i1 = np.minimum(i0 + 1, out.shape[axis] - 1)
        shape = [1] * out.ndim
        shape[axis] = len(c)
        w = (pos - i0).reshape(shape)
        a = np.take(out, i0, axis=axis)
        b = np.take(out, i1, axis=axis)
        out = a + (b - a) * w
    return out
