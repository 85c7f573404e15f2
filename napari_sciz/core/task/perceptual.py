"""Perceptual fidelity of a decoded volume: MS-SSIM and gradient magnitude similarity.

MS-SSIM (:func:`ms_ssim`): five scales with the weights of Wang et al. 2003, in 3D while the
stack is deep enough, per slice otherwise. The mean gradient magnitude similarity
(:func:`gradient_similarity`): GMSM of Xue et al. 2014. SSIM itself is
:func:`napari_sciz.core.metrics.ssim`. Perceptual guidance ranks its candidates by these
(:mod:`.prefilter`); the benchmark and the widget report them (:mod:`.score`).
:func:`sensitivity` is how much MS-SSIM weighs a squared error at each voxel, which the
sensitivity curve of perceptual guidance follows (:mod:`.valuemap`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from ...errors import InvalidInputError

__all__ = ["MS_SSIM_WEIGHTS", "gradient_similarity", "ms_ssim", "sensitivity"]

#: MS-SSIM scale weights (Wang, Simoncelli and Bovik 2003)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: SSIM window: Gaussian of sigma 1.5 (about 11 taps), constants K1, K2
_SIGMA, _K1, _K2 = 1.5, 0.01, 0.03
#: gradient magnitude similarity constant, relative to the squared range (170 / 255^2)
_GMS_C = 170.0 / 255.0**2
#: smallest extent an axis keeps being halved at (about one SSIM window)
_MIN_EXTENT = 11


def _spatial(volume: ArrayLike) -> np.ndarray:
    a = np.asarray(volume)
    if a.ndim not in (2, 3):
        raise InvalidInputError(f"task scores take a 2D image or a 3D volume, got {a.ndim}D")
    if a.size == 0:
        raise InvalidInputError("task scores of an empty array")
    a = a.astype(np.float64, copy=False)
    if not np.all(np.isfinite(a)):
        raise InvalidInputError("task scores of an array with NaN or Inf")
    return a


def _halve(a: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """2x block mean along ``axes`` (an odd last sample dropped)."""
    for ax in axes:
        n = a.shape[ax] // 2 * 2
        a = np.take(a, np.arange(n), axis=ax)
        shape = list(a.shape)
        shape[ax : ax + 1] = [n // 2, 2]
        a = a.reshape(shape).mean(axis=ax + 1)
    return a


#: voxels of a scale above which its SSIM terms are computed in strips of rows (with the
#: window's reach around each: the same values; a 16 Mpx image 6.9 s whole, 2.3 s so)
_STRIPS_ABOVE = 1 << 20
#: the window's truncation (its reach: ``int(3.5 sigma + 0.5)``, scipy's)
_TRUNCATE = 3.5


def _ssim_terms(
    x: np.ndarray, y: np.ndarray, data_range: float, sigmas: Sequence[float]
) -> tuple[float, float]:
    """Mean luminance*structure SSIM and mean contrast-structure term of one scale.

    A scale over :data:`_STRIPS_ABOVE` voxels is computed in strips along its rows (axis
    -2), each with the window's reach of rows around it: the same maps, their means summed
    strip by strip (equal to rounding).
    """
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    if x.size <= _STRIPS_ABOVE:
        full, cs = _term_maps(x, y, c1, c2, sigmas)
        return float(np.mean(full)), float(np.mean(cs))
    rows = x.shape[-2]
    reach = int(_TRUNCATE * float(sigmas[-2]) + 0.5)
    step = max(16, _STRIPS_ABOVE // (x.size // rows))
    total_full = total_cs = 0.0
    for r in range(0, rows, step):
        lo, hi = max(0, r - reach), min(rows, r + step + reach)
        part = (Ellipsis, slice(lo, hi), slice(None))
        full, cs = _term_maps(x[part], y[part], c1, c2, sigmas)
        kept = (Ellipsis, slice(r - lo, r - lo + min(step, rows - r)), slice(None))
        total_full += float(np.sum(full[kept]))
        total_cs += float(np.sum(cs[kept]))
    return total_full / x.size, total_cs / x.size


def _term_maps(
    x: np.ndarray, y: np.ndarray, c1: float, c2: float, sigmas: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """The luminance*structure and contrast-structure maps of ``x`` against ``y``."""
    from scipy import ndimage as ndi

    def blur(v: np.ndarray) -> np.ndarray:
        return ndi.gaussian_filter(v, sigmas, mode="reflect", truncate=_TRUNCATE)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return lum * cs, cs


def _levels(plane: Sequence[int]) -> int:
    """How many MS-SSIM scales an image with in-plane extent ``plane`` is scored at."""
    levels = 1
    while levels < len(MS_SSIM_WEIGHTS) and min(plane) // 2**levels >= _MIN_EXTENT:
        levels += 1
    return levels


def _scale_axes(x: np.ndarray) -> tuple[list[float], list[int]]:
    """The window's sigmas at this scale, and the axes halved to the next: the depth axis
    (3D) takes part while it holds at least :data:`_MIN_EXTENT` samples."""
    deep = x.ndim == 3 and x.shape[0] >= _MIN_EXTENT
    sigmas = ([_SIGMA if deep else 0.0] if x.ndim == 3 else []) + [_SIGMA, _SIGMA]
    return sigmas, [x.ndim - 2, x.ndim - 1] + ([0] if deep else [])


def ms_ssim(original: ArrayLike, decoded: ArrayLike, data_range: float | None = None) -> float:
    """Multi-scale SSIM (5 scales), 3D while the stack is deep enough.

    In-plane axes are halved at every scale; the depth axis (3D) is smoothed and halved only
    while it holds at least :data:`_MIN_EXTENT` samples, so a thin stack is scored slice-wise.
    Scales that would leave fewer than :data:`_MIN_EXTENT` in-plane samples are dropped and the
    remaining weights renormalised.

    Parameters
    ----------
    original, decoded : array-like
        2D or 3D, same shape.
    data_range : float, optional
        Value range (default: the original's max - min).

    Returns
    -------
    float
        MS-SSIM in [0, 1] (1: identical).
    """
    x, y = _spatial(original), _spatial(decoded)
    if x.shape != y.shape:
        raise InvalidInputError(f"shapes differ: {x.shape} and {y.shape}")
    rng = float(x.max() - x.min()) if data_range is None else float(data_range)
    rng = rng if rng > 0 else 1.0
    levels = _levels(x.shape[-2:])
    weights = np.array(MS_SSIM_WEIGHTS[:levels])
    weights /= weights.sum()
    value = 1.0
    for level in range(levels):
        sigmas, axes = _scale_axes(x)
        full, cs = _ssim_terms(x, y, rng, sigmas)
        term = full if level == levels - 1 else cs
        value *= max(term, 0.0) ** weights[level]
        if level < levels - 1:
            x, y = _halve(x, axes), _halve(y, axes)
    return float(value)


def sensitivity(volume: ArrayLike, data_range: float | None = None, scales: int = 3) -> np.ndarray:
    """How much MS-SSIM weighs a squared error at each voxel of ``volume``.

    At a scale of MS-SSIM, the contrast-structure term of a window whose original has the
    local variance ``s2`` changes with a small error ``e`` of the decode by about
    ``e^2 / (2 s2 + C2)`` (the decode's variance taken as the original's): an error counts
    most in flat, dark windows and least on strong texture. The weight of a voxel is that
    term at the finest ``scales`` scales, each times its MS-SSIM weight and divided by 4 per
    halving (the in-plane voxels a coarse voxel averages), brought back to the full grid.

    Parameters
    ----------
    volume : array-like
        2D or 3D, finite.
    data_range : float, optional
        Value range (default: max - min), for ``C2``.
    scales : int
        How many of MS-SSIM's scales (at most those the volume is scored at).

    Returns
    -------
    numpy.ndarray
        float64, the shape of ``volume``, positive.
    """
    from scipy import ndimage as ndi

    x = _spatial(volume)
    full = x.shape
    rng = float(x.max() - x.min()) if data_range is None else float(data_range)
    c2 = (_K2 * (rng if rng > 0 else 1.0)) ** 2
    total = np.zeros(full)
    for level in range(min(scales, _levels(full[-2:]))):
        sigmas, axes = _scale_axes(x)
        mean = ndi.gaussian_filter(x, sigmas, mode="reflect", truncate=3.5)
        var = ndi.gaussian_filter(x * x, sigmas, mode="reflect", truncate=3.5) - mean * mean
        weight = MS_SSIM_WEIGHTS[level] / 4**level / (2.0 * np.maximum(var, 0.0) + c2)
        total += _to_grid(weight, full)
        x = _halve(x, axes)
    return total


def _to_grid(a: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``a`` (a halved grid) repeated back to ``shape``, its last samples extended over what
    halving dropped."""
    for ax, n in enumerate(shape):
        a = np.repeat(a, n // a.shape[ax], axis=ax)
        pad = [(0, 0)] * a.ndim
        pad[ax] = (0, n - a.shape[ax])
        a = np.pad(a, pad, mode="edge")
    return a


def gradient_similarity(
    original: ArrayLike, decoded: ArrayLike, data_range: float | None = None
) -> float:
    """Mean gradient magnitude similarity (GMSM), in 3D for volumes.

    ``mean((2 g1 g2 + c) / (g1^2 + g2^2 + c))`` with Sobel gradient magnitudes ``g`` and
    ``c = 170 / 255^2 * range^2`` (the GMSD paper's constant for 8-bit images, scaled).

    Returns
    -------
    float
        In (0, 1]; 1 when the gradients are identical.
    """
    from scipy import ndimage as ndi

    x, y = _spatial(original), _spatial(decoded)
    if x.shape != y.shape:
        raise InvalidInputError(f"shapes differ: {x.shape} and {y.shape}")
    rng = float(x.max() - x.min()) if data_range is None else float(data_range)
    rng = rng if rng > 0 else 1.0
    c = _GMS_C * rng * rng

    def magnitude(v: np.ndarray) -> np.ndarray:
        axes = [ax for ax in range(v.ndim) if v.shape[ax] > 1]
        return np.sqrt(sum(ndi.sobel(v, axis=ax, mode="nearest") ** 2 for ax in axes) / 16.0)

    g1, g2 = magnitude(x), magnitude(y)
    return float(np.mean((2 * g1 * g2 + c) / (g1 * g1 + g2 * g2 + c)))
