"""The task a Dask worker runs for one block of a lossy or hybrid job
(:func:`napari_sciz.core.distributed.compress_distributed`): read the block, fit and code it
on the worker's device, and measure its errors against the original."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import SciZError
from .blockjob import block_array
from .blocks import BlockGrid, finalize
from .cluster import BlockSource, tune_worker_malloc, user_error
from .distcolour import image_pair
from .distoutliers import CleanedSource
from .plan import BlockJob

__all__ = ["FitResult", "fit_task", "worker_device"]


def worker_device(device: str) -> str:
    """Resolve the device on the worker; spread workers over the GPUs of their machine."""
    from .device import resolve_device

    dev = resolve_device(device)
    if dev == "cuda":
        import torch

        count = torch.cuda.device_count()
        if count > 1:
            try:
                from distributed import get_worker

                name = get_worker().name
                slot = int(name) if str(name).isdigit() else abs(hash(name))
            except (ImportError, ValueError):
                slot = os.getpid()
            dev = f"cuda:{slot % count}"
    return dev


@dataclass
class FitResult:
    """What a fit task returns for its block: the payload and its measured errors."""

    index: int
    payload: bytes
    steps: int
    device: str
    sse: float
    max_error: float
    ssim_sum: float | None
    ssim_slices: int
    messages: list[str]


def fit_task(
    source: BlockSource,
    array: Any,
    grid: BlockGrid,
    job: BlockJob,
    vrange: Sequence[float],
    labels: BlockSource | None,
    label_array: Any,
    metric_range: Sequence[float],
) -> FitResult | BaseException:
    """Read block ``job.index`` of ``source`` on this worker, fit and code it, and measure it
    against the original (on the image's samples for decorrelated colour planes).

    Returns
    -------
    FitResult or BaseException
        The block's payload and measures, or the user error (unreadable block, NaN) to report
        without retries (:func:`~napari_sciz.core.cluster.user_error`).
    """
    from .blockjob import run_block_job
    from .metrics import max_abs_error, squared_error_sum, ssim

    tune_worker_malloc()
    try:
        sl = grid.block_slices(job.index)
        if isinstance(source, CleanedSource):  # outliers coded apart: the rest is fitted
            coded, original = source.read_pair(sl, array)
        else:
            coded = original = source.read(sl, array)
        label_block = None if labels is None else labels.read(sl, label_array)
    except (SciZError, OSError, ValueError) as exc:
        return user_error(exc)
    dtype = original.dtype
    block = block_array(coded, dtype, grid.block_shape3(job.index))
    outcome = run_block_job(replace(job, device=worker_device(job.device)), block, label_block)
    decoded = finalize(outcome.values.reshape(original.shape), dtype, vrange)
    if isinstance(source, CleanedSource):
        decoded = source.restore(decoded, original)
    image = image_pair(source, sl, array, decoded)
    if image is not None:  # (decorrelated colour planes: measured on the image's samples)
        original, decoded = image
    span = float(metric_range[1]) - float(metric_range[0])
    peak = span if span > 0 else 1.0
    # SSIM is a mean over whole 2D slices: measurable here when the block holds whole slices
    whole_slices = grid.counts[1] == 1 and grid.counts[2] == 1
    ssim_sum, n_slices = None, 0
    if whole_slices:
        n_slices = int(np.prod(original.shape[:-2], dtype=np.int64))
        ssim_sum = ssim(original, decoded, data_range=peak) * n_slices
    return FitResult(
        job.index,
        outcome.payload,
        outcome.steps,
        outcome.device,
        squared_error_sum(original, decoded) if original.size else 0.0,
        max_abs_error(original, decoded) if original.size else 0.0,
        ssim_sum,
        n_slices,
        outcome.messages,
    )
