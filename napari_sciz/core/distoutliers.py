"""Outliers (hot pixels, zingers) of a distributed hybrid job, found without the whole array.

:func:`napari_sciz.compress` finds them on the whole array (:func:`.outliers.find_outliers`);
a Dask job finds the same ones from the blocks:

1. *ends*: with its statistics (:func:`.cluster.stats_task`), every block gives its ``k + 1``
   largest and smallest values (``k``: the most outliers the array may have); the client
   merges them into the array's and decides the bounds of the values that are not outliers
   (:func:`.outliers.outlier_bounds`);
2. *list*: only when there are such bounds, every block's voxels outside them, with their
   flat indices in the array; the client checks their number and whether the file has room
   for them, and then the statistics are taken again on the cleaned blocks.

The statistics and fit tasks then read :class:`CleanedSource` blocks: each block with a
one-voxel margin, its outliers replaced by the median of their neighbours as in one process,
the margin cut off. The file is the one a single process writes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import SciZError
from .blocks import BlockGrid
from .cluster import BlockSource, ClusterRun, user_error
from .outliers import (
    Outliers,
    merge_ends,
    most_outliers,
    outlier_bounds,
    outlier_note,
    outside,
    with_outlier_payload,
    worth_listing,
)
from .result import CompressResult

__all__ = ["CleanedSource", "ends_size", "outliers_from_ends", "with_outliers"]


@dataclass(frozen=True)
class CleanedSource:
    """A :class:`~napari_sciz.core.cluster.BlockSource` whose blocks come with the voxels
    outside ``bounds`` replaced as :meth:`.outliers.Outliers.cleaned` replaces them."""

    source: BlockSource
    bounds: tuple[float, float]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.source.shape

    @property
    def dtype(self) -> str:
        return self.source.dtype

    def read(self, index: tuple, array: Any = None) -> np.ndarray:
        """The cleaned ``source[index]`` (``index``: a block's slices)."""
        return self.read_pair(index, array)[0]

    def read_pair(self, index: tuple, array: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """The cleaned and the original ``source[index]``."""
        grown, inner = _with_margin(index, self.shape)
        region = self.source.read(grown, array)
        local = np.flatnonzero(outside(region, self.bounds))
        original = np.ascontiguousarray(region[inner])
        if local.size == 0:
            return original, original
        found = Outliers(local.astype(np.int64), region.reshape(-1)[local], self.bounds)
        return np.ascontiguousarray(found.cleaned(region)[inner]), original

    def restore(self, decoded: np.ndarray, original: np.ndarray) -> np.ndarray:
        """``decoded`` with the original's outliers written back (as the reader does)."""
        beyond = outside(original, self.bounds)
        decoded[beyond] = original[beyond]
        return decoded


def _with_margin(index: tuple, shape: tuple[int, ...]) -> tuple[tuple, tuple]:
    """``index`` (integers for the leading axes, slices for the others) grown by one voxel
    along every sliced axis within ``shape``, and where the original lies in the grown one."""
    grown, inner = [], []
    for entry, n in zip(index, shape, strict=False):
        if isinstance(entry, slice):
            start, stop = max(entry.start - 1, 0), min(entry.stop + 1, n)
            grown.append(slice(start, stop))
            inner.append(slice(entry.start - start, entry.stop - start))
        else:
            grown.append(entry)
    return tuple(grown), tuple(inner)


def _list_task(
    source: BlockSource, array: Any, grid: BlockGrid, index: int, bounds: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray] | BaseException:
    try:
        index_slices = grid.block_slices(index)
        block = source.read(index_slices, array)
    except (SciZError, OSError, ValueError) as exc:
        return user_error(exc)
    local = np.flatnonzero(outside(block, bounds))
    coords = np.unravel_index(local, block.shape)
    lead = [np.full(local.size, i, np.int64) for i in index_slices if not isinstance(i, slice)]
    starts = [s.start for s in index_slices if isinstance(s, slice)]
    full = (*lead, *(c + a for c, a in zip(coords, starts, strict=True)))
    flat = np.ravel_multi_index(full, source.shape).astype(np.int64)
    return flat, block.reshape(-1)[local]


def ends_size(shape: tuple[int, ...]) -> int | None:
    """How many of the largest and smallest values every block gives for the search (``k +
    1``), or None when an array of ``shape`` is too small to have outliers."""
    k = most_outliers(int(np.prod(shape, dtype=np.int64)))
    return None if k is None else k + 1


def outliers_from_ends(
    run: ClusterRun,
    source: BlockSource,
    array: Any,
    grid: BlockGrid,
    ends: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[Outliers, tuple[float, float]] | None:
    """The outliers :func:`.outliers.find_outliers` finds in the whole array, from the
    blocks' :func:`.outliers.block_ends` (of :func:`ends_size` values) and, when they show a
    gap, a listing task per block (see the module); with the array's value range. Or None."""
    m = ends_size(source.shape)
    if m is None:
        return None
    top, bottom = merge_ends(ends, m)
    bounds = outlier_bounds(top, bottom)
    if bounds is None:
        return None
    lists = run.map(
        "outliers", _list_task, [(source, array, grid, i, bounds) for i in range(grid.n_blocks)]
    )
    indices = np.concatenate([idx for idx, _v in lists])
    if not worth_listing(int(indices.size), int(np.prod(source.shape, dtype=np.int64))):
        return None
    values = np.concatenate([v for _i, v in lists])
    order = np.argsort(indices, kind="stable")
    return Outliers(indices[order], values[order], bounds), (float(bottom[0]), float(top[-1]))


def with_outliers(result: CompressResult, found: Outliers, target: float) -> CompressResult:
    """``result`` (of the blocks without ``found``) with the outlier list as its last
    payload, as :func:`.outliers.attach_outliers` makes it in one process."""
    header, blob = with_outlier_payload(result.data, result.header, found, target)
    return replace(
        result,
        data=blob,
        header=header,
        nbytes=len(blob),
        ratio=result.raw_nbytes / len(blob),
        messages=[*result.messages, outlier_note(found, result.header)],
    )
