"""A piecewise-linear intensity map after the loop filter: the decoded value's conditional mean.

A base layer and a linear filter reproduce a block's values up to a smooth error; where the
values cluster around a few levels (the ice and air of a snow XCT, the phases of a porous
material), the best estimate of the original given the decoded value is not the decoded value
itself: decoded values between two phases are, on average, nearer one of them. The map learns
that curve per block as ``K`` knots spaced evenly between ``lo`` and ``hi`` (the decoded
values' range), a correction at each knot, linear between them and constant beyond:

``out = v + scale * 2 ** -SHIFT * interp(v, knots, offsets)``

fitted in closed form by least squares (hat-function basis, a tridiagonal system). It is HEVC's
*band offset* made continuous, global and fitted for the block's own value distribution. It
costs ``9 + ~2 K`` bytes and one table lookup per voxel. Measured on x265 ``medium`` bases at
64x (docs/method.md): the snow XCT +1.8 dB; stacks without distinct phases gain nothing and the
encoder leaves it out.

Serialised form (inside the loop filter's bytes, :mod:`.loopfilter`)::

    u8 knots K | f32 lo | f32 hi | K zigzag varints (offsets)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ...errors import FormatError
from .zigzag import unzigzag, zigzag

__all__ = ["KNOT_CHOICES", "ToneMap", "fit_tone_map", "parse_tone_map"]

#: offsets are multiples of ``scale * 2 ** -SHIFT``
SHIFT = 12
#: knot counts the encoder chooses from
KNOT_CHOICES = (8, 16, 32, 64)
#: voxels sampled for the fit
FIT_SAMPLE = 1 << 20
_HEAD = struct.Struct("<Bff")
_MAX_KNOTS = 255


@dataclass
class ToneMap:
    """A fitted intensity map (see the module docstring).

    Attributes
    ----------
    lo, hi : float
        The range the knots span (float32 values).
    offsets : numpy.ndarray
        ``K`` integer corrections (multiples of ``scale * 2 ** -SHIFT``).
    """

    lo: float
    hi: float
    offsets: np.ndarray

    @property
    def knots(self) -> int:
        """Number of knots."""
        return int(self.offsets.size)

    def apply(self, values: np.ndarray, scale: float) -> np.ndarray:
        """``values`` (float64) with the map added; ``scale``: the loop filter's unit."""
        from .kernels import tone_map

        unit = np.asarray(self.offsets, np.float64) * (scale * 2.0**-SHIFT)
        return tone_map(np.ascontiguousarray(values, dtype=np.float64), self.lo, self.hi, unit)

    def to_bytes(self) -> bytes:
        """Serialised form."""
        return _HEAD.pack(self.knots, self.lo, self.hi) + zigzag(self.offsets.astype(np.int64))


def parse_tone_map(data: bytes, pos: int) -> tuple[ToneMap, int]:
    """The map serialised at ``data[pos:]`` and the position after it; :class:`FormatError`
    for a malformed one."""
    if pos + _HEAD.size > len(data):
        raise FormatError("hybrid intensity map is truncated")
    knots, lo, hi = _HEAD.unpack_from(data, pos)
    if not 2 <= knots <= _MAX_KNOTS or not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise FormatError("hybrid intensity map declares unsupported parameters")
    offsets, pos = unzigzag(data, pos + _HEAD.size, knots)
    return ToneMap(float(lo), float(hi), offsets), pos


def fit_tone_map(
    values: np.ndarray, target: np.ndarray, knots: int, scale: float, seed: int = 0
) -> ToneMap | None:
    """The least-squares map of ``knots`` knots from ``values`` (decoded, filtered) towards
    ``target`` on a sample of at most :data:`FIT_SAMPLE` voxels; None for a constant block."""
    v = np.asarray(values, np.float64).ravel()
    t = np.asarray(target, np.float64).ravel()
    if v.size > FIT_SAMPLE:
        pick = np.random.default_rng(seed).choice(v.size, FIT_SAMPLE, replace=False)
        v, t = v[pick], t[pick]
    lo, hi = float(np.float32(v.min())), float(np.float32(v.max()))
    if not hi > lo or not scale > 0:
        return None
    i, frac = _cells(v, lo, hi, knots)
    w0, w1, r = 1.0 - frac, frac, t - v
    diag = np.bincount(i, w0 * w0, knots) + np.bincount(i + 1, w1 * w1, knots)
    off = np.bincount(i, w0 * w1, knots)[: knots - 1]
    rhs = np.bincount(i, w0 * r, knots) + np.bincount(i + 1, w1 * r, knots)
    gram = np.diag(diag) + np.diag(off, 1) + np.diag(off, -1)
    gram += np.eye(knots) * (1e-9 * max(float(np.trace(gram)), 1e-300) / knots)
    corr = np.linalg.solve(gram, rhs)
    step = scale * 2.0**-SHIFT
    offsets = np.clip(np.rint(corr / step), -(2**30), 2**30).astype(np.int64)
    return ToneMap(lo, hi, offsets)


def _cells(v: np.ndarray, lo: float, hi: float, knots: int) -> tuple[np.ndarray, np.ndarray]:
    """Each value's knot interval and position in it (0 to 1; clamped outside the range)."""
    x = np.clip((v - lo) * ((knots - 1) / (hi - lo)), 0.0, knots - 1.0)
    i = np.minimum(x.astype(np.int64), knots - 2)
    return i, x - i
