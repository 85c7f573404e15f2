"""Decorrelated colour planes in distributed jobs: a slide scan coded on a Dask cluster as in
one process.

In one process an 8- or 16-bit RGB(A) image is coded as the planes of a transform of its
samples (:mod:`.colourtransform`), fitted to the whole image. On a cluster no one holds the
whole image, so the transform is gathered from the blocks in two passes: the exact integer
sums of the sampled pixels that lie in each block (the same pixels and the same totals as
:meth:`ColourTransform.fit <.colourtransform.ColourTransform.fit>`, in any order), then, with
the transform's basis known, each block's range of transformed values. The workers then read
their blocks as planes (:class:`TransformedSource`) and measure their fits on the image's
samples. The transform is the one-process transform, so the file is too (given ``steps``).

An image is coded so when it is one image (``Y, X, C``): its blocks hold every sample of their
pixels. A colour volume (``Z, Y, X, C``), whose blocks hold one sample each, is coded without
the transform.
"""

from __future__ import annotations

import functools
import math
import operator
import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import SciZError
from . import colour
from .blocks import BlockGrid
from .cluster import BlockSource, ClusterRun, tune_worker_malloc, user_error
from .colourtransform import ColourTransform, SampleSums, plane_range, sample_step

__all__ = [
    "ColourPlanes",
    "TransformedSource",
    "coded_colour",
    "decorrelated",
    "image_pair",
    "metric_range",
    "planes_request",
]


@dataclass
class ColourPlanes:
    """A request to code a colour image (samples first) as decorrelated planes, and, once
    :func:`decorrelated` has run, the transform it was coded through (None: coded as it is).

    Attributes
    ----------
    source : BlockSource or numpy.ndarray
        The image, samples first.
    ratio : float
        The ratio the caller asked for (the file's, header keys included).
    raw_nbytes : int
        The image's bytes.
    transform : ColourTransform or None
        Set by :func:`decorrelated`.
    """

    source: Any
    ratio: float
    raw_nbytes: int
    transform: ColourTransform | None = None


@dataclass(frozen=True)
class TransformedSource(BlockSource):
    """A colour image's :class:`BlockSource` (samples first) whose blocks are read as the
    stored planes of ``transform`` (``uint16``): each block's pixels are read with all their
    samples and transformed."""

    transform: ColourTransform | None = None

    @classmethod
    def of(cls, source: BlockSource, transform: ColourTransform) -> TransformedSource:
        """The planes of ``source`` (an image, samples first)."""
        return cls(
            source.shape, "uint16", source.path, source.channels_last, source.series, transform
        )

    def read(self, index: tuple, array: Any = None) -> np.ndarray:
        """The stored planes ``planes[index]`` (``index``: a block's slices)."""
        assert self.transform is not None
        index = tuple(index) + (slice(None),) * (len(self.shape) - len(tuple(index)))
        image = self.read_image((slice(None), *index[1:]), array)
        return np.ascontiguousarray(self.transform.forward(image)[index[0]])

    def read_image(self, index: tuple, array: Any = None) -> np.ndarray:
        """The image's samples ``image[index]``."""
        return BlockSource.read(self, index, array)


