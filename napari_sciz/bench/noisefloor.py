"""How far lossless coding of a noisy stack can go: an estimate of its noise's entropy.

``python -m napari_sciz.bench.noisefloor [--data DIR] [--volumes A,B] [--ours]``

A lossless coder must spend at least the entropy of the part of each voxel no neighbour can
predict. For a stack of smooth structures under sensor noise that part is the noise, so the
noise's entropy is a floor under every lossless coder's bits per voxel (a coder can beat it only
where the "noise" is predictable structure, or correlated). This module estimates it:

1. Values are replaced by their index among the distinct values when a stack uses few of them
   (as the lossless coder does, :mod:`napari_sciz.core.lossless.values`): a stack scaled by a
   constant has its noise in units of that step.
2. The noise's standard deviation is estimated from the finest diagonal Haar detail (the
   difference of differences along every axis, normalised: white noise of s.d. ``s`` gives
   coefficients of s.d. ``s``, a smooth signal almost none), robustly (median absolute value
   over 0.6745), per intensity class (:data:`CLASSES` quantiles of the local mean: photon noise
   grows with the signal).
3. Each class's noise is taken as Gaussian, rounded to integers: its entropy in bits per voxel,
   averaged over the classes.

The estimate is a guide, not a bound: correlated noise, structure finer than the Haar detail
or non-Gaussian noise (Poisson at low counts) move it either way.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .volumes import find_data_dir, list_volumes

__all__ = ["gaussian_entropy_bits", "haar_noise", "noise_floor_bits"]

PROG = "python -m napari_sciz.bench.noisefloor"

#: intensity classes of the estimate
CLASSES = 20

#: a Gaussian's median absolute value over its standard deviation
_MAD = 0.6745


def gaussian_entropy_bits(sigma: float) -> float:
    """Entropy (bits) of a Gaussian of s.d. ``sigma`` rounded to integers.

    Parameters
    ----------
    sigma : float
        Standard deviation (voxel value units), >= 0.

    Returns
    -------
    float
        Bits per value; 0 for ``sigma == 0``.
    """
    if sigma <= 0:
        return 0.0
    if sigma > 8:  # rounding adds a uniform's variance (1/12); exact to 1e-6 bits here
        return 0.5 * math.log2((sigma**2 + 1 / 12) * 2 * math.pi * math.e)
    k = np.arange(-int(12 * sigma) - 2, int(12 * sigma) + 3, dtype=np.float64)
    cdf = 0.5 * (1 + np.vectorize(math.erf)((np.append(k - 0.5, k[-1] + 0.5)) / (sigma * 2**0.5)))
    p = np.diff(cdf)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def _indexed(volume: np.ndarray) -> tuple[np.ndarray, bool]:
    """The values (float64), as indices among the distinct values when they are few (a
    quarter of the range at most); and whether they were replaced."""
    v = np.asarray(volume)
    if v.dtype.kind in "ui":
        values, index = np.unique(v, return_inverse=True)
        span = float(values[-1]) - float(values[0]) + 1
        if values.size <= span / 4:
            return index.reshape(v.shape).astype(np.float64), True
    return v.astype(np.float64), False


def haar_noise(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finest diagonal Haar detail and local mean of every 2x2(x2) cell.

    Parameters
    ----------
    volume : numpy.ndarray
        2D image or 3D stack (a 3D stack of one plane is taken as 2D).

    Returns
    -------
    detail, mean : numpy.ndarray
        One value per cell, flattened; white noise of s.d. ``s`` gives details of s.d. ``s``.
    """
    v = np.asarray(volume, np.float64)
    v = v[0] if v.ndim == 3 and v.shape[0] == 1 else v
    v = v[tuple(slice(0, n - n % 2) for n in v.shape)]
    detail, mean = v, v
    for axis in range(v.ndim):
        even = [slice(None)] * v.ndim
        odd = [slice(None)] * v.ndim
        even[axis], odd[axis] = slice(0, None, 2), slice(1, None, 2)
        detail = detail[tuple(even)] - detail[tuple(odd)]
        mean = mean[tuple(even)] + mean[tuple(odd)]
    cells = 2**v.ndim
    return (detail / math.sqrt(cells)).ravel(), (mean / cells).ravel()


def noise_floor_bits(volume: np.ndarray, classes: int = CLASSES) -> dict[str, Any]:
    """The estimated entropy of ``volume``'s noise, in bits per voxel (module doc).

    Parameters
    ----------
    volume : numpy.ndarray
        Integer 2D image or 3D stack.
    classes : int
        Intensity classes.

    Returns
    -------
    dict
        ``bits`` (the floor, bits per voxel), ``sigma`` (the noise s.d. over all cells, in
        the units coded: value indices where the stack uses few values), ``indexed`` (whether
        it does).
    """
    values, indexed = _indexed(volume)
    detail, mean = haar_noise(values)
    if detail.size == 0:
        raise ValueError("the volume is too small for a noise estimate")
    edges = np.quantile(mean, np.linspace(0, 1, classes + 1)[1:-1])
    cls = np.searchsorted(edges, mean)
    bits = 0.0
    for c in range(classes):
        d = detail[cls == c]
        if d.size:
            bits += d.size * gaussian_entropy_bits(float(np.median(np.abs(d))) / _MAD)
    return {
        "bits": bits / detail.size,
        "sigma": float(np.median(np.abs(detail))) / _MAD,
        "indexed": indexed,
    }


def _ours_bits(volume: np.ndarray) -> float:
    from ..core import api

    result = api.compress(volume, mode="lossless")
    return 8.0 * result.nbytes / volume.size


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table (markdown) of the estimate per volume.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 without data.
    """
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None, metavar="DIR", help="folder of volumes")
    p.add_argument("--volumes", default=None, metavar="NAME,...", help="only these file stems")
    p.add_argument("--ours", action="store_true", help="also code each losslessly (slow)")
    args = p.parse_args(argv)
    data_dir = args.data if args.data is not None else find_data_dir()
    if data_dir is None or not Path(data_dir).is_dir():
        print(f"{PROG}: no data folder", file=sys.stderr)
        return 1
    names = None if args.volumes is None else [n.strip() for n in args.volumes.split(",")]
    head = "| volume | noise s.d. | floor (bits/voxel) |"
    print(head + (" ours (bits/voxel) | ours above floor |" if args.ours else ""))
    print("|---" * (5 if args.ours else 3) + "|")
    for name, vol in list_volumes(Path(data_dir), names=names, include_2d=True):
        if vol.dtype.kind not in "ui":
            continue
        est = noise_floor_bits(vol)
        sd = f"{est['sigma']:.1f}" + (" (value index)" if est["indexed"] else "")
        row = f"| {name} | {sd} | {est['bits']:.2f} |"
        if args.ours:
            ours = _ours_bits(vol)
            row += f" {ours:.2f} | {100 * (ours / est['bits'] - 1):+.1f} % |"
        print(row, flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
