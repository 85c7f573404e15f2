"""A power map of the intensities: code ``g(v)``, decode ``g^-1``, for perceptual guidance.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import FormatError

__all__ = ["OFFSET_SHARE", "PowerMap", "parse_value_map"]

#: the map's offset ``c`` as a share of the value range
OFFSET_SHARE = 0.01
_KEYS = {"power", "offset"}


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


def parse_value_map(entry: Any, value_range: tuple[float, float]) -> PowerMap:
    """The map a header's ``value_map`` entry describes, for its ``value_range``.

    Raises
    ------
    FormatError
        An unknown kind (a newer writer), or parameters outside the map's domain.
    """
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
