"""Lossless and error-bounded compression on a Dask cluster: every worker codes its own blocks.

A lossless or bounded block payload depends on the block's voxels alone (the causal predictor
and its contexts are chosen per block, :mod:`.lossless`), so the blocks need no plan: each
task reads its block where it runs, codes it, decodes it and checks it (bit for bit, or within
the bound), and sends back the payload with the block's value range and error sums. The
client writes the header from those and packs the payloads in block order: the file is the
one :func:`napari_sciz.compress` writes in one process.

Lossless jobs read every block once. Bounded jobs first read every block for its value range
(one *statistics* task per block): the SSIM they report is taken against the whole image's
range, as in one process.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidInputError, SciZError
from .bitstream import container
from .blocks import DEFAULT_BLOCK_VOXELS, BlockGrid, nonfinite_count, value_bounds
from .cluster import (
    BlockReport,
    BlockSource,
    ClusterRun,
    client_for,
    source_of,
    stats_task,
    summed_quality,
    tune_worker_malloc,
    user_error,
)
from .plan import check_nonfinite, value_range
from .result import CompressResult, cancel_predicate
from .validate import check_axes, check_calibration, check_shape_dtype

__all__ = ["compress_exact_distributed"]


@dataclass
class _CodedBlock:
    """What a worker sends back for one block: its payload and measures."""

    index: int
    payload: bytes
    vmin: float
    vmax: float
    sse: float
    max_error: float
    ssim_sum: float | None
    ssim_slices: int


def _code_task(
    source: BlockSource,
    array: Any,
    grid: BlockGrid,
    index: int,
    mode: str,
    bound: float | None,
    span: float | None,
    search: bool,
) -> _CodedBlock | BaseException:
    """Read, code and verify block ``index`` (``span``: the image's value span, for SSIM)."""
    from . import lossless
    from .metrics import max_abs_error, squared_error_sum, ssim

    tune_worker_malloc()
    try:
        original = source.read(grid.block_slices(index), array)
        bad = nonfinite_count(original)
        if bad:
            raise InvalidInputError(f"the image contains at least {bad} NaN or infinite values")
    except (SciZError, OSError, ValueError) as exc:
        return user_error(exc)
    block = np.ascontiguousarray(original).reshape(grid.block_shape3(index))
    payload, decoded = lossless.code_verified(block, mode, bound, search)
    lo, hi = value_bounds(block)
    sse = err = 0.0
    ssim_sum, n_slices = None, 0
    if mode == "bounded":
        sse = squared_error_sum(block, decoded)
        err = max_abs_error(block, decoded)
        if grid.counts[1] == 1 and grid.counts[2] == 1:  # whole slices: SSIM is a mean over them
            n_slices = int(np.prod(original.shape[:-2], dtype=np.int64))
            peak = span if span else 1.0
            decoded = decoded.reshape(original.shape)
            ssim_sum = ssim(original, decoded, data_range=peak) * n_slices
    return _CodedBlock(index, payload, lo, hi, sse, err, ssim_sum, n_slices)


def compress_exact_distributed(
    source: Any,
    mode: str,
    max_error: float | None = None,
    *,
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | float | None = "auto",
    axes: str | None = None,
    voxel_size: Sequence[float] | None = None,
    units: Sequence[str] | None = None,
    name: str | None = None,
    block_voxels: int | None = None,
    search: bool = False,
    retries: int = 2,
    connect_timeout: float = 20.0,
    progress: Callable[[Any], None] | None = None,
    cancel: Any = None,
) -> CompressResult:
    """Compress losslessly or within ``max_error`` with the blocks coded on a Dask cluster.

    Parameters
    ----------
    source : path-like or array-like
        As in :func:`~napari_sciz.core.distributed.compress_distributed`.
    mode : {"lossless", "bounded"}
        Bit-exact coding, or every decoded value within ``max_error`` of the original.
    max_error : float, optional
        The bound of ``mode="bounded"``.
    client, scheduler, workers, threads_per_worker, memory_limit, retries, connect_timeout
        As in :func:`~napari_sciz.core.distributed.compress_distributed`.
    axes, voxel_size, units, name, block_voxels
        As in :func:`napari_sciz.compress`.
    search : bool
        Measure the closest predictor sets by coding (``effort="best"``,
        :func:`~napari_sciz.core.lossless.encode_block`).
    progress : callable, optional
        Called with a :class:`~napari_sciz.core.result.ProgressInfo` as blocks complete.
    cancel : callable or threading.Event, optional
        Checked twice a second; cancels the outstanding blocks and raises
        :class:`~napari_sciz.errors.CancelledError`.

    Returns
    -------
    napari_sciz.core.result.CompressResult
        The file :func:`napari_sciz.compress` writes for the same input and settings, with
        ``reconstruction=None`` (never gathered); PSNR, largest error and (when blocks span
        whole slices) SSIM are exact.
    """
    from . import lossless
    from .encode import exact_header

    t_start = time.perf_counter()
    should_cancel = cancel_predicate(cancel)
    cluster = {"threads_per_worker": threads_per_worker, "memory_limit": memory_limit}
    with client_for(client, scheduler, workers, connect_timeout, cluster) as cl:
        src, src_data = source_of(cl, source)
        check_shape_dtype(src.shape, src.dtype)
        dtype = np.dtype(src.dtype)
        bound = lossless.check_mode(mode, max_error, dtype)
        ndim = len(src.shape)
        axes = check_axes(axes, ndim)
        check_calibration(ndim, voxel_size, units)
        grid = BlockGrid.for_shape(src.shape, block_voxels or DEFAULT_BLOCK_VOXELS)
        run = ClusterRun(cl, f"sciz-{uuid.uuid4().hex[:12]}", retries, should_cancel, progress)
        n_workers = max(1, len(cl.scheduler_info().get("workers", {})) or int(workers or 1))
        span = None
        if mode == "bounded":
            args = [(src, src_data, grid, i) for i in range(grid.n_blocks)]
            stats = run.map("range", stats_task, args)
            check_nonfinite(stats)
            lo, hi = value_range(stats)
            span = float(hi) - float(lo)
        report = BlockReport(progress, grid, n_workers, None, t_start, verb="coding")
        report.started()
        coded: list[_CodedBlock] = run.map(
            "code",
            _code_task,
            [(src, src_data, grid, i, mode, bound, span, search) for i in range(grid.n_blocks)],
            on_done=report.block_done,
        )
    vrange = [min(c.vmin for c in coded), max(c.vmax for c in coded)]
    version = lossless.model_version([c.payload for c in coded])
    header = exact_header(
        src.shape, dtype, mode, bound, vrange, grid, axes, voxel_size, units, name, version
    )
    return _result(header, grid, coded, dtype, t_start)


def _result(
    header: dict[str, Any],
    grid: BlockGrid,
    coded: list[_CodedBlock],
    dtype: np.dtype,
    t_start: float,
) -> CompressResult:
    """The packed file and its quality, summed from the blocks' measures."""
    blob = container.pack(header, [c.payload for c in coded])
    raw = int(math.prod(header["shape"]) * dtype.itemsize)
    exact = header["mode"] == "lossless"
    voxels = sum(grid.block_voxels(i) for i in range(grid.n_blocks))
    span = float(header["value_range"][1]) - float(header["value_range"][0])
    psnr, ssim = (math.inf, 1.0) if exact else summed_quality(coded, voxels, span)
    return CompressResult(
        data=blob,
        reconstruction=None,
        header=header,
        ratio=raw / len(blob),
        nbytes=len(blob),
        raw_nbytes=raw,
        psnr=psnr,
        ssim=ssim,
        max_error=0.0 if exact else max(c.max_error for c in coded),
        encode_seconds=time.perf_counter() - t_start,
        device="cpu",
    )
