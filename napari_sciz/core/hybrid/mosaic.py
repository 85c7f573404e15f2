"""Tiling the slices of a volume into one 2D image (for 2D codecs such as JPEG XL).

Used by the hybrid codec's JPEG XL base layer and by the classical-codec benchmarks, so that
both code a volume the same way (``../shared/GUIDE.md`` section 2: one mosaic, one header).
"""

from __future__ import annotations

import numpy as np

__all__ = ["mosaic_layout", "tile_mosaic", "untile_mosaic"]


def mosaic_layout(n: int, height: int, width: int) -> tuple[int, int]:
    """Choose ``(rows, cols)`` for tiling ``n`` slices of ``height x width`` into one image.

    Prefers a grid without empty tiles whose aspect ratio stays within 2:1, otherwise the most
    square grid.

    Parameters
    ----------
    n : int
        Number of slices.
    height, width : int
        Slice size.

    Returns
    -------
    tuple of int
        ``(rows, cols)`` with ``rows * cols >= n``.
    """
    best: tuple[float, int, int] | None = None
    for cols in range(1, n + 1):
        rows = -(-n // cols)
        empty = rows * cols - n
        h, w = rows * height, cols * width
        aspect = max(h, w) / min(h, w)
        score = empty * 10.0 + (0.0 if aspect <= 2.0 else 100.0 * aspect) + aspect
        if best is None or score < best[0]:
            best = (score, rows, cols)
    assert best is not None
    return best[1], best[2]


def tile_mosaic(
    volume: np.ndarray, fill: float | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Tile the slices of a ZYX array row by row into one 2D image.

    Parameters
    ----------
    volume : np.ndarray
        ZYX array.
    fill : float, optional
        Value of the empty tiles (default: the volume's mean, which costs almost no bytes).

    Returns
    -------
    mosaic : np.ndarray
        2D array of shape ``(rows * Y, cols * X)``.
    layout : tuple of int
        ``(rows, cols)``.
    """
    z, h, w = volume.shape
    rows, cols = mosaic_layout(z, h, w)
    if fill is None:
        fill = float(np.mean(volume)) if volume.size else 0.0
    out = np.full((rows * h, cols * w), fill, dtype=volume.dtype)
    for i in range(z):
        r, c = divmod(i, cols)
        out[r * h : (r + 1) * h, c * w : (c + 1) * w] = volume[i]
    return out, (rows, cols)


def untile_mosaic(mosaic: np.ndarray, n: int, height: int, width: int, cols: int) -> np.ndarray:
    """Cut a mosaic made by :func:`tile_mosaic` back into ``n`` slices."""
    out = np.empty((n, height, width), dtype=mosaic.dtype)
    for i in range(n):
        r, c = divmod(i, cols)
        out[i] = mosaic[r * height : (r + 1) * height, c * width : (c + 1) * width]
    return out
