"""Reference masks of segmentation guidance: Otsu's threshold, a threshold fitted to labels,
the band around a mask's boundary (numpy only)."""

from __future__ import annotations

import numpy as np

__all__ = ["boundary_band", "otsu_threshold"]


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (maximum between-class variance over a histogram).

    Parameters
    ----------
    values : numpy.ndarray
        Any real array (NaNs are not allowed).
    bins : int
        Histogram bins.

    Returns
    -------
    float
        The threshold ``t``; the foreground is ``values > t``. A constant array returns its value.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centers = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(counts).astype(np.float64)
    w1 = w0[-1] - w0
    s0 = np.cumsum(counts * centers)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    between[(w0 == 0) | (w1 == 0)] = -1
    k = int(np.argmax(between))
    # the threshold is the upper edge of the last background bin
    return float(edges[k + 1])


def _labels_threshold(values: np.ndarray, mask: np.ndarray, bins: int = 256) -> float:
    """The threshold ``t`` whose segmentation ``values > t`` best matches ``mask`` (Dice)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    m = np.asarray(mask, bool).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo or not m.any() or m.all():
        return otsu_threshold(v, bins)
    edges = np.linspace(lo, hi, bins + 1)
    fg, _ = np.histogram(v[m], bins=edges)
    bg, _ = np.histogram(v[~m], bins=edges)
    # voxels above edge k+1 (threshold after bin k)
    tp = fg.sum() - np.cumsum(fg)
    fp = bg.sum() - np.cumsum(bg)
    dice = 2 * tp / np.maximum(2 * tp + fp + (m.sum() - tp), 1)
    return float(edges[int(np.argmax(dice)) + 1])


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a ``(2r+1)``-voxel box (separable max over each axis)."""
    out = mask.copy()
    for axis in range(out.ndim):
        if out.shape[axis] <= 1:
            continue
        for _ in range(radius):
            grown = out.copy()
            lead = [slice(None)] * out.ndim
            trail = [slice(None)] * out.ndim
            lead[axis], trail[axis] = slice(1, None), slice(None, -1)
            grown[tuple(lead)] |= out[tuple(trail)]
            grown[tuple(trail)] |= out[tuple(lead)]
            out = grown
    return out


def boundary_band(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    """Voxels within ``radius`` of the mask's boundary: ``dilate(mask) & ~erode(mask)``.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean mask of any dimensionality (axes of length 1 are left alone).
    radius : int
        Half-width of the band in voxels (a box structuring element).

    Returns
    -------
    numpy.ndarray
        Boolean band, same shape as ``mask``; empty when the mask is empty or full.
    """
    m = np.asarray(mask, bool)
    r = max(int(radius), 1)
    dilated = _dilate(m, r)
    eroded = ~_dilate(~m, r)
    return dilated & ~eroded
