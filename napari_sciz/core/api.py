"""Public codec API: :func:`compress`, :func:`decompress`, :func:`open_sciz`.

A volume (or a stack of volumes along leading channel/time axes) is cut into blocks; each block
is fitted with its own latent-grid field (:mod:`napari_sciz.core.lossy.model`) or coded as a
hybrid block under a byte budget allocated by block complexity (in hybrid mode by probed
rate-distortion, :mod:`napari_sciz.core.ratealloc`), and the block payloads are stored in one
``.sciz`` container (:mod:`napari_sciz.core.bitstream.container`) with a JSON header
describing the volume.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FormatError, InvalidInputError
from .bitstream import container
from .blocks import BlockGrid, block_stats, finalize
from .header import validate_header
from .plan import (
    AUTO_MODE,
    DECODABLE_MODELS,
    FORMAT_MODE,
    MODELS,
    RollingBudget,
    base_header,
    block_array,
    check_effort,
    effort_budget,
    free_device_memory,
    plan_lossy,
    probe_bits,
    resolve_mode,
    run_block_job,
)
from .sampling import sample_coordinates, sample_linear, source_box
from .validate import check_array, check_axes, check_decode_memory, check_ratio, parse_roi

if TYPE_CHECKING:  # pragma: no cover
    from .lossy.fit import StepInfo

__all__ = [
    "CompressResult",
    "ProgressInfo",
    "SciZReader",
    "compress",
    "decompress",
    "open_sciz",
    "FORMAT_MODE",
]

#: largest number of voxels of one block
DEFAULT_BLOCK_VOXELS = 2**22


@dataclass
class ProgressInfo:
    """Progress of a compression job, passed to the ``progress`` callback.

    Attributes
    ----------
    fraction : float
        Overall progress in ``[0, 1]``.
    step, total_steps : int, int or None
        Training step of the current block (``total_steps`` is None with a time budget).
    loss, psnr : float
        Current training loss and PSNR estimate (dB, on the training batch).
    eta_seconds : float or None
        Estimated time left.
    block, n_blocks : int
        Index of the block being fitted and number of blocks.
    message : str
        A note for the user (e.g. a fallback after running out of GPU memory), or ``""``.
    """

    fraction: float
    step: int
    total_steps: int | None
    loss: float
    psnr: float
    eta_seconds: float | None
    block: int
    n_blocks: int
    message: str = ""


@dataclass
class CompressResult:
    """The outcome of :func:`compress`.

    Attributes
    ----------
    data : bytes
        The complete ``.sciz`` file.
    reconstruction : numpy.ndarray
        What :func:`decompress` returns for ``data`` (original shape and dtype).
    header : dict
        The file header.
    ratio, nbytes, raw_nbytes : float, int, int
        Achieved ratio, file size and raw size of the input.
    psnr, ssim, max_error : float
        Quality of the reconstruction (definitions of :mod:`napari_sciz.core.metrics`).
    encode_seconds : float
        Wall-clock time of the compression.
    device : str
        Device the fit ran on.
    messages : list of str
        Notes for the user (fallbacks and the like).
    """

    data: bytes
    reconstruction: np.ndarray | None
    header: dict
    ratio: float
    nbytes: int
    raw_nbytes: int
    psnr: float
    ssim: float
    max_error: float
    encode_seconds: float
    device: str
    messages: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the original array."""
        return tuple(self.header["shape"])

    @property
    def dtype(self) -> np.dtype:
        """dtype of the original array."""
        return np.dtype(self.header["dtype"])

    def save(
        self, path: str | os.PathLike[str], *, force: bool = False, inputs: Sequence[Any] = ()
    ) -> Path:
        """Write the ``.sciz`` file atomically.

        Parameters
        ----------
        path : path-like
            Destination.
        force : bool
            Overwrite an existing file (never one of ``inputs``).
        inputs : sequence of path-like
            Input files that must not be overwritten.
        """
        return container.write_atomic(path, self.data, force=force, inputs=inputs)

    def summary(self) -> dict:
        """JSON-serialisable summary of the result."""
        return {
            "ratio": self.ratio,
            "target_ratio": self.header.get("target_ratio"),
            "nbytes": self.nbytes,
            "raw_nbytes": self.raw_nbytes,
            "psnr": self.psnr,
            "ssim": self.ssim,
            "max_error": self.max_error,
            "encode_seconds": self.encode_seconds,
            "device": self.device,
            "shape": list(self.shape),
            "dtype": self.dtype.name,
            "blocks": self.header.get("blocks", {}).get("count"),
            "steps": self.header.get("encoder", {}).get("steps"),
            "guidance": self.header.get("guidance", "none"),
            "mode": self.header.get("mode", FORMAT_MODE),
        }


