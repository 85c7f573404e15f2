"""What every base codec of a hybrid block is: :class:`BaseCodec`, and the value range they store.

The codecs themselves are in :mod:`.bases` (SPERR, JPEG XL, the registry) and :mod:`.hevcbase`.
"""

from __future__ import annotations

import math
import struct
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from ...errors import FormatError, SciZError
from .planes import PlaneSource, WholePlanes

__all__ = ["BaseCodec", "Shape3"]

Shape3 = tuple[int, int, int]
_RANGE = struct.Struct("<dd")


def _imagecodecs() -> Any:
    try:
        import imagecodecs
    except ModuleNotFoundError as exc:  # pragma: no cover - a dependency of napari-sciz
        raise SciZError("hybrid mode needs imagecodecs: pip install imagecodecs") from exc
    return imagecodecs


class BaseCodec(ABC):
    """One classical codec as a hybrid base layer.

    Attributes
    ----------
    ident : int
        The codec's number in a hybrid payload.
    name : str
        Short name (``"sperr"``, ``"hevc"``, ``"jpegxl"``).
    lo, hi : float
        Range of the quality parameter.
    increasing : bool
        Whether the stream grows with the parameter.
    log : bool
        Whether the parameter is searched on a log scale.
    by_plane : bool
        Whether one plane decodes without the whole block (:meth:`planes`).
    slope : float or None
        Typical change of the stream's log size over the parameter's range (0 to 1, size
        increasing): the size search's step while only one side of the target is known
        (bisection when None).
    choice_weight : float
        The codec's part of the time the base choice has, relative to the others'.
    """

    ident: int
    name: str
    lo: float
    hi: float
    increasing: bool
    log: bool
    by_plane: bool = False
    slope: float | None = None
    choice_weight: float = 1.0

    @abstractmethod
    def available(self) -> bool:
        """Whether the codec's library is installed."""

    def supports(self, shape3: Shape3) -> bool:
        """Whether a block of this shape can be coded."""
        return True

    @abstractmethod
    def encode(self, block: np.ndarray, param: float) -> bytes:
        """The stream of ``block`` at quality ``param``."""

    @abstractmethod
    def decode(self, stream: bytes, shape3: Shape3) -> np.ndarray:
        """Float64 values of shape ``shape3``; :class:`FormatError` for a bad stream."""

    def refined(self) -> BaseCodec | None:
        """A slower setting of the same codec that codes better (same decoder), if any."""
        return None

    def param_for_size(self, block: np.ndarray, nbytes: int) -> float | None:
        """A quality parameter whose stream should come close to ``nbytes`` (a rate-driven
        codec knows it), or None; the size search starts there."""
        return None

    @property
    def cost(self) -> float:
        """Time of this setting's search relative to the codec's first setting (a guess the
        budget guards use)."""
        return 1.0

    def proxy(self) -> BaseCodec | None:
        """A much faster setting of the codec whose stream sizes follow this one's over the
        parameter (within a factor, with about the same slope), or None: a size search from
        scratch finds its start and slope with it first (:func:`~.search.encode_to_size`)."""
        return None

    def filler(self, param: float) -> BaseCodec | None:
        """For a codec whose stream size jumps between nearby parameters: a variant whose own
        parameter (0 to 1) grows the stream of ``param`` continuously up to about the next
        jump, decoded by the same decoder (the size search fills the bytes a jump leaves with
        it, :func:`~.search.encode_to_size`); None for codecs without jumps."""
        return None

    def shrinker(self, param: float, shape3: Shape3) -> BaseCodec | None:
        """For a codec whose stream size jumps: a variant whose own parameter (0 to 1) takes
        the stream of ``param`` (the smallest one found too large) down in small steps,
        smallest at 0, ``param``'s own stream at 1; decoded by the same decoder. It fills a
        jump from above where :meth:`filler` cannot fill it from below. None by default."""
        return None

    def planes(self, stream: bytes, shape3: Shape3) -> PlaneSource:
        """The decoded planes on demand (here: the whole block on the first request)."""
        return WholePlanes(lambda: self.decode(stream, shape3))


def _split_range(stream: bytes) -> tuple[float, float, bytes]:
    if len(stream) < _RANGE.size:
        raise FormatError("hybrid base layer is truncated")
    vmin, vmax = _RANGE.unpack_from(stream)
    if not (math.isfinite(vmin) and math.isfinite(vmax) and vmax >= vmin):
        raise FormatError("hybrid base layer holds an invalid value range")
    return vmin, vmax, stream[_RANGE.size :]


def _scaled(block: np.ndarray, maxcode: int, stretch: float = 1.0) -> tuple[np.ndarray, bytes]:
    """The block as integer codes ``0..maxcode`` and the range that maps them back. With
    ``stretch > 1`` the stored range is that much wider than the block's, so the block takes
    ``1 / stretch`` of the codes (a codec's quantizer is then coarser on it by that factor:
    ``2 ** (1 / 6)`` is one HEVC QP step); the decoder maps the codes back the same way."""
    vmin, vmax = float(block.min()), float(block.max())
    if vmax > vmin and stretch != 1.0:
        vmax = vmin + (vmax - vmin) * stretch
    span = vmax - vmin if vmax > vmin else 1.0
    codes = np.clip(np.rint((block.astype(np.float64) - vmin) * (maxcode / span)), 0, maxcode)
    return codes.astype(np.uint16), _RANGE.pack(vmin, vmax)


def _unscaled(codes: np.ndarray, vmin: float, vmax: float, maxcode: int) -> np.ndarray:
    span = vmax - vmin if vmax > vmin else 1.0
    return codes.astype(np.float64) * (span / maxcode) + vmin
