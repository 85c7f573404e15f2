"""The steps of :func:`napari_sciz.core.api.compress` for the modes that fit (lossy, hybrid).

1. :class:`FitSettings` holds the validated arguments.
2. :class:`BlockEncoder` measures every block once (:func:`.blocks.block_stats`, with the
   rate-distortion probes of a many-block hybrid file), plans the bytes and time of each block
   (:func:`.plan.plan_lossy`), codes the blocks one after the other
   (:func:`.blockjob.run_block_job`; unused time passes to later blocks,
   :class:`.blockjob.RollingBudget`) and packs the file.
(Task guidance of hybrid mode, which codes the volume twice and keeps the file that segments
or looks more like the original, is :func:`.guided.guided_hybrid`.)

Lossless and bounded files are coded without a fit by :func:`encode_exact`.
:class:`_BlockReport` relays one block's training steps, previews and notes to the caller.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .bitstream import container
from .blockjob import RollingBudget, block_array, free_device_memory, run_block_job
from .blocks import BlockGrid, BlockStats, finalize, grid_stats, value_bounds
from .plan import BlockJob, LossyPlan, base_header, plan_lossy, probe_bits
from .result import CompressResult, ProgressInfo, cancel_predicate
from .validate import check_axes, check_calibration

if TYPE_CHECKING:  # pragma: no cover
    from .lossy.fit import StepInfo
    from .task.valuemap import ValueMap

__all__ = ["BlockEncoder", "FitSettings", "encode_exact", "exact_header"]


#: share of a time budget the blocks' rate-distortion probes may take (a many-block hybrid
#: file); past it, the bytes are allocated without them and the time goes to the coding
PROBE_SHARE = 0.25


@dataclass(frozen=True)
class FitSettings:
    """Validated arguments of a lossy or hybrid :func:`~napari_sciz.core.api.compress`.

    Attributes
    ----------
    arr : numpy.ndarray
        The volume.
    ratio : float
        Target compression ratio.
    mode : {"lossy", "hybrid"}
        The codec of the blocks.
    device : str
        Resolved torch device of the fits.
    steps, budget : int or None, float or None
        Training steps per block, or the total time budget in seconds.
    seed : int
        Random seed.
    axes, voxel_size, units, name
        Header metadata.
    block_voxels : int
        Largest number of voxels of one block.
    guidance : str
        Guidance of the blocks' fits (``"none"`` in hybrid mode: its guidance is
        :func:`.guided.guided_hybrid`'s pre-filter).
    guidance_weights : dict or None
        Full loss weights of the guidance.
    labels : numpy.ndarray or None
        Labels of segmentation guidance.
    cancel : callable or None
        Returns True to cancel the job.
    """

    arr: np.ndarray
    ratio: float
    mode: str
    device: str
    steps: int | None
    budget: float | None
    seed: int
    axes: str
    voxel_size: Sequence[float] | None
    units: Sequence[str] | None
    name: str | None
    block_voxels: int
    guidance: str = "none"
    guidance_weights: dict[str, float] | None = None
    labels: np.ndarray | None = None
    cancel: Callable[[], bool] | None = None


@dataclass
class _BlockReport:
    """Relays one block's training steps, previews and notes to the caller's callbacks."""

    progress: Callable[[ProgressInfo], None] | None
    preview: Callable[[np.ndarray], None] | None
    canvas: np.ndarray | None  # the float reconstruction shown by ``preview``
    box: tuple[slice, ...]
    index: int
    n_blocks: int
    voxels_before: int
    block_voxels: int
    total_voxels: int
    steps: int | None
    budget: float | None
    t_start: float

    def step(self, info: StepInfo) -> None:
        """A training step of the block."""
        if self.progress is None:
            return
        frac = (self.voxels_before + info.fraction * self.block_voxels) / self.total_voxels
        elapsed = time.perf_counter() - self.t_start
        if self.budget is not None:
            eta: float | None = max(float(self.budget) - elapsed, 0.0)
        else:
            eta = elapsed / frac * (1 - frac) if frac > 0 else None
        self.progress(
            ProgressInfo(
                frac, info.step, self.steps, info.loss, info.psnr, eta, self.index, self.n_blocks
            )
        )

    def show(self, values: np.ndarray) -> None:
        """The block's current reconstruction, shown in place of the whole volume's."""
        if self.canvas is None or self.preview is None:
            return
        self.canvas[self.box] = values.reshape(self.canvas[self.box].shape)
        self.preview(self.canvas)

    def message(self, text: str) -> None:
        """A note for the user (a fallback to smaller batches or the CPU)."""
        if self.progress is not None:
            frac = self.voxels_before / self.total_voxels
            self.progress(
                ProgressInfo(
                    frac, 0, self.steps, math.nan, math.nan, None, self.index, self.n_blocks, text
                )
            )


class BlockEncoder:
    """Codes the blocks of one volume under a plan and packs them into a ``.sciz`` file.

    The blocks' statistics (and rate-distortion probes) are measured on the first
    :meth:`encode` and reused by later ones (a guided hybrid file codes the volume twice).

    Parameters
    ----------
    settings : FitSettings
        The validated arguments.
    progress, preview, preview_interval
        The caller's callbacks (see :func:`~napari_sciz.core.api.compress`).
    t_start : float
        ``time.perf_counter()`` when the job began (its encode time and ETA count from it).
    """

    def __init__(
        self,
        settings: FitSettings,
        *,
        progress: Callable[[ProgressInfo], None] | None = None,
        preview: Callable[[np.ndarray], None] | None = None,
        preview_interval: float = 3.0,
        t_start: float | None = None,
    ) -> None:
        self.settings = settings
        self.grid = BlockGrid.for_shape(settings.arr.shape, settings.block_voxels)
        self.progress = progress
        self.preview = preview
        self.preview_interval = preview_interval
        self.t_start = time.perf_counter() if t_start is None else t_start
        self._stats: list[BlockStats] | None = None

    def encode(
        self,
        source: np.ndarray,
        budget: float | None,
        choice: Any = None,
        value_map: ValueMap | None = None,
        halved: bool = False,
    ) -> CompressResult:
        """Code ``source`` (the volume, or its task pre-filtered version) block by block.

        Parameters
        ----------
        source : numpy.ndarray
            Values to code, the volume's shape; quality is measured against the volume.
        budget : float or None
            Time budget of this coding in seconds.
        choice : napari_sciz.core.task.choice.TaskChoice, optional
            The pre-filter ``source`` went through, stored in the header.
        value_map : valuemap.PowerMap or valuemap.CurveMap, optional
            The map ``source`` went through (hybrid only; the choice's header names it): the
            decoded blocks are mapped back before they are compared with the volume.
        halved : bool
            Hybrid: code every block's base at half the in-plane resolution
            (:mod:`napari_sciz.core.hybrid.halved`).
        """
        plan = self._plan(budget, choice)
        arr = self.settings.arr
        reconstruction = np.empty(arr.shape, arr.dtype)
        # blocks not fitted yet show the lowest value (np.empty would show stale memory)
        canvas = None
        if self.preview is not None:
            canvas = np.full(arr.shape, plan.value_range[0], np.float32)
        payloads: list[bytes] = []
        messages: list[str] = []
        steps_done = voxels_done = 0
        device = self.settings.device
        rolling = RollingBudget(plan.jobs, [self.grid.block_voxels(j.index) for j in plan.jobs])
        for planned in plan.jobs:
            box = self.grid.block_slices(planned.index)
            block = block_array(source[box], arr.dtype, self.grid.block_shape3(planned.index))
            job = replace(rolling.budget(planned, block.size), device=device, halved_base=halved)
            report = self._report(planned.index, box, voxels_done, block.size, canvas)
            t_block = time.perf_counter()
            outcome = self._code_block(job, block, box, report)
            rolling.done(job, block.size, time.perf_counter() - t_block)
            device = outcome.device  # a fallback to the CPU holds for the remaining blocks
            messages.extend(outcome.messages)
            payloads.append(outcome.payload)
            steps_done += outcome.steps
            values = outcome.values.reshape(reconstruction[box].shape)
            if value_map is not None:
                values = value_map.inverse(values)
            reconstruction[box] = finalize(values, arr.dtype, plan.value_range)
            if canvas is not None:
                canvas[box] = values
            voxels_done += block.size
        free_device_memory(device)
        return self._result(plan, payloads, reconstruction, device, steps_done, messages)

    def _block_stats(self, budget: float | None = None) -> list[BlockStats]:
        """Statistics of every block, measured once (with probes for a many-block hybrid,
        within :data:`PROBE_SHARE` of a time ``budget``)."""
        if self._stats is None:
            s = self.settings
            probe = probe_bits(s.mode, self.grid.n_blocks, s.arr.dtype, s.ratio)
            seconds = None if budget is None else PROBE_SHARE * budget
            self._stats = grid_stats(s.arr, self.grid, probe, seconds)
        return self._stats

    def _plan(self, budget: float | None, choice: Any) -> LossyPlan:
        """Header and block jobs; the first call's measuring time comes out of ``budget``."""
        s = self.settings
        t_stats = time.perf_counter()
        measured = self._stats is not None
        stats = self._block_stats(budget)
        return plan_lossy(
            s.arr.shape,
            s.arr.dtype,
            self.grid,
            stats,
            s.ratio,
            device=s.device,
            steps=s.steps,
            budget=budget,
            seed=s.seed,
            axes=s.axes,
            voxel_size=s.voxel_size,
            units=s.units,
            name=s.name,
            guidance=s.guidance,
            guidance_weights=s.guidance_weights,
            mode=s.mode,
            extra_header=None if choice is None else choice.to_header(),
            spent=0.0 if measured else time.perf_counter() - t_stats,
        )

    def _report(
        self,
        index: int,
        box: tuple[slice, ...],
        voxels_before: int,
        block_voxels: int,
        canvas: np.ndarray | None,
    ) -> _BlockReport:
        s = self.settings
        return _BlockReport(
            self.progress, self.preview, canvas, box, index, self.grid.n_blocks,
            voxels_before, block_voxels, s.arr.size, s.steps, s.budget, self.t_start,
        )  # fmt: skip

    def _code_block(
        self, job: BlockJob, block: np.ndarray, box: tuple[slice, ...], report: _BlockReport
    ) -> Any:
        """Fit (or hybrid-code) one block under ``job``."""
        labels = self.settings.labels
        return run_block_job(
            job,
            block,
            None if labels is None else labels[box],
            on_step=report.step,
            on_preview=report.show if self.preview is not None else None,
            preview_interval=self.preview_interval,
            cancel=self.settings.cancel,
            on_message=report.message,
        )

    def _result(
        self,
        plan: LossyPlan,
        payloads: list[bytes],
        reconstruction: np.ndarray,
        device: str,
        steps_done: int,
        messages: list[str],
    ) -> CompressResult:
        """Pack the file and measure what it decodes to."""
        arr = self.settings.arr
        header = plan.header
        header["encoder"]["device"] = device
        header["encoder"]["steps"] = steps_done
        # (no encoding time in the header: the same input, seed and steps give identical bytes)
        blob = container.pack(header, payloads)
        return CompressResult.measured(
            arr, blob, header, reconstruction, raw_nbytes=plan.raw_nbytes,
            encode_seconds=time.perf_counter() - self.t_start, device=device, messages=messages,
        )  # fmt: skip


def encode_exact(
    arr: np.ndarray,
    mode: str,
    max_error: float | None,
    axes: str | None,
    voxel_size: Sequence[float] | None,
    units: Sequence[str] | None,
    name: str | None,
    block_voxels: int,
    progress: Callable[[ProgressInfo], None] | None,
    cancel: Any,
    t_start: float,
    search: bool = False,
) -> CompressResult:
    """``mode="lossless"``/``"bounded"`` of :func:`~napari_sciz.core.api.compress`
    (:mod:`.lossless`: no fit; every block is coded by the causal predictor; ``search``:
    the predictor sets measured by coding, :func:`.lossless.encode_block`)."""
    from . import lossless
    from .metrics import max_abs_error, psnr, ssim

    bound = lossless.check_mode(mode, max_error, arr.dtype)
    axes = check_axes(axes, arr.ndim)
    check_calibration(arr.ndim, voxel_size, units)
    should_cancel = cancel_predicate(cancel)
    grid = BlockGrid.for_shape(arr.shape, block_voxels)
    raw = int(arr.size * arr.dtype.itemsize)
    header_parts = (arr.shape, arr.dtype, mode, bound, _value_range(arr), grid, axes)

    def on_block(done: int, total: int) -> None:
        if progress is not None:
            elapsed = time.perf_counter() - t_start
            eta = elapsed / done * (total - done)
            progress(ProgressInfo(done / total, done, total, 0.0, math.nan, eta, done - 1, total))

    payloads, reconstruction = lossless.encode_array(
        arr, grid, mode, bound, on_block, should_cancel, search
    )
    version = lossless.model_version(payloads)
    header = exact_header(*header_parts, voxel_size, units, name, version)
    blob = container.pack(header, payloads)
    exact = mode == "lossless"  # verified bit for bit by encode_array
    return CompressResult(
        data=blob,
        reconstruction=reconstruction,
        header=header,
        ratio=raw / len(blob),
        nbytes=len(blob),
        raw_nbytes=raw,
        psnr=math.inf if exact else psnr(arr, reconstruction),
        ssim=1.0 if exact else ssim(arr, reconstruction),
        max_error=0.0 if exact else max_abs_error(arr, reconstruction),
        encode_seconds=time.perf_counter() - t_start,
        device="cpu",
    )


def exact_header(
    shape: Sequence[int],
    dtype: np.dtype,
    mode: str,
    bound: float | None,
    value_range: list[float | int],
    grid: BlockGrid,
    axes: str,
    voxel_size: Sequence[float] | None,
    units: Sequence[str] | None,
    name: str | None,
    model_version: int = 1,
) -> dict[str, Any]:
    """The header of a lossless or error-bounded file (``bound``: its checked error bound;
    ``model_version``: :func:`.lossless.model_version` of its payloads)."""
    header = {
        **base_header(shape, dtype, mode, axes, voxel_size, units, name),
        "value_range": value_range,
        "model": {"type": "causal-predictor", "version": int(model_version)},
        "blocks": grid.to_header(),
    }
    if bound is not None:
        header["max_error"] = bound
    return header


def _value_range(arr: np.ndarray) -> list[float | int]:
    return list(value_bounds(arr))
