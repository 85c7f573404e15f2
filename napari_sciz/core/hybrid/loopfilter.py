"""An adaptive 3D loop filter fitted per block: the light convolutional synthesis of a hybrid.

A classical base layer leaves ringing, blur and blocking that depend on the local structure.
The filter restores part of it with a bank of small 3D convolutions chosen per voxel by the
local activity of the base (as VVC's adaptive loop filter does in 2D):

``out[n] = b[n] + sum_p c[k, p] * (b[n + o_p] + b[n - o_p] - 2 b[n]) + c[k, P] * scale``

where ``b`` is the decoded base, ``o_p`` the 13 offsets of half a 3x3x3 neighbourhood (4 of a
3x3 one for one-plane blocks; the filter is point-symmetric), ``k`` the activity class of voxel
``n`` (the sum of the absolute second differences along the three axes, cut at ``K - 1``
thresholds) and ``scale`` the block's value span. Working on second differences keeps the
filter exact on constant regions and makes its coefficients independent of the data's units.

The coefficients of each class are the least-squares fit of ``target - b`` on a sample of the
block's voxels (closed form, no training), rounded to multiples of ``2 ** -shift``. The encoder
picks the number of classes by rate-distortion (:func:`napari_sciz.core.hybrid.codec`).

Serialised form::

    u8 classes K | u8 flags (bit 0: 2D) | u8 shift | f32 scale | (K - 1) x f32 thresholds
    | K x (P + 1) zigzag varints (coefficients, class by class)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ...errors import FormatError
from ..bitstream.container import _varint
from ..lossy.entropy import _read_varint

__all__ = ["FilterDesign", "LoopFilter", "fit_loop_filter", "parse_loop_filter"]

#: coefficient step exponent: coefficients are multiples of ``2 ** -SHIFT``
SHIFT = 10
#: voxels sampled for the least-squares fit of one block
FIT_SAMPLE = 1 << 20
_HEAD = struct.Struct("<BBBf")
_MAX_CLASSES = 64


def offsets(flat: bool) -> list[tuple[int, int, int]]:
    """Half of the 3x3x3 (3x3 when ``flat``) neighbourhood: one offset of each +-pair."""
    out = []
    for dz in (0,) if flat else (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if (dz, dy, dx) > (0, 0, 0):
                    out.append((dz, dy, dx))
    return out


def _shifted(padded: np.ndarray, off: tuple[int, int, int], shape: tuple[int, ...]) -> np.ndarray:
    return padded[tuple(slice(1 + o, 1 + o + n) for o, n in zip(off, shape, strict=True))]


def _second_differences(base: np.ndarray, flat: bool):
    """Yield ``b[n + o] + b[n - o] - 2 b[n]`` for every offset pair (dense arrays)."""
    padded = np.pad(base, 1, mode="edge")
    for off in offsets(flat):
        neg = tuple(-o for o in off)
        yield _shifted(padded, off, base.shape) + _shifted(padded, neg, base.shape) - 2 * base


def activity(base: np.ndarray, flat: bool) -> np.ndarray:
    """Sum of the absolute second differences along the axes (z only for 3D blocks)."""
    padded = np.pad(base, 1, mode="edge")
    axes = [(0, 1, 0), (0, 0, 1)] if flat else [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
    out = np.zeros(base.shape, dtype=np.float64)
    for off in axes:
        neg = tuple(-o for o in off)
        out += np.abs(
            _shifted(padded, off, base.shape) + _shifted(padded, neg, base.shape) - 2 * base
        )
    return out


def _zigzag(values: np.ndarray) -> bytes:
    """Signed integers as zigzag LEB128 varints (the container's varint)."""
    return b"".join(_varint((v << 1) ^ (v >> 63)) for v in values.tolist())


def _unzigzag(data: bytes, pos: int, count: int) -> tuple[np.ndarray, int]:
    values = np.empty(count, dtype=np.int64)
    try:
        for i in range(count):
            u, pos = _read_varint(data, pos)
            values[i] = (u >> 1) ^ -(u & 1)
    except (FormatError, OverflowError):
        raise FormatError("hybrid loop filter is truncated or corrupted") from None
    return values, pos


@dataclass
class LoopFilter:
    """A fitted filter bank (see the module docstring).

    Attributes
    ----------
    flat : bool
        2D filter (one-plane blocks).
    scale : float
        Unit of the bias terms (the block's value span).
    thresholds : numpy.ndarray
        ``K - 1`` increasing activity thresholds (float32).
    coefs : numpy.ndarray
        ``(K, P + 1)`` integer coefficients (multiples of ``2 ** -shift``).
    shift : int
        Coefficient step exponent.
    """

    flat: bool
    scale: float
    thresholds: np.ndarray
    coefs: np.ndarray
    shift: int = SHIFT

    @property
    def classes(self) -> int:
        """Number of activity classes."""
        return int(self.coefs.shape[0])

    def classify(self, base: np.ndarray) -> np.ndarray:
        """Activity class of every voxel of ``base``."""
        act = activity(base, self.flat).astype(np.float32)
        return np.searchsorted(self.thresholds, act, side="right")

    def apply(self, base: np.ndarray, z0: int = 0, z1: int | None = None) -> np.ndarray:
        """The filtered base (float64), planes ``z0:z1`` (default: all).

        A plane needs only its neighbours in the base, so ``apply(base, z, z + 1)`` equals
        ``apply(base)[z : z + 1]`` at a fraction of the cost (compiled loop,
        :mod:`~napari_sciz.core.hybrid.kernels`).
        """
        from .kernels import filter_planes

        coefs = self.coefs.astype(np.float64) * 2.0**-self.shift
        offs = np.asarray(offsets(self.flat), dtype=np.int64)
        thresholds = np.asarray(self.thresholds, dtype=np.float32)
        return filter_planes(base, coefs, thresholds, offs, self.scale, self.flat, z0, z1)

    def to_bytes(self) -> bytes:
        """Serialised form."""
        head = _HEAD.pack(self.classes, 1 if self.flat else 0, self.shift, self.scale)
        body = np.asarray(self.thresholds, dtype="<f4").tobytes()
        return head + body + _zigzag(self.coefs.astype(np.int64).ravel())


def parse_loop_filter(data: bytes) -> LoopFilter:
    """Inverse of :meth:`LoopFilter.to_bytes`; :class:`FormatError` for a malformed filter."""
    if len(data) < _HEAD.size:
        raise FormatError("hybrid loop filter is truncated")
    classes, flags, shift, scale = _HEAD.unpack_from(data)
    if not 1 <= classes <= _MAX_CLASSES or flags > 1 or shift > 24:
        raise FormatError("hybrid loop filter declares unsupported parameters")
    if not (np.isfinite(scale) and scale >= 0):
        raise FormatError("hybrid loop filter holds an invalid scale")
    flat = bool(flags & 1)
    pos = _HEAD.size + 4 * (classes - 1)
    if pos > len(data):
        raise FormatError("hybrid loop filter is truncated")
    thresholds = np.frombuffer(data[_HEAD.size : pos], dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(thresholds)) or np.any(np.diff(thresholds) < 0):
        raise FormatError("hybrid loop filter holds invalid thresholds")
    n = classes * (len(offsets(flat)) + 1)
    values, pos = _unzigzag(data, pos, n)
    if pos != len(data):
        raise FormatError("hybrid loop filter has trailing data")
    coefs = values.reshape(classes, -1)
    return LoopFilter(flat, float(scale), thresholds, coefs, int(shift))


class FilterDesign:
    """The least-squares problem of one base layer, sampled once, solved for any class count.

    Parameters
    ----------
    base : numpy.ndarray
        Decoded base layer ``(D, H, W)``.
    target : numpy.ndarray
        The original block.
    seed : int
        Seed of the voxel sample (at most :data:`FIT_SAMPLE` voxels).
    """

    def __init__(self, base: np.ndarray, target: np.ndarray, seed: int = 0) -> None:
        base = np.asarray(base, dtype=np.float64)
        target = np.asarray(target, dtype=np.float64)
        self.flat = base.shape[0] == 1
        self.scale = float(np.float32(max(float(target.max() - target.min()), 1e-30)))
        n = base.size
        rng = np.random.default_rng(seed)
        sample = rng.choice(n, FIT_SAMPLE, replace=False) if n > FIT_SAMPLE else np.arange(n)
        feats = [d.ravel()[sample] for d in _second_differences(base, self.flat)]
        feats.append(np.full(sample.size, self.scale))
        self.a = np.stack(feats, axis=1)
        self.y = (target - base).ravel()[sample]
        self.act = activity(base, self.flat).astype(np.float32).ravel()[sample]

    @property
    def base_error(self) -> float:
        """Mean squared error of the unfiltered base on the sample."""
        return float(np.mean(self.y * self.y))

    def fit(self, classes: int) -> LoopFilter:
        """The filter bank with ``classes`` activity classes (equal-population cuts)."""
        qs = np.linspace(0, 1, classes + 1)[1:-1]
        cuts = np.unique(np.quantile(self.act, qs).astype(np.float32)) if classes > 1 else []
        thresholds = np.asarray(cuts, dtype=np.float32)
        cls = np.searchsorted(thresholds, self.act, side="right")
        width = self.a.shape[1]
        coefs = np.zeros((thresholds.size + 1, width), dtype=np.int64)
        for k in range(coefs.shape[0]):
            m = cls == k
            if m.sum() < 4 * width:
                continue
            ak, yk = self.a[m], self.y[m]
            # einsum, not BLAS: the sums must not depend on the number of BLAS threads, so
            # that every machine and worker fits the same coefficients (same bytes)
            gram = np.einsum("ni,nj->ij", ak, ak)
            gram += np.eye(width) * (1e-9 * np.trace(gram) / width + 1e-300)
            c = np.linalg.solve(gram, np.einsum("ni,n->i", ak, yk))
            coefs[k] = np.clip(np.rint(c * 2.0**SHIFT), -(2**20), 2**20).astype(np.int64)
        return LoopFilter(self.flat, self.scale, thresholds, coefs)

    def error(self, filt: LoopFilter) -> float:
        """Mean squared error of the filtered base on the sample."""
        cls = np.searchsorted(filt.thresholds, self.act, side="right")
        coefs = filt.coefs.astype(np.float64) * 2.0**-filt.shift
        d = self.y - np.einsum("np,np->n", self.a, coefs[cls])
        return float(np.mean(d * d))


def fit_loop_filter(
    base: np.ndarray, target: np.ndarray, classes: int, *, seed: int = 0
) -> LoopFilter:
    """Least-squares filter bank with ``classes`` activity classes (see :class:`FilterDesign`)."""
    return FilterDesign(base, target, seed).fit(classes)
