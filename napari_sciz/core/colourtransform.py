"""Decorrelating the colour samples of an RGB(A) image before hybrid coding.

The red, green and blue samples of a photograph, a brightfield or a histology image move
together: most of their energy is in one direction of colour space. Coded as three planes of
one block (:mod:`.colour`), the base layer spends bytes on that shared signal three times
(HEVC predicts a plane from the previous one, SPERR's wavelet across three samples barely
helps). An orthonormal transform of the samples (the eigenvectors of their covariance, the
Karhunen-Loeve transform, as JPEG 2000's colour transform does with a fixed matrix) puts the
shared signal in one plane and leaves two small ones; being orthonormal, it keeps the
squared error, so what the codec minimises is still the image's. skimage's IHC image at
16x / 64x / 256x: +1.1 / +0.45 / +0.33 dB (docs/benchmarks.md).

The transformed planes are stored as ``uint16``, ``round(scale * P) - offset`` with a power of
two ``scale`` (a 64th of a grey level for an 8-bit image; a 16-bit one's planes get the
finest step ``uint16`` holds, at most 4 levels: far below what a lossy ratio leaves), and the
header's ``colour_transform`` entry holds the integer means, the matrix to 4 decimals (6 for
a 16-bit image), the scale and the offsets (about 60 bytes). The decoder computes
``x_c = mean_c + sum_k P_k M[c, k]`` term by term in a fixed order, so the same bits on
every CPU, then rounds and clips to the image's range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FormatError

__all__ = [
    "HEADER_KEY",
    "MODEL_VERSION",
    "ColourTransform",
    "SampleSums",
    "plane_range",
    "sample_step",
]

#: the header entry
HEADER_KEY = "colour_transform"
#: the hybrid model version of files decoded through a colour transform
MODEL_VERSION = 8
#: the transformed planes' finest step: a 64th of a grey level (an 8-bit image's)
_SCALE = 64.0
#: the coarsest: 4 levels (a 16-bit image whose planes span more than 16,383 levels)
_MIN_SCALE = 0.25
#: decimals of the matrix's entries in the header, by the image's dtype (its transpose is the
#: inverse to a 10,000th: a 40th of a level at 255, more for 16 bits)
_DECIMALS = {np.dtype(np.uint8): 4, np.dtype(np.uint16): 6}
#: pixels transformed at a time (bounded float64 copies of a large slide scan)
_CHUNK = 1 << 22


@dataclass(frozen=True)
class ColourTransform:
    """An orthonormal transform of an image's colour samples and its stored planes' layout.

    Attributes
    ----------
    mean : tuple of int
        Subtracted from each sample before the transform.
    matrix : tuple of tuple of float
        ``matrix[c][k]``: sample ``c``'s weight in plane ``k`` (columns orthonormal, to
        :data:`_DECIMALS` decimals).
    scale : float
        Stored planes are ``round(scale * P_k) - offset_k``.
    offset : tuple of int
        Per plane.
    dtype : numpy.dtype
        The image's dtype.
    value_range : tuple of float
        The image's smallest and largest value (decoded values are clipped to it).
    """

    mean: tuple[int, ...]
    matrix: tuple[tuple[float, ...], ...]
    scale: float
    offset: tuple[int, ...]
    dtype: np.dtype
    value_range: tuple[float, float]

    @classmethod
    def fit(cls, image: np.ndarray) -> ColourTransform | None:
        """The transform of ``image`` (``uint8`` or ``uint16``, samples first: 3 or 4), or
        None where the stored planes would not fit ``uint16`` in steps of 4 levels. Its
        statistics come from at most :data:`_CHUNK` pixels, evenly strided
        (:func:`sample_step`); its planes' range from every pixel."""
        flat = image.reshape(image.shape[0], -1)
        sums = SampleSums.of(flat[:, :: sample_step(flat.shape[1])], flat)
        mean, matrix = sums.basis(np.dtype(image.dtype))
        lo, hi = plane_range(flat, mean, matrix)
        return cls.from_parts(mean, matrix, lo, hi, np.dtype(image.dtype), sums.value_range)

    @classmethod
    def from_parts(
        cls,
        mean: np.ndarray,
        matrix: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        dtype: np.dtype,
        value_range: tuple[float, float],
    ) -> ColourTransform | None:
        """The transform of ``mean`` and ``matrix`` (:meth:`SampleSums.basis`) whose planes
        span ``[lo, hi]`` (:func:`plane_range`), or None where they would not fit
        ``uint16`` in steps of 4 levels."""
        scale = _scale_for(float(np.max(hi - lo)))
        lo, hi = np.floor(scale * lo), np.ceil(scale * hi)
        if scale < _MIN_SCALE or np.any(hi - lo > np.iinfo(np.uint16).max):
            return None
        return cls(
            tuple(int(m) for m in mean),
            tuple(tuple(float(v) for v in row) for row in matrix),
            scale,
            tuple(int(v) for v in lo),
            np.dtype(dtype),
            (float(value_range[0]), float(value_range[1])),
        )

    def forward(self, image: np.ndarray) -> np.ndarray:
        """The stored planes (``uint16``, samples first) of ``image`` (samples first)."""
        flat = image.reshape(image.shape[0], -1)
        out = np.empty(flat.shape, np.uint16)
        mean = np.asarray(self.mean, np.float64)[:, None]
        offset = np.asarray(self.offset, np.float64)[:, None]
        for part in _chunks(flat.shape[1]):
            planes = _planes(flat[:, part].astype(np.float64) - mean, np.asarray(self.matrix))
            planes = np.round(self.scale * planes) - offset
            out[:, part] = np.clip(planes, 0, np.iinfo(np.uint16).max)
        return out.reshape(image.shape)

    def inverse(self, planes: np.ndarray) -> np.ndarray:
        """The image (its dtype, rounded and clipped to its range; samples first) of the
        decoded ``planes`` (samples first, any dtype)."""
        matrix = np.asarray(self.matrix)
        flat = planes.reshape(planes.shape[0], -1)
        out = np.empty(flat.shape, self.dtype)
        lo, hi = self.value_range
        for part in _chunks(flat.shape[1]):
            values = [
                (np.asarray(flat[k, part], np.float64) + self.offset[k]) / self.scale
                for k in range(len(self.offset))
            ]
            for c, mean in enumerate(self.mean):
                sample = np.full(values[0].shape, float(mean))
                for k, plane in enumerate(values):  # (term by term: the same bits everywhere)
                    sample = sample + plane * matrix[c, k]
                out[c, part] = np.clip(np.round(sample), lo, hi)
        return out.reshape(planes.shape)

    def to_header(self) -> dict[str, Any]:
        """The header entry (the image's dtype and range included)."""
        return {
            "mean": list(self.mean),
            "matrix": [list(row) for row in self.matrix],
            "scale": self.scale,
            "offset": list(self.offset),
            "dtype": self.dtype.name,
            "range": [self.value_range[0], self.value_range[1]],
        }

    @classmethod
    def parse(cls, entry: Any, samples: int) -> ColourTransform:
        """The transform of a header entry, for ``samples`` coded planes (FormatError)."""
        try:
            mean = tuple(_integers(entry["mean"], samples))
            offset = tuple(_integers(entry["offset"], samples))
            rows = entry["matrix"]
            if not isinstance(rows, list) or len(rows) != samples:
                raise ValueError("matrix")
            matrix = tuple(tuple(_numbers(row, samples)) for row in rows)
            scale = float(entry["scale"])
            dtype = np.dtype(str(entry["dtype"]))
            lo, hi = _numbers(entry["range"], 2)
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"invalid .sciz header: colour_transform ({exc})") from exc
        if dtype not in (np.uint8, np.uint16) or not (0 < scale <= 2**16) or not lo <= hi:
            raise FormatError("invalid .sciz header: colour_transform values")
        return cls(mean, matrix, scale, offset, dtype, (lo, hi))


