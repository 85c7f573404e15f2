"""A segmentation-locked file of hybrid mode: the base coded in fewer bytes, the lock in the
rest (:mod:`napari_sciz.core.seglock`).

The proxy measured a lock of the volume (:mod:`.prefilter`); here the real base is coded in
the bytes that lock leaves and locked against the original's segmentation: a single volume
(header ``segmentation_lock`` version 1), each volume of a stack (version 2), or every frame
of a 2D time-lapse with one lock (version 4). :mod:`.guided` keeps the file when it serves
the task better than the plain one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..bitstream import container
from ..encode import BlockEncoder
from ..header import LOCK_MODEL_VERSION
from ..result import CompressResult
from ..stacking import stacked_axes

#: the smallest lock worth coding (bytes)
_MIN_LOCK_BYTES = 64


def _volume_voxel_size(voxel_size: Sequence[float] | None, lead: int) -> Sequence[float] | None:
    """The voxel size of the volumes the task is scored on: without a stack's ``lead`` axes."""
    if voxel_size is None or not lead:
        return voxel_size
    return tuple(voxel_size)[lead:]


def _locked_file(
    encoder: BlockEncoder, choice: Any, seconds: float | None
) -> CompressResult | None:
    """The volume coded in fewer bytes plus a segmentation lock in the rest of the ratio's
    bytes, in ``seconds`` (None when no lock fits). A stack gets a lock per volume (the proxy
    measured one volume's), as many as the time holds (:func:`_lock_time`; the volume
    measured is locked first and always)."""
    s = encoder.settings
    arr = s.arr
    lead = stacked_axes(arr.ndim, s.axes)
    frames = choice.spacings is not None  # (a time-lapse: a lock per frame, measured whole)
    total = arr.nbytes / s.ratio
    volumes, budget = _lock_time(math.prod(arr.shape[:lead]), choice.lock_seconds, seconds)
    if frames:
        budget = _one_lock_time(choice.lock_seconds, seconds)
    deadline = None if seconds is None else time.perf_counter() + seconds
    base_bytes = max(total - choice.lock_bytes * volumes, 0.5 * total)
    base_encoder = BlockEncoder(
        replace(s, ratio=arr.nbytes / base_bytes), progress=encoder.progress,
        preview=encoder.preview, preview_interval=encoder.preview_interval,
        t_start=encoder.t_start,
    )  # fmt: skip
    base = base_encoder.encode(arr, budget, choice)
    assert base.reconstruction is not None
    model = base.header["model"]
    header = {
        **base.header,
        "model": {**model, "version": max(model.get("version", 0), LOCK_MODEL_VERSION)},
        "target_ratio": s.ratio,
        "segmentation_lock": {"version": 4 if frames else 2 if lead else 1},
    }
    with container.SciZFile(base.data) as f:
        payloads = [f.payload(i) for i in range(f.n_payloads)]
    room = int(total) - len(container.pack(header, [*payloads, b""]))
    if room < _MIN_LOCK_BYTES:
        return None
    vrange = (float(header["value_range"][0]), float(header["value_range"][1]))
    report = _lock_progress(encoder, seconds)
    made = _lock(arr, base.reconstruction, room, choice, s, lead, vrange, deadline, report)
    if made is None:
        return None
    payload, corrected, what = made
    blob = container.pack(header, [*payloads, payload])
    note = (
        "segmentation lock (for the smooth / Otsu / watershed segmentation, sigma 1 voxel): "
        f"{what}, {len(payload)} bytes ({100.0 * len(payload) / len(blob):.0f} % of the file)"
    )
    return CompressResult.measured(
        arr, blob, header, corrected, raw_nbytes=arr.nbytes,
        encode_seconds=time.perf_counter() - encoder.t_start, device=base.device,
        messages=[*base.messages, note],
    )  # fmt: skip


#: share of the time left kept for a single volume's lock, built after its base
_LOCK_TIME_SHARE = 0.15
#: a stack's lock of one volume is expected to take this many times the proxy's (which did
#: not segment the original)
_LOCK_TIME_MARGIN = 1.5


def _lock_time(
    volumes: int, proxy_seconds: float, seconds: float | None
) -> tuple[int, float | None]:
    """How many of a stack's ``volumes`` the locks are planned for, and the base's time.

    A single volume's lock keeps what the proxy's took times :data:`_LOCK_TIME_MARGIN`, at
    least :data:`_LOCK_TIME_SHARE` of the time and at most half (:func:`_one_lock_time`;
    until session 61 that share alone: a 16 Mpx image's lock, 20 s, ran past the budget). A
    stack's keeps what its volumes' locks are expected to take (each
    :data:`_LOCK_TIME_MARGIN` times the proxy's ``proxy_seconds``), at most half the time:
    the base is then sized for the locks that time holds (the middle volume's at least), not
    for volumes that will get none.
    """
    if seconds is None:
        return volumes, None
    if volumes == 1 or proxy_seconds <= 0:
        return volumes, _one_lock_time(proxy_seconds, seconds)
    per = _LOCK_TIME_MARGIN * proxy_seconds
    locks = min(max(volumes * per, _LOCK_TIME_SHARE * seconds), 0.5 * seconds)
    return max(1, min(volumes, int(locks / per))), seconds - locks


