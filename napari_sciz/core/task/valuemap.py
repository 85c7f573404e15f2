"""Maps of the intensities: code ``g(v)``, decode ``g^-1``, for perceptual guidance.

Two kinds: a power map (:class:`PowerMap`) and a sensitivity curve (:class:`CurveMap`).

A codec that minimises the squared error spends the same precision on every intensity. In a
fluorescence or photon-counting image the noise grows with the signal (shot noise), and the
structural similarity a viewer (and MS-SSIM) judges weighs an error against the local
contrast: an error of 20 counts is invisible on a bright nucleus and a lost structure in the
dark cytoplasm. Coding ``g(v) = (v - lo + c) ** p`` instead of ``v`` (an Anscombe-like
variance-stabilising map for ``p = 0.5``) gives the dark values more of the codec's precision
and the bright ones less, where they can afford it.

The map keeps the value range: ``g(lo) = lo`` and ``g(hi) = hi``, so every heuristic of the
codec that reads the range (its bit depth, its noise estimates) sees what it would see for the
volume itself::

    g(v)    = lo + (hi - lo) * ((v - lo + c) ** p - c ** p) / ((hi - lo + c) ** p - c ** p)
    g^-1(w) = lo - c + ((w - lo) * ((hi - lo + c) ** p - c ** p) / (hi - lo) + c ** p) ** (1 / p)

``c > 0`` keeps the map's slope finite at ``lo`` (the default offset is a hundredth of the
range, to three digits). The header records it as ``"value_map": {"power": p, "offset":
c}`` (the key names the kind: a reader that finds another says so); ``lo`` and ``hi`` are the
header's ``value_range`` (docs/format.md). Its 28 bytes count: at 256x a 31x61x57 stack is
coded in 842 bytes.

The power map assumes where the precision is needed (shot noise); the sensitivity curve
measures it. MS-SSIM weighs a squared error at a voxel by about ``1 / (2 s2 + C2)``, ``s2``
the original's local variance there (:func:`.perceptual.sensitivity`). A codec that spends
its bytes for the least squared error of ``g(v)`` weighs the error of ``v`` by ``g'(v)^2``;
at high rate the weights that cost no bytes are those with ``g'(v)^2`` proportional to the
mean sensitivity of the voxels of value ``v``. :func:`fit_curve` measures that mean over
the volume and the curve follows it in :data:`CURVE_KNOTS` straight pieces of equal width
over ``[lo, hi]``, each slope stored as a power of two in eighths (slope ``2 ** (k / 8)``,
scaled so that ``g`` keeps the range): in the header ``{"slopes": "..."}``, a symbol per
piece after the first for its step from the last (``{"curve": [k0, k1, ...]}`` before
session 64, still read; 15-23 bytes less in a deflated header). The FIB-SEM crop
(dark membranes on a flat, bright background) gets a curve steepest at both ends of its
range and half as steep at mid-grey, where its textured voxels lie; no power map has that
shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import FormatError

__all__ = [
    "CURVE_KNOTS",
    "CurveMap",
    "OFFSET_SHARE",
    "PowerMap",
    "ValueMap",
    "fit_curve",
    "parse_value_map",
]

#: the map's offset ``c`` as a share of the value range
OFFSET_SHARE = 0.01
_KEYS = {"power", "offset"}
#: straight pieces of a sensitivity curve
CURVE_KNOTS = 16
#: a curve's slopes are powers of two in steps of 1 / _EIGHTHS
_EIGHTHS = 8
#: the largest |k| of a slope ``2 ** (k / 8)`` a header may hold (a ratio of 2^32 between
#: slopes, far beyond what a fitted curve takes)
_MAX_STEP = 128
#: the symbols of a curve's compact header form (``{"slopes": "..."}``): symbol ``i`` is a
#: step ``i - 32`` from the previous piece's, the first piece's step being 0
_SLOPE_SYMBOLS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SLOPE_ZERO = 32
#: the mean sensitivity is measured in this many bins of the range, smoothed over
#: _SMOOTH_BINS of them (in the log) before the pieces are cut
_BINS, _SMOOTH_BINS = 1024, 2.0


@dataclass(frozen=True)
class PowerMap:
    """The range-keeping power map of the module docstring.

    Attributes
    ----------
    exponent : float
        ``p``, in (0, 1].
    offset : float
        ``c`` (> 0, in the volume's units).
    lo, hi : float
        The volume's value range (``lo < hi``).
    """

    exponent: float
    offset: float
    lo: float
    hi: float

    @classmethod
    def for_range(cls, exponent: float, lo: float, hi: float) -> PowerMap:
        """The map of ``exponent`` for values in ``[lo, hi]`` with the default offset."""
        offset = float(f"{OFFSET_SHARE * (float(hi) - float(lo)):.3g}")  # (short in the header)
        return cls(float(exponent), offset, float(lo), float(hi))

    def _scale(self) -> float:
        p, c = self.exponent, self.offset
        return ((self.hi - self.lo + c) ** p - c**p) / (self.hi - self.lo)

    def forward(self, values: np.ndarray) -> np.ndarray:
        """``g(values)`` (float64; values outside the range are clipped to it first)."""
        v = np.clip(np.asarray(values, np.float64), self.lo, self.hi)
        p, c = self.exponent, self.offset
        return self.lo + ((v - self.lo + c) ** p - c**p) / self._scale()

    def inverse(self, values: np.ndarray) -> np.ndarray:
        """``g^-1(values)`` (float64); below ``lo`` the map holds ``lo``, above ``hi`` it
        extends the curve (the caller clips to the range)."""
        w = np.maximum(np.asarray(values, np.float64) - self.lo, 0.0)
        p, c = self.exponent, self.offset
        return self.lo - c + (w * self._scale() + c**p) ** (1.0 / p)

    def to_header(self) -> dict[str, Any]:
        """The header entry (``lo``, ``hi`` are the header's ``value_range``)."""
        return {"power": self.exponent, "offset": self.offset}


@dataclass(frozen=True)
class CurveMap:
    """A sensitivity curve: ``g`` in straight pieces of equal width over ``[lo, hi]``.

    Attributes
    ----------
    steps : tuple of int
        Piece ``i`` rises with slope ``2 ** (steps[i] / 8)`` before the whole curve is scaled
        to keep the range (only differences between steps matter).
    lo, hi : float
        The volume's value range (``lo < hi``).
    """

    steps: tuple[int, ...]
    lo: float
    hi: float

    def _knots(self) -> tuple[np.ndarray, np.ndarray]:
        """The pieces' ends: values ``x`` and what they map to, ``g(x)``."""
        x = np.linspace(self.lo, self.hi, len(self.steps) + 1)
        rise = np.exp2(np.asarray(self.steps, np.float64) / _EIGHTHS)
        g = np.concatenate([[0.0], np.cumsum(rise)])
        return x, self.lo + (self.hi - self.lo) * g / g[-1]

    def forward(self, values: np.ndarray) -> np.ndarray:
        """``g(values)`` (float64; values outside the range map to its ends)."""
        x, g = self._knots()
        return np.interp(np.asarray(values, np.float64), x, g)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        """``g^-1(values)`` (float64; values outside the range map to its ends)."""
        x, g = self._knots()
        return np.interp(np.asarray(values, np.float64), g, x)

    def to_header(self) -> dict[str, Any]:
        """The header entry (``lo``, ``hi`` are the header's ``value_range``): the compact
        ``{"slopes": "..."}`` where it holds the steps (a first step of 0, each next one
        within 32 of the last: what :func:`fit_curve` makes), else ``{"curve": [...]}``.

        The compact form is one symbol per piece after the first; 16 steps in a list took 49
        of a 101-byte header (deflated) on stardist_img2d at 256x, whose file is 2 kB.
        """
        rises = np.diff(np.asarray(self.steps, np.int64))
        compact = self.steps[0] == 0 and all(
            -_SLOPE_ZERO <= d < len(_SLOPE_SYMBOLS) - _SLOPE_ZERO for d in rises
        )
        if not compact or len(self.steps) < 2:
            return {"curve": list(self.steps)}
        return {"slopes": "".join(_SLOPE_SYMBOLS[int(d) + _SLOPE_ZERO] for d in rises)}


#: what a file's blocks may be coded through
ValueMap = PowerMap | CurveMap


def fit_curve(sample: np.ndarray, lo: float, hi: float, knots: int = CURVE_KNOTS) -> CurveMap:
    """The sensitivity curve of the volume ``sample`` was taken from (module docstring).

    Parameters
    ----------
    sample : numpy.ndarray
        The volume, or the part of it the candidates are measured on (2D or 3D, finite).
    lo, hi : float
        The whole volume's value range (``lo < hi``); values of the range ``sample`` does
        not reach take the sensitivity of its nearest values.
    knots : int
        Straight pieces.
    """
    from scipy import ndimage as ndi

    from .perceptual import sensitivity

    v = np.asarray(sample, np.float64)
    weight = sensitivity(v, hi - lo)
    edges = np.linspace(lo, hi, _BINS + 1)
    index = np.clip(np.searchsorted(edges, v.ravel(), side="right") - 1, 0, _BINS - 1)
    count = np.bincount(index, minlength=_BINS)
    mean = np.bincount(index, weight.ravel(), _BINS) / np.maximum(count, 1)
    centres = (edges[:-1] + edges[1:]) / 2
    seen = count > 0
    log_mean = np.log(np.interp(centres, centres[seen], mean[seen]))
    slope = np.exp(0.5 * ndi.gaussian_filter1d(log_mean, _SMOOTH_BINS, mode="nearest"))
    rise = np.add.reduceat(slope, np.linspace(0, _BINS, knots + 1).astype(int)[:-1])
    steps = np.maximum(np.round(_EIGHTHS * np.log2(rise / rise.max())).astype(int), -_MAX_STEP)
    # (only differences count: from a first step of 0, each within what a header symbol
    # holds, :meth:`CurveMap.to_header`; a curve that would pass _MAX_STEP so keeps its own)
    rises = np.clip(np.diff(steps), -_SLOPE_ZERO, len(_SLOPE_SYMBOLS) - _SLOPE_ZERO - 1)
    compact = np.concatenate([[0], np.cumsum(rises)])
    if np.abs(compact).max() <= _MAX_STEP:
        steps = compact
    return CurveMap(tuple(int(k) for k in steps), float(lo), float(hi))


def parse_value_map(entry: Any, value_range: tuple[float, float]) -> ValueMap:
    """The map a header's ``value_map`` entry describes, for its ``value_range``.

    Raises
    ------
    FormatError
        An unknown kind (a newer writer), or parameters outside the map's domain.
    """
    if isinstance(entry, dict) and set(entry) == {"curve"}:
        return _parse_curve(entry["curve"], value_range)
    if isinstance(entry, dict) and set(entry) == {"slopes"}:
        return _parse_curve(_slope_steps(entry["slopes"]), value_range)
    if not isinstance(entry, dict) or set(entry) != _KEYS:
        raise FormatError("unsupported value_map in header (a newer napari-sciz wrote it?)")
    p, c = entry["power"], entry["offset"]
    valid = all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in (p, c)
    )
    lo, hi = value_range
    if not valid or not 0.05 <= p <= 1.0 or not c > 0 or not hi > lo:  # type: ignore[operator]
        raise FormatError(
            f"invalid .sciz header: value_map {entry!r} for value range {list(value_range)}"
        )
    return PowerMap(float(p), float(c), float(lo), float(hi))  # type: ignore[arg-type]


def _slope_steps(text: Any) -> Any:
    """The steps a compact curve's ``slopes`` describe (its text itself when it is not a
    string of slope symbols: :func:`_parse_curve` says so)."""
    if not isinstance(text, str) or not 1 <= len(text) < _BINS:
        return text
    if any(c not in _SLOPE_SYMBOLS for c in text):
        return text
    rises = [_SLOPE_SYMBOLS.index(c) - _SLOPE_ZERO for c in text]
    return [0, *(int(k) for k in np.cumsum(rises))]


def _parse_curve(steps: Any, value_range: tuple[float, float]) -> CurveMap:
    lo, hi = value_range
    valid = (
        isinstance(steps, list)
        and 1 <= len(steps) <= _BINS
        and all(isinstance(k, int) and not isinstance(k, bool) for k in steps)
        and all(abs(k) <= _MAX_STEP for k in steps)
    )
    if not valid or not hi > lo:
        shown = repr(steps) if len(repr(steps)) < 80 else repr(steps)[:77] + "..."
        raise FormatError(
            f"invalid .sciz header: value_map curve {shown} for value range {list(value_range)}"
        )
    return CurveMap(tuple(steps), float(lo), float(hi))
