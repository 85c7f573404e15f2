"""An adaptive 3D loop filter fitted per block: the light convolutional synthesis of a hybrid.

A classical base layer leaves ringing, blur and blocking that depend on the local structure.
The filter restores part of it with a bank of small 3D convolutions chosen per voxel by the
local activity of the base (as VVC's adaptive loop filter does in 2D):

``out[n] = b[n] + sum_p c[k, p] * (b[n + o_p] + b[n - o_p] - 2 b[n]) + c[k, P] * scale``

where ``b`` is the decoded base, ``o_p`` the 13 offsets of half a 3x3x3 neighbourhood (4 of a
3x3 one for one-plane blocks; the filter is point-symmetric), in a *wide* filter also the
offsets two voxels along each axis (3 more; 2 in one-plane blocks: an HEVC base's blur spans
more than one voxel), ``k`` the activity class of voxel
``n`` (the sum of the absolute second differences along the three axes, cut at ``K - 1``
thresholds) and ``scale`` the block's value span. Working on second differences keeps the
filter exact on constant regions and makes its coefficients independent of the data's units.

The coefficients of each class are the least-squares fit of ``target - b`` on a sample of the
block's voxels (closed form, no training), rounded to multiples of ``2 ** -shift``. The encoder
picks the number of classes by rate-distortion (:func:`napari_sciz.core.hybrid.codec`).

An intensity map may follow the filter (:mod:`.tonemap`: the conditional mean of the original
given the filtered value, piecewise linear), applied to its output.

Serialised form::

    u8 classes K | u8 flags (bit 0: 2D, bit 1: wide, bit 2: intensity map) | u8 shift
    | f32 scale | (K - 1) x f32 thresholds
    | K x (P + 1) zigzag varints (coefficients, class by class)
    | the intensity map (flag bit 2 only; :func:`.tonemap.parse_tone_map`)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ...errors import FormatError
from .tonemap import ToneMap, parse_tone_map
from .zigzag import unzigzag as _unzigzag
from .zigzag import zigzag as _zigzag

__all__ = ["FilterDesign", "LoopFilter", "fit_loop_filter", "parse_loop_filter"]

#: coefficient step exponent: coefficients are multiples of ``2 ** -SHIFT``
SHIFT = 10
#: voxels sampled for the least-squares fit of one block
FIT_SAMPLE = 1 << 20
#: activity classes the least-squares sums are kept for (the largest class count)
FINE_CLASSES = 16
_HEAD = struct.Struct("<BBBf")
_MAX_CLASSES = 64


def offsets(flat: bool, wide: bool = False) -> list[tuple[int, int, int]]:
    """Half of the 3x3x3 (3x3 when ``flat``) neighbourhood: one offset of each +-pair; when
    ``wide``, then two voxels along each axis."""
    out = []
    for dz in (0,) if flat else (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if (dz, dy, dx) > (0, 0, 0):
                    out.append((dz, dy, dx))
    if wide:
        out += [(0, 2, 0), (0, 0, 2)] if flat else [(2, 0, 0), (0, 2, 0), (0, 0, 2)]
    return out


def reach(wide: bool) -> int:
    """How far (voxels, planes) the filter reads around a voxel."""
    return 2 if wide else 1


def _shifted(
    padded: np.ndarray, off: tuple[int, int, int], shape: tuple[int, ...], pad: int = 1
) -> np.ndarray:
    return padded[tuple(slice(pad + o, pad + o + n) for o, n in zip(off, shape, strict=True))]


def _second_differences(base: np.ndarray, flat: bool, wide: bool = False):
    """Yield ``b[n + o] + b[n - o] - 2 b[n]`` for every offset pair (dense arrays)."""
    pad = reach(wide)
    padded = np.pad(base, pad, mode="edge")
    for off in offsets(flat, wide):
        neg = tuple(-o for o in off)
        plus = _shifted(padded, off, base.shape, pad)
        yield plus + _shifted(padded, neg, base.shape, pad) - 2 * base


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
    wide : bool
        Also the offsets two voxels along each axis (:func:`offsets`).
    tone : ToneMap or None
        The intensity map applied to the filter's output, if any (:mod:`.tonemap`).
    """

    flat: bool
    scale: float
    thresholds: np.ndarray
    coefs: np.ndarray
    shift: int = SHIFT
    wide: bool = False
    tone: ToneMap | None = None

    @property
    def reach(self) -> int:
        """Planes (and voxels) read on each side of a filtered voxel."""
        return reach(self.wide)

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
        offs = np.asarray(offsets(self.flat, self.wide), dtype=np.int64)
        thresholds = np.asarray(self.thresholds, dtype=np.float32)
        out = filter_planes(base, coefs, thresholds, offs, self.scale, self.flat, z0, z1)
        return out if self.tone is None else self.tone.apply(out, self.scale)

    def to_bytes(self) -> bytes:
        """Serialised form."""
        flags = (1 if self.flat else 0) | (2 if self.wide else 0) | (4 if self.tone else 0)
        head = _HEAD.pack(self.classes, flags, self.shift, self.scale)
        body = np.asarray(self.thresholds, dtype="<f4").tobytes()
        tone = b"" if self.tone is None else self.tone.to_bytes()
        return head + body + _zigzag(self.coefs.astype(np.int64).ravel()) + tone


