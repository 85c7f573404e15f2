"""Fitting one planned block (:class:`~.plan.BlockJob`): its payload, out-of-memory fallback
to the CPU, and the time budgets of blocks fitted one after the other.

:func:`run_block_job` is what :func:`napari_sciz.compress` runs for each block in this process
and what the distributed encoder (:mod:`napari_sciz.core.distributed`) runs on its workers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import SciZError
from .plan import BlockJob

__all__ = [
    "BlockOutcome",
    "RollingBudget",
    "block_array",
    "free_device_memory",
    "is_oom",
    "run_block_job",
]


class RollingBudget:
    """Time budgets of blocks fitted one after the other: what a block leaves unused goes to
    the blocks after it.

    A block's planned budget is its share of the fit time by voxels; a hybrid block whose
    searches converge early (a block of air, or a low ratio) ends before it. Each block
    gets the time the plan left for all remaining blocks, less what the earlier ones
    actually used, in proportion to its voxels (never under half its planned budget, so an
    earlier block's overrun does not starve the rest). The distributed encoder fits blocks
    on many workers at once and keeps the planned budgets.
    """

    def __init__(self, jobs: Sequence[BlockJob], voxels: Sequence[int]) -> None:
        self._left = sum(float(j.budget or 0.0) for j in jobs)
        self._voxels_left = int(sum(voxels))

    def budget(self, job: BlockJob, voxels: int) -> BlockJob:
        """``job`` with its budget for now (unchanged without a time budget)."""
        if job.budget is None or self._voxels_left <= 0:
            return job
        share = self._left * voxels / self._voxels_left
        return replace(job, budget=max(share, 0.5 * float(job.budget)))

    def done(self, job: BlockJob, voxels: int, seconds: float) -> None:
        """Record that ``job`` (``voxels``) took ``seconds``."""
        if job.budget is not None:
            self._left -= seconds
            self._voxels_left -= int(voxels)


@dataclass
class BlockOutcome:
    """A fitted block: its payload and what the caller reports about it."""

    index: int
    payload: bytes
    steps: int
    values: np.ndarray
    device: str
    messages: list[str] = field(default_factory=list)


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is a (GPU or CPU) out-of-memory error raised by torch."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_device_memory(device: str) -> None:
    """Return cached accelerator memory to the driver."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and hasattr(torch, "mps"):
        try:
            torch.mps.empty_cache()
        except (AttributeError, RuntimeError):  # pragma: no cover - platform specific
            pass


def block_array(values: Any, dtype: np.dtype, shape3: Sequence[int]) -> np.ndarray:
    """A block's voxels as the float array the fit takes (float64 for 4-byte dtypes)."""
    work = np.float64 if np.dtype(dtype).itemsize >= 4 else np.float32
    return np.asarray(values, dtype=work).reshape(tuple(shape3))


def run_block_job(
    job: BlockJob,
    block: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    on_step: Callable[[Any], None] | None = None,
    on_preview: Callable[[np.ndarray], None] | None = None,
    preview_interval: float = 3.0,
    cancel: Callable[[], bool] | None = None,
    on_message: Callable[[str], None] | None = None,
) -> BlockOutcome:
    """Fit one block for ``job``; out of memory, retry with smaller batches, then on the CPU.

    Parameters
    ----------
    job : BlockJob
        The block's plan.
    block : numpy.ndarray
        Its voxels, shape ``(D, H, W)`` (see :func:`block_array`).
    labels : numpy.ndarray, optional
        Labels of the block for segmentation guidance.
    on_step, on_preview, preview_interval, cancel
        Passed to :func:`napari_sciz.core.lossy.fit.fit_block`.
    on_message : callable, optional
        Called with a note for the user when the fit falls back (smaller batch, CPU).

    Returns
    -------
    BlockOutcome
        Payload, training steps, the float reconstruction (original units, unclipped), the
        device the fit ended on and the notes.
    """
    from .guidance import make_guidance
    from .lossy.fit import DEFAULT_BATCH, fit_block

    device = job.device
    batch: int | None = None
    messages: list[str] = []
    while True:
        kwargs: dict[str, Any] = {"steps": job.steps, "budget": job.budget}
        if batch is not None:
            kwargs["batch"] = batch
        guide = make_guidance(job.guidance, job.guidance_weights)
        if guide is not None:
            kwargs["guidance"] = guide
            if labels is not None:
                kwargs["labels"] = labels.reshape(block.shape)
        if job.mode == "hybrid":
            from .hybrid import fit_hybrid_block as fitter  # previews after every stage

            kwargs.update(
                on_preview=on_preview, field_reserve=job.field_reserve, halved=job.halved_base
            )
        else:
            fitter = fit_block
            kwargs.update(on_preview=on_preview, preview_interval=preview_interval)
        try:
            fit = fitter(
                block,
                job.window,
                seed=job.seed,
                device=device,
                on_step=on_step,
                cancel=cancel,
                **kwargs,
            )
        except (RuntimeError, MemoryError) as exc:
            if isinstance(exc, MemoryError) or not is_oom(exc):
                raise
            free_device_memory(device)
            batch = (batch or DEFAULT_BATCH) // 4
            if batch < 4096:
                if device == "cpu":
                    raise SciZError("out of memory while fitting, even on the CPU") from exc
                msg = f"{device} ran out of memory; continuing on the CPU (slower)"
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
                device, batch = "cpu", None
            else:
                msg = f"{device} ran out of memory; retrying with {batch} voxels per step"
            messages.append(msg)
            if on_message is not None:
                on_message(msg)
            continue
        return BlockOutcome(job.index, fit.payload, fit.steps, fit.reconstruction, device, messages)
