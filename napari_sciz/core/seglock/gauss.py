"""The segmentation's Gaussian smoothing, computed as scipy computes it, faster.

The lock (:mod:`napari_sciz.core.seglock`) smooths volumes many times: the decoded volume
for the flags' contexts, and each box of its projection (:mod:`.project`) 32 times. These
functions give the values of :func:`scipy.ndimage.gaussian_filter` (``truncate=4``, mode
``reflect``) bit for bit (tested), since the files record checksums of what the smoothing
gives and every file written so far was written with scipy's, but with compiled passes
(:mod:`.kernels`) split between threads, and, for a field that is zero away from a set of
voxels and read only there (:class:`AtConstraints`), with each pass computed only where the
later passes read it. A box's projection on one thread runs its dual steps in one compiled
kernel (:meth:`AtConstraints.dual_steps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["AtConstraints", "gaussian", "pool", "row_parts", "warm_up"]

#: voxels below which a smoothing runs on one thread
_THREADED_VOXELS = 32768


def _workers() -> int:
    """Threads a smoothing uses (this machine's CPUs, at most 8)."""
    import os

    return min(os.cpu_count() or 1, 8)


def pool(voxels: int) -> Any:
    """A context giving a pool of threads for a smoothing of ``voxels`` voxels (or of a
    field on that many), or None where one thread is enough."""
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import nullcontext

    if _workers() < 2 or voxels < _THREADED_VOXELS:
        return nullcontext()
    return ThreadPoolExecutor(_workers(), thread_name_prefix="sciz-lock")


class AtConstraints:
    """A Gaussian filtering of fields that are zero away from ``where``, read on ``where``.

    Each separable pass is computed only at the voxels the later passes read
    (:func:`.kernels.gaussian_pass`): the same values as
    :func:`scipy.ndimage.gaussian_filter` of the whole box, for a fraction of the work.
    Values on ``where`` are flat arrays in C order.
    """

    def __init__(self, where: np.ndarray, sigmas: Sequence[float]) -> None:
        from scipy import ndimage as ndi

        self.shape = where.shape
        mask = where.reshape((1,) * (3 - where.ndim) + where.shape)
        lead = 3 - where.ndim
        self.index = np.flatnonzero(mask)
        self.passes: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        need = mask
        for axis, sigma in reversed(list(enumerate(sigmas, start=lead))):
            if sigma <= 1e-15:  # (scipy skips such an axis)
                continue
            weights = _weights(float(sigma))
            lines = need.any(axis=2)  # (rows along the last axis)
            self.passes.insert(0, (axis, weights, need, lines))
            r = (len(weights) - 1) // 2
            need = ndi.maximum_filter1d(need.astype(np.uint8), 2 * r + 1, axis, mode="constant") > 0
        if self.passes and self.passes[0][0] == 2:  # (rows without the field stay 0)
            axis, weights, first_need, lines = self.passes[0]
            self.passes[0] = (axis, weights, first_need, lines & mask.any(axis=2))
        self.passes = [(a, w, _runs(lines, a, n)) for a, w, n, lines in self.passes]
        self._field = np.zeros(mask.shape)
        self._buffers = [np.zeros(mask.shape) for _ in self.passes]

    def read(self, values: np.ndarray) -> np.ndarray:
        """``values`` (the box's shape) on ``where``."""
        return values.reshape(-1)[self.index]

    def spread(self, values: np.ndarray) -> np.ndarray:
        """Values on ``where`` as a box, zero elsewhere."""
        out = np.zeros(self.shape)
        out.reshape(-1)[self.index] = values
        return out

    def dual_steps(
        self, base: np.ndarray, side: np.ndarray, margin: float, iterations: int
    ) -> np.ndarray:
        """The projection's dual variable after ``iterations`` steps
        (:func:`.kernels.dual_steps`: :func:`.project._solve`'s loop, compiled, on one
        thread; the same values)."""
        from .kernels import dual_steps

        count = len(self.passes)
        longest = max((len(w) for _a, w, _r in self.passes), default=1)
        weights = np.zeros((count, longest))
        for p, (_axis, w, _runs) in enumerate(self.passes):
            weights[p, : len(w)] = w
        radii = np.array([(len(w) - 1) // 2 for _a, w, _r in self.passes], np.int64)
        axes = np.array([a for a, _w, _r in self.passes], np.int64)
        starts = np.cumsum([0] + [len(r) for _a, _w, r in self.passes]).astype(np.int64)
        runs = np.concatenate([r for _a, _w, r in self.passes] or [np.zeros((0, 4), np.int64)])
        buffers = np.zeros((max(count, 1), *self._field.shape))
        return dual_steps(
            np.ascontiguousarray(base, np.float64), np.ascontiguousarray(side, np.float64),
            float(margin), int(iterations), self.index, self._field, buffers, axes, weights,
            radii, np.ascontiguousarray(runs, np.int64), starts,
        )  # fmt: skip

    def smooth(self, values: np.ndarray, threads: Any = None) -> np.ndarray:
        """The filtering of the field ``values`` (on ``where``, zero elsewhere), on ``where``.

        ``threads``: a thread pool that computes each pass's rows in parts (the kernels
        release the GIL), or None.
        """
        from .kernels import gather_at, scatter_at

        scatter_at(values, self.index, self._field)
        src = self._field
        for (axis, weights, runs), dst in zip(self.passes, self._buffers, strict=True):
            _run_pass(src, dst, weights, axis, runs, threads)
            src = dst
        out = np.empty(len(self.index))
        gather_at(src, self.index, out)
        return out


#: voxels between two runs of a row below which they are computed as one
_GAP = 8


def _runs(lines: np.ndarray, axis: int, need: np.ndarray | int) -> np.ndarray:
    """The runs of voxels a pass computes, each ``(z, y, x0, x1)`` along the last axis: in
    the rows set in ``lines``, the voxels ``need`` names (an int: whole rows of that width),
    runs less than :data:`_GAP` apart joined; in the order a pass along ``axis`` reads
    best (along axis 0, all the rows of one ``y`` together: they read the same planes'
    rows). Compiled (:func:`.kernels.row_runs`): a lock of many small boxes asks for
    thousands."""
    from .kernels import row_runs

    rows = np.ascontiguousarray(lines, bool)
    if isinstance(need, int):
        return row_runs(rows, axis == 0, _NO_NEED, int(need), _GAP)
    return row_runs(rows, axis == 0, np.ascontiguousarray(need, bool), -1, _GAP)


#: the ``need`` of whole rows (:func:`_runs`)
_NO_NEED = np.zeros((1, 1, 1), bool)


#: runs of a pass below which it is not split between threads
_RUNS_PER_PART = 512


def _parts(runs: np.ndarray, threads: Any) -> list[np.ndarray]:
    """``runs`` cut into one part per thread (one part without threads or for few runs)."""
    if threads is None or len(runs) < 2 * _RUNS_PER_PART:
        return [runs]
    count = min(_workers(), len(runs) // _RUNS_PER_PART)
    return np.array_split(runs, count)


def row_parts(rows: int, threads: Any) -> list[tuple[int, int]]:
    """``range(rows)`` cut into one ``(start, stop)`` per thread of ``threads`` (a pool, or
    None: one part)."""
    count = 1 if threads is None else max(1, min(_workers(), rows))
    edges = np.linspace(0, rows, count + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _weights(sigma: float) -> np.ndarray:
    """scipy's Gaussian weights for ``sigma`` (``truncate=4``), in its correlation order."""
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    return (phi / phi.sum())[::-1].copy()


def _run_pass(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray, axis: int, runs: np.ndarray,
    threads: Any,
) -> None:  # fmt: skip
    """:func:`.kernels.gaussian_pass`, its runs shared between ``threads`` (a pool or None)."""
    from .kernels import gaussian_pass

    parts = _parts(runs, threads)
    if len(parts) == 1:
        gaussian_pass(src, dst, weights, axis, runs)
        return
    done = [threads.submit(gaussian_pass, src, dst, weights, axis, p) for p in parts]
    for future in done:
        future.result()


def gaussian(values: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(values, sigmas)`` of a 2D or 3D array, as float64.

    Bit for bit scipy's values (other dimensions are handed to scipy).
    """
    src = np.asarray(values, np.float64)
    if src.ndim not in (2, 3) or len(sigmas) != src.ndim:
        from scipy import ndimage as ndi

        return ndi.gaussian_filter(src, list(sigmas))
    shape = src.shape
    src = np.ascontiguousarray(src).reshape((1,) * (3 - src.ndim) + shape)
    passes = [
        (axis, _weights(float(sigma)))
        for axis, sigma in enumerate(sigmas, start=3 - len(shape))
        if sigma > 1e-15
    ]
    if not passes:
        return src.reshape(shape).copy()
    every = np.ones(src.shape[:2], bool)
    with pool(src.size) as threads:
        for axis, weights in passes:
            dst = np.empty(src.shape)
            _run_pass(src, dst, weights, axis, _runs(every, axis, src.shape[2]), threads)
            src = dst
    return src.reshape(shape)


def warm_up() -> None:
    """Compile the kernels (or load them from numba's disk cache) on a few voxels, with the
    argument types of every real call (about 1.2 s on a 2-core CPU without a cache)."""
    field = np.zeros((2, 3, 3))
    gaussian(field, (1.0, 1.0, 1.0))
    wide = AtConstraints(field == 0.0, (1.0, 1.0, 1.0))
    wide.smooth(wide.read(field))
    wide.dual_steps(wide.read(field), wide.read(field) + 1.0, 0.5, 1)
    from .geometry import contexts

    contexts(field, 0.5)
