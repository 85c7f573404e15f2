"""A base layer coded at half the in-plane resolution, interpolated back.

At the rates of 128x and beyond a classical codec spends almost nothing on a block's finest
octave, yet a block-transform codec (HEVC above all) still pays for every pixel's prediction
and its block edges. Coding the block's 2x2 means instead (a quarter of the pixels, in the
same bytes) and interpolating the decode back with a cubic B-spline puts those bytes on the
coarser scales, where MS-SSIM and a viewer weigh an image most (the 1 Mpx bbbc034 image
through the whole hybrid codec at 128x / 256x: MS-SSIM 0.99520 -> 0.99548 / 0.99404 ->
0.99426 for -0.06 / +0.06 dB of PSNR; docs/guidance.md "Half-resolution base").

:class:`HalvedBase` wraps any base codec: the stream is the inner codec's stream of the
halved block, so its size search, fill and refinement are the inner codec's own. The decoder
knows it by a bit of the payload's codec byte (:mod:`.payload`, version 7). Only the two
in-plane axes are halved: a plane still decodes without the others (an HEVC base frame by
frame). A side of odd length is padded by repeating its last row or column before halving,
and the interpolated plane is cropped back.
"""

from __future__ import annotations

import numpy as np

from .basecodec import BaseCodec, Shape3
from .planes import PlaneSource

__all__ = ["HALVED_BIT", "HalvedBase", "HalvedPlanes", "halve", "halved_shape", "unhalve"]

#: bit of a payload's codec number that marks a halved base (:mod:`.payload`, version 7)
HALVED_BIT = 0x40
#: the smallest in-plane side a halved base is tried on (smaller halves code little)
MIN_SIDE = 32


def halved_shape(shape3: Shape3) -> Shape3:
    """The shape of a block of ``shape3`` once its planes are halved (odd sides rounded up)."""
    z, h, w = shape3
    return z, (h + 1) // 2, (w + 1) // 2


def halve(block: np.ndarray) -> np.ndarray:
    """The 2x2 means of every plane of a ``(D, H, W)`` block (float64; an odd side's last
    row or column is repeated first)."""
    v = np.asarray(block, np.float64)
    z, h, w = v.shape
    if h % 2 or w % 2:
        v = np.pad(v, ((0, 0), (0, h % 2), (0, w % 2)), mode="edge")
    return v.reshape(z, v.shape[1] // 2, 2, v.shape[2] // 2, 2).mean(axis=(2, 4))


def unhalve(half: np.ndarray, shape3: Shape3) -> np.ndarray:
    """Planes of ``shape3`` interpolated from their halved values ``half`` (cubic B-spline;
    the centre of a 2x2 mean is the centre of its four pixels)."""
    from scipy import ndimage

    z, h, w = shape3
    full = np.empty((z, 2 * half.shape[1], 2 * half.shape[2]), np.float64)
    for k, plane in enumerate(np.asarray(half, np.float64)):  # (plane by plane: no spline in z)
        full[k] = ndimage.zoom(plane, 2, order=3, mode="reflect", grid_mode=True)
    return np.ascontiguousarray(full[:z, :h, :w])


class HalvedBase(BaseCodec):
    """``inner`` coding the block's halved planes (:func:`halve`), decoded back by
    :func:`unhalve`.

    Parameters
    ----------
    inner : BaseCodec
        The codec of the halved block.
    """

    def __init__(self, inner: BaseCodec) -> None:
        self.inner = inner
        self.ident = inner.ident | HALVED_BIT
        self.name = f"{inner.name}/2"
        self.lo, self.hi = inner.lo, inner.hi
        self.increasing, self.log = inner.increasing, inner.log
        self.by_plane, self.slope = inner.by_plane, inner.slope
        self.choice_weight = inner.choice_weight

    def __repr__(self) -> str:
        return f"HalvedBase({self.inner!r})"

    def available(self) -> bool:  # noqa: D102
        return self.inner.available()

    def supports(self, shape3: Shape3) -> bool:  # noqa: D102
        return min(shape3[1:]) >= MIN_SIDE and self.inner.supports(halved_shape(shape3))

    def encode(self, block: np.ndarray, param: float) -> bytes:  # noqa: D102
        return self.inner.encode(halve(block), param)

    def decode(self, stream: bytes, shape3: Shape3) -> np.ndarray:  # noqa: D102
        return unhalve(self.inner.decode(stream, halved_shape(shape3)), shape3)

    def refined(self) -> BaseCodec | None:  # noqa: D102
        return _wrapped(self.inner.refined())

    def param_for_size(self, block: np.ndarray, nbytes: int) -> float | None:  # noqa: D102
        return self.inner.param_for_size(halve(block), nbytes)

    @property
    def cost(self) -> float:  # noqa: D102
        return self.inner.cost

    def proxy(self) -> BaseCodec | None:  # noqa: D102
        return _wrapped(self.inner.proxy())

    def filler(self, param: float) -> BaseCodec | None:  # noqa: D102
        return _wrapped(self.inner.filler(param))

    def shrinker(self, param: float, shape3: Shape3) -> BaseCodec | None:  # noqa: D102
        return _wrapped(self.inner.shrinker(param, halved_shape(shape3)))

    def planes(self, stream: bytes, shape3: Shape3) -> PlaneSource:  # noqa: D102
        return HalvedPlanes(self.inner.planes(stream, halved_shape(shape3)), shape3)


def _wrapped(codec: BaseCodec | None) -> BaseCodec | None:
    return None if codec is None else HalvedBase(codec)


class HalvedPlanes(PlaneSource):
    """The planes of a halved base, each interpolated once its halved plane is decoded."""

    def __init__(self, inner: PlaneSource, shape3: Shape3) -> None:
        self._inner, self._shape3 = inner, shape3
        self._values = np.zeros(shape3, np.float64)
        self._done = np.zeros(shape3[0], bool)

    def span(self, lo: int, hi: int) -> np.ndarray:  # noqa: D102
        half = self._inner.span(lo, hi)
        lo, hi = max(lo, 0), min(hi, self._shape3[0])
        todo = [k for k in range(lo, hi) if not self._done[k]]
        if todo:
            a, b = todo[0], todo[-1] + 1
            self._values[a:b] = unhalve(half[a:b], (b - a, *self._shape3[1:]))
            self._done[a:b] = True
        return self._values

    def upto(self, k: int) -> np.ndarray:  # noqa: D102
        return self.span(0, k)

    @property
    def nbytes(self) -> int:  # noqa: D102
        return self._values.nbytes + self._inner.nbytes