def parse_loop_filter(data: bytes) -> LoopFilter:
    """Inverse of :meth:`LoopFilter.to_bytes`; :class:`FormatError` for a malformed filter."""
    if len(data) < _HEAD.size:
        raise FormatError("hybrid loop filter is truncated")
    classes, flags, shift, scale = _HEAD.unpack_from(data)
    if not 1 <= classes <= _MAX_CLASSES or flags > 7 or shift > 24:
        raise FormatError("hybrid loop filter declares unsupported parameters")
    if not (np.isfinite(scale) and scale >= 0):
        raise FormatError("hybrid loop filter holds an invalid scale")
    flat, wide = bool(flags & 1), bool(flags & 2)
    pos = _HEAD.size + 4 * (classes - 1)
    if pos > len(data):
        raise FormatError("hybrid loop filter is truncated")
    thresholds = np.frombuffer(data[_HEAD.size : pos], dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(thresholds)) or np.any(np.diff(thresholds) < 0):
        raise FormatError("hybrid loop filter holds invalid thresholds")
    n = classes * (len(offsets(flat, wide)) + 1)
    values, pos = _unzigzag(data, pos, n)
    tone = None
    if flags & 4:
        tone, pos = parse_tone_map(data, pos)
    if pos != len(data):
        raise FormatError("hybrid loop filter has trailing data")
    coefs = values.reshape(classes, -1)
    return LoopFilter(flat, float(scale), thresholds, coefs, int(shift), wide, tone)


