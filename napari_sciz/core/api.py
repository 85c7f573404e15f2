"""Public codec API: :func:`compress`, :func:`decompress`, :func:`open_sciz`.

A volume (or a stack of volumes along leading channel/time axes) is cut into blocks; each block
is fitted with its own latent-grid field (:mod:`napari_sciz.core.lossy.model`) or coded as a
hybrid block under a byte budget allocated by block complexity (in hybrid mode by probed
rate-distortion, :mod:`napari_sciz.core.ratealloc`), and the block payloads are stored in one
``.sciz`` container (:mod:`napari_sciz.core.bitstream.container`) with a JSON header
describing the volume.

:func:`compress` checks its arguments and hands the work to :mod:`.encode` (the steps of a
coding); :mod:`.reader` decodes (:class:`SciZReader`, :func:`decompress`, :func:`open_sciz`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import InvalidInputError, RatioUnreachableError
from . import colour
from .blocks import DEFAULT_BLOCK_VOXELS
from .encode import BlockEncoder, FitSettings, encode_exact
from .outliers import attach_outliers, coded_share, find_outliers
from .plan import (
    AUTO_MODE,
    FORMAT_MODE,
    MODELS,
    check_effort,
    effort_budget,
    mask_mode,
    resolve_mode,
)
from .plan import unreachable as plan_unreachable
from .reader import SciZReader, decompress, open_sciz
from .result import CompressResult, ProgressInfo, cancel_predicate
from .task.guided import guided_hybrid
from .validate import check_array, check_axes, check_calibration, check_labels, check_ratio

__all__ = [
    "CompressResult",
    "ProgressInfo",
    "SciZReader",
    "compress",
    "decompress",
    "open_sciz",
    "FORMAT_MODE",
]


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
        2D (YX), 3D (ZYX or TYX) or with leading channel/time axes; dtype uint8, int8,
        uint16, int16, uint32, int32, float16, float32 or float64.
    ratio : float
        Target compression ratio (raw bytes / file bytes), required in lossy mode and
        ignored otherwise. The achieved ratio lands in
        ``[0.98, 1.1] * ratio``; it is higher only when the input is reproduced exactly with
        fewer bytes (e.g. constant images), or when a segmentation lock (segmentation
        guidance) reproduces the original's segmentation exactly with fewer bytes.
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
        or ``budget``. In lossless and bounded modes ``"best"`` codes the closest candidate
        predictor sets of each block on a sample and keeps the smallest (about twice the
        encode time, 0-2 % smaller files); the others change nothing there.
    seed : int
        Random seed.
    axes : str, optional
        Axis letters, e.g. ``"ZYX"`` or ``"TYX"``; defaults by dimensionality. A last axis
        ``C`` (``"YXC"``, ``"ZYXC"``) holds colour samples or channels: it is coded first and
        decoded in this layout (:mod:`napari_sciz.core.colour`; also guessed, without
        ``axes``, for a last axis of 3 or 4 samples).
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
        Task guidance: ``"none"``, ``"segmentation"`` (the decoded volume should segment like
        the original: object F1 of a Gaussian / Otsu / watershed pipeline) or
        ``"perceptual"`` (MS-SSIM). In hybrid mode (the default) the volume is coded plain
        and as candidates chosen by measurement (task bands, a segmentation lock, light
        smoothing, power maps or a sensitivity curve of the intensities, a half-resolution
        base; :mod:`napari_sciz.core.task.guided`), and the file that scores better on the
        task at most 0.9 dB of PSNR below the plain one is kept, with notes in
        ``messages``. In lossy mode the task's loss is added to the field's fit
        (:mod:`napari_sciz.core.guidance`: soft Dice and a boundary band, or SSIM and
        gradients). Any file decodes the same way.
    labels : array-like, optional
        Labels of the image (same shape as ``data``; ``> 0`` is foreground), the reference of
        segmentation guidance. Without labels an Otsu threshold of each block is used.
    guidance_weights : dict, optional
        Weights of the guidance loss terms (see
        :data:`napari_sciz.core.guidance.DEFAULT_WEIGHTS`).

    mode : {"auto", "lossy", "hybrid", "lossless", "bounded"}
        ``"auto"`` (default): ``"hybrid"`` (under ``guidance`` it codes a task pre-filter
        chosen by measurement), or ``"lossy"`` when ``guidance_weights`` are given, for a
        distributed job under guidance, or without a base codec
        (:func:`~napari_sciz.core.plan.resolve_mode`); ``"lossy"``: the INR codec at
        ``ratio``; ``"hybrid"``: the best of SPERR, HEVC and
        JPEG XL as a base layer, a fitted loop filter and, when the budget allows, an INR fit
        of the residual, at ``ratio`` (:mod:`napari_sciz.core.hybrid`; decodes whole blocks,
        no finer sampling); ``"lossless"``: bit-identical decoding (uint8, int8, uint16,
        int16, uint32, int32, float16, float32); ``"bounded"``: every decoded value within
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
    from .guidance import check_guidance

    t_start = time.perf_counter()
    arr = check_array(data)
    if colour.is_channels_last(arr.shape, axes):
        # colour samples last: coded as a leading axis, decoded in the caller's layout
        given = check_axes(axes, arr.ndim) if axes else colour.default_axes(arr.ndim)
        options = dict(
            device=device, steps=steps, budget=budget, effort=effort, seed=seed,
            axes=colour.moved(given), voxel_size=colour.moved(voxel_size),
            units=colour.moved(units), name=name, block_voxels=block_voxels,
            progress=progress, preview_interval=preview_interval, cancel=cancel,
        )  # fmt: skip
        transform = colour.decorrelation(arr, ratio, mode, guidance, guidance_weights, labels)
        if transform is not None:  # (an RGB(A) image in hybrid mode: decorrelated planes)
            planes_preview = None if preview is None else _preview_transformed(preview, transform)
            try:
                return _compress_planes(
                    arr, ratio, transform, str(guidance).lower(),
                    {**options, "preview": planes_preview},
                )  # fmt: skip
            except RatioUnreachableError:
                pass  # (a tiny image: the transform's header entry takes the bytes)
        samples = dict(
            options, preview=None if preview is None else _preview_last(preview), mode=mode,
            guidance=guidance, labels=colour.moved_labels(labels, arr.shape),
            guidance_weights=guidance_weights, max_error=max_error,
        )  # fmt: skip
        result = _compress_samples(arr, ratio, samples)
        if transform is not None:
            result.messages.append(colour.SAMPLES_NOTE.format(ratio=float(ratio)))
        return result
    if effort is not None:
        effort_budget(effort, 0)  # an unknown preset is an error in every mode
    mask_note = None
    if arr.dtype.kind == "b":
        mode, mask_note = mask_mode(mode, ratio)
    if mode == AUTO_MODE:
        wanted = check_guidance(guidance, guidance_weights)[0]
        mode = resolve_mode(mode, wanted, field_loss=bool(guidance_weights))
    if mode not in MODELS:
        exact = encode_exact(
            arr, mode, max_error, axes, voxel_size, units, name, block_voxels, progress, cancel,
            t_start, search=effort == "best",
        )  # fmt: skip
        if mask_note:
            exact.messages.append(mask_note)
        return exact
    settings, guided = _fitted_settings(
        arr, ratio, mode, device=device, steps=steps, budget=budget, effort=effort, seed=seed,
        axes=axes, voxel_size=voxel_size, units=units, name=name, block_voxels=block_voxels,
        guidance=guidance, labels=labels, guidance_weights=guidance_weights, cancel=cancel,
    )  # fmt: skip
    run = _Run(
        guided,
        dict(progress=progress, preview=preview, preview_interval=preview_interval),
        t_start,
    )
    result = run.with_outliers(settings)
    over = overrun_note(result.encode_seconds, settings.budget, guided)
    if over:
        result.messages.append(over)
    return result


#: :func:`compress` for its own use (callers may wrap the public name)
_compress = compress


def _compress_samples(arr: np.ndarray, ratio: Any, options: dict[str, Any]) -> CompressResult:
    """:func:`compress` of a channels-last ``arr`` coded as its samples, channels first
    (``options``: :func:`compress`'s keyword arguments for them); a ratio it cannot reach is
    said in the image's terms (the header key it adds takes bytes too)."""
    try:
        coded = colour.coded_ratio(ratio, arr.nbytes)
        result = _compress(colour.coded_first(arr), coded, **options)
    except RatioUnreachableError as exc:
        if exc.need_bytes is None:
            raise
        need = exc.need_bytes + colour.HEADER_KEY_BYTES
        raise plan_unreachable(arr.nbytes, ratio, need) from None
    return colour.restore_result(result, ratio)


def _compress_planes(
    arr: np.ndarray, ratio: Any, transform: Any, guidance: str, options: dict[str, Any]
) -> CompressResult:
    """:func:`compress` of a channels-last colour image ``arr`` coded as the decorrelated
    planes of ``transform`` (:mod:`.colourtransform`); ``options``: :func:`compress`'s
    keyword arguments for the planes (their axes and calibration samples first). Under
    segmentation guidance each channel is locked (:mod:`.task.colourlock`)."""
    from .task.colourlock import colour_segmentation

    if guidance != "segmentation":
        planes = transform.forward(colour.coded_first(arr))
        coded = colour.coded_ratio(ratio, arr.nbytes, transform, planes.nbytes, guidance)
        result = _compress(planes, coded, **options, mode="hybrid")
        return colour.restore_transformed(result, transform, arr, ratio, guidance=guidance)
    target, budget, effort = check_ratio(ratio), options["budget"], options["effort"]
    check_effort(options["steps"], budget)
    if effort is not None:  # (the codings share the preset's time)
        if options["steps"] is not None or budget is not None:
            raise InvalidInputError("give one of steps, budget or effort")
        budget = effort_budget(effort, arr.nbytes)
    timed = {**options, "steps": None, "effort": None} if budget is not None else options

    def code_planes(planes: np.ndarray, planes_ratio: float, seconds: float | None) -> Any:
        given = timed if seconds is None else {**timed, "budget": seconds}
        return _compress(planes, planes_ratio, **given, mode="hybrid")

    voxel = options["voxel_size"]
    return colour_segmentation(
        arr, target, transform, code_planes, budget=budget,
        voxel_size=None if voxel is None else tuple(voxel)[1:],
        cancel=cancel_predicate(options["cancel"]),
    )  # fmt: skip


def _fitted_settings(
    arr: np.ndarray,
    ratio: float | None,
    mode: str,
    *,
    device: str,
    steps: int | None,
    budget: float | None,
    effort: str | None,
    seed: int,
    axes: str | None,
    voxel_size: Sequence[float] | None,
    units: Sequence[str] | None,
    name: str | None,
    block_voxels: int,
    guidance: str,
    labels: Any,
    guidance_weights: dict[str, float] | None,
    cancel: Any,
) -> tuple[FitSettings, str | None]:
    """The checked settings of a fitted mode's coding (``lossy`` or ``hybrid``; arguments as
    :func:`compress`'s), and the task a guided hybrid coding pre-filters for (None: the
    guidance, if any, is the fit's own loss).

    Raises
    ------
    InvalidInputError
        No ratio, a bad ratio, axes, calibration, guidance or labels, two of ``steps``,
        ``budget`` and ``effort``, or guidance weights in hybrid mode.
    """
    from .device import resolve_device
    from .guidance import check_guidance

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
    guidance_mode, guidance_full = check_guidance(guidance, guidance_weights)
    if mode == "hybrid" and guidance_weights:
        raise InvalidInputError(
            "guidance weights tune the neural field's loss: use mode='lossy' (or mode='auto')"
        )
    label_arr = check_labels(labels, guidance_mode, arr.shape)
    guided_hybrid_task = mode == "hybrid" and guidance_mode != "none"
    settings = FitSettings(
        arr=arr,
        ratio=target,
        mode=mode,
        device=resolve_device(device),
        steps=steps,
        budget=budget,
        seed=seed,
        axes=axes,
        voxel_size=voxel_size,
        units=units,
        name=name,
        block_voxels=block_voxels,
        # (a guided hybrid file pre-filters the volume: its blocks' fits take no guidance)
        guidance="none" if guided_hybrid_task else guidance_mode,
        guidance_weights=None if guided_hybrid_task else guidance_full,
        labels=label_arr,
        cancel=cancel_predicate(cancel),
    )
    return settings, (guidance_mode if guided_hybrid_task else None)


@dataclass
class _Run:
    """How a fitted mode's :class:`BlockEncoder` runs: guided hybrid (``guided``, the task)
    or plain, with the progress and preview callbacks of ``encoder``."""

    guided: str | None
    encoder: dict[str, Any]
    t_start: float

    def __call__(self, settings: FitSettings) -> CompressResult:
        encoder = BlockEncoder(settings, t_start=self.t_start, **self.encoder)
        if self.guided is not None:
            return guided_hybrid(encoder, self.guided)
        return encoder.encode(settings.arr, settings.budget)

    def with_outliers(self, settings: FitSettings) -> CompressResult:
        """The coding of ``settings``; in hybrid mode its outliers stored apart and the rest
        coded without them (:mod:`.outliers`), unless the rest cannot then reach its ratio."""
        arr, target = settings.arr, settings.ratio
        found = find_outliers(arr) if settings.mode == "hybrid" else None
        room = None if found is None else coded_share(found, arr.dtype, arr.nbytes / target)
        if found is not None and room is not None:
            cleaned = replace(settings, arr=found.cleaned(arr), ratio=arr.nbytes / room)
            try:
                result = self(cleaned)
            except RatioUnreachableError:
                pass  # the list takes bytes the rest needs (a tiny file): coded as it is
            else:
                return attach_outliers(result, arr, found, target)
        return self(settings)


#: a coding that runs past its budget by more than this share says so
_OVERRUN_SHARE = 0.1


def overrun_note(seconds: float, budget: float | None, guided: str | None = None) -> str | None:
    """A note when a coding took noticeably longer than its time ``budget``: the budget was
    below what the stack needs at the fastest settings (every block's base encode) on this
    machine, or, under task ``guided``, what its measurements and codings need."""
    if budget is None or seconds <= budget * (1 + _OVERRUN_SHARE):
        return None
    if guided:
        return (
            f"the {guided}-guided coding took {seconds:.1f} s of a {budget:.1f} s budget: its "
            "measurements (candidates on a proxy, the task scored on each file) and at least "
            "two codings took longer on this machine; a larger budget keeps to its time"
        )
    return (
        f"the coding took {seconds:.1f} s of a {budget:.1f} s budget: that is less than this "
        "stack needs at the fastest settings on this machine (every block is coded at least "
        "once), so those were used; a larger budget (or effort='fast') gives a better file"
    )


def _preview_transformed(
    preview: Callable[[np.ndarray], None], transform: Any
) -> Callable[[np.ndarray], None]:
    """``preview`` of the image, called with the decoded planes of a decorrelated colour
    coding (:mod:`.colourtransform`), samples first."""

    def show(planes: np.ndarray) -> None:
        preview(np.moveaxis(transform.inverse(planes), 0, -1))

    return show


def _preview_last(preview: Callable[[np.ndarray], None]) -> Callable[[np.ndarray], None]:
    """A preview callback that gets the channels-first reconstruction in the original layout."""

    def show(recon: np.ndarray) -> None:
        preview(np.moveaxis(recon, 0, -1))

    return show


def header_json(header: dict) -> str:
    """Pretty JSON of a header (used by ``sciz info``)."""
    return json.dumps(header, indent=2, sort_keys=True)