def _cancel_predicate(cancel: Any) -> Callable[[], bool] | None:
    if cancel is None:
        return None
    if hasattr(cancel, "is_set"):
        return cancel.is_set  # threading.Event
    if callable(cancel):
        return cancel
    raise InvalidInputError("cancel must be a callable or a threading.Event")


def _value_range(arr: np.ndarray) -> list[float | int]:
    lo, hi = arr.min(), arr.max()
    if arr.dtype.kind in "ui":
        return [int(lo), int(hi)]
    return [float(lo), float(hi)]


def compress(
    data: Any,
    ratio: float | None = None,
    *,
    device: str = "auto",
    steps: int | None = None,
    budget: float | None = None,
    effort: str | None = None,
    seed: int = 0,
    axes: str | None = None,
    voxel_size: Sequence[float] | None = None,
    units: Sequence[str] | None = None,
    name: str | None = None,
    block_voxels: int = DEFAULT_BLOCK_VOXELS,
    progress: Callable[[ProgressInfo], None] | None = None,
    preview: Callable[[np.ndarray], None] | None = None,
    preview_interval: float = 3.0,
    cancel: Any = None,
    guidance: str = "none",
    labels: Any = None,
    guidance_weights: dict[str, float] | None = None,
    mode: str = AUTO_MODE,
    max_error: float | None = None,
) -> CompressResult:
    """Compress an image or volume with a fitted implicit neural representation.

    With ``mode="lossless"`` or ``mode="bounded"`` the blocks are coded by the causal
    predictor and entropy coder of :mod:`napari_sciz.core.lossless` instead (no fit; ``ratio``,
    ``device``, ``steps``, ``budget``, ``seed``, ``preview`` and guidance are not used).

    Parameters
    ----------
    data : array-like
        2D (YX), 3D (ZYX or TYX) or with leading channel/time axes; dtype uint8, uint16,
        int16, uint32, float32 or float64.
    ratio : float
        Target compression ratio (raw bytes / file bytes), required in lossy mode and
        ignored otherwise. The achieved ratio lands in
        ``[0.98, 1.1] * ratio``; it is higher only when the input is reproduced exactly with
        fewer bytes (e.g. constant images).
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    steps : int, optional
        Training steps per block (reproducible for a given seed and device).
    budget : float, optional
        Total time budget in seconds (split between blocks by size). Without ``steps``,
        ``budget`` or ``effort``, 300 steps per block are used.
    effort : {"fast", "balanced", "best"}, optional
        A time budget that grows with the data (:data:`~napari_sciz.core.plan.EFFORT_PRESETS`:
        at least 15, 60 or 180 s, or 2, 8 or 24 s per MiB of raw data); instead of ``steps``
        or ``budget``.
    seed : int
        Random seed.
    axes : str, optional
        Axis letters, e.g. ``"ZYX"`` or ``"TYX"``; defaults by dimensionality.
    voxel_size, units : sequence, optional
        Physical size and unit of each axis, stored in the header.
    name : str, optional
        Name stored in the header (shown as the layer name in napari).
    block_voxels : int
        Largest number of voxels of one block.
    progress : callable, optional
        Called with a :class:`ProgressInfo` after every training step.
    preview : callable, optional
        Called with the current reconstruction (float32, original shape) every
        ``preview_interval`` seconds.
    preview_interval : float
        Seconds between previews.
    cancel : callable or threading.Event, optional
        Checked every step; when it returns True (is set) the job stops with
        :class:`~napari_sciz.errors.CancelledError` and nothing is written.
    guidance : str
        Application guidance of the fit (:mod:`napari_sciz.core.guidance`): ``"none"`` (plain
        MSE), ``"segmentation"`` (soft Dice of a threshold segmentation + boundary-band error)
        or ``"perceptual"`` (SSIM + gradient loss). Decoding is unaffected.
    labels : array-like, optional
        Labels of the image (same shape as ``data``; ``> 0`` is foreground), the reference of
        segmentation guidance. Without labels an Otsu threshold of each block is used.
    guidance_weights : dict, optional
        Weights of the guidance loss terms (see
        :data:`napari_sciz.core.guidance.DEFAULT_WEIGHTS`).

    mode : {"auto", "lossy", "hybrid", "lossless", "bounded"}
        ``"auto"`` (default): ``"hybrid"``, or ``"lossy"`` when ``guidance`` is asked for
        (:func:`~napari_sciz.core.plan.resolve_mode`); ``"lossy"``: the INR codec at
        ``ratio``; ``"hybrid"``: the best of SPERR, HEVC and
        JPEG XL as a base layer, a fitted loop filter and, when the budget allows, an INR fit
        of the residual, at ``ratio`` (:mod:`napari_sciz.core.hybrid`; decodes whole blocks,
        no finer sampling); ``"lossless"``: bit-identical decoding
        (uint8, uint16, int16, uint32, float32); ``"bounded"``: every decoded value within
        ``max_error`` of the original.
    max_error : float, optional
        Largest absolute error of ``mode="bounded"`` (integers: ``floor(max_error)``).

    Returns
    -------
    CompressResult

    Raises
    ------
    InvalidInputError
        Bad input array or arguments.
    RatioUnreachableError
        The ratio cannot be met (the header and the smallest block codes do not fit).
    CancelledError
        The job was cancelled.

    Examples
    --------
    >>> import numpy as np, napari_sciz
    >>> vol = (np.random.default_rng(0).random((8, 64, 64)) * 1000).astype(np.uint16)
    >>> result = napari_sciz.compress(vol, ratio=16, steps=20, device="cpu")
    >>> restored = napari_sciz.decompress(result.data)
    >>> restored.shape, restored.dtype
    ((8, 64, 64), dtype('uint16'))
    """
    from .device import resolve_device
    from .metrics import max_abs_error, psnr, ssim

    t_start = time.perf_counter()
    arr = check_array(data)
    if effort is not None:
        effort_budget(effort, 0)  # an unknown preset is an error in every mode
    if mode == AUTO_MODE:
        from .guidance import check_guidance

        wanted = check_guidance(guidance, guidance_weights)[0]
        mode = resolve_mode(mode, wanted, field_loss=bool(guidance_weights))
    if mode not in MODELS:
        return _compress_exact(
            arr,
            mode,
            max_error,
            axes,
            voxel_size,
            units,
            name,
            block_voxels,
            progress,
            cancel,
            t_start,
        )
    if ratio is None:
        raise InvalidInputError(f"mode={mode!r} needs a ratio (or mode='lossless')")
    target = check_ratio(ratio)
    axes = check_axes(axes, arr.ndim)
    if effort is not None:
        if steps is not None or budget is not None:
            raise InvalidInputError("give one of steps, budget or effort")
        budget = effort_budget(effort, arr.nbytes)
    steps = check_effort(steps, budget)
    check_calibration(arr.ndim, voxel_size, units)
    from .guidance import check_guidance

    guidance_mode, guidance_full = check_guidance(guidance, guidance_weights)
    if mode == "hybrid" and guidance_weights:
        raise InvalidInputError(
            "guidance weights tune the neural field's loss: use mode='lossy' (or mode='auto')"
        )
    label_arr = check_labels(labels, guidance_mode, arr.shape)
    should_cancel = _cancel_predicate(cancel)
    dev = resolve_device(device)

    known_stats: list[list] = []

    def fit(source: np.ndarray, fit_budget: float | None, choice: Any) -> CompressResult:
        """Fit every block of ``source`` (``arr``, or its task pre-filtered version coded
        under ``choice``, a :class:`.taskfilter.TaskChoice`)."""
        grid = BlockGrid.for_shape(arr.shape, block_voxels)
        t_stats = time.perf_counter()
        probe = probe_bits(mode, grid.n_blocks, arr.dtype, target)
        if not known_stats:  # (a guided hybrid codes twice: the probes run once)
            boxes = [grid.block_slices(i) for i in range(grid.n_blocks)]
            known_stats.append([block_stats(arr[box], probe) for box in boxes])
        stats = known_stats[0]
        plan = plan_lossy(
            arr.shape,
            arr.dtype,
            grid,
            stats,
            target,
            device=dev,
            steps=steps,
            budget=fit_budget,
            seed=seed,
            axes=axes,
            voxel_size=voxel_size,
            units=units,
            name=name,
            guidance=guidance_mode,
            guidance_weights=guidance_full,
            mode=mode,
            extra_header=None if choice is None else choice.to_header(),
            spent=0.0 if probe is None else time.perf_counter() - t_stats,
        )
        header, value_range = plan.header, plan.value_range

        # blocks not fitted yet show the lowest value (np.empty would show stale memory)
        recon_f = np.full(arr.shape, value_range[0], np.float32) if preview is not None else None
        reconstruction = np.empty(arr.shape, arr.dtype)
        payloads: list[bytes] = []
        messages: list[str] = []
        total_steps_done = 0
        voxel_done = 0
        total_voxels = arr.size
        used_device = dev

        rolling = RollingBudget(plan.jobs, [grid.block_voxels(j.index) for j in plan.jobs])
        for planned in plan.jobs:
            index = planned.index
            sl = grid.block_slices(index)
            block = block_array(source[sl], arr.dtype, grid.block_shape3(index))
            n_block = block.size
            job = rolling.budget(planned, n_block)
            t_block = time.perf_counter()

            def on_step(
                info: StepInfo, _index: int = index, _n: int = n_block, _done: int = voxel_done
            ) -> None:
                if progress is None:
                    return
                frac = (_done + info.fraction * _n) / total_voxels
                elapsed = time.perf_counter() - t_start
                if budget is not None:
                    eta = max(float(budget) - elapsed, 0.0)
                else:
                    eta = elapsed / frac * (1 - frac) if frac > 0 else None
                progress(
                    ProgressInfo(
                        frac, info.step, steps, info.loss, info.psnr, eta, _index, grid.n_blocks
                    )
                )

            def on_preview(values: np.ndarray, _sl: tuple = sl) -> None:
                if recon_f is None or preview is None:
                    return
                recon_f[_sl] = values.reshape(recon_f[_sl].shape)
                preview(recon_f)

            def on_message(text: str, _index: int = index, _done: int = voxel_done) -> None:
                if progress is not None:
                    progress(
                        ProgressInfo(
                            _done / total_voxels,
                            0,
                            steps,
                            math.nan,
                            math.nan,
                            None,
                            _index,
                            grid.n_blocks,
                            text,
                        )
                    )

            outcome = run_block_job(
                replace(job, device=used_device),
                block,
                None if label_arr is None else label_arr[sl],
                on_step=on_step,
                on_preview=on_preview if preview is not None else None,
                preview_interval=preview_interval,
                cancel=should_cancel,
                on_message=on_message,
            )
            rolling.done(job, n_block, time.perf_counter() - t_block)
            used_device = outcome.device  # a fallback to the CPU holds for the remaining blocks
            messages.extend(outcome.messages)
            payloads.append(outcome.payload)
            total_steps_done += outcome.steps
            values = outcome.values.reshape(reconstruction[sl].shape)
            reconstruction[sl] = finalize(values, arr.dtype, value_range)
            if recon_f is not None:
                recon_f[sl] = values
            voxel_done += n_block
        free_device_memory(used_device)

        header["encoder"]["device"] = used_device
        header["encoder"]["steps"] = total_steps_done
        # (no encoding time in the header: the same input, seed and steps give identical bytes)
        blob = container.pack(header, payloads)
        encode_seconds = time.perf_counter() - t_start
        return CompressResult(
            data=blob,
            reconstruction=reconstruction,
            header=header,
            ratio=plan.raw_nbytes / len(blob),
            nbytes=len(blob),
            raw_nbytes=plan.raw_nbytes,
            psnr=psnr(arr, reconstruction),
            ssim=ssim(arr, reconstruction),
            max_error=max_abs_error(arr, reconstruction),
            encode_seconds=encode_seconds,
            device=used_device,
            messages=messages,
        )

    if mode == "hybrid" and guidance_mode != "none":
        guided = guidance_mode
        guidance_mode, guidance_full = "none", None  # (the blocks' fits take no guidance)
        return _guided_hybrid(
            fit, arr, guided, target, voxel_size, label_arr, budget, should_cancel, t_start
        )
    return fit(arr, budget, None)