def _one_lock_time(proxy_seconds: float, seconds: float | None) -> float | None:
    """The base's time when a single volume, or a time-lapse's frames, are locked: the proxy
    locked it in ``proxy_seconds`` (the whole time-lapse), so the lock keeps that times
    :data:`_LOCK_TIME_MARGIN`, at least :data:`_LOCK_TIME_SHARE` and at most half of
    ``seconds``."""
    if seconds is None:
        return None
    locks = min(max(_LOCK_TIME_MARGIN * proxy_seconds, _LOCK_TIME_SHARE * seconds), 0.5 * seconds)
    return seconds - locks


def _lock_progress(encoder: BlockEncoder, seconds: float | None) -> Any:
    """``report(done, volumes)`` for a stack's locks: the encoder's progress callback told
    which volume is being locked (None without a callback)."""
    from ..result import ProgressInfo

    progress = encoder.progress
    if progress is None:
        return None
    ends = None if seconds is None else time.perf_counter() + seconds

    def report(done: int, volumes: int) -> None:
        eta = None if ends is None else max(ends - time.perf_counter(), 0.0)
        text = "segmentation lock" + (f": volume {done + 1} of {volumes}" if volumes > 1 else "")
        progress(ProgressInfo(done / volumes, 0, None, math.nan, math.nan, eta, 0, 1, text))

    return report


def _lock(
    arr: np.ndarray, decoded: np.ndarray, room: int, choice: Any, s: Any, lead: int,
    vrange: tuple[float, float], deadline: float | None, report: Any = None,
) -> tuple[bytes, np.ndarray, str] | None:  # fmt: skip
    """The lock payload of ``decoded`` in at most ``room`` bytes, the decode it locks to, and
    what it switched (None when nothing fits)."""
    from ..seglock.select import build_lock
    from ..seglock.stacked import build_stacked_locks
    from .score import _sigmas

    if choice.spacings is not None:  # (a time-lapse's frames: one lock for all)
        return _frames_lock(arr, decoded, room, choice, s, vrange, report)
    if not lead:
        if report is not None:
            report(0, 1)
        sigmas = _sigmas(arr.ndim, s.voxel_size, 1.0)
        lock = build_lock(
            arr, decoded, room, sigmas, choice.reference, choice.spacing, vrange, s.voxel_size
        )
        if lock is None:
            return None
        what = f"{lock.switched} voxels switched sides in {lock.groups} of {lock.groups_total}"
        what += " groups"
        return lock.payload, lock.corrected, what
    voxel = _volume_voxel_size(s.voxel_size, lead)
    middle = tuple(n // 2 for n in arr.shape[:lead])
    sigmas = _sigmas(arr.ndim - lead, voxel, 1.0)
    locks = build_stacked_locks(
        arr, decoded, lead, room, sigmas, middle, vrange, voxel, deadline, s.cancel, report
    )
    if locks is None:
        return None
    n = locks.volumes
    late = f" ({n - locks.reached} not reached in time)" if locks.reached < n else ""
    what = (
        f"{locks.switched} voxels switched sides in {locks.groups} of {locks.groups_total} "
        f"groups, {locks.locked} of the stack's {n} volumes locked{late}"
    )
    return locks.payload, locks.corrected, what


def _frames_lock(
    arr: np.ndarray, decoded: np.ndarray, room: int, choice: Any, s: Any,
    vrange: tuple[float, float], report: Any = None,
) -> tuple[bytes, np.ndarray, str] | None:  # fmt: skip
    """:func:`_lock` of a 2D time-lapse: one lock for all its frames, each segmented as the
    choice segmented it (:mod:`napari_sciz.core.seglock.frames`)."""
    from ..seglock.frames import build_frames_lock
    from .frames import frame_voxel_size, segment_frames
    from .score import _sigmas

    if report is not None:
        report(0, 1)
    voxel = frame_voxel_size(s.voxel_size)
    references = choice.reference
    if references is None:
        references = segment_frames(arr, voxel, min_distances=choice.spacings)
    lock = build_frames_lock(
        arr, decoded, room, _sigmas(2, voxel, 1.0), references, choice.spacings, vrange, voxel,
        s.cancel,
    )  # fmt: skip
    if lock is None:
        return None
    what = (
        f"{lock.switched} pixels switched sides in {lock.groups} of {lock.groups_total} groups "
        f"over {lock.locked} of the time-lapse's {lock.frames} frames (one lock for all)"
    )
    return lock.payload, lock.corrected, what