def image_pair(
    source: Any, index: tuple, array: Any, decoded: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """For a block of decorrelated planes (``source`` a :class:`TransformedSource`, or one
    with its outliers listed apart), the image's samples there and the ``decoded`` planes
    as samples (the block holds every plane); None for any other source."""
    inner = getattr(source, "source", source)
    if not isinstance(inner, TransformedSource) or inner.transform is None:
        return None
    return inner.read_image(index, array), inner.transform.inverse(decoded)


def decorrelated(
    run: ClusterRun, src: BlockSource, array: Any, grid: BlockGrid, request: ColourPlanes
) -> BlockSource:
    """``src`` read as the planes of its transform, fitted on the cluster (the request
    records it), or ``src`` itself where the transform does not apply (a colour volume) or
    its planes would not fit ``uint16``."""
    if len(src.shape) != 3 or grid.counts[0] != 1:
        return src
    step = sample_step(math.prod(src.shape[1:]))
    sums = run.map(
        "colour-sums", _sums_task, [(src, array, grid, i, step) for i in range(grid.n_blocks)]
    )
    total = functools.reduce(operator.add, sums)
    dtype = np.dtype(src.dtype)
    mean, matrix = total.basis(dtype)
    ranges = run.map(
        "colour-range",
        _range_task,
        [(src, array, grid, i, mean, matrix) for i in range(grid.n_blocks)],
    )
    lo = np.min([r[0] for r in ranges], axis=0)
    hi = np.max([r[1] for r in ranges], axis=0)
    transform = ColourTransform.from_parts(mean, matrix, lo, hi, dtype, total.value_range)
    request.transform = transform
    return src if transform is None else TransformedSource.of(src, transform)


def _sums_task(
    source: BlockSource, array: Any, grid: BlockGrid, index: int, step: int
) -> SampleSums | BaseException:
    """The :class:`SampleSums` of block ``index``'s sampled pixels (those whose flat index
    over ``Y, X`` is a multiple of ``step``)."""
    tune_worker_malloc()
    try:
        sl = grid.block_slices(index)
        block = source.read(sl, array)
    except (SciZError, OSError, ValueError) as exc:
        return user_error(exc)
    _, ys, xs = sl
    width = source.shape[2]
    flat_index = np.arange(ys.start, ys.stop)[:, None] * width + np.arange(xs.start, xs.stop)
    flat = block.reshape(block.shape[0], -1)
    return SampleSums.of(flat[:, (flat_index % step == 0).ravel()], flat)


def _range_task(
    source: BlockSource,
    array: Any,
    grid: BlockGrid,
    index: int,
    mean: np.ndarray,
    matrix: np.ndarray,
) -> tuple[np.ndarray, np.ndarray] | BaseException:
    """The smallest and largest transformed value of block ``index`` per plane."""
    tune_worker_malloc()
    try:
        block = source.read(grid.block_slices(index), array)
    except (SciZError, OSError, ValueError) as exc:
        return user_error(exc)
    return plane_range(block.reshape(block.shape[0], -1), mean, matrix)


def planes_request(source: Any) -> tuple[Any, ColourPlanes | None]:
    """The source to open of what :func:`compress_distributed
    <napari_sciz.core.distributed.compress_distributed>` was given, and the request when
    it is one."""
    if isinstance(source, ColourPlanes):
        return source.source, source
    return source, None


def metric_range(request: ColourPlanes | None, given: tuple[float, float]) -> tuple[float, float]:
    """The value range a job's quality is measured on: the image's where it is coded as
    decorrelated planes, ``given`` otherwise."""
    if request is None or request.transform is None:
        return given
    return request.transform.value_range


def coded_colour(source: Any, axes: str | None) -> tuple[Any, tuple[int, ...]]:
    """A channels-last colour source in its coded layout, samples first (an array moved, a
    file read so on the workers), or None; and the source's shape."""
    if isinstance(source, np.ndarray) or _array_like(source):
        shape = tuple(int(n) for n in source.shape)
        if colour.is_channels_last(shape, axes):
            return colour.coded_first(np.asarray(source)), shape
        return None, shape
    if isinstance(source, BlockSource) and source.path and not source.channels_last:
        described = source  # (a file's image series)
    elif isinstance(source, (str, os.PathLike)):
        described = BlockSource.from_path(source)
    else:
        return None, ()
    if colour.is_channels_last(described.shape, axes):
        coded_shape = tuple(colour.last_first(described.shape))
        return replace(described, shape=coded_shape, channels_last=True), described.shape
    return None, described.shape


def _array_like(source: Any) -> bool:
    """Whether ``source`` is an array other than numpy's (Dask, Zarr): not a path, not a
    source already described."""
    if isinstance(source, (str, os.PathLike, BlockSource, ColourPlanes)):
        return False
    return hasattr(source, "shape") and hasattr(source, "dtype") and hasattr(source, "ndim")
