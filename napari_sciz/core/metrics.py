"""Quality metrics used everywhere in napari-sciz (CLI summary, widgets, benchmarks).

The definitions follow ``GUIDE.md`` ("How we measure"):

* **PSNR** uses the *original's* value range ``max - min`` (over the whole array) as the peak and
  the mean squared error over the whole array.
* **SSIM** is the mean over 2D slices (the last two axes; all leading axes are flattened) of
  :func:`skimage.metrics.structural_similarity` with its defaults (7x7 uniform window, ``K1=0.01``,
  ``K2=0.03``, sample covariance, the filter-radius border cropped before averaging) and
  ``data_range = max - min`` of the original. It is re-implemented here in pure numpy (scikit-image
  is not a runtime dependency) and agrees with scikit-image to ~1e-9.
* **max_abs_error** is the largest absolute difference.

All metrics accept any real numeric dtype (bool, integer, float) for either argument, compute in
float64, and work slice by slice (or in chunks of a few million elements), so that a 100 MB volume
(or a ``numpy.memmap``) never needs more than a few tens of MB of temporary memory.

Conventions for degenerate inputs
---------------------------------
* **Constant original** (``max == min``): the value range is 0, which would make PSNR and SSIM
  undefined. A peak / data range of **1.0** is used instead (one unit of the original's values), so
  the metrics stay finite and still reward small errors. Identical arrays always give
  ``psnr == inf``.
* **Slices smaller than 7 pixels** along Y or X: SSIM uses the largest odd window that fits,
  ``min(7, ny, nx)`` rounded down to an odd number (a single pixel in the extreme case, where SSIM
  reduces to its luminance term). scikit-image raises an error for such slices instead.
* Arrays must have the same shape and at least one element; SSIM needs at least two dimensions.
  Violations raise :class:`~napari_sciz.errors.InvalidInputError`.
* A non-finite value range (NaN/Inf in the original) raises
  :class:`~napari_sciz.errors.InvalidInputError`; NaN in the reconstruction propagates (NaN result).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InvalidInputError

__all__ = ["max_abs_error", "psnr", "ssim", "value_range"]

#: Number of elements processed at once by the chunked metrics (32 MB of float64).
_CHUNK_ELEMENTS = 1 << 22

#: scikit-image's defaults for ``structural_similarity``.
_SSIM_WIN = 7
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def _as_pair(original: ArrayLike, reconstruction: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return both inputs as arrays (no copy where possible), checking shape and dtype."""
    a = original if isinstance(original, np.ndarray) else np.asarray(original)
    b = reconstruction if isinstance(reconstruction, np.ndarray) else np.asarray(reconstruction)
    for name, arr in (("original", a), ("reconstruction", b)):
        if arr.dtype.kind not in "biuf":
            raise InvalidInputError(
                f"{name} has unsupported dtype {arr.dtype} (must be real numeric)"
            )
    if a.shape != b.shape:
        raise InvalidInputError(f"shape mismatch: original {a.shape} vs reconstruction {b.shape}")
    if a.size == 0:
        raise InvalidInputError("cannot compute a metric of an empty array")
    return a, b


