"""Bytes between blocks by their measured rate-distortion: the same slope everywhere.

A file's PSNR is that of its mean squared error over every voxel, so the bytes of a
many-block file are best spent where one more byte removes the most squared error: at the
optimum every block's rate-distortion curve has the same slope (the Lagrangian rule of every
rate-controlled codec; SPERR or HEVC coding a whole volume do it inside one stream). A
block of air around a CT scan or of dark camera noise gains little per byte; a block of
tissue edges gains much.

Each block's curve is *probed*: SPERR codes it once at the highest of a few bits per value
around the file's average, the embedded stream is cut to each of the others (identical to
SPERR's own streams at those rates) and the squared error of each decode is measured (about
0.06 s per million voxels for the encode and 0.03 s per decode on this project's 2-core
machine; blocks are probed on threads). :func:`allocate_by_rd` then finds, by bisection on the
slope, the bytes per block at which every curve (piecewise linear in log bytes / log error,
extended by its end segments) has the same slope and the shares sum to the budget, within
:data:`SHARE_RANGE` times the block's share by voxels. SPERR is only the probe: the hybrid
encoder may code a block with HEVC, whose curve on CT at low rates is much steeper, so the
encoder takes the geometric mean of these shares and the allocation by detail
(:func:`blend_shares`, :data:`PROBE_WEIGHT`).

Design measurement, SPERR alone as the codec (64x, PSNR of the whole volume, shared stacks
cut into 4-50 blocks): the CT brain +0.76 dB, the CT phantom +0.78 dB, the fluorescence
nuclei +0.15 dB, the snow XCT +0.01 dB over the allocation by mean neighbour difference
(:func:`~napari_sciz.core.blocks.allocate_from_stats` without probes). The hybrid codec's
numbers: ``python -m napari_sciz.bench.alloc`` (``docs/benchmarks.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "PROBE_FACTORS",
    "PROBE_WEIGHT",
    "SHARE_RANGE",
    "allocate_by_rd",
    "blend_shares",
    "lift_to_floor",
    "probe_rd",
]

#: the probed rates, as multiples of the file's average bits per value
PROBE_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
#: weight of the probed shares against the allocation by detail (a geometric mean): the probe
#: codec is SPERR, and the block may be coded by another (see the module's notes)
PROBE_WEIGHT = 0.5
#: a block's share stays within these multiples of its share by voxels
SHARE_RANGE = (0.125, 8.0)
#: points of each block's curve the allocation evaluates (log-spaced over SHARE_RANGE)
_GRID = 121
#: bisection steps on the log of the slope
_BISECT = 60


def probe_rd(block: np.ndarray, bits_per_value: float) -> tuple[tuple[float, float], ...] | None:
    """Rate-distortion points ``((bytes, squared error), ...)`` of SPERR on ``block``.

    Parameters
    ----------
    block : numpy.ndarray
        One block ``(D, H, W)`` (``D = 1`` for a 2D image), finite values.
    bits_per_value : float
        The file's average bits per value; the probes code :data:`PROBE_FACTORS` times it.

    Returns
    -------
    tuple of (float, float) or None
        The points, by increasing bytes; None when SPERR is not installed or cannot code
        the block (e.g. a block too small for its wavelet).
    """
    try:
        import imagecodecs
    except ModuleNotFoundError:  # pragma: no cover - a dependency of napari-sciz
        return None
    sperr = getattr(imagecodecs, "SPERR", None)
    if sperr is None or not sperr.available:
        return None
    data = np.ascontiguousarray(block, dtype=np.float64)
    data = data[0] if data.ndim == 3 and data.shape[0] == 1 else data
    if data.size == 0:
        return None
    from .hybrid.sperrpack import cut_sperr

    # one encode at the highest rate; SPERR's stream is embedded, so the lower rates are its
    # prefixes (:func:`~napari_sciz.core.hybrid.sperrpack.cut_sperr`): the same streams as
    # encodes at those rates, byte for byte, for one encode instead of five
    rates = [min(max(f * float(bits_per_value), 1e-3), 64.0) for f in PROBE_FACTORS]
    points = []
    try:
        top = bytes(imagecodecs.sperr_encode(data, max(rates), "bpp"))
        for bpv in sorted(set(rates)):
            stream = cut_sperr(top, data.shape, math.ceil(bpv * data.size / 8))
            decoded = imagecodecs.sperr_decode(stream, shape=data.shape, dtype=np.float64)
            err = np.asarray(decoded, dtype=np.float64).reshape(data.shape) - data
            points.append((float(len(stream)), float(np.einsum("i,i->", err.ravel(), err.ravel()))))
    except Exception:  # noqa: BLE001 - SPERR refuses some shapes: no probe, no harm
        return None
    points.sort()
    return tuple(points)


def _curves(
    probes: Sequence[Sequence[tuple[float, float]]], base: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bytes ``(n, _GRID)`` (``base`` times multiples over :data:`SHARE_RANGE`) and each
    block's squared error there, interpolated in log-log and non-increasing."""
    mult = np.geomspace(SHARE_RANGE[0], SHARE_RANGE[1], _GRID)
    rates = base[:, None] * mult[None, :]
    errors = np.empty_like(rates)
    for i, pts in enumerate(probes):
        b = np.log(np.maximum([p[0] for p in pts], 1.0))
        # a floor keeps the logs finite (an exact decode codes 0 error)
        floor = max(max(p[1] for p in pts), 1e-300) * 1e-12
        e = np.log(np.maximum([p[1] for p in pts], floor))
        x = np.log(rates[i])
        y = np.interp(x, b, e)
        if b.size > 1:  # beyond the probes, the end segments' slopes (never increasing)
            lo = min((e[1] - e[0]) / max(b[1] - b[0], 1e-9), 0.0)
            hi = min((e[-1] - e[-2]) / max(b[-1] - b[-2], 1e-9), 0.0)
            y = np.where(x < b[0], e[0] + lo * (x - b[0]), y)
            y = np.where(x > b[-1], e[-1] + hi * (x - b[-1]), y)
        errors[i] = np.minimum.accumulate(np.exp(y))
    return rates, errors