#: the largest volume whose task pre-filter is chosen on trial decodes (each holds a few
#: float64 copies of the volume and segments it)
_MAX_PREFILTER_VOXELS = 1 << 26


def _guided_hybrid(
    fit: Callable[[np.ndarray, float | None, Any], CompressResult],
    arr: np.ndarray,
    guidance: str,
    ratio: float,
    voxel_size: Sequence[float] | None,
    labels: np.ndarray | None,
    budget: float | None,
    cancel: Callable[[], bool],
    t_start: float,
) -> CompressResult:
    """Task guidance of hybrid mode (:mod:`.taskfilter`).

    The pre-filter chosen on the SPERR proxy (a fifth of the budget at most) is coded beside
    the plain volume (half the time left each) and the file that scores better on the task is
    kept (:meth:`.taskfilter.TaskChoice.better`: at most 1 dB of PSNR below the plain file);
    without a pre-filter that measured better on the proxy, only the plain volume is coded.
    Volumes that are not 2D or 3D are coded as they are.
    """
    from .taskfilter import TaskChoice, choose_prefilter

    source, choice = arr, TaskChoice(guidance)
    too_large = arr.size > _MAX_PREFILTER_VOXELS
    if arr.ndim in (2, 3) and not too_large:
        deadline = None if budget is None else time.perf_counter() + 0.2 * float(budget)
        source, choice = choose_prefilter(
            arr, max(int(arr.nbytes / ratio), 1), guidance, voxel_size=voxel_size,
            labels=labels, deadline=deadline, cancel=cancel,
        )  # fmt: skip

    def left(share: float) -> float | None:
        """``share`` of the budget left, less a margin for the encoders' last steps."""
        if budget is None:
            return None
        rest = 0.95 * float(budget) - (time.perf_counter() - t_start)
        return max(rest, 0.05 * float(budget)) * share

    said = [choice.describe()] if choice.scores else []
    if too_large:
        said = [
            f"{guidance} guidance: {arr.size} voxels are more than the task pre-filter's trial "
            f"decodes take ({_MAX_PREFILTER_VOXELS}); coded as it is"
        ]
    if choice.setting is None:
        result = fit(arr, left(1.0), choice)
        result.messages[:0] = said
        return result
    plain = fit(arr, left(0.5), replace(choice, setting=None))
    filtered = fit(source, left(1.0), choice)
    assert plain.reconstruction is not None and filtered.reconstruction is not None
    scores = [choice.score(arr, r.reconstruction, voxel_size) for r in (plain, filtered)]  # type: ignore[arg-type]
    kept = filtered if choice.better(scores[1], scores[0]) else plain
    name = "MS-SSIM" if guidance == "perceptual" else "object F1"
    ours, theirs = choice.key(scores[1])[0], choice.key(scores[0])[0]
    kept.messages[:0] = said
    kept.messages.append(
        f"{guidance} guidance: kept the {'pre-filtered' if kept is filtered else 'plain'} file "
        f"({name} {ours:.4f} pre-filtered / {theirs:.4f} plain, "
        f"PSNR {scores[1]['psnr']:.2f} / {scores[0]['psnr']:.2f} dB)"
    )
    kept.encode_seconds = time.perf_counter() - t_start
    return kept


