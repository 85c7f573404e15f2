"""Perceptual fidelity of a decoded volume: MS-SSIM and gradient magnitude similarity.

MS-SSIM (:func:`ms_ssim`): five scales with the weights of Wang et al. 2003, in 3D while the
stack is deep enough, per slice otherwise. The mean gradient magnitude similarity
(:func:`gradient_similarity`): GMSM of Xue et al. 2014. SSIM itself is
:func:`napari_sciz.core.metrics.ssim`. Perceptual guidance ranks its candidates by these
(:mod:`.prefilter`); the benchmark and the widget report them (:mod:`.score`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from ...errors import InvalidInputError

__all__ = ["MS_SSIM_WEIGHTS", "gradient_similarity", "ms_ssim"]

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


def _ssim_terms(
    x: np.ndarray, y: np.ndarray, data_range: float, sigmas: Sequence[float]
) -> tuple[float, float]:
    """Mean luminance*structure SSIM and mean contrast-structure term of one scale."""
    from scipy import ndimage as ndi

    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2

    def blur(v: np.ndarray) -> np.ndarray:
        return ndi.gaussian_filter(v, sigmas, mode="reflect", truncate=3.5)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return float(np.mean(lum * cs)), float(np.mean(cs))


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
    plane = x.shape[-2:]
    levels = 1
    while levels < len(MS_SSIM_WEIGHTS) and min(plane) // 2**levels >= _MIN_EXTENT:
        levels += 1
    weights = np.array(MS_SSIM_WEIGHTS[:levels])
    weights /= weights.sum()
    value = 1.0
    for level in range(levels):
        deep = x.ndim == 3 and x.shape[0] >= _MIN_EXTENT
        sigmas = ([_SIGMA if deep else 0.0] if x.ndim == 3 else []) + [_SIGMA, _SIGMA]
        full, cs = _ssim_terms(x, y, rng, sigmas)
        term = full if level == levels - 1 else cs
        value *= max(term, 0.0) ** weights[level]
        if level < levels - 1:
            axes = [x.ndim - 2, x.ndim - 1] + ([0] if deep and x.ndim == 3 else [])
            x, y = _halve(x, axes), _halve(y, axes)
    return float(value)


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