class FilterDesign:
    """The least-squares problem of one base layer, sampled once, solved for any class count,
    narrow or wide.

    The sums of the normal equations are taken once per sixteenth of the activity's range
    (:data:`FINE_CLASSES`): the class counts the encoder tries (1, 2, 4, 8, 16) cut at the
    same quantiles, so each of their classes is a union of those and its sums are sums of
    them, for the fit and for the error alike.

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
        act = activity(base, self.flat).astype(np.float32).ravel()[sample]
        # the activity's quantiles at every sixteenth, once: those of 2, 4, 8 classes are among
        # them (the same dyadic fractions)
        qs = np.linspace(0, 1, FINE_CLASSES + 1)[1:-1]
        self._quantiles = np.quantile(act, qs).astype(np.float32)
        self._fine = np.unique(self._quantiles)
        fine = np.searchsorted(self._fine, act, side="right")
        # the sample sorted by fine bin (stable): each bin's rows are one contiguous slice
        order = np.argsort(fine, kind="stable")
        sample = sample[order]
        bins = self._fine.size + 1
        bounds = np.searchsorted(fine[order], np.arange(bins + 1))
        narrow, wide = len(offsets(self.flat)), len(offsets(self.flat, True))
        a = np.empty((sample.size, wide + 1))  # narrow offsets, wide ones, bias
        for j, d in enumerate(_second_differences(base, self.flat, wide=True)):
            a[:, j] = d.ravel()[sample]
        a[:, wide] = self.scale
        self._columns = {False: np.r_[np.arange(narrow), wide], True: np.arange(wide + 1)}
        y = (target - base).ravel()[sample]
        self.size = y.size
        self._yy_all = float(np.einsum("n,n->", y, y))
        self._gram = np.zeros((bins, wide + 1, wide + 1))
        self._rhs = np.zeros((bins, wide + 1))
        self._yy = np.zeros(bins)
        self._count = np.diff(bounds)
        for f in range(bins):
            af, yf = a[bounds[f] : bounds[f + 1]], y[bounds[f] : bounds[f + 1]]
            # einsum, not BLAS: the sums must not depend on the number of BLAS threads, so
            # that every machine and worker fits the same coefficients (same bytes)
            self._gram[f] = np.einsum("ni,nj->ij", af, af)
            self._rhs[f] = np.einsum("ni,n->i", af, yf)
            self._yy[f] = np.einsum("n,n->", yf, yf)

    @property
    def base_error(self) -> float:
        """Mean squared error of the unfiltered base on the sample."""
        return self._yy_all / max(self.size, 1)

    def _classes_of_bins(self, thresholds: np.ndarray) -> np.ndarray:
        """The class (of ``thresholds``) of every fine bin; :class:`ValueError` when the
        thresholds are not among the fine ones."""
        if not np.all(np.isin(thresholds, self._fine)):
            raise ValueError("class thresholds must be among the design's fine thresholds")
        lower = np.r_[np.float32(-np.inf), self._fine].astype(np.float32)
        return np.searchsorted(thresholds, lower, side="right")

    def _sums(self, thresholds: np.ndarray, cols: np.ndarray):
        """Per class of ``thresholds``: Gram matrix, right-hand side, ``y.y`` and count."""
        of_bin = self._classes_of_bins(thresholds)
        k = thresholds.size + 1
        ix = np.ix_(np.arange(self._gram.shape[0]), cols, cols)
        gram, rhs = self._gram[ix], self._rhs[:, cols]
        out = []
        for c in range(k):
            m = of_bin == c
            out.append((gram[m].sum(0), rhs[m].sum(0), self._yy[m].sum(), self._count[m].sum()))
        return out

    def fit(self, classes: int, wide: bool = False) -> LoopFilter:
        """The filter bank with ``classes`` activity classes (equal-population cuts; a count
        that does not divide :data:`FINE_CLASSES` is raised to the next one that does, and
        classes whose cuts coincide merge)."""
        classes = min(max(classes, 1), FINE_CLASSES)
        while FINE_CLASSES % classes:
            classes += 1
        step = FINE_CLASSES // classes
        thresholds = np.unique(self._quantiles[step - 1 :: step]) if classes > 1 else []
        thresholds = np.asarray(thresholds, dtype=np.float32)
        cols = self._columns[wide]
        width = cols.size
        coefs = np.zeros((thresholds.size + 1, width), dtype=np.int64)
        for k, (gram, rhs, _yy, count) in enumerate(self._sums(thresholds, cols)):
            if count < 4 * width:
                continue
            gram = gram + np.eye(width) * (1e-9 * np.trace(gram) / width + 1e-300)
            c = np.linalg.solve(gram, rhs)
            coefs[k] = np.clip(np.rint(c * 2.0**SHIFT), -(2**20), 2**20).astype(np.int64)
        return LoopFilter(self.flat, self.scale, thresholds, coefs, wide=wide)

    def error(self, filt: LoopFilter) -> float:
        """Mean squared error of the filtered base on the sample (from the sums:
        ``y.y - 2 c.r + c G c`` per class)."""
        coefs = filt.coefs.astype(np.float64) * 2.0**-filt.shift
        total = 0.0
        sums = self._sums(np.asarray(filt.thresholds, np.float32), self._columns[filt.wide])
        for c, (gram, rhs, yy, _count) in zip(coefs, sums, strict=True):
            total += yy - 2.0 * float(c @ rhs) + float(c @ gram @ c)
        return max(total, 0.0) / max(self.size, 1)


def fit_loop_filter(
    base: np.ndarray, target: np.ndarray, classes: int, *, seed: int = 0, wide: bool = False
) -> LoopFilter:
    """Least-squares filter bank with ``classes`` activity classes (see :class:`FilterDesign`)."""
    return FilterDesign(base, target, seed).fit(classes, wide)
