"""Lossy and hybrid compression on a Dask cluster: the workers read, fit and code their own
blocks (the task a worker runs: :mod:`.distfit`; lossless and bounded jobs: :mod:`.distexact`;
the Dask plumbing: :mod:`.cluster`).

The client only plans and assembles. For an input file (TIFF/OME-TIFF, ``.npy``, Zarr/OME-Zarr)
every task opens it lazily on its worker and reads just its block, so neither the client nor a
worker ever holds the whole volume:

1. one *statistics* task per block (value range, complexity, NaN/Inf check) — the client turns
   them into the header and the byte allocation (:func:`napari_sciz.core.plan.plan_lossy`),
   exactly as :func:`napari_sciz.compress` does;
2. one *fit* task per block: read the block, fit it, return its payload (a few kB) and its
   squared error, largest error and slice SSIMs;
3. the client packs the payloads into one ``.sciz`` file.

Each block's fit depends only on its voxels and its job (seed ``seed + index``, steps, byte
window), so with ``steps`` the file is byte-identical to a single-process run on the same
device and torch thread count (blocks under 2**20 voxels are always fitted single-threaded).
A worker that dies mid-job has its blocks rerun elsewhere by the scheduler (up to
``distributed.scheduler.allowed-failures`` times); a block whose fit raises an unexpected error
is retried ``retries`` times. Errors the user must fix (NaN in the input, an unreadable file)
are reported at once, without retries.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import InvalidInputError, RatioUnreachableError
from . import colour
from .bitstream import container
from .blocks import DEFAULT_BLOCK_VOXELS, BlockGrid
from .cluster import (
    BlockReport,
    BlockSource,
    ClusterRun,
    client_for,
    dask_client,
    source_dtype,
    source_of,
    stats_task,
    summed_quality,
)
from .distcolour import (
    ColourPlanes,
    coded_colour,
    decorrelated,
    planes_request,
)
from .distcolour import metric_range as image_range
from .distfit import FitResult, fit_task
from .distoutliers import CleanedSource, ends_size, outliers_from_ends, with_outliers
from .outliers import Outliers, coded_share
from .plan import (
    LossyPlan,
    check_effort,
    check_nonfinite,
    effort_budget,
    mask_mode,
    plan_lossy,
    probe_bits,
    resolve_mode,
)
from .result import CompressResult, cancel_predicate
from .validate import check_axes, check_calibration, check_ratio, check_shape_dtype

__all__ = ["BlockSource", "compress_distributed", "dask_client"]


def compress_distributed(
    source: Any,
    ratio: float | None,
    *,
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | float | None = "auto",
    device: str = "auto",
    steps: int | None = None,
    budget: float | None = None,
    effort: str | None = None,
    seed: int = 0,
    axes: str | None = None,
    voxel_size: Sequence[float] | None = None,
    units: Sequence[str] | None = None,
    name: str | None = None,
    block_voxels: int | None = None,
    guidance: str = "none",
    labels: Any = None,
    guidance_weights: dict[str, float] | None = None,
    mode: str = "auto",
    max_error: float | None = None,
    retries: int = 2,
    connect_timeout: float = 20.0,
    progress: Callable[[Any], None] | None = None,
    cancel: Any = None,
) -> Any:
    """Compress with the blocks fitted (or coded) in parallel on a Dask cluster.

    Parameters
    ----------
    source : path-like, BlockSource or array-like
        A TIFF/OME-TIFF, ``.npy`` or Zarr/OME-Zarr path (read block by block on the workers;
        it must be reachable under this path from every worker), a
        :class:`~napari_sciz.core.cluster.BlockSource` of one (another image series of a
        TIFF file: ``BlockSource.from_path(path, series=1)``), or an in-memory array
        (scattered to one worker, fetched once by each other one).
    ratio : float or None
        Target compression ratio (not used, and may be None, in lossless and bounded mode).
    client : distributed.Client, optional
        An existing client; otherwise one is made from ``scheduler`` or ``workers``.
    scheduler : str, optional
        Address of a running Dask scheduler, e.g. ``"tcp://10.0.0.5:8786"``.
    workers : int, optional
        Size of a local cluster started for this job (one process per worker; default 1).
    threads_per_worker, memory_limit
        Settings of that local cluster.
    device, steps, budget, effort, seed, axes, voxel_size, units, name, guidance, guidance_weights
        As in :func:`napari_sciz.compress`. ``device`` is resolved on each worker (``"auto"``
        takes a worker's GPU; several GPUs of one machine are shared out by worker name).
        A time ``budget`` is the total wall time: each block gets its share times the number
        of workers; an ``effort``'s budget is sized by the whole volume.
    block_voxels : int, optional
        Largest block (default that of :func:`napari_sciz.compress`).
    labels : path-like or array-like, optional
        Labels for segmentation guidance (read block by block like ``source``).
    mode : {"auto", "lossy", "hybrid", "lossless", "bounded"}
        Latent-grid fields, or classical base layers with loop filters (and fields of their
        residuals); ``"auto"`` chooses as :func:`~napari_sciz.core.plan.resolve_mode`.
        ``"lossless"`` and ``"bounded"`` code the blocks with the causal predictor
        (:func:`~napari_sciz.core.distexact.compress_exact_distributed`: the file of a
        single-process run; as there, ``device``, ``steps``, ``budget``, ``effort``, ``seed``
        and guidance are not used).
    max_error : float, optional
        The bound of ``mode="bounded"``.
    retries : int
        Reruns of a block whose fit raised an unexpected error.
    connect_timeout : float
        Seconds to wait for ``scheduler``.
    progress : callable, optional
        Called with a :class:`~napari_sciz.core.result.ProgressInfo` as blocks complete.
    cancel : callable or threading.Event, optional
        Checked twice a second; cancels the outstanding blocks and raises
        :class:`~napari_sciz.errors.CancelledError`.

    Returns
    -------
    napari_sciz.core.result.CompressResult
        With ``reconstruction=None`` (never gathered); PSNR and the largest error are exact,
        SSIM is exact when blocks span whole slices and NaN otherwise.
    """
    options = {
        "client": client, "scheduler": scheduler, "workers": workers,
        "threads_per_worker": threads_per_worker, "memory_limit": memory_limit,
        "device": device, "steps": steps, "budget": budget, "effort": effort, "seed": seed,
        "axes": axes, "voxel_size": voxel_size, "units": units, "name": name,
        "block_voxels": block_voxels, "guidance": guidance, "labels": labels,
        "guidance_weights": guidance_weights, "retries": retries,
        "connect_timeout": connect_timeout, "progress": progress, "cancel": cancel,
    }  # fmt: skip
    coded, shape = coded_colour(source, axes)
    if coded is not None:
        return _colour_job(coded, shape, ratio, mode, max_error, options)
    source, request = planes_request(source)
    mask_note = None
    if source_dtype(source).kind == "b":
        mode, mask_note = mask_mode(mode, ratio)
    if mode in EXACT_MODES:
        return _exact_job(source, mode, max_error, mask_note, options)
    if max_error is not None:
        raise InvalidInputError("max_error is for mode='bounded' only")
    if ratio is None:
        raise InvalidInputError(f"mode={mode!r} needs a ratio (or mode='lossless')")
    return _fitted_job(source, request, ratio, mode, **options)


def _colour_job(
    coded: Any, shape: tuple[int, ...], ratio: Any, mode: str, max_error: Any,
    options: dict[str, Any],
) -> Any:  # fmt: skip
    """:func:`compress_distributed` of an image with its colour samples last (``coded``: the
    source with them as a leading axis): coded so, and read back in the caller's layout; an
    RGB(A) image in hybrid mode as decorrelated planes (:class:`.distcolour.ColourPlanes`)."""
    o = options
    axes, guidance, labels = o["axes"], o["guidance"], o["labels"]
    given = check_axes(axes, len(shape)) if axes else colour.default_axes(len(shape))
    raw = math.prod(shape) * np.dtype(coded.dtype).itemsize
    request = None
    plain = guidance in (None, "none")  # (guidance of distributed jobs: the field's loss)
    if plain and colour.decorrelates(
        shape, coded.dtype, ratio, mode, guidance, o["guidance_weights"], labels
    ):
        request = ColourPlanes(coded, float(ratio), raw)  # (an RGB(A) image in hybrid mode)
    moved = {
        "axes": colour.moved(given), "voxel_size": colour.moved(o["voxel_size"]),
        "units": colour.moved(o["units"]), "labels": colour.moved_labels(labels, shape),
    }  # fmt: skip
    result = _compress_distributed(
        request or coded,
        colour.coded_ratio(ratio, raw),
        **{**o, **moved},
        mode="hybrid" if request else mode,
        max_error=max_error,
    )
    if request is not None and request.transform is not None:
        return colour.restore_transformed(
            result, request.transform, None, float(ratio), raw_nbytes=raw
        )
    return colour.restore_result(result, ratio)


def _exact_job(
    source: Any, mode: str, max_error: Any, mask_note: str | None, options: dict[str, Any]
) -> Any:
    """:func:`compress_distributed` in lossless or bounded mode
    (:func:`~napari_sciz.core.distexact.compress_exact_distributed`)."""
    from .distexact import compress_exact_distributed

    o = options
    keep = (
        "client", "scheduler", "workers", "threads_per_worker", "memory_limit", "axes",
        "voxel_size", "units", "name", "block_voxels", "retries", "connect_timeout",
        "progress", "cancel",
    )  # fmt: skip
    result = compress_exact_distributed(
        source, mode, max_error, search=o["effort"] == "best", **{k: o[k] for k in keep}
    )
    if mask_note:
        result.messages.append(mask_note)
    return result


def _fitted_job(
    source: Any, request: Any, ratio: float, mode: str, *, client: Any, scheduler: Any,
    workers: Any, threads_per_worker: int, memory_limit: Any, device: str,
    steps: int | None, budget: float | None, effort: str | None, seed: int, axes: Any,
    voxel_size: Any, units: Any, name: Any, block_voxels: int | None, guidance: str,
    labels: Any, guidance_weights: Any, retries: int, connect_timeout: float,
    progress: Any, cancel: Any,
) -> Any:  # fmt: skip
    """:func:`compress_distributed` in lossy or hybrid mode: the blocks' statistics, the
    plan and the fits on the cluster, assembled into one file."""
    t_start = time.perf_counter()
    target, budget, steps, mode, guidance_mode, guidance_full = _checked_settings(
        ratio, budget, steps, effort, mode, guidance, guidance_weights, labels
    )
    should_cancel = cancel_predicate(cancel)
    cluster = {"threads_per_worker": threads_per_worker, "memory_limit": memory_limit}
    with client_for(client, scheduler, workers, connect_timeout, cluster) as cl:
        src, src_data = source_of(cl, source)
        check_shape_dtype(src.shape, src.dtype)
        if effort is not None:
            budget = effort_budget(effort, math.prod(src.shape) * np.dtype(src.dtype).itemsize)
        ndim = len(src.shape)
        axes = check_axes(axes, ndim)
        check_calibration(ndim, voxel_size, units)
        label_src, label_data = (None, None) if labels is None else source_of(cl, labels)
        if label_src is not None and label_src.shape != src.shape:
            raise InvalidInputError(
                f"labels must have the image's shape {src.shape}, got {label_src.shape}"
            )
        grid = BlockGrid.for_shape(src.shape, block_voxels or DEFAULT_BLOCK_VOXELS)
        run = ClusterRun(cl, f"sciz-{uuid.uuid4().hex[:12]}", retries, should_cancel, progress)
        if request is not None:  # (a colour image: its transform fitted on the cluster)
            src = decorrelated(run, src, src_data, grid, request)
            if request.transform is not None:
                planes_nbytes = math.prod(src.shape) * np.dtype(src.dtype).itemsize
                target = check_ratio(
                    colour.coded_ratio(
                        request.ratio, request.raw_nbytes, request.transform, planes_nbytes
                    )
                )
        n_workers = max(1, len(cl.scheduler_info().get("workers", {})) or int(workers or 1))
        planning = {
            "device": device, "steps": steps, "budget": budget, "seed": seed, "axes": axes,
            "voxel_size": voxel_size, "units": units, "name": name, "guidance": guidance_mode,
            "guidance_weights": guidance_full, "parallel": n_workers, "mode": mode,
        }  # fmt: skip
        plan, coded_src, found, metric_range = _planned(
            run, src, src_data, grid, target, mode, planning
        )
        metric_range = image_range(request, metric_range)
        report = BlockReport(progress, grid, n_workers, steps, t_start)
        report.started()
        fits: list[FitResult] = run.map(
            "fit",
            fit_task,
            [
                (
                    coded_src,
                    src_data,
                    grid,
                    job,
                    plan.value_range,
                    label_src,
                    label_data,
                    metric_range,
                )
                for job in plan.jobs
            ],  # fmt: skip
            keys=[job.index for job in plan.jobs],
            on_done=report.block_done,
        )
    result = _gathered_result(plan, fits, t_start, metric_range)
    return result if found is None else with_outliers(result, found, target)


def _planned(
    run: ClusterRun,
    src: Any,
    src_data: Any,
    grid: BlockGrid,
    target: float,
    mode: str,
    planning: dict[str, Any],
) -> tuple[LossyPlan, Any, Outliers | None, tuple[float, float]]:
    """The plan of the blocks' fits from their statistics (a pass over the cluster).

    In hybrid mode the same pass gives the blocks' extreme values: the volume's outliers are
    listed apart and the rest is planned without them, unless it cannot then reach its ratio.

    Returns
    -------
    tuple
        ``(plan, coded_source, outliers, metric_range)``: the source the fits read (the
        outliers replaced, or ``src``), the outliers (None: none listed) and the value range
        the metrics are computed on (the original volume's).
    """
    ends = ends_size(src.shape) if mode == "hybrid" else None
    stats = _stats(run, src, src_data, grid, target, mode, ends)
    listed = None
    if ends is not None:
        stats, block_ends = [s for s, _e in stats], [e for _s, e in stats]
        listed = outliers_from_ends(run, src, src_data, grid, block_ends)
    planned = None
    if listed is not None:
        planned = _plan_without(listed[0], run, src, src_data, grid, target, planning)
    if planned is not None:
        (found, metric_range), (coded_src, plan) = listed, planned
        return plan, coded_src, found, metric_range
    plan = plan_lossy(src.shape, np.dtype(src.dtype), grid, stats, target, **planning)
    return plan, src, None, plan.value_range


#: :func:`compress_distributed` for its own use (callers may wrap the public name)
_compress_distributed = compress_distributed


def _stats(
    run: ClusterRun,
    source: BlockSource | CleanedSource,
    array: Any,
    grid: BlockGrid,
    target: float,
    mode: str,
    ends: int | None = None,
) -> list[Any]:
    """The blocks' statistics for ``target``, computed on the cluster (checked finite); with
    ``ends``, pairs of statistics and extreme values (:func:`.cluster.stats_task`)."""
    probe = probe_bits(mode, grid.n_blocks, np.dtype(source.dtype), target)
    args = [(source, array, grid, i, probe, ends) for i in range(grid.n_blocks)]
    stats = run.map("stats" if ends is None else "stats-ends", stats_task, args)
    check_nonfinite([s if ends is None else s[0] for s in stats])
    return stats


def _plan_without(
    found: Outliers,
    run: ClusterRun,
    source: BlockSource,
    array: Any,
    grid: BlockGrid,
    target: float,
    planning: dict[str, Any],
) -> tuple[CleanedSource, Any] | None:
    """The source without ``found`` and its plan, in the bytes the list leaves (as
    :func:`napari_sciz.compress` does), or None when the list does not fit."""
    raw = math.prod(source.shape) * np.dtype(source.dtype).itemsize
    room = coded_share(found, np.dtype(source.dtype), raw / target)
    if room is None:
        return None
    cleaned = CleanedSource(source, found.bounds)
    ratio = raw / room
    stats = _stats(run, cleaned, array, grid, ratio, planning["mode"])
    try:
        plan = plan_lossy(cleaned.shape, np.dtype(cleaned.dtype), grid, stats, ratio, **planning)
    except RatioUnreachableError:  # the list takes bytes the rest needs: coded as it is
        return None
    return cleaned, plan


#: modes coded without a fit (:mod:`.distexact`)
EXACT_MODES = ("lossless", "bounded")


def _checked_settings(
    ratio: float,
    budget: float | None,
    steps: int | None,
    effort: str | None,
    mode: str,
    guidance: str,
    guidance_weights: dict[str, float] | None,
    labels: Any,
) -> tuple[float, float | None, int | None, str, str, dict[str, float] | None]:
    """Checked ratio, budget, steps, mode and guidance of :func:`compress_distributed`
    (an ``effort``'s budget is sized once the source is open)."""
    from .guidance import check_guidance

    target = check_ratio(ratio)
    if effort is not None:
        if steps is not None or budget is not None:
            raise InvalidInputError("give one of steps, budget or effort")
        budget = effort_budget(effort, 0)  # (checked now; sized once the source is open)
    steps = check_effort(steps, budget)
    guidance_mode, guidance_full = check_guidance(guidance, guidance_weights)
    mode = resolve_mode(mode, guidance_mode, field_loss=True)  # (blocks fitted apart)
    if labels is not None and guidance_mode != "segmentation":
        raise InvalidInputError("labels are used by segmentation guidance only")
    if mode not in ("lossy", "hybrid"):
        raise InvalidInputError(
            f"mode must be 'auto', 'lossy', 'hybrid', 'lossless' or 'bounded', got {mode!r}"
        )
    if mode == "hybrid" and guidance_mode != "none":
        raise InvalidInputError("guidance is not available in hybrid mode")
    return target, budget, steps, mode, guidance_mode, guidance_full


def _gathered_result(
    plan: Any, fits: list[FitResult], t_start: float, metric_range: Sequence[float]
) -> Any:
    """The file of the fitted blocks and its quality, summed from the blocks' measures."""
    header = plan.header
    devices = sorted({f.device for f in fits})
    header["encoder"]["device"] = devices[0] if len(devices) == 1 else ",".join(devices)
    header["encoder"]["steps"] = sum(f.steps for f in fits)
    blob = container.pack(header, [f.payload for f in fits])
    span = float(metric_range[1]) - float(metric_range[0])
    grid = plan.grid
    voxels = sum(grid.block_voxels(i) for i in range(grid.n_blocks))
    psnr, ssim = summed_quality(fits, voxels, span)
    return CompressResult(
        data=blob,
        reconstruction=None,
        header=header,
        ratio=plan.raw_nbytes / len(blob),
        nbytes=len(blob),
        raw_nbytes=plan.raw_nbytes,
        psnr=psnr,
        ssim=ssim,
        max_error=max(f.max_error for f in fits),
        encode_seconds=time.perf_counter() - t_start,
        device=header["encoder"]["device"],
        messages=[m for f in fits for m in f.messages],
    )
