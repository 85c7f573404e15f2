"""A hybrid block's candidate coding: a base layer with its loop filter (and intensity map)
and, later, its neural filter and field, with the error it leaves.

The encoder (:mod:`.codec`) compares candidates by their mean squared error; a base that
decodes only as a whole must beat one that decodes plane by plane by :data:`_BROWSE_MARGIN`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..bitstream.layout import _varint
from ..metrics import squared_error_sum
from .bases import BaseCodec
from .loopfilter import FilterDesign, LoopFilter
from .nnfilter import NeuralFilter
from .search import BaseLayer
from .tonemap import KNOT_CHOICES, fit_tone_map

#: how much more accurate (squared error) a base that decodes only as a whole must be than one
#: that decodes plane by plane to be chosen (0.5 %: 0.02 dB): browsing a file costs a plane
_BROWSE_MARGIN = 0.005

#: half-width of the parameter range (0 to 1) a slower setting searches around the first
_REFINE_BRACKET = 0.06

#: the squared error a share of the bytes is worth, per share (about 6 dB per doubling of the
#: bytes: 1 % more bytes, 1.4 % less error): the intensity map's knots are chosen with it
_ERROR_PER_BYTE = 1.5

#: the least share of the squared error an intensity map must remove (0.02 dB): below it, a
#: pass over every decoded voxel buys nothing a viewer sees (nbsd: +0.004 dB for 8 knots)
_TONE_MIN_GAIN = 0.005

#: blocks smaller than this get no loop filter (its bytes would not pay)
_MIN_FILTER_VOXELS = 4096


def _mse(values: np.ndarray, target: np.ndarray) -> float:
    return squared_error_sum(values, target) / values.size if values.size else 0.0


@dataclass
class _Candidate:
    base: BaseLayer
    filt: LoopFilter | None
    values: np.ndarray
    error: float
    inr: bytes = b""
    network: NeuralFilter | None = None

    @property
    def filter_bytes(self) -> bytes:
        return b"" if self.filt is None else self.filt.to_bytes()

    @property
    def network_bytes(self) -> bytes:
        return b"" if self.network is None else self.network.to_bytes()

    @property
    def classes(self) -> int:
        return 0 if self.filt is None else self.filt.classes

    @property
    def wide(self) -> bool:
        return self.filt is not None and self.filt.wide


def _layers_bytes(base: BaseLayer, filt: bytes) -> int:
    """Bytes of base, filter length and filter (everything after the payload head)."""
    return len(base.stream) + len(_varint(len(filt))) + len(filt)


def _plain(base: BaseLayer, target: np.ndarray) -> _Candidate:
    return _Candidate(base, None, base.values, base.error(target))


def _filtered(
    base: BaseLayer,
    target: np.ndarray,
    classes: int,
    seed: int,
    wide: bool = True,
    avail: int | None = None,
) -> _Candidate:
    """``base`` with a filter of ``classes`` classes and its intensity map (chosen for a
    block of ``avail`` bytes; default: the base's), or alone when the filter does not help."""
    avail = len(base.stream) if avail is None else avail
    plain = _plain(base, target)
    if classes == 0 or target.size < _MIN_FILTER_VOXELS:
        return plain
    filt = FilterDesign(base.values, target, seed).fit(classes, wide)
    values = filt.apply(base.values)
    filt, values, err = _with_tone(filt, values, target, avail, seed)
    return _Candidate(base, filt, values, err) if err < plain.error else plain


def _rank_error(cand: _Candidate, target: np.ndarray, avail: int) -> float:
    """The error a base choice ranks ``cand`` (a base as :func:`_filtered` made it) by: its
    filtered error with the filter's bytes charged at :data:`_ERROR_PER_BYTE` per share of
    ``avail``, or its base's own error when that is lower.

    The ranking's filter is designed on a stream that fills the block, yet the file has to
    find the filter's bytes: where the filter is a large share of them (a 260x260 image at
    256x: 82 of 197 bytes for an HEVC stream at half resolution, whose filter took its error
    from 4.19 to 1.24), the filter stage cannot afford it and the base is coded alone.
    """
    if cand.filt is None:
        return cand.error
    fbytes = len(cand.filter_bytes)
    charged = cand.error * (1.0 + _ERROR_PER_BYTE * (fbytes + len(_varint(fbytes))) / avail)
    return min(charged, cand.base.error(target))


def _with_tone(
    filt: LoopFilter, values: np.ndarray, target: np.ndarray, avail: int, seed: int
) -> tuple[LoopFilter, np.ndarray, float]:
    """``filt`` with the intensity map (:mod:`.tonemap`, knots among
    :data:`~.tonemap.KNOT_CHOICES`) that best trades its bytes against the error it removes
    (a byte costs :data:`_ERROR_PER_BYTE` / ``avail`` of the error, and the map must remove
    at least :data:`_TONE_MIN_GAIN` of it), or without one; its output from the filtered
    ``values`` and that output's mean squared error."""
    plain = _mse(values, target)
    best = (plain * (1.0 - _TONE_MIN_GAIN), filt, values, plain)
    for knots in KNOT_CHOICES:
        tone = fit_tone_map(values, target, knots, filt.scale, seed)
        if tone is None:
            break
        mapped = tone.apply(values.copy(), filt.scale)
        err = _mse(mapped, target)
        cost = 1.0 + _ERROR_PER_BYTE * len(tone.to_bytes()) / max(avail, 1)
        if err * cost < best[0]:
            best = (err * cost, replace(filt, tone=tone), mapped, err)
    return best[1], best[2], best[3]


def _near(layer: BaseLayer) -> tuple[float, float]:
    """The parameter range a search for a stream of about ``layer``'s size starts from."""
    t = layer.position
    if not np.isfinite(t):
        return (0.0, 1.0)
    return (max(t - _REFINE_BRACKET, 0.0), min(t + _REFINE_BRACKET, 1.0))


def _err(cand: _Candidate) -> float:
    return _ranked(cand.error, cand.base.codec)


def _ranked(error: float, codec: BaseCodec) -> float:
    """``error`` as the base choice ranks it: a base that decodes only as a whole (SPERR,
    JPEG XL) must be :data:`_BROWSE_MARGIN` more accurate than one that decodes plane by plane
    (HEVC) to win, since a viewer's first plane then costs the whole block."""
    return error if codec.by_plane else error * (1.0 + _BROWSE_MARGIN)


def _fitting(
    base: BaseLayer, target: np.ndarray, avail: int, classes: int, wide: bool, seed: int
) -> _Candidate:
    """``base`` with a filter of ``classes`` classes (or of one) when it fits, else alone."""
    best = _plain(base, target)
    for n in dict.fromkeys((classes, 1)):
        cand = _filtered(base, target, n, seed, wide, avail)
        if _layers_bytes(base, cand.filter_bytes) <= avail and cand.error < best.error:
            best = cand
    return best