def _chunks(shape: tuple[int, ...]) -> Iterator[tuple[slice, ...]]:
    """Yield index tuples covering an array of ``shape`` with about ``_CHUNK_ELEMENTS`` each."""
    if len(shape) == 0:
        yield ()
        return
    inner = math.prod(shape[1:]) or 1
    step = max(1, _CHUNK_ELEMENTS // inner)
    for start in range(0, shape[0], step):
        yield (slice(start, min(start + step, shape[0])),)


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _diffs(a: np.ndarray, b: np.ndarray) -> Iterator[np.ndarray]:
    """``a - b`` in float64, slab by slab (see :func:`_chunks`)."""
    for idx in _chunks(a.shape):
        yield _f64(a[idx]) - _f64(b[idx])


def value_range(original: ArrayLike) -> float:
    """Return the peak used by :func:`psnr` and :func:`ssim`: ``max - min`` of ``original``.

    Parameters
    ----------
    original : array_like
        The reference array (any real numeric dtype).

    Returns
    -------
    float
        ``max - min`` over the whole array, or ``1.0`` when the array is constant.

    Raises
    ------
    InvalidInputError
        If the array is empty, not numeric, or its range is not finite (NaN/Inf).
    """
    a = original if isinstance(original, np.ndarray) else np.asarray(original)
    if a.dtype.kind not in "biuf":
        raise InvalidInputError(f"original has unsupported dtype {a.dtype} (must be real numeric)")
    if a.size == 0:
        raise InvalidInputError("cannot compute a metric of an empty array")
    if a.dtype.kind == "b":
        a = a.view(np.uint8)
    peak = float(np.max(a)) - float(np.min(a))
    if not math.isfinite(peak):
        raise InvalidInputError("original contains NaN or infinite values")
    return peak if peak > 0 else 1.0


def squared_error_sum(original: ArrayLike, reconstruction: ArrayLike) -> float:
    """Sum of squared differences in float64, computed in slabs (no full-size temporaries).

    Parameters
    ----------
    original, reconstruction : array_like
        Same shape, any real numeric dtype.

    Returns
    -------
    float
        ``sum((original - reconstruction) ** 2)``.

    Raises
    ------
    InvalidInputError
        On shape mismatch or empty / non-numeric input.

    Examples
    --------
    >>> squared_error_sum([1, 2, 3], [1, 5, 2])
    10.0
    """
    a, b = _as_pair(original, reconstruction)
    return sum((float(np.vdot(diff, diff)) for diff in _diffs(a, b)), 0.0)


def _resolve_range(a: np.ndarray, data_range: float | None) -> float:
    if data_range is None:
        return value_range(a)
    peak = float(data_range)
    if not math.isfinite(peak) or peak <= 0:
        raise InvalidInputError(f"data_range must be a positive finite number, got {data_range!r}")
    return peak


def psnr(
    original: ArrayLike, reconstruction: ArrayLike, *, data_range: float | None = None
) -> float:
    """Peak signal-to-noise ratio in dB, with the original's value range as the peak.

    Parameters
    ----------
    original : array_like
        The reference array (any real numeric dtype).
    reconstruction : array_like
        The array to evaluate, same shape as ``original`` (any real numeric dtype).
    data_range : float, optional
        Peak to use instead of ``original.max() - original.min()`` (useful to evaluate a region
        with the whole volume's range).

    Returns
    -------
    float
        ``10 * log10(peak**2 / MSE)``; ``inf`` when the arrays are identical. The peak of a
        constant original is taken as 1.0.

    Raises
    ------
    InvalidInputError
        On shape mismatch, empty or non-numeric input, or a non-finite original range.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    >>> round(psnr(a, a + 1.0), 2)
    48.13
    >>> psnr(a, a)
    inf
    """
    a, b = _as_pair(original, reconstruction)
    peak = _resolve_range(a, data_range)
    mse = squared_error_sum(a, b) / a.size
    if mse == 0.0:
        return math.inf
    if math.isnan(mse):
        return math.nan
    return 10.0 * math.log10(peak * peak / mse)


def max_abs_error(original: ArrayLike, reconstruction: ArrayLike) -> float:
    """Largest absolute difference between two arrays.

    Parameters
    ----------
    original : array_like
        The reference array (any real numeric dtype).
    reconstruction : array_like
        The array to evaluate, same shape as ``original``.

    Returns
    -------
    float
        ``max(|original - reconstruction|)`` computed in float64.

    Raises
    ------
    InvalidInputError
        On shape mismatch or empty / non-numeric input.

    Examples
    --------
    >>> max_abs_error([1, 2, 3], [1, 5, 2])
    3.0
    """
    a, b = _as_pair(original, reconstruction)
    worst = 0.0
    for diff in _diffs(a, b):
        m = float(np.max(np.abs(diff)))
        if math.isnan(m):
            return math.nan
        worst = max(worst, m)
    return worst


def _box_mean_valid(img: np.ndarray, win: int) -> np.ndarray:
    """Mean over every ``win x win`` window fully inside ``img`` (shape ``(ny-win+1, nx-win+1)``).

    These are exactly the values of ``scipy.ndimage.uniform_filter(img, win)`` that survive
    scikit-image's border crop, whatever the filter's boundary mode.
    """
    ny, nx = img.shape
    oy, ox = ny - win + 1, nx - win + 1
    rows = img[0:oy].copy()
    for k in range(1, win):
        rows += img[k : k + oy]
    out = rows[:, 0:ox].copy()
    for k in range(1, win):
        out += rows[:, k : k + ox]
    out /= win * win
    return out


#: output rows of SSIM's map computed at once on a large slice (its temporaries stay in cache)
_SSIM_STRIP_ROWS = 256
#: pixels of a slice above which its SSIM map is computed in strips of rows
_SSIM_STRIPS_ABOVE = 1 << 20


def _ssim_slice(x: np.ndarray, y: np.ndarray, win: int, c1: float, c2: float) -> float:
    """Mean SSIM of one 2D slice pair (float64), scikit-image's formulation.

    A slice over :data:`_SSIM_STRIPS_ABOVE` pixels is measured in strips of
    :data:`_SSIM_STRIP_ROWS` rows of the map (the same window values; the mean summed
    strip by strip): a 4096x4096 image took 6.9 s whole, 0.8 s so.
    """
    # Second moments are shift invariant; shifting both images by the same constant before
    # E[x^2] - E[x]^2 avoids catastrophic cancellation for large offsets (e.g. uint16 CT data).
    shift = float(x.mean())
    if x.size <= _SSIM_STRIPS_ABOVE:
        return float(np.mean(_ssim_map(x, y, shift, win, c1, c2), dtype=np.float64))
    rows = x.shape[0] - win + 1
    total = 0.0
    for r in range(0, rows, _SSIM_STRIP_ROWS):
        part = slice(r, min(r + _SSIM_STRIP_ROWS, rows) + win - 1)
        total += float(np.sum(_ssim_map(x[part], y[part], shift, win, c1, c2), dtype=np.float64))
    return total / (rows * (x.shape[1] - win + 1))


def _ssim_map(
    x: np.ndarray, y: np.ndarray, shift: float, win: int, c1: float, c2: float
) -> np.ndarray:
    """SSIM of every window fully inside ``x`` and ``y`` (float64; shifted by ``shift``)."""
    n_window = win * win
    cov_norm = n_window / (n_window - 1) if n_window > 1 else 1.0
    xs = x - shift
    ys = y - shift
    ux = _box_mean_valid(xs, win)
    uy = _box_mean_valid(ys, win)
    vx = cov_norm * (_box_mean_valid(xs * xs, win) - ux * ux)
    vy = cov_norm * (_box_mean_valid(ys * ys, win) - uy * uy)
    vxy = cov_norm * (_box_mean_valid(xs * ys, win) - ux * uy)
    ux += shift
    uy += shift
    a1 = 2.0 * ux * uy + c1
    a2 = 2.0 * vxy + c2
    b1 = ux * ux + uy * uy + c1
    b2 = vx + vy + c2
    return (a1 * a2) / (b1 * b2)


def ssim(
    original: ArrayLike, reconstruction: ArrayLike, *, data_range: float | None = None
) -> float:
    """Structural similarity: mean over 2D slices of scikit-image's default SSIM.

    Every slice along the last two axes (leading axes flattened) is compared with a 7x7 uniform
    window, ``K1=0.01``, ``K2=0.03``, sample covariance and the 3-pixel border cropped, exactly as
    ``skimage.metrics.structural_similarity(o, r, data_range=original.max() - original.min())``;
    the result is the mean of the per-slice values.

    Parameters
    ----------
    original : array_like
        The reference array, at least 2D (any real numeric dtype).
    reconstruction : array_like
        The array to evaluate, same shape as ``original``.
    data_range : float, optional
        Data range to use instead of ``original.max() - original.min()`` over the whole array.

    Returns
    -------
    float
        Mean SSIM, 1.0 for identical arrays.

    Raises
    ------
    InvalidInputError
        On shape mismatch, fewer than two dimensions, empty or non-numeric input, or a non-finite
        original range.

    Notes
    -----
    Slices smaller than 7 pixels along an axis use the largest odd window that fits in both
    (``min(7, ny, nx)`` rounded down to odd). A constant original uses a data range of 1.0.
    Computation is in float64, one slice at a time.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.arange(64, dtype=np.uint16).reshape(8, 8)
    >>> ssim(a, a)
    1.0
    """
    a, b = _as_pair(original, reconstruction)
    if a.ndim < 2:
        raise InvalidInputError(f"SSIM needs an array with at least 2 dimensions, got {a.ndim}")
    peak = _resolve_range(a, data_range)
    c1 = (_SSIM_K1 * peak) ** 2
    c2 = (_SSIM_K2 * peak) ** 2
    ny, nx = a.shape[-2:]
    win = min(_SSIM_WIN, ny, nx)
    if win % 2 == 0:
        win -= 1
    total = 0.0
    count = 0
    for idx in np.ndindex(*a.shape[:-2]):
        total += _ssim_slice(_f64(a[idx]), _f64(b[idx]), win, c1, c2)
        count += 1
    return total / count
