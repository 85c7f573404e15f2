"""Planning a lossy compression (the fitting of one planned block: :mod:`.blockjob`).

A lossy compression is split into two halves that do not need the whole array in one place:

1. :func:`plan_lossy` turns per-block statistics (:func:`~napari_sciz.core.blocks.block_stats`)
   into the file header and one :class:`BlockJob` per block: its byte window, seed, steps or
   time budget and device;
2. :func:`~.blockjob.run_block_job` fits one block's voxels for its job and returns the
   payload.

:func:`napari_sciz.compress` runs both halves in this process; the distributed encoder
(:mod:`napari_sciz.core.distributed`) computes the statistics and runs the jobs on Dask workers
that read their own blocks. Both produce the same bytes for the same input, seed and steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import InvalidInputError, RatioUnreachableError
from .bitstream import container
from .blocks import BlockGrid, BlockStats, allocate_from_stats
from .guidance import weight_overrides
from .header import VALUE_MAP_MODEL_VERSION

__all__ = [
    "BlockJob",
    "DECODABLE_MODELS",
    "LossyPlan",
    "AUTO_MODE",
    "base_header",
    "EFFORT_PRESETS",
    "check_effort",
    "effort_budget",
    "plan_lossy",
    "probe_bits",
    "mask_mode",
    "resolve_mode",
    "unreachable",
]

FORMAT_MODE = "lossy"
#: the achieved ratio is aimed at ``ratio * RATIO_AIM`` (the accepted window is [0.98, 1.1] R)
RATIO_AIM = 1.01
#: on small files the aim moves towards ``ratio * RATIO_FLOOR`` so that the smallest payloads
#: still keep the ratio under ``ratio * RATIO_CEIL`` (see :func:`payload_budget`)
RATIO_FLOOR = 0.99
RATIO_CEIL = 1.09
#: relative width of each block's byte window below its share
BLOCK_WINDOW = 0.03
#: bytes reserved for header growth between planning and writing (the encoder's steps and
#: device are written after the fit: at most 7 bytes more with the format 2 dictionary)
HEADER_SLACK = 24
#: smallest payload a block can be coded in (architecture, ranges and a tiny MLP)
MIN_BLOCK_BYTES = 160
#: the same for a hybrid block: its head and a short classical stream (SPERR's smallest is
#: about 45 bytes); a block whose base does not fit falls back to a field, which needs more
MIN_HYBRID_BLOCK_BYTES = 64
#: share of a time budget given to fitting (the rest: metrics and packing)
FIT_SHARE = 0.92
#: the header's ``model`` of each fitted mode
MODELS = {
    # version 2 (latent-grid) and 3 (hybrid): a field's payload may code its latents with the
    # autoregressive entropy model (docs/format.md section 7.5), which older readers lack;
    # hybrid version 4: block payloads with the compact head and packed SPERR streams
    FORMAT_MODE: {"type": "latent-grid", "version": 2, "activation": "relu"},
    "hybrid": {"type": "classical+latent-grid", "version": 4, "activation": "relu"},
}
#: the header models this version decodes: ``{mode: {type: newest version}}`` (hybrid files
#: written before the choice of base codecs say ``sperr+latent-grid``, version 1)
DECODABLE_MODELS = {
    FORMAT_MODE: {"latent-grid": 2},
    # hybrid version 5: the same blocks, and the file may end with a segmentation lock
    # (napari_sciz.core.seglock; written only for files that have one); version 6: the
    # blocks code the volume through a value map (napari_sciz.core.task.valuemap; only such files);
    # version 7: the file may end with an outlier payload (napari_sciz.core.outliers);
    # version 8: a colour image's samples were coded as decorrelated planes
    # (napari_sciz.core.colourtransform; only such files)
    "hybrid": {"sperr+latent-grid": 1, "classical+latent-grid": 8},
    # bounded version 2: a block may be coded by SPERR's point-wise error mode
    # (napari_sciz.core.lossless.sperrblock; only such files); version 3: by SZ3
    # (napari_sciz.core.lossless.szblock; only such files); version 4: by interpolation with
    # in-loop quantization (napari_sciz.core.lossless.interpblock; only such files); version
    # 5: an interpolation block of payload version 2 (floats on a fine integer grid, or
    # contexts split by the neighbours' quantization indices)
    # version 6 (lossless and bounded): a block may be a label block (each voxel a copy of a
    # neighbour: napari_sciz.core.lossless.labelblock; only such files)
    # version 7: a block may be a resampled block (its coarse grid and the corrections to a
    # 2x linear interpolation: napari_sciz.core.lossless.resampled); in bounded mode, a
    # block with few distinct values coded exactly
    "bounded": {"causal-predictor": 7},
    "lossless": {"causal-predictor": 7},
}


#: the mode :func:`resolve_mode` turns into the best fitted mode for the request
AUTO_MODE = "auto"


def mask_mode(mode: str, ratio: float | None) -> tuple[str, str | None]:
    """The mode a boolean mask is coded in (exactly: ``auto`` becomes lossless), and a note
    when a ratio was asked for; lossy and hybrid modes are refused."""
    if mode in MODELS:
        raise InvalidInputError(
            f"a boolean mask is coded exactly, not in mode={mode!r}: use mode='lossless' "
            "(or 'auto')"
        )
    if mode != AUTO_MODE:
        return mode, None
    note = None
    if ratio is not None:
        note = "a boolean mask is coded losslessly: the ratio asked for is not used"
    return "lossless", note


def resolve_mode(mode: str, guidance: str = "none", *, field_loss: bool = False) -> str:
    """The coding mode a request for ``mode`` runs.

    ``"auto"`` (the default of :func:`napari_sciz.compress`, the CLI and the widget) is
    ``"hybrid"``, which measured above the pure field and every classical codec at equal ratio
    (``docs/benchmarks.md``; under task guidance it codes a pre-filtered volume chosen by the
    task's score, :mod:`.task.prefilter`), unless the guidance needs the neural field's loss
    (guidance weights, or guidance of a distributed job: ``field_loss``) or no base codec is
    installed; then ``"lossy"``. Other modes are returned unchanged.
    """
    if mode != AUTO_MODE:
        return mode
    if guidance != "none" and field_loss:
        return FORMAT_MODE
    from .hybrid.bases import BASES

    return "hybrid" if any(codec.available() for codec in BASES) else FORMAT_MODE


def base_header(
    shape: Sequence[int],
    dtype: np.dtype,
    mode: str,
    axes: str,
    voxel_size: Sequence[float] | None,
    units: Sequence[str] | None,
    name: str | None,
) -> dict:
    """Header keys common to every coding mode (the image and the library).

    The optional calibration (``voxel_size``, ``units``) and ``name`` are left out when not
    given (readers take a missing key as null): a few bytes of a small file.
    """
    header: dict = {
        "format": "sciz",
        "library": f"napari-sciz {__version__}",
        "mode": mode,
        "shape": [int(n) for n in shape],
        "dtype": np.dtype(dtype).name,
        "axes": axes,
    }
    if voxel_size is not None:
        header["voxel_size"] = [float(v) for v in voxel_size]
    if units is not None:
        header["units"] = [str(u) for u in units]
    if name is not None:
        header["name"] = name
    return header


#: effort presets: (smallest time budget in seconds, seconds per MiB of raw data); the encoder
#: is an anytime search (base codecs and their slower settings, loop-filter classes, the
#: field's steps), so a preset is a time budget that grows with the data. Measured time/quality
#: curve: docs/benchmarks.md ("Effort presets").
EFFORT_PRESETS: dict[str, tuple[float, float]] = {
    "fast": (15.0, 2.0),
    "balanced": (60.0, 8.0),
    "best": (180.0, 24.0),
}


def effort_budget(effort: str, nbytes: int) -> float:
    """The time budget (seconds) of effort preset ``effort`` for ``nbytes`` of raw data.

    Raises
    ------
    InvalidInputError
        Unknown preset.
    """
    if effort not in EFFORT_PRESETS:
        raise InvalidInputError(
            f"effort must be one of {', '.join(EFFORT_PRESETS)}, got {effort!r}"
        )
    floor, per_mib = EFFORT_PRESETS[effort]
    return max(floor, per_mib * nbytes / 2**20)


def check_effort(steps: int | None, budget: float | None) -> int | None:
    """Validate ``steps``/``budget``; return the steps to use (300 when neither is given)."""
    if steps is not None and budget is not None:
        raise InvalidInputError("give either steps or budget, not both")
    if steps is not None and (int(steps) != steps or steps < 1):
        raise InvalidInputError(f"steps must be a positive integer, got {steps!r}")
    if budget is not None:
        try:
            seconds = float(budget)
        except (TypeError, ValueError):
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds > 0):
            raise InvalidInputError(f"budget must be a positive number of seconds, got {budget!r}")
    if steps is None and budget is None:
        return 300
    return None if steps is None else int(steps)


def _header_growth(header: dict, n_blocks: int) -> int:
    """The most the header can grow when the fit writes its steps and device into it.

    (A hybrid block that fits a field leaves exactly this unused: hybrid blocks without one,
    the usual case, write 0 steps and the planned device, so the header stays as planned;
    lossy files keep the constant :data:`HEADER_SLACK`, which their fitted fields, and so the
    tests pinned to them, were made with.)
    """
    import copy

    planned = container.overhead(header, n_blocks)
    growth = 0
    device_now = str(header["encoder"]["device"])
    # the fit runs on the planned device or falls back to the CPU
    devices = {device_now, "cpu"} | ({"cuda:15"} if device_now.startswith("cuda") else set())
    for steps in (0, 99999, 10**9):
        for device in sorted(devices):
            variant = copy.deepcopy(header)
            variant["encoder"].update(steps=steps, device=device)
            growth = max(growth, container.overhead(variant, n_blocks) - planned)
    return growth + 2


def probe_bits(mode: str, n_blocks: int, dtype: np.dtype, ratio: float) -> float | None:
    """The average bits per value at which the blocks' rate-distortion is probed
    (:func:`~napari_sciz.core.ratealloc.probe_rd`), or None: hybrid files of several blocks
    allocate their bytes by it; one block has nothing to share, and the latent-grid field
    keeps the allocation its fits were made with."""
    if mode != "hybrid" or n_blocks < 2:
        return None
    return 8.0 * np.dtype(dtype).itemsize / float(ratio)


def check_nonfinite(stats: Sequence[BlockStats]) -> None:
    """Raise :class:`InvalidInputError` if any block holds NaN or infinite values."""
    bad = sum(s.nonfinite for s in stats)
    if bad:
        raise InvalidInputError(f"the image contains {bad} NaN or infinite values")


def value_range(stats: Sequence[BlockStats]) -> list[float | int]:
    """``[min, max]`` of the whole image from its blocks' statistics."""
    return [min(s.vmin for s in stats), max(s.vmax for s in stats)]


def payload_budget(
    raw: int, target: float, fixed: int, n_blocks: int, exact: bool = False
) -> float:
    """Bytes for all block payloads, given the bytes ``fixed`` of everything else.

    Each block's payload lands in ``[1 - BLOCK_WINDOW, 1]`` times its share and the header
    may not use all of its ``HEADER_SLACK``, so the file can come out smaller than planned by
    ``BLOCK_WINDOW * budget + HEADER_SLACK`` bytes. On large files the aim ``RATIO_AIM`` absorbs
    that; on small files (a few kB, where the header is a large part of the file) the budget is
    raised, up to ``RATIO_FLOOR``, so that even the smallest outcome stays under ``RATIO_CEIL``.

    ``exact`` (hybrid mode, whose size searches land just under each block's share and whose
    header growth is reserved exactly): every byte the ratio allows, ``raw / target - fixed``;
    the file then reaches the ratio (the classical codecs' rule, ``shared/GUIDE.md`` §2) and
    gives none of it away (the aim cost the hybrid 1-2 % of its bytes).
    """
    if exact:
        return raw / target - fixed
    budget = raw / (target * RATIO_AIM) - fixed
    smallest = raw / (target * RATIO_CEIL) - (fixed - HEADER_SLACK) + n_blocks  # int() per block
    largest = raw / (target * RATIO_FLOOR) - fixed
    return min(max(budget, smallest / (1 - BLOCK_WINDOW)), largest)


@dataclass(frozen=True)
class BlockJob:
    """What fitting one block needs besides its voxels (small and picklable).

    Attributes
    ----------
    index : int
        Block number in the grid.
    window : tuple of int
        ``(low, high)`` payload bytes.
    seed : int
        Random seed of this block.
    steps : int or None
        Training steps (None with a time budget).
    budget : float or None
        Seconds for this block.
    device : str
        Torch device to fit on.
    guidance : str
        Guidance mode (``"none"``, ``"segmentation"``, ``"perceptual"``).
    guidance_weights : dict or None
        Complete guidance weights (None without guidance).
    mode : str
        ``"lossy"`` (latent-grid field) or ``"hybrid"`` (SPERR base + field of the residual,
        :mod:`napari_sciz.core.hybrid`).
    field_reserve : int
        Hybrid: bytes a fitted field leaves unused (the header grows when a field's steps, or
        a device fallback, are written into it; blocks without a field leave it as planned).
    halved_base : bool
        Hybrid: code the base at half the in-plane resolution (:mod:`.hybrid.halved`).
    """

    index: int
    window: tuple[int, int]
    seed: int
    steps: int | None
    budget: float | None
    device: str
    guidance: str = "none"
    guidance_weights: dict[str, float] | None = None
    mode: str = FORMAT_MODE
    field_reserve: int = 0
    halved_base: bool = False


@dataclass
class LossyPlan:
    """The header and the block jobs of a lossy compression (see :func:`plan_lossy`)."""

    header: dict
    grid: BlockGrid
    jobs: list[BlockJob]
    raw_nbytes: int
    value_range: list[float | int]


def plan_lossy(
    shape: Sequence[int],
    dtype: np.dtype,
    grid: BlockGrid,
    stats: Sequence[BlockStats],
    ratio: float,
    *,
    device: str,
    steps: int | None,
    budget: float | None,
    seed: int,
    axes: str,
    voxel_size: Sequence[float] | None,
    units: Sequence[str] | None,
    name: str | None,
    guidance: str = "none",
    guidance_weights: dict[str, float] | None = None,
    parallel: int = 1,
    mode: str = FORMAT_MODE,
    extra_header: dict[str, Any] | None = None,
    spent: float = 0.0,
) -> LossyPlan:
    """Header and per-block jobs of a lossy compression at ``ratio``.

    Parameters
    ----------
    shape, dtype : tuple of int, numpy.dtype
        The image.
    grid : BlockGrid
        Its block grid.
    stats : sequence of BlockStats
        One per block, in block order.
    ratio : float
        Target ratio (validated).
    device : str
        Resolved torch device.
    steps, budget : int or None, float or None
        Training effort (exactly one is not None; see :func:`check_effort`).
    parallel : int
        Number of blocks fitted at the same time: a total time ``budget`` is split between
        blocks by size, times ``parallel``.
    mode : {"lossy", "hybrid"}
        Latent-grid fields, or SPERR base layers with fields of their residuals.
    extra_header : dict, optional
        Entries added to (or replacing those of) the header before the bytes are budgeted.
    spent : float
        Seconds of ``budget`` already used (the blocks' rate-distortion probes): the blocks
        share the rest (at least a twentieth of it); the header says ``budget``.

    Raises
    ------
    RatioUnreachableError
        The header and the smallest block codes do not fit in the ratio.
    """
    raw = int(math.prod(int(n) for n in shape) * np.dtype(dtype).itemsize)
    vrange = value_range(stats)
    header = _lossy_header(
        base_header(shape, dtype, mode, axes, voxel_size, units, name), vrange, ratio, mode,
        grid, guidance, guidance_weights, (device, steps, budget, seed), extra_header,
    )  # fmt: skip
    reserve = _header_growth(header, grid.n_blocks) if mode == "hybrid" else 0
    fixed = container.overhead(header, grid.n_blocks) + (0 if mode == "hybrid" else HEADER_SLACK)
    total = payload_budget(raw, ratio, fixed, grid.n_blocks, exact=mode == "hybrid")
    smallest = MIN_HYBRID_BLOCK_BYTES if mode == "hybrid" else MIN_BLOCK_BYTES
    if total < grid.n_blocks * smallest:
        raise unreachable(raw, ratio, fixed + grid.n_blocks * smallest)
    shares = allocate_from_stats(stats, total, smallest)
    total_vox = sum(s.voxels for s in stats)
    fit_time = None if budget is None else max(float(budget) - spent, 0.05 * float(budget))
    jobs = []
    for index, share in enumerate(shares):
        block_budget = None
        if fit_time is not None:
            block_budget = FIT_SHARE * fit_time * stats[index].voxels / total_vox
            block_budget *= max(1, min(int(parallel), grid.n_blocks))
        jobs.append(
            BlockJob(
                index=index,
                window=(int(share * (1 - BLOCK_WINDOW)), int(share)),
                seed=int(seed) + index,
                steps=steps,
                budget=block_budget,
                device=device,
                guidance=guidance,
                guidance_weights=guidance_weights if guidance != "none" else None,
                mode=mode,
                field_reserve=reserve,
            )
        )
    return LossyPlan(header, grid, jobs, raw, vrange)


def _lossy_header(
    base: dict[str, Any],
    vrange: Any,
    ratio: float,
    mode: str,
    grid: BlockGrid,
    guidance: str,
    guidance_weights: dict[str, float] | None,
    encoder: tuple[str, int | None, float | None, int],
    extra_header: dict[str, Any] | None,
) -> dict[str, Any]:
    """The header of a lossy or hybrid file as planned (``encoder``: device, steps, budget,
    seed), before its blocks are coded."""
    device, steps, budget, seed = encoder
    header = {
        **base,
        "value_range": vrange,
        "target_ratio": ratio,
        "model": MODELS[mode],
        "blocks": grid.to_header(),
        "guidance": guidance,
        # (the budget to 3 digits: a guided coding's share of it is a long float)
        "encoder": {
            "device": device,
            "steps": steps,
            "budget": _short_seconds(budget),
            "seed": int(seed),
        },  # fmt: skip
    }
    overrides = weight_overrides(guidance, guidance_weights or {}) if guidance != "none" else {}
    if overrides:
        # only the weights that differ from the defaults: header bytes are latent bytes
        header["guidance_weights"] = overrides
    header.update(extra_header or {})
    if "value_map" in header:
        header["model"] = {**header["model"], "version": VALUE_MAP_MODEL_VERSION}
    if mode == "hybrid" and steps is None:
        # planned as it is most often written: hybrid blocks fit no field (0 steps)
        header["encoder"]["steps"] = 0
    return header


def unreachable(raw: int, ratio: float, need: int) -> RatioUnreachableError:
    """The error of a ratio whose file needs at least ``need`` bytes for ``raw`` bytes."""
    best = raw / need
    reachable = (
        f"the highest reachable ratio is about {best:.1f}x"
        if best >= 1.5
        else "a lossy file would be larger than the data itself: use lossless mode"
    )
    return RatioUnreachableError(
        f"a ratio of {ratio:g}x is not reachable for this {raw}-byte input: the file "
        f"needs at least {need} bytes; {reachable}",
        need_bytes=need,
    )


def _short_seconds(seconds: float | None) -> float | None:
    """``seconds`` to three significant digits (None stays None)."""
    return None if seconds is None else float(f"{float(seconds):.3g}")
