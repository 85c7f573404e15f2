"""Decoded base planes on demand: what a viewer asking for one plane needs decoded.

A base layer coded as a whole (SPERR's 3D wavelets, JPEG XL's mosaic) is decoded at once on the
first request; one coded as independent slabs of planes (:class:`SlabPlanes`) slab by slab. An
HEVC base is a video whose frames are the block's planes: :class:`HEVCPlanes` feeds FFmpeg's
decoder only until the frames asked for have come out (the decoder's state is kept for later
requests), so the first plane of a block costs the frames up to it, not all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ...errors import FormatError
from ..parallel import on_threads

__all__ = ["HEVCPlanes", "PlaneSource", "SlabPlanes", "WholePlanes"]

Shape3 = tuple[int, int, int]


class PlaneSource:
    """Float64 base planes of a block, decoded at least up to what was asked."""

    def upto(self, k: int) -> np.ndarray:
        """The block's base ``(D, H, W)``; planes ``0..k-1`` are decoded (the others may not
        be yet)."""
        raise NotImplementedError

    def span(self, lo: int, hi: int) -> np.ndarray:
        """The block's base ``(D, H, W)``; planes ``lo..hi-1`` are decoded (the others may
        not be yet). A source that decodes in order decodes up to ``hi``."""
        return self.upto(hi)

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        raise NotImplementedError


class SlabPlanes(PlaneSource):
    """A base coded as independent slabs of planes: a request decodes the slabs it touches.

    Parameters
    ----------
    shape3 : tuple of int
        The block's shape.
    slabs : list
        ``(z0, z1, decode)`` of every slab, in order and covering the block; ``decode()``
        returns the slab's float64 planes ``(z1 - z0, H, W)``.
    """

    def __init__(
        self, shape3: Shape3, slabs: list[tuple[int, int, Callable[[], np.ndarray]]]
    ) -> None:
        self._values = np.empty(shape3, np.float64)
        self._slabs = slabs
        self._done = [False] * len(slabs)

    def span(self, lo: int, hi: int) -> np.ndarray:
        """The block's base; the slabs that planes ``lo..hi-1`` touch are decoded, on one
        thread each when there are several (a plane next to a slab boundary, whose loop
        filter reads the neighbouring slab's planes, costs one slab's time, not two)."""
        todo = [
            i
            for i, (z0, z1, _) in enumerate(self._slabs)
            if not self._done[i] and z0 < hi and lo < z1
        ]
        for i, values in zip(todo, on_threads(self._decode, todo, "sciz-slab"), strict=True):
            z0, z1, _ = self._slabs[i]
            self._values[z0:z1] = values
            self._done[i] = True
        return self._values

    def _decode(self, i: int) -> np.ndarray:
        return self._slabs[i][2]()

    def upto(self, k: int) -> np.ndarray:  # noqa: D102
        return self.span(0, k)

    @property
    def nbytes(self) -> int:  # noqa: D102
        return self._values.nbytes


class WholePlanes(PlaneSource):
    """A base decoded at once on the first request by ``decode()``."""

    def __init__(self, decode: Callable[[], np.ndarray]) -> None:
        self._decode: Callable[[], np.ndarray] | None = decode
        self._values: np.ndarray | None = None

    def upto(self, k: int) -> np.ndarray:  # noqa: D102
        if self._values is None:
            assert self._decode is not None
            self._values, self._decode = self._decode(), None
        return self._values

    @property
    def nbytes(self) -> int:  # noqa: D102
        return 0 if self._values is None else self._values.nbytes


#: the largest code of each gray pixel format an HEVC base stream may decode to
HEVC_MAXCODE = {"gray12le": 4095, "gray10le": 1023}


class HEVCPlanes(PlaneSource):
    """An HEVC base (frames = planes) decoded frame by frame as far as asked.

    Parameters
    ----------
    body : bytes
        The HEVC stream (Annex B), its picture sizes already checked against the block.
    shape3 : tuple of int
        The block's shape; frames are ``(H, W)`` padded (``padded``).
    padded : tuple of int
        The frames' ``(height, width)``.
    unscale : callable
        ``unscale(codes, maxcode)``: the float values of a frame's codes.

    Raises
    ------
    FormatError
        (From :meth:`upto`) a frame of another size or pixel format, mixed formats, more or
        fewer frames than planes, or an FFmpeg failure.
    """

    def __init__(
        self,
        body: bytes,
        shape3: Shape3,
        padded: tuple[int, int],
        unscale: Callable[[np.ndarray, int], np.ndarray],
    ) -> None:
        import av

        self.shape3, self._padded, self._unscale = shape3, padded, unscale
        self._values = np.zeros(shape3, np.float64)
        self._count = 0
        self._format: str | None = None
        try:
            self._ctx: Any = av.CodecContext.create("hevc", "r")
            self._packets = [*self._ctx.parse(body), *self._ctx.parse(None)]
        except Exception as exc:  # noqa: BLE001 - any FFmpeg failure means a bad stream
            raise FormatError(f"hybrid base layer (HEVC) cannot be decoded: {exc}") from exc
        self._next = 0  # next packet to feed
        self._flushed = False

    def upto(self, k: int) -> np.ndarray:  # noqa: D102
        z = self.shape3[0]
        k = min(k, z)
        try:
            while self._count < k and self._next < len(self._packets):
                self._take(self._ctx.decode(self._packets[self._next]))
                self._next += 1
            if self._count < k or (self._next == len(self._packets) and not self._flushed):
                if not self._flushed:
                    self._flushed = True
                    self._take(self._ctx.decode(None))
        except FormatError:
            raise
        except Exception as exc:  # noqa: BLE001 - any FFmpeg failure means a bad stream
            raise FormatError(f"hybrid base layer (HEVC) cannot be decoded: {exc}") from exc
        if self._count < k or (self._flushed and self._count != z):
            raise FormatError("hybrid base layer (HEVC) does not match the block's shape")
        return self._values

    def _take(self, frames: Any) -> None:
        z, h, w = self.shape3
        for frame in frames:
            if self._count >= z or (frame.height, frame.width) != self._padded:
                raise FormatError("hybrid base layer (HEVC) does not match the block's shape")
            fmt = frame.format.name
            if fmt not in HEVC_MAXCODE or self._format not in (None, fmt):
                raise FormatError(f"hybrid base layer (HEVC) has frames of format {fmt}")
            self._format = fmt
            maxcode = HEVC_MAXCODE[fmt]
            codes = frame.to_ndarray(format=fmt)[:h, :w]
            self._values[self._count] = self._unscale(np.minimum(codes, maxcode), maxcode)
            self._count += 1

    @property
    def done(self) -> bool:
        """Whether every frame has been decoded and checked."""
        return self._flushed and self._count == self.shape3[0]

    @property
    def nbytes(self) -> int:  # noqa: D102
        return self._values.nbytes