def check_calibration(
    ndim: int, voxel_size: Sequence[float] | None, units: Sequence[str] | None
) -> None:
    """Raise :class:`InvalidInputError` unless voxel size and units have one entry per axis."""
    if voxel_size is not None and len(voxel_size) != ndim:
        raise InvalidInputError(f"voxel_size needs {ndim} values, got {len(voxel_size)}")
    if units is not None and len(units) != ndim:
        raise InvalidInputError(f"units needs {ndim} values, got {len(units)}")


def check_labels(labels: Any, guidance_mode: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """Validate segmentation-guidance labels (an array of the image's shape) or None."""
    if labels is None:
        return None
    if guidance_mode != "segmentation":
        raise InvalidInputError("labels are used by segmentation guidance only")
    try:
        label_arr = np.asarray(labels)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is a bad input
        raise InvalidInputError(f"labels could not be read as an array: {exc}") from exc
    if label_arr.shape != tuple(shape):
        raise InvalidInputError(
            f"labels must have the image's shape {tuple(shape)}, got {label_arr.shape}"
        )
    if not (np.issubdtype(label_arr.dtype, np.integer) or label_arr.dtype == bool):
        raise InvalidInputError(f"labels must be integers or booleans, not {label_arr.dtype}")
    return label_arr


def _compress_exact(
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
) -> CompressResult:
    """``mode="lossless"``/``"bounded"`` of :func:`compress` (:mod:`.lossless`)."""
    from . import lossless
    from .metrics import max_abs_error, psnr, ssim

    bound = lossless.check_mode(mode, max_error, arr.dtype)
    axes = check_axes(axes, arr.ndim)
    check_calibration(arr.ndim, voxel_size, units)
    should_cancel = _cancel_predicate(cancel)
    grid = BlockGrid.for_shape(arr.shape, block_voxels)
    raw = int(arr.size * arr.dtype.itemsize)
    header = {
        **base_header(arr.shape, arr.dtype, mode, axes, voxel_size, units, name),
        "value_range": _value_range(arr),
        "model": {"type": "causal-predictor", "version": 1},
        "blocks": grid.to_header(),
    }
    if bound is not None:
        header["max_error"] = bound

    def on_block(done: int, total: int) -> None:
        if progress is not None:
            elapsed = time.perf_counter() - t_start
            eta = elapsed / done * (total - done)
            progress(ProgressInfo(done / total, done, total, 0.0, math.nan, eta, done - 1, total))

    payloads, reconstruction = lossless.encode_array(
        arr, grid, mode, bound, on_block, should_cancel
    )
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


class SciZReader:
    """Random-access, array-like view of a ``.sciz`` file.

    Indexing (``reader[5]``, ``reader[:, 10:20]``...) decodes only the blocks the selection
    touches, so napari can display huge files lazily.

    Parameters
    ----------
    source : path-like or bytes
        The ``.sciz`` file or its contents.
    cache_blocks : int
        Number of decoded blocks kept in memory.
    cache_bytes : int
        Most memory the decoded blocks kept may take (default 1 GiB); the least recently used
        go first, the one just decoded always stays.
    threads : int, optional
        Blocks decoded at the same time by a region decode (default: the number of CPUs).

    Raises
    ------
    FormatError
        If the file is not a valid ``.sciz`` file.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | bytes | bytearray | memoryview,
        cache_blocks: int = 32,
        threads: int | None = None,
        cache_bytes: int = 2**30,
    ) -> None:
        self.threads = max(1, int(threads if threads is not None else (os.cpu_count() or 1)))
        self._file = container.SciZFile(source)
        self.header = self._file.header
        self._lock = threading.RLock()
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self._cache_size = cache_blocks
        self._cache_bytes = int(cache_bytes)
        try:
            self._validate()
        except FormatError:
            self._file.close()
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            self._file.close()
            raise FormatError(
                f"invalid .sciz header: a field has the wrong type or value ({type(exc).__name__})"
            ) from exc

    def _validate(self) -> None:
        info = validate_header(self.header, self._file.n_payloads, DECODABLE_MODELS)
        self.mode = info.mode
        self.shape = info.shape
        self.dtype = info.dtype
        self.axes = info.axes
        self.value_range = info.value_range
        self.grid = info.grid
        self.voxel_size = info.voxel_size
        self.units = info.units
        self.name = info.name

    # array-like protocol -------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Size of the decoded array in bytes."""
        return self.size * self.dtype.itemsize

    @property
    def file_size(self) -> int:
        """Size of the ``.sciz`` file in bytes."""
        return self._file.file_size

    @property
    def ratio(self) -> float:
        """Achieved compression ratio of the file."""
        return self.nbytes / self.file_size

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.decode()
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = self.ndim - (len(key) - 1)
            key = key[:i] + (slice(None),) * fill + key[i + 1 :]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices for a {self.ndim}-D array")
        key = key + (slice(None),) * (self.ndim - len(key))
        box = []
        post: list[Any] = []
        for k, n in zip(key, self.shape, strict=True):
            if isinstance(k, (int, np.integer)):
                i = int(k) + n if k < 0 else int(k)
                if not 0 <= i < n:
                    raise IndexError(f"index {k} is out of bounds for axis of size {n}")
                box.append((i, i + 1))
                post.append(0)
            elif isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step < 0:
                    raise IndexError("negative steps are not supported")
                if stop <= start:
                    # an empty selection: numpy's shape, without decoding anything
                    empty = np.broadcast_to(np.zeros((), self.dtype), self.shape)
                    return np.array(empty[key])
                box.append((start, stop))
                post.append(slice(0, stop - start, step))
            else:
                raise IndexError(f"unsupported index {k!r}")
        out = self.decode(tuple(box))
        return out[tuple(post)]

    # decoding -------------------------------------------------------------------------
    def _block_field(self, index: int) -> Any:
        """``(field, vmin, vmax)`` of lossy block ``index``, cached."""
        return self._cached(index, self._decode_field)

    def _decode_field(self, index: int) -> Any:
        from .lossy.code import field_from_code
        from .lossy.entropy import decode_block, read_architecture
        from .lossy.model import FieldConfig

        payload = self._file.payload(index)
        shape3 = self.grid.block_shape3(index)
        first, n_levels, hidden, layers = read_architecture(payload)
        config = FieldConfig(shape3, first, n_levels, hidden, layers)
        try:
            code = decode_block(payload, config.grid_shapes(), config.mlp_shapes())
        except FormatError:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoding failure means a bad payload
            raise FormatError(f"block {index} cannot be decoded: {exc}") from exc
        return field_from_code(code, shape3, "cpu"), code.vmin, code.vmax

    def decode(self, roi: Any = None, scale: float = 1) -> np.ndarray:
        """Decode a region, optionally sampled more finely.

        Parameters
        ----------
        roi : str or sequence, optional
            Region in voxel indices (see :func:`napari_sciz.core.validate.parse_roi`).
        scale : float or sequence of float
            Sampling factor along the three spatial axes (ZYX; YX for 2D images): ``2`` gives
            twice as many samples per axis. Sample ``j`` of an axis with region start ``s`` sits
            at coordinate ``s + (j + 0.5) / scale - 0.5``.

        Returns
        -------
        numpy.ndarray
            The decoded region in the original dtype.
        """
        box = parse_roi(roi, self.shape)
        scales = _parse_scale(scale, self.grid.spatial_ndim)
        if self.mode != FORMAT_MODE:
            if all(s == 1 for s in scales):
                return self._decode_whole_blocks(box)
            return self._decode_interpolated(box, scales)
        import torch

        lead_nd = self.ndim - self.grid.spatial_ndim
        spatial_box = box[lead_nd:]
        # sample coordinates along each spatial axis (global voxel units)
        coords = sample_coordinates(spatial_box, scales)
        out_spatial = tuple(len(c) for c in coords)
        lead_shape = tuple(b - a for a, b in box[:lead_nd])
        n_out = math.prod(lead_shape) * math.prod(out_spatial)
        check_decode_memory(n_out * self.dtype.itemsize, f"this region at scale {tuple(scales)}")
        out = np.empty(lead_shape + out_spatial, dtype=self.dtype)
        integer = all(s == 1 for s in scales)
        pad = 3 - self.grid.spatial_ndim
        coords3 = [np.zeros(1)] * pad + coords
        box3 = [(0, 1)] * pad + list(spatial_box)
        out3 = out.reshape(lead_shape + (1,) * pad + out_spatial)
        for lead_index in np.ndindex(*lead_shape) if lead_shape else [()]:
            volume = (
                sum(
                    (lead_index[i] + box[i][0]) * int(np.prod(self.shape[i + 1 : lead_nd]))
                    for i in range(lead_nd)
                )
                if lead_nd
                else 0
            )
            target = out3[lead_index]

            def fill(item: tuple, _target: np.ndarray = target) -> None:
                bindex, starts, _stops = item
                fld, vmin, vmax = self._block_field(bindex)
                sel = []
                local = []
                for axis in range(3):
                    c = coords3[axis]
                    # samples owned by this block: rounded coordinate inside [start, stop)
                    owner = np.clip(np.floor(c + 0.5), box3[axis][0], box3[axis][1] - 1)
                    idx = np.nonzero((owner >= starts[axis]) & (owner < _stops[axis]))[0]
                    sel.append(idx)
                    local.append(c[idx] - starts[axis])
                if any(len(i) == 0 for i in sel):
                    return
                with torch.no_grad():
                    if integer:
                        start = [int(round(loc[0])) for loc in local]
                        size = [len(loc) for loc in local]
                        feats = fld.crop_features(list(fld.latents), start, size)
                        vals = fld.mlp(feats).reshape(size)
                    else:
                        grid_pts = np.stack(np.meshgrid(*local, indexing="ij"), axis=-1).reshape(
                            -1, 3
                        )
                        pts = torch.from_numpy(grid_pts.astype(np.float32))
                        vals = fld.sample(pts).reshape([len(loc) for loc in local])
                values = vals.double().numpy() * (vmax - vmin) + vmin
                _target[np.ix_(*sel)] = finalize(values, self.dtype, self.value_range)

            self._map_blocks(fill, list(self.grid.blocks_in_box(volume, box3)))
        return out

    def _cached(self, index: int, decode: Callable[[int], Any]) -> Any:
        """Block ``index`` from the cache, or ``decode(index)`` (outside the lock) and cached."""
        with self._lock:
            cached = self._cache.get(index)
            if cached is not None:
                self._cache.move_to_end(index)
                return cached
        entry = decode(index)
        with self._lock:
            self._remember(index, entry)
        return entry

    def _remember(self, index: int, entry: Any) -> None:
        """Cache a decoded block; evict the least recently used beyond the count or bytes."""
        self._cache[index] = entry
        self._cache.move_to_end(index)

        def size(item: Any) -> int:
            if isinstance(item, tuple):  # a lossy block: its field (latents and MLP)
                return sum(int(t.numel()) * 4 for t in item[0].parameters())
            return int(getattr(item, "nbytes", 0))

        total = sum(size(v) for v in self._cache.values())
        while len(self._cache) > 1 and (
            len(self._cache) > self._cache_size or total > self._cache_bytes
        ):
            _key, old = self._cache.popitem(last=False)
            total -= size(old)

    def _hybrid_block(self, index: int) -> Any:
        """The decoded base (and field) of hybrid block ``index``, cached; planes on demand."""
        from .hybrid import HybridBlock

        def decode(i: int) -> Any:
            return HybridBlock(self._file.payload(i), self.grid.block_shape3(i))

        return self._cached(index, lambda i: _naming_block(i, decode))

    def _exact_block(self, index: int) -> np.ndarray:
        """Lossless/bounded block ``index`` in the original dtype, cached."""
        from .lossless import decode_block

        def decode(i: int) -> np.ndarray:
            return decode_block(self._file.payload(i), self.dtype, self.grid.block_shape3(i))

        return self._cached(index, lambda i: _naming_block(i, decode))

    def _decode_interpolated(
        self, box: Sequence[tuple[int, int]], scales: Sequence[float]
    ) -> np.ndarray:
        """Region of a file that decodes voxels, sampled at ``scales`` by linear interpolation."""
        lead_nd = self.ndim - self.grid.spatial_ndim
        sizes = self.shape[lead_nd:]
        coords = sample_coordinates(box[lead_nd:], scales)
        src = source_box(coords, sizes)
        n_lead = math.prod(b - a for a, b in box[:lead_nd])
        n_out = n_lead * math.prod(len(c) for c in coords)
        n_src = n_lead * math.prod(b - a for a, b in src)
        check_decode_memory(8 * (n_out + 2 * n_src), f"this region at scale {tuple(scales)}")
        voxels = self._decode_whole_blocks([*box[:lead_nd], *src])
        values = sample_linear(voxels, [a for a, _b in src], coords, sizes)
        return finalize(values, self.dtype, self.value_range)

    def _decode_whole_blocks(self, box: Sequence[tuple[int, int]]) -> np.ndarray:
        """Region of a hybrid/lossless/bounded file: decode the whole blocks it touches, crop."""
        lead_nd = self.ndim - self.grid.spatial_ndim
        pad = 3 - self.grid.spatial_ndim
        box3 = [(0, 1)] * pad + list(box[lead_nd:])
        lead_shape = tuple(b - a for a, b in box[:lead_nd])
        out = np.empty(tuple(b - a for a, b in box), dtype=self.dtype)
        out3 = out.reshape(lead_shape + tuple(b - a for a, b in box3))
        for lead_index in np.ndindex(*lead_shape) if lead_shape else [()]:
            src = tuple(i + a for i, (a, _b) in zip(lead_index, box[:lead_nd], strict=True))
            volume = int(np.ravel_multi_index(src, self.shape[:lead_nd])) if lead_nd else 0
            target = out3[lead_index]

            def fill(item: tuple, _target: np.ndarray = target) -> None:
                bindex, starts, stops = item
                lo = [max(a, s) for (a, _b), s in zip(box3, starts, strict=True)]
                hi = [min(b, e) for (_a, b), e in zip(box3, stops, strict=True)]
                if any(h <= g for g, h in zip(lo, hi, strict=True)):
                    return
                dst = tuple(slice(g - a, h - a) for g, h, (a, _b) in zip(lo, hi, box3, strict=True))
                srcs = tuple(slice(g - s, h - s) for g, h, s in zip(lo, hi, starts, strict=True))
                if self.mode == "hybrid":  # only the planes asked for are filtered
                    planes = _naming_block(  # an HEVC base decodes as far as asked
                        bindex,
                        lambda b, z=srcs[0]: self._hybrid_block(b).planes(z.start, z.stop),
                    )
                    _target[dst] = finalize(
                        planes[:, srcs[1], srcs[2]], self.dtype, self.value_range
                    )
                else:
                    _target[dst] = self._exact_block(bindex)[srcs]

            self._map_blocks(fill, list(self.grid.blocks_in_box(volume, box3)))
        return out

    def _map_blocks(self, fill: Callable[[tuple], None], items: list[tuple]) -> None:
        """Run ``fill`` on every block of a region, on ``threads`` threads when several."""
        n = min(self.threads, len(items))
        if n <= 1:
            for item in items:
                fill(item)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="sciz-decode") as pool:
            for _ in pool.map(fill, items):  # re-raises the first error
                pass

    def close(self) -> None:
        """Close the underlying file."""
        self._file.close()

    def __enter__(self) -> SciZReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SciZReader(shape={self.shape}, dtype={self.dtype}, ratio={self.ratio:.1f})"