def allocate_by_rd(
    probes: Sequence[Sequence[tuple[float, float]]],
    voxels: Sequence[int],
    budget: float,
    min_bytes: int = 160,
) -> list[float]:
    """Split ``budget`` payload bytes between blocks at an equal rate-distortion slope.

    Parameters
    ----------
    probes : sequence of sequences of (float, float)
        Each block's ``(bytes, squared error)`` points (:func:`probe_rd`).
    voxels : sequence of int
        Each block's number of voxels.
    budget : float
        Bytes of all payloads.
    min_bytes : int
        The least bytes of a block.

    Returns
    -------
    list of float
        Bytes per block; they sum to ``budget`` (given ``budget >= len(probes) * min_bytes``).
    """
    n = len(probes)
    vox = np.asarray(voxels, dtype=np.float64)
    if n == 1:
        return [float(budget)]
    base = budget * vox / vox.sum()
    rates, errors = _curves(probes, base)
    # the error each step along the grid removes, per byte (the slope, positive)
    gain = (errors[:, :-1] - errors[:, 1:]) / np.diff(rates, axis=1)

    def shares(log_slope: float) -> np.ndarray:
        # each block takes every step that removes more than exp(log_slope) per byte
        # (the steps' gains fall along a convex curve; the first one below ends the run)
        take = np.cumprod(gain > math.exp(log_slope), axis=1)
        return rates[np.arange(n), take.sum(axis=1)]

    positive = gain[gain > 0]
    if positive.size == 0:  # no block's error falls: by voxels
        out = base
    else:
        lo, hi = math.log(positive.min()) - 1.0, math.log(positive.max()) + 1.0
        for _ in range(_BISECT):
            mid = 0.5 * (lo + hi)
            if shares(mid).sum() > budget:
                lo = mid
            else:
                hi = mid
        out = shares(hi)  # at most the budget; the rest by the same proportions
        out = out * (budget / out.sum())
    return lift_to_floor(out, min_bytes)


def blend_shares(detail: np.ndarray, probed: np.ndarray) -> np.ndarray:
    """Relative shares between the allocation by ``detail`` and the ``probed`` one: their
    geometric mean with weight :data:`PROBE_WEIGHT` (both normalised; the result sums to 1)."""
    d = np.asarray(detail, dtype=np.float64)
    p = np.asarray(probed, dtype=np.float64)
    log = (1 - PROBE_WEIGHT) * np.log(d / d.sum()) + PROBE_WEIGHT * np.log(p / p.sum())
    w = np.exp(log - log.max())
    return w / w.sum()


def lift_to_floor(shares: np.ndarray, min_bytes: int) -> list[float]:
    """``shares`` with every block lifted to ``min_bytes``, the others paying in proportion
    (the sum is kept)."""
    shares = np.asarray(shares, dtype=np.float64).copy()
    for _ in range(4):
        low = shares < min_bytes
        if not low.any():
            break
        deficit = float((min_bytes - shares[low]).sum())
        shares[low] = min_bytes
        rich = ~low
        shares[rich] -= deficit * shares[rich] / shares[rich].sum()
    return [float(s) for s in shares]