@dataclass(frozen=True)
class SampleSums:
    """Exact sums of an image's sampled pixels (integers: the same totals in any order, so
    the sums of an image's blocks give the whole image's transform), and its value range.

    Attributes
    ----------
    count : int
        Sampled pixels.
    sums : tuple of int
        Per sample, the sum of its values.
    products : tuple of tuple of int
        ``products[c][d]``: the sum of samples ``c`` times ``d``.
    value_range : tuple of float
        The smallest and largest value of every pixel (not only the sampled ones).
    """

    count: int
    sums: tuple[int, ...]
    products: tuple[tuple[int, ...], ...]
    value_range: tuple[float, float]

    @classmethod
    def of(cls, sampled: np.ndarray, every: np.ndarray) -> SampleSums:
        """The sums of ``sampled`` (samples, pixels) and the value range of ``every``
        (any shape; empty: the range is left open)."""
        values = sampled.astype(np.int64)  # (uint16 products sum exactly below 2**63)
        products = values @ values.T
        lo, hi = (float(every.min()), float(every.max())) if every.size else (np.inf, -np.inf)
        return cls(
            int(values.shape[1]),
            tuple(int(v) for v in values.sum(axis=1)),
            tuple(tuple(int(v) for v in row) for row in products),
            (lo, hi),
        )

    def __add__(self, other: SampleSums) -> SampleSums:
        return SampleSums(
            self.count + other.count,
            tuple(a + b for a, b in zip(self.sums, other.sums, strict=True)),
            tuple(
                tuple(a + b for a, b in zip(r, s, strict=True))
                for r, s in zip(self.products, other.products, strict=True)
            ),
            (
                min(self.value_range[0], other.value_range[0]),
                max(self.value_range[1], other.value_range[1]),
            ),
        )

    def basis(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """The integer means and the rounded orthonormal matrix (columns: the covariance's
        eigenvectors, largest eigenvalue first, each column's largest entry positive)."""
        n = max(self.count, 1)
        mean = np.round(np.asarray(self.sums, np.float64) / n)
        samples = len(self.sums)
        # covariance from exact integers: n * S_cd - S_c * S_d, then one division
        cov = np.array(
            [
                [
                    float(n * self.products[c][d] - self.sums[c] * self.sums[d])
                    / float(n * max(n - 1, 1))
                    for d in range(samples)
                ]
                for c in range(samples)
            ]
        )
        values, vectors = np.linalg.eigh(cov)
        vectors = vectors[:, np.argsort(values)[::-1]]
        # (each column's largest entry positive: one matrix for one covariance)
        vectors *= np.where(vectors[np.abs(vectors).argmax(axis=0), range(samples)] < 0, -1, 1)
        return mean, np.round(vectors, _DECIMALS[np.dtype(dtype)])


def sample_step(pixels: int) -> int:
    """The stride of the pixels (flat index, samples first) whose statistics make an image's
    transform: at most :data:`_CHUNK` of them, evenly spread."""
    return max(1, int(pixels) // _CHUNK)


def plane_range(
    flat: np.ndarray, mean: np.ndarray, matrix: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per plane, the smallest and largest transformed value of the pixels ``flat``
    (samples, pixels), ``+inf`` / ``-inf`` when there are none."""
    lo, hi = np.full(len(mean), np.inf), np.full(len(mean), -np.inf)
    if flat.shape[1] == 0:
        return lo, hi
    for part in _chunks(flat.shape[1]):
        planes = _planes(flat[:, part].astype(np.float64) - mean[:, None], matrix)
        lo, hi = np.minimum(lo, planes.min(axis=1)), np.maximum(hi, planes.max(axis=1))
    return lo, hi


def _scale_for(span: float) -> float:
    """The largest power of two, at most :data:`_SCALE`, whose multiple of ``span`` (the
    widest plane's range) fits ``uint16`` with a level to spare at each end."""
    room = np.iinfo(np.uint16).max - 2
    return float(min(_SCALE, 2.0 ** np.floor(np.log2(room / span)))) if span > 0 else _SCALE


def _chunks(n: int) -> list[slice]:
    """``range(n)`` in slices of :data:`_CHUNK`."""
    return [slice(a, min(n, a + _CHUNK)) for a in range(0, max(n, 1), _CHUNK)]


def _planes(centred: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``P_k = sum_c centred_c M[c, k]``, term by term (rows: samples; columns: pixels)."""
    out = np.zeros((matrix.shape[1], centred.shape[1]))
    for k in range(matrix.shape[1]):
        for c in range(matrix.shape[0]):
            out[k] = out[k] + centred[c] * matrix[c, k]
    return out


def _numbers(values: Any, count: int) -> list[float]:
    """``count`` finite numbers (ValueError otherwise)."""
    if not isinstance(values, list) or len(values) != count:
        raise ValueError("a list of the wrong length")
    out = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(out) != count or not all(np.isfinite(out)):
        raise ValueError("not finite numbers")
    return out


def _integers(values: Any, count: int) -> Sequence[int]:
    """``count`` integers (ValueError otherwise)."""
    out = _numbers(values, count)
    if any(v != int(v) for v in out):
        raise ValueError("not integers")
    return [int(v) for v in out]
