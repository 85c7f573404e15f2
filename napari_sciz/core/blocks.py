"""The block grid that tiles a volume (or a stack of volumes), and byte allocation over blocks.

Arrays with more than three axes are a stack of 3D volumes along their leading axes; 2D images
are single volumes of depth one. Every volume is tiled with the same grid of blocks of at most
``block_voxels`` voxels; blocks are numbered volume by volume in C order.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError
from .parallel import on_threads
from .ratealloc import allocate_by_rd, blend_shares, lift_to_floor, probe_rd
from .validate import memory_cap

__all__ = [
    "DEFAULT_BLOCK_VOXELS",
    "BlockGrid",
    "BlockStats",
    "allocate_bytes",
    "allocate_from_stats",
    "block_stats",
    "finalize",
    "grid_stats",
]

Box = Sequence[tuple[int, int]]

#: largest number of voxels of one block, unless the caller asks otherwise
DEFAULT_BLOCK_VOXELS = 2**22

#: peak bytes per voxel of :func:`block_stats` with probes (float64 copy, decode, error)
_STATS_BYTES_PER_VOXEL = 40

#: voxels finalized at a time (bounds the float temporaries of :func:`finalize`)
_FINALIZE_CHUNK = 1 << 20


@dataclass(frozen=True)
class BlockGrid:
    """Tiling of an array into blocks.

    Attributes
    ----------
    shape : tuple of int
        Shape of the whole array.
    spatial_ndim : int
        2 for a single 2D image, else 3 (the last three axes are spatial).
    block_shape : tuple of int
        Nominal block shape ``(D, H, W)`` (edge blocks may be smaller).
    counts : tuple of int
        Number of blocks along ``(D, H, W)``.
    """

    shape: tuple[int, ...]
    spatial_ndim: int
    block_shape: tuple[int, int, int]
    counts: tuple[int, int, int]

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        """Shape ``(D, H, W)`` of one volume (``D = 1`` for 2D)."""
        spatial = self.shape[-self.spatial_ndim :]
        return tuple([1] * (3 - self.spatial_ndim) + list(spatial))  # type: ignore[return-value]

    @property
    def lead_shape(self) -> tuple[int, ...]:
        """Shape of the leading (channel/time) axes."""
        return self.shape[: len(self.shape) - self.spatial_ndim]

    @property
    def n_volumes(self) -> int:
        """Number of volumes in the stack."""
        return math.prod(self.lead_shape)

    @property
    def blocks_per_volume(self) -> int:
        """Number of blocks of one volume."""
        return math.prod(self.counts)

    @property
    def n_blocks(self) -> int:
        """Total number of blocks."""
        return self.n_volumes * self.blocks_per_volume

    @classmethod
    def for_shape(cls, shape: Sequence[int], block_voxels: int) -> BlockGrid:
        """Choose the block grid for an array: the fewest, most even blocks under the limit."""
        shape = tuple(int(n) for n in shape)
        spatial_ndim = 2 if len(shape) == 2 else 3
        vol = [1] * (3 - spatial_ndim) + list(shape[-spatial_ndim:])
        counts = [1, 1, 1]
        limit = max(int(block_voxels), 4096)

        def bshape() -> list[int]:
            return [math.ceil(n / c) for n, c in zip(vol, counts, strict=True)]

        while math.prod(bshape()) > limit:
            b = bshape()
            axis = int(np.argmax(b))
            # the fewest blocks along `axis` that make them smaller (one more block is not
            # always enough: 18 blocks of 289 voxels are as long as 17)
            counts[axis] = math.ceil(vol[axis] / (b[axis] - 1))
            counts = [math.ceil(n / math.ceil(n / c)) for n, c in zip(vol, counts, strict=True)]
        return cls(shape, spatial_ndim, tuple(bshape()), tuple(counts))  # type: ignore[arg-type]

    def to_header(self) -> dict:
        """Header form of the grid."""
        return {
            "block_shape": list(self.block_shape),
            "counts": list(self.counts),
            "spatial_ndim": self.spatial_ndim,
            "count": self.n_blocks,
        }

    @classmethod
    def from_header(cls, h: dict, shape: Sequence[int]) -> BlockGrid:
        """Rebuild and check the grid stored in a header."""
        shape = tuple(int(n) for n in shape)
        spatial_ndim = int(h["spatial_ndim"])
        if (
            spatial_ndim not in (2, 3)
            or spatial_ndim > len(shape)
            or (spatial_ndim == 2) != (len(shape) == 2)
        ):
            raise FormatError("header block grid has an invalid number of spatial axes")
        block_shape = tuple(int(n) for n in h["block_shape"])
        counts = tuple(int(n) for n in h["counts"])
        grid = cls(shape, spatial_ndim, block_shape, counts)  # type: ignore[arg-type]
        if len(block_shape) != 3 or len(counts) != 3:
            raise FormatError("header block grid must have three axes")
        for n, b, c in zip(grid.volume_shape, block_shape, counts, strict=True):
            if b < 1 or c < 1 or math.ceil(n / b) != c:
                raise FormatError("header block grid does not tile the image")
        if math.prod(block_shape) > 2**31:
            raise FormatError("header declares implausibly large blocks")
        return grid

    def _split(self, index: int) -> tuple[int, tuple[int, int, int]]:
        volume, rest = divmod(index, self.blocks_per_volume)
        bz, rest = divmod(rest, self.counts[1] * self.counts[2])
        by, bx = divmod(rest, self.counts[2])
        return volume, (bz, by, bx)

    def block_box(self, index: int) -> tuple[int, tuple[int, int, int], tuple[int, int, int]]:
        """``(volume, start, stop)`` of a block in volume coordinates (3D)."""
        volume, pos = self._split(index)
        start = tuple(p * b for p, b in zip(pos, self.block_shape, strict=True))
        stop = tuple(
            min(s + b, n)
            for s, b, n in zip(start, self.block_shape, self.volume_shape, strict=True)
        )
        return volume, start, stop  # type: ignore[return-value]

    def block_shape3(self, index: int) -> tuple[int, int, int]:
        """Actual ``(D, H, W)`` shape of a block."""
        _v, start, stop = self.block_box(index)
        return tuple(b - a for a, b in zip(start, stop, strict=True))  # type: ignore[return-value]

    def block_voxels(self, index: int) -> int:
        """Number of voxels of a block."""
        return math.prod(self.block_shape3(index))

    def block_slices(self, index: int) -> tuple:
        """Index into the whole array selecting the block."""
        volume, start, stop = self.block_box(index)
        lead = (
            tuple(int(i) for i in np.unravel_index(volume, self.lead_shape))
            if self.lead_shape
            else ()
        )
        spatial = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))[
            3 - self.spatial_ndim :
        ]
        return lead + spatial

    def blocks_in_box(
        self, volume: int, box3: Box
    ) -> Iterator[tuple[int, tuple[int, ...], tuple[int, ...]]]:
        """Blocks of ``volume`` that intersect ``box3`` (3D ``(start, stop)`` per axis)."""
        ranges = []
        for (a, b), size in zip(box3, self.block_shape, strict=True):
            ranges.append(range(a // size, (b - 1) // size + 1))
        for bz in ranges[0]:
            for by in ranges[1]:
                for bx in ranges[2]:
                    index = (
                        volume * self.blocks_per_volume
                        + (bz * self.counts[1] + by) * self.counts[2]
                        + bx
                    )
                    _v, start, stop = self.block_box(index)
                    yield index, start, stop


@dataclass(frozen=True)
class BlockStats:
    """What the byte allocation and the header need to know of one block.

    Computed where the block is (in this process or on a Dask worker), so that planning a
    compression never needs the whole array in one place.

    Attributes
    ----------
    vmin, vmax : int or float
        Smallest and largest value (Python ``int`` for integer dtypes).
    detail : float
        Mean absolute difference between neighbours, averaged over the axes longer than one
        (in original units; divided by the whole image's value span it is the allocation's
        complexity measure).
    voxels : int
        Number of voxels.
    nonfinite : int
        Number of NaN or infinite values (always 0 for integer dtypes).
    rd : tuple of (float, float) or None
        Rate-distortion points ``(bytes, squared error)`` of the block, when probed
        (:func:`~napari_sciz.core.ratealloc.probe_rd`): the allocation then gives every block
        the same slope.
    """

    vmin: float
    vmax: float
    detail: float
    voxels: int
    nonfinite: int = 0
    rd: tuple[tuple[float, float], ...] | None = None


def nonfinite_count(a: np.ndarray) -> int:
    """How many NaN or infinite values ``a`` holds (0 for integer and boolean dtypes)."""
    if a.dtype.kind != "f":
        return 0
    return int(a.size - np.count_nonzero(np.isfinite(a)))


def value_bounds(a: np.ndarray) -> tuple[int, int] | tuple[float, float]:
    """``(min, max)`` of a non-empty array: Python ``int`` for integer and boolean dtypes,
    ``float`` otherwise (as headers store them)."""
    lo, hi = a.min(), a.max()
    if a.dtype.kind in "uib":
        return int(lo), int(hi)
    return float(lo), float(hi)


def block_stats(block: np.ndarray, probe_bits: float | None = None) -> BlockStats:
    """Statistics of one block (see :class:`BlockStats`); with ``probe_bits`` (the file's
    average bits per value), its rate-distortion points too."""
    b = np.asarray(block)
    nonfinite = nonfinite_count(b)
    if nonfinite:
        return BlockStats(math.nan, math.nan, math.nan, int(b.size), nonfinite)
    lo, hi = value_bounds(b)
    f = b.astype(np.float32, copy=False)
    total = 0.0
    count = 0
    for axis in range(f.ndim):
        if f.shape[axis] > 1:
            total += float(np.abs(np.diff(f, axis=axis)).mean())
            count += 1
    rd = None if probe_bits is None else probe_rd(b.reshape((-1, *b.shape[-2:])), probe_bits)
    return BlockStats(lo, hi, total / max(count, 1), int(b.size), 0, rd)


def grid_stats(
    arr: np.ndarray,
    grid: BlockGrid,
    probe_bits: float | None,
    probe_seconds: float | None = None,
) -> list[BlockStats]:
    """:func:`block_stats` of every block of ``arr`` in order, blocks on threads (one per
    CPU, as many as a quarter of the memory cap holds: SPERR and numpy release the GIL).

    ``probe_seconds`` bounds the rate-distortion probes: once it has passed, or the probes
    done so far project the remaining ones past it, the blocks not yet started are measured
    without a probe (and
    the allocation, which needs every block's, then goes without them): a tight time budget
    is left to the blocks' coding.
    """
    boxes = [grid.block_slices(i) for i in range(grid.n_blocks)]
    largest = max(math.prod(grid.block_shape3(i)) for i in range(grid.n_blocks))
    limit = max(1, memory_cap() // 4 // (_STATS_BYTES_PER_VOXEL * largest))
    if probe_bits is None or probe_seconds is None:
        return on_threads(lambda box: block_stats(arr[box], probe_bits), boxes, "sciz-stats", limit)
    clock = _ProbeClock(probe_seconds, len(boxes), min(limit, os.cpu_count() or 1))

    def stats(box: tuple[slice, ...]) -> BlockStats:
        if not clock.may_probe():
            return block_stats(arr[box])
        t0 = time.perf_counter()
        out = block_stats(arr[box], probe_bits)
        clock.probed(time.perf_counter() - t0)
        return out

    return on_threads(stats, boxes, "sciz-stats", limit)


class _ProbeClock:
    """When the blocks of :func:`grid_stats` may still be probed (thread-safe)."""

    def __init__(self, seconds: float, blocks: int, threads: int) -> None:
        self.end = time.perf_counter() + seconds
        self.left = blocks
        self.threads = max(threads, 1)
        self.done: list[float] = []
        self.stopped = False
        self._lock = threading.Lock()

    def may_probe(self) -> bool:
        """Whether the next block may be probed (the deadline not passed, nor projected to
        be by the probes done so far); counts it as probed."""
        with self._lock:
            now = time.perf_counter()
            if not self.stopped:
                per_block = sum(self.done) / len(self.done) if self.done else 0.0
                self.stopped = now + per_block * self.left / self.threads > self.end
            if not self.stopped:
                self.left -= 1
            return not self.stopped

    def probed(self, seconds: float) -> None:
        """Record one probe's ``seconds``."""
        with self._lock:
            self.done.append(seconds)


def allocate_from_stats(
    stats: Sequence[BlockStats], budget: float, min_bytes: int = 160
) -> list[float]:
    """Split a payload byte budget between blocks by size and complexity.

    Each block gets a share proportional to ``voxels * sqrt(detail / span)``, where ``detail``
    is the mean absolute neighbour difference and ``span`` the value span of the whole image
    (a cheap proxy of how many bits the block needs, in the spirit of TINC/BRIEF's
    variance-based allocation), with at least ``min_bytes`` per block. When every block was
    probed (:attr:`BlockStats.rd`), the share is the geometric mean of that and the share at
    an equal rate-distortion slope (:func:`~napari_sciz.core.ratealloc.allocate_by_rd`,
    :func:`~napari_sciz.core.ratealloc.blend_shares`).

    Returns
    -------
    list of float
        Bytes per block; they sum to ``budget``.
    """
    n = len(stats)
    if n == 1:
        return [float(budget)]
    probes = [s.rd for s in stats]
    probed = None
    if all(probes):
        probed = np.asarray(allocate_by_rd(probes, [s.voxels for s in stats], budget, min_bytes))
    span = float(max(s.vmax for s in stats)) - float(min(s.vmin for s in stats))
    weights = []
    for s in stats:
        detail = s.detail / span if span > 0 else 0.0
        weights.append(s.voxels * math.sqrt(detail + 1e-4))
    w = np.asarray(weights)
    if probed is not None:
        w = blend_shares(w, probed)
    # starved blocks lifted to the minimum, the others paying in proportion
    return lift_to_floor(budget * w / w.sum(), min_bytes)


def allocate_bytes(
    arr: np.ndarray, grid: BlockGrid, budget: float, min_bytes: int = 160
) -> list[float]:
    """Split a payload byte budget between the blocks of ``arr`` (see
    :func:`allocate_from_stats`).

    Returns
    -------
    list of float
        Bytes per block; they sum to ``budget``.
    """
    if grid.n_blocks == 1:
        return [float(budget)]
    stats = [block_stats(arr[grid.block_slices(i)]) for i in range(grid.n_blocks)]
    return allocate_from_stats(stats, budget, min_bytes)


def finalize(values: np.ndarray, dtype: np.dtype, vrange: Sequence[float]) -> np.ndarray:
    """Round (integers) and clip a float reconstruction into the original dtype.

    Works slab by slab along the first axis, so it needs no full-size float temporaries.
    """
    lo, hi = vrange
    values = np.asarray(values)
    out = np.empty(values.shape, dtype)
    rounds = np.dtype(dtype).kind in "ui"
    flat_values, flat_out = values.reshape(-1), out.reshape(-1)
    for start in range(0, values.size, _FINALIZE_CHUNK):
        part = np.clip(flat_values[start : start + _FINALIZE_CHUNK], lo, hi)
        if rounds:
            np.rint(part, out=part)
        flat_out[start : start + _FINALIZE_CHUNK] = part
    return out