def _naming_block(index: int, decode: Callable[[int], Any]) -> Any:
    """``decode(index)``, with a :class:`FormatError` prefixed by the block's number."""
    try:
        return decode(index)
    except FormatError as exc:
        raise FormatError(f"block {index}: {exc}") from exc


def _parse_scale(scale: Any, ndim: int) -> tuple[float, ...]:
    values = [scale] * ndim if np.isscalar(scale) else list(scale)
    if len(values) != ndim:
        raise InvalidInputError(f"scale needs 1 or {ndim} values, got {len(values)}")
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"scale must be a number, got {v!r}") from exc
        if not (math.isfinite(f) and 0.01 <= f <= 64):
            raise InvalidInputError(f"scale must be between 0.01 and 64, got {v!r}")
        out.append(f)
    return tuple(out)


def open_sciz(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> SciZReader:
    """Open a ``.sciz`` file for lazy, random-access decoding.

    Parameters
    ----------
    source : path-like or bytes
        The file or its contents.

    Returns
    -------
    SciZReader
    """
    return SciZReader(source)


def decompress(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview | SciZReader,
    roi: Any = None,
    scale: float | Sequence[float] = 1,
) -> np.ndarray:
    """Decode a ``.sciz`` file (whole, or a region, optionally at finer sampling).

    Decoding runs on the CPU whatever device encoded the file.

    Parameters
    ----------
    source : path-like, bytes or SciZReader
        The file, its contents, or an open reader.
    roi : str or sequence, optional
        Region to decode, e.g. ``"10:20,0:256,0:256"``; decodes only the blocks it touches.
    scale : float or sequence of float
        Sampling factor of the spatial axes (``2`` doubles the samples per axis).

    Returns
    -------
    numpy.ndarray
        The decoded array in the original dtype.
    """
    if isinstance(source, SciZReader):
        return source.decode(roi, scale)
    with SciZReader(source) as reader:
        return reader.decode(roi, scale)


def header_json(header: dict) -> str:
    """Pretty JSON of a header (used by ``sciz info``)."""
    return json.dumps(header, indent=2, sort_keys=True)
