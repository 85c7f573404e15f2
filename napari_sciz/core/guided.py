"""Task guidance of hybrid mode: code the volume twice, keep the file that serves the task.

The classical base layers of hybrid mode cannot take a loss, so guidance works on what they
code (:mod:`.taskfilter`, chosen on SPERR proxy decodes) or on what the file adds to them:

* a **pre-filtered** volume (segmentation: a task band; perceptual: light smoothing, or a
  power map of the intensities, :mod:`.valuemap`, which the decoder inverts) is coded beside
  the plain volume;
* a **segmentation lock** (:mod:`.seglock`): the plain volume is coded in fewer bytes and the
  rest corrects the side of the segmentation's threshold surface where the objects need it.

Either way the plain file is coded too (half the time left each) and the file that scores
better on the task, at most 1 dB of PSNR below the plain file, is kept
(:meth:`.taskfilter.TaskChoice.better`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .bitstream import container
from .encode import BlockEncoder
from .header import LOCK_MODEL_VERSION
from .result import CompressResult

__all__ = ["MAX_PREFILTER_VOXELS", "guided_hybrid"]

#: the largest volume whose task pre-filter is chosen on trial decodes (each holds a few
#: float64 copies of the volume and segments it)
MAX_PREFILTER_VOXELS = 1 << 26
#: the smallest lock worth coding (bytes)
_MIN_LOCK_BYTES = 64


def guided_hybrid(encoder: BlockEncoder, guidance: str) -> CompressResult:
    """Task guidance of hybrid mode (:mod:`.taskfilter`, :mod:`.seglock`).

    The candidate chosen on the SPERR proxy (a fifth of the budget at most) is coded beside
    the plain volume (half the time left each) and the file that scores better on the task is
    kept; without a candidate that measured better on the proxy, only the plain volume is
    coded. Volumes that are not 2D or 3D are coded as they are.

    Parameters
    ----------
    encoder : BlockEncoder
        The encoder of the volume (its settings carry no fit guidance).
    guidance : {"segmentation", "perceptual"}
        The task.
    """
    from .taskfilter import TaskChoice, choose_prefilter

    s, t_start = encoder.settings, encoder.t_start
    arr, budget = s.arr, s.budget
    source, choice = arr, TaskChoice(guidance)
    too_large = arr.size > MAX_PREFILTER_VOXELS
    if arr.ndim in (2, 3) and not too_large:
        deadline = None if budget is None else time.perf_counter() + 0.2 * float(budget)
        source, choice = choose_prefilter(
            arr, max(int(arr.nbytes / s.ratio), 1), guidance, voxel_size=s.voxel_size,
            labels=s.labels, deadline=deadline, cancel=s.cancel,
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
            f"decodes take ({MAX_PREFILTER_VOXELS}); coded as it is"
        ]
    if choice.setting is None and choice.lock_share is None and choice.value_map is None:
        result = encoder.encode(arr, left(1.0), choice)
        result.messages[:0] = said
        return result
    bare = replace(choice, setting=None, lock_share=None, value_map=None)
    plain = encoder.encode(arr, left(0.5), bare)
    if choice.lock_share is not None:
        # (the lock is built after the base: a sixth of the time is kept for it)
        rest = left(1.0)
        guided = _locked_file(encoder, choice, None if rest is None else 0.85 * rest)
        what = "locked"
    else:
        guided = encoder.encode(source, left(1.0), choice, choice.value_map)
        what = "pre-filtered" if choice.value_map is None else "power-mapped"
    kept = (
        plain if guided is None
        else _better_for_task(choice, arr, plain, guided, what, s.voxel_size)
    )  # fmt: skip
    kept.messages[:0] = said
    kept.encode_seconds = time.perf_counter() - t_start
    return kept


def _locked_file(encoder: BlockEncoder, choice: Any, budget: float | None) -> CompressResult | None:
    """The volume coded in fewer bytes plus a segmentation lock in the rest of the ratio's
    bytes (None when no lock fits)."""
    from .metrics import max_abs_error, psnr, ssim
    from .seglock.select import build_lock
    from .taskscore import _sigmas

    s = encoder.settings
    arr = s.arr
    total = arr.nbytes / s.ratio
    base_bytes = max(total - choice.lock_bytes, 0.5 * total)
    base_encoder = BlockEncoder(
        replace(s, ratio=arr.nbytes / base_bytes), progress=encoder.progress,
        preview=encoder.preview, preview_interval=encoder.preview_interval,
        t_start=encoder.t_start,
    )  # fmt: skip
    base = base_encoder.encode(arr, budget, choice)
    assert base.reconstruction is not None
    header = {
        **base.header,
        "model": {**base.header["model"], "version": LOCK_MODEL_VERSION},
        "target_ratio": s.ratio,
        "segmentation_lock": {"version": 1},
    }
    with container.SciZFile(base.data) as f:
        payloads = [f.payload(i) for i in range(f.n_payloads)]
    room = int(total) - len(container.pack(header, [*payloads, b""]))
    if room < _MIN_LOCK_BYTES:
        return None
    lock = build_lock(
        arr, base.reconstruction, room, _sigmas(arr.ndim, s.voxel_size, 1.0),
        choice.reference, choice.spacing, tuple(header["value_range"]), s.voxel_size,
    )  # fmt: skip
    if lock is None:
        return None
    blob = container.pack(header, [*payloads, lock.payload])
    note = (
        "segmentation lock (for the smooth / Otsu / watershed segmentation, sigma 1 voxel): "
        f"{lock.switched} voxels switched sides in {lock.groups} of "
        f"{lock.groups_total} groups, {len(lock.payload)} bytes "
        f"({100.0 * len(lock.payload) / len(blob):.0f} % of the file)"
    )
    return CompressResult(
        data=blob,
        reconstruction=lock.corrected,
        header=header,
        ratio=arr.nbytes / len(blob),
        nbytes=len(blob),
        raw_nbytes=arr.nbytes,
        psnr=psnr(arr, lock.corrected),
        ssim=ssim(arr, lock.corrected),
        max_error=max_abs_error(arr, lock.corrected),
        encode_seconds=time.perf_counter() - encoder.t_start,
        device=base.device,
        messages=[*base.messages, note],
    )


def _better_for_task(
    choice: Any,
    arr: np.ndarray,
    plain: CompressResult,
    guided: CompressResult,
    what: str,
    voxel_size: Sequence[float] | None = None,
) -> CompressResult:
    """The plain or the guided (``what``: pre-filtered, locked) file, whichever scores better
    on the task, with a note."""
    assert plain.reconstruction is not None and guided.reconstruction is not None
    guidance = choice.guidance
    scores = [choice.score(arr, r.reconstruction, voxel_size) for r in (plain, guided)]
    kept = guided if choice.better(scores[1], scores[0]) else plain
    name = "MS-SSIM" if guidance == "perceptual" else "object F1"
    ours, theirs = choice.key(scores[1])[0], choice.key(scores[0])[0]
    kept.messages.append(
        f"{guidance} guidance: kept the {what if kept is guided else 'plain'} file "
        f"({name} {ours:.4f} {what} / {theirs:.4f} plain, "
        f"PSNR {scores[1]['psnr']:.2f} / {scores[0]['psnr']:.2f} dB)"
    )
    return kept
