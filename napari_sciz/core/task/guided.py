"""Task guidance of hybrid mode: code the volume more than once, keep the file that serves
the task.

The classical base layers of hybrid mode cannot take a loss, so guidance works on what they
code (:mod:`.prefilter`, chosen on SPERR proxy decodes) or on what the file adds to them:

* a **pre-filtered** volume (segmentation: a task band; perceptual: light smoothing, or a
  power map of the intensities, :mod:`.valuemap`, which the decoder inverts) is coded beside
  the plain volume;
* a **segmentation lock** (:mod:`.seglock`): the plain volume is coded in fewer bytes and the
  rest corrects the side of the segmentation's threshold surface where the objects need it.

Either way the plain file is coded too (half the time left each) and the file that scores
better on the task, at most 1 dB of PSNR below the plain file, is kept
(:meth:`.choice.TaskChoice.better`). Where the codec takes a fraction of the budget,
further candidates of the proxy's ranking are coded as well, and the best file is kept.
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
from ..stacking import is_time_lapse, stacked_axes
from . import score as task_score

__all__ = ["guided_hybrid"]

#: the smallest lock worth coding (bytes)
_MIN_LOCK_BYTES = 64


def guided_hybrid(encoder: BlockEncoder, guidance: str) -> CompressResult:
    """Task guidance of hybrid mode (:mod:`.prefilter`, :mod:`.seglock`).

    The candidate chosen on the SPERR proxy (a fifth of the budget at most) is coded beside
    the plain volume (half the time left each) and the file that scores better on the task is
    kept; without a candidate that measured better on the proxy, only the plain volume is
    coded. While the time left is at least :data:`_TRIALS_AHEAD` times the longest coding so
    far (volumes the codec codes in a fraction of the budget), the next candidates of the
    proxy's ranking are coded too, and the best-scoring file is kept. A volume too large to
    measure whole is measured and scored on its central box
    (:func:`~napari_sciz.core.task.score.scored_region`, :func:`_choose`), and its
    pre-filters and maps are made block by block as the encoder reads them
    (:class:`~napari_sciz.core.task.blockwise.BlockwiseVariant`: no whole float64 copies). A
    stack (4D or more, or the channels of an image) is measured and scored on its middle
    volume or image, and each is pre-filtered on its own (:func:`_choose_stacked`).

    Parameters
    ----------
    encoder : BlockEncoder
        The encoder of the volume (its settings carry no fit guidance).
    guidance : {"segmentation", "perceptual"}
        The task.
    """
    s, t_start = encoder.settings, encoder.t_start
    arr, budget = s.arr, s.budget
    source, choice, region, said = _choose(encoder, guidance)
    clock = _Clock(budget, t_start)
    bare = replace(choice, setting=None, lock_share=None, value_map=None, ranked=[])
    started = time.perf_counter()
    plain = encoder.encode(arr, clock.left(0.5 if choice.chosen else 1.0), bare)
    voxel = _volume_voxel_size(s.voxel_size, stacked_axes(arr.ndim, s.axes))
    trials = _Trials(choice, arr, voxel, plain, region)
    clock.took(time.perf_counter() - started)
    for k, cand in enumerate(choice.ranked):
        first = k == 0 and choice.chosen
        if not first and not clock.room_for_another():
            break
        started = time.perf_counter()
        if first:
            alt, coded = choice, source
        else:
            alt, coded = _variant(choice, cand, arr, encoder, region)
        if alt.lock_share is not None:
            guided = _locked_file(encoder, alt, clock.left(1.0))
        else:
            guided = encoder.encode(coded, clock.left(1.0), alt, alt.value_map)
        if guided is not None:
            trials.add(guided, cand.label, _what(alt))
        clock.took(time.perf_counter() - started)
    kept = trials.kept()
    kept.messages[:0] = said
    kept.encode_seconds = time.perf_counter() - t_start
    return kept


def _choose(
    encoder: BlockEncoder, guidance: str
) -> tuple[np.ndarray, Any, tuple[slice, ...], list[str]]:
    """The volume to code beside the plain one, the choice, the region the files are scored
    on, and what to tell the user.

    Where the task is scored is :func:`~napari_sciz.core.task.score.scored_region` (the
    widget's score after a fit uses the same): up to
    :data:`~napari_sciz.core.task.score.SCORE_WHOLE_VOXELS` the whole volume; a larger one (of
    any size) is measured on its central box: the candidates are chosen on that crop's proxy
    decodes and the coded files are scored on it, without segmentation locks (a lock is built
    against the whole volume's segmentation); what is coded for the chosen candidate is made
    block by block (:func:`~napari_sciz.core.task.blockwise.blockwise_variant`).
    """
    from .blockwise import blockwise_variant
    from .prefilter import choose_prefilter

    s = encoder.settings
    arr = s.arr
    whole = tuple(slice(None) for _ in arr.shape)
    if stacked_axes(arr.ndim, s.axes):
        return _choose_stacked(encoder, guidance)
    region = task_score.scored_region(arr.shape)
    cropped = region != whole
    sub = arr[region]
    deadline = None if s.budget is None else time.perf_counter() + 0.2 * float(s.budget)
    frames = guidance == "segmentation" and is_time_lapse(arr.ndim, s.axes)
    source, choice = choose_prefilter(
        sub, max(int(sub.nbytes / s.ratio), 1), guidance, voxel_size=s.voxel_size,
        labels=None if s.labels is None else s.labels[region], deadline=deadline,
        cancel=s.cancel, locks=not cropped, frames=frames,
    )  # fmt: skip
    said = [choice.describe()] if choice.scores else []
    if frames:
        said.append(
            "segmentation guidance: a 2D time-lapse (axes TYX), segmented frame by frame "
            "(each frame its own Otsu level and watershed)"
        )
    if not cropped:
        return source, choice, region, said
    box = "x".join(str(r.stop - r.start) for r in region)
    lock = "; no segmentation lock" if guidance == "segmentation" else ""
    said.append(
        f"{guidance} guidance: measured on the central {box} voxels of the volume "
        f"(more than {task_score.SCORE_WHOLE_VOXELS} voxels{lock})"
    )
    if not choice.chosen:
        return arr, choice, region, said
    # (the chosen map and pre-filter made for the whole volume, block by block)
    alt, source = blockwise_variant(choice, choice.ranked[0], arr, s.voxel_size, s.labels, region)
    return source, replace(alt, ranked=choice.ranked), region, said


def _choose_stacked(
    encoder: BlockEncoder, guidance: str
) -> tuple[Any, Any, tuple[Any, ...], list[str]]:
    """:func:`_choose` for a stack (:func:`~napari_sciz.core.stacking.stacked_axes`: 4D or
    more, time points or channels of volumes; or the channels of a 2D image): the candidates
    are measured on the middle volume (or image) of the stack, its central box when it is
    large, and scored there; what is coded for the chosen one is every volume pre-filtered on
    its own (:class:`~napari_sciz.core.task.blockwise.StackedVariant`). A segmentation lock,
    where its volumes are measured whole, locks each volume against its own segmentation
    (:func:`~napari_sciz.core.seglock.stacked.build_stacked_locks`)."""
    from .blockwise import blockwise_variant
    from .prefilter import choose_prefilter

    s = encoder.settings
    arr = s.arr
    lead = stacked_axes(arr.ndim, s.axes)
    middle = tuple(n // 2 for n in arr.shape[:lead])
    crop = task_score.scored_region(arr.shape[lead:])
    whole = crop == tuple(slice(None) for _ in crop)
    region = (*middle, *crop)  # (arr[region] is a volume or an image)
    sub = arr[region]
    voxel = _volume_voxel_size(s.voxel_size, lead)
    deadline = None if s.budget is None else time.perf_counter() + 0.2 * float(s.budget)
    source, choice = choose_prefilter(
        sub, max(int(sub.nbytes / s.ratio), 1), guidance, voxel_size=voxel,
        labels=None if s.labels is None else s.labels[region], deadline=deadline,
        cancel=s.cancel, locks=whole,
    )  # fmt: skip
    said = [choice.describe()] if choice.scores else []
    kind = "volume" if sub.ndim == 3 else "image"
    name = {"C": "channel", "T": "time point"}.get(s.axes[:1] if lead == 1 else "", kind)
    where = f"{name} {middle[0] if len(middle) == 1 else middle} of the stack"
    if not whole:
        where += " (its central " + "x".join(str(c.stop - c.start) for c in crop) + " voxels"
        where += "; no segmentation lock)" if guidance == "segmentation" else ")"
    said.append(
        f"{guidance} guidance: measured on {where}, a {'x'.join(map(str, sub.shape))} {kind} "
        f"of the {'x'.join(map(str, arr.shape))} stack; each {kind} is guided on its own"
    )
    if not choice.chosen or choice.lock_share is not None:  # (a lock: each volume's own)
        return arr, choice, region, said
    alt, coded = blockwise_variant(choice, choice.ranked[0], arr, voxel, s.labels, region)
    return coded, replace(alt, ranked=choice.ranked), region, said


def _volume_voxel_size(voxel_size: Sequence[float] | None, lead: int) -> Sequence[float] | None:
    """The voxel size of the volumes the task is scored on: without a stack's ``lead`` axes."""
    if voxel_size is None or not lead:
        return voxel_size
    return tuple(voxel_size)[lead:]


def _variant(
    choice: Any, cand: Any, arr: np.ndarray, encoder: BlockEncoder, region: tuple[Any, ...]
) -> tuple[Any, Any]:
    """``choice`` set to code ``cand``, and what the codec codes for it: the pre-filtered
    volume, or made block by block for a volume measured on a crop or a stack."""
    from .blockwise import blockwise_variant
    from .prefilter import variant

    s = encoder.settings
    lead = stacked_axes(arr.ndim, s.axes)
    whole = region == tuple(slice(None) for _ in arr.shape)
    if cand.kind == "lock" or (not lead and whole):  # (a lock codes the volume itself)
        return variant(choice, cand, arr, s.voxel_size, s.labels)
    voxel = _volume_voxel_size(s.voxel_size, lead)
    return blockwise_variant(choice, cand, arr, voxel, s.labels, region)


def _locked_file(
    encoder: BlockEncoder, choice: Any, seconds: float | None
) -> CompressResult | None:
    """The volume coded in fewer bytes plus a segmentation lock in the rest of the ratio's
    bytes, in ``seconds`` (None when no lock fits). A stack gets a lock per volume (the proxy
    measured one volume's), as many as the time holds (:func:`_lock_time`; the volume
    measured is locked first and always)."""
    from ..metrics import max_abs_error, psnr, ssim

    s = encoder.settings
    arr = s.arr
    lead = stacked_axes(arr.ndim, s.axes)
    frames = choice.spacings is not None  # (a time-lapse: a lock per frame, measured whole)
    total = arr.nbytes / s.ratio
    volumes, budget = _lock_time(math.prod(arr.shape[:lead]), choice.lock_seconds, seconds)
    if frames:
        budget = _frames_lock_time(choice.lock_seconds, seconds)
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
    return CompressResult(
        data=blob,
        reconstruction=corrected,
        header=header,
        ratio=arr.nbytes / len(blob),
        nbytes=len(blob),
        raw_nbytes=arr.nbytes,
        psnr=psnr(arr, corrected),
        ssim=ssim(arr, corrected),
        max_error=max_abs_error(arr, corrected),
        encode_seconds=time.perf_counter() - encoder.t_start,
        device=base.device,
        messages=[*base.messages, note],
    )


#: share of the time left kept for a single volume's lock, built after its base
_LOCK_TIME_SHARE = 0.15
#: a stack's lock of one volume is expected to take this many times the proxy's (which did
#: not segment the original)
_LOCK_TIME_MARGIN = 1.5


def _lock_time(
    volumes: int, proxy_seconds: float, seconds: float | None
) -> tuple[int, float | None]:
    """How many of a stack's ``volumes`` the locks are planned for, and the base's time.

    A single volume's lock keeps :data:`_LOCK_TIME_SHARE` of the time. A stack's keeps what
    its volumes' locks are expected to take (each :data:`_LOCK_TIME_MARGIN` times the
    proxy's ``proxy_seconds``), at most half the time: the base is then sized for the locks
    that time holds (the middle volume's at least), not for volumes that will get none.
    """
    if seconds is None:
        return volumes, None
    if volumes == 1 or proxy_seconds <= 0:
        return volumes, (1.0 - _LOCK_TIME_SHARE) * seconds
    per = _LOCK_TIME_MARGIN * proxy_seconds
    locks = min(max(volumes * per, _LOCK_TIME_SHARE * seconds), 0.5 * seconds)
    return max(1, min(volumes, int(locks / per))), seconds - locks


def _frames_lock_time(proxy_seconds: float, seconds: float | None) -> float | None:
    """The base's time when a time-lapse's frames are locked one by one: the proxy locked
    them in ``proxy_seconds`` (the whole time-lapse), so the locks keep that times
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
    choice segmented it (:mod:`..seglock.frames`)."""
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


#: further candidates are coded while the time left is this many times the longest coding
_TRIALS_AHEAD = 1.5


class _Clock:
    """The time budget of a guided coding: what is left, and whether another coding fits."""

    def __init__(self, budget: float | None, t_start: float) -> None:
        self.budget, self.t_start = budget, t_start
        self.longest = 0.0

    def _rest(self, budget: float) -> float:
        """Seconds left of ``budget``, less a margin for the encoders' last steps."""
        return 0.95 * budget - (time.perf_counter() - self.t_start)

    def left(self, share: float) -> float | None:
        """``share`` of the budget left (at least a twentieth of the budget)."""
        if self.budget is None:
            return None
        return max(self._rest(float(self.budget)), 0.05 * float(self.budget)) * share

    def took(self, seconds: float) -> None:
        """Record a coding's (and its scoring's) duration."""
        self.longest = max(self.longest, seconds)

    def room_for_another(self) -> bool:
        """Whether the time left holds :data:`_TRIALS_AHEAD` codings as long as the longest
        (never without a budget: the time is then unknown)."""
        if self.budget is None:
            return False
        return self._rest(float(self.budget)) >= _TRIALS_AHEAD * self.longest


def _what(choice: Any) -> str:
    """How a guided file differs from the plain one, for the notes."""
    if choice.lock_share is not None:
        return "locked"
    return "pre-filtered" if choice.value_map is None else "power-mapped"


class _Trials:
    """The files coded under guidance, scored on the task: the best one at most
    :data:`~.choice.MAX_PSNR_LOSS` dB of PSNR below the plain file is kept."""

    def __init__(
        self, choice: Any, arr: np.ndarray, voxel_size: Sequence[float] | None,
        plain: CompressResult, region: tuple[slice, ...],
    ) -> None:  # fmt: skip
        self.choice, self.voxel_size, self.plain = choice, voxel_size, plain
        self.region, self.arr = region, arr[region]  # (scored on ``region``)
        self.plain_score: dict[str, float] | None = None  # (scored with the first trial)
        self.coded: list[tuple[str, str, dict[str, float], CompressResult]] = []

    def _score(self, result: CompressResult) -> dict[str, float]:
        assert result.reconstruction is not None
        return self.choice.score(self.arr, result.reconstruction[self.region], self.voxel_size)

    def add(self, result: CompressResult, label: str, what: str) -> None:
        """Score a guided file (``label``: its candidate; ``what``: how it differs)."""
        if self.plain_score is None:
            self.plain_score = self._score(self.plain)
        self.coded.append((label, what, self._score(result), result))

    @property
    def _where(self) -> str:
        """Where the scores were measured, for the notes (empty: the whole volume)."""
        if any(not isinstance(r, slice) for r in self.region):
            return ", on the part of the stack measured"
        whole = self.region == tuple(slice(None) for _ in self.region)
        return "" if whole else ", on the central crop"

    def kept(self) -> CompressResult:
        """The best-scoring file, with notes on what was coded and kept."""
        if not self.coded:
            return self.plain
        assert self.plain_score is not None
        choice, plain = self.choice, self.plain_score
        better = [c for c in self.coded if choice.better(c[2], plain)]
        # (the first of equals: the proxy's ranking breaks ties)
        won = max(better, key=lambda c: choice.key(c[2])) if better else None
        _label, what, score, _ = won or max(self.coded, key=lambda c: choice.key(c[2]))
        name = "MS-SSIM" if choice.guidance == "perceptual" else "object F1"
        out = self.plain if won is None else won[3]
        out.messages.append(
            f"{choice.guidance} guidance: kept the {what if won else 'plain'} file "
            f"({name} {choice.key(score)[0]:.4f} {what} / {choice.key(plain)[0]:.4f} plain, "
            f"PSNR {score['psnr']:.2f} / {plain['psnr']:.2f} dB{self._where})"
        )
        if len(self.coded) > 1:
            out.messages.append(
                f"{choice.guidance} guidance: {len(self.coded)} candidates coded with the "
                "codec (time allowed): "
                + ", ".join(
                    f"{label} {name} {choice.key(sc)[0]:.4f} ({sc['psnr']:.2f} dB)"
                    for label, _w, sc, _r in self.coded
                )
            )
        return out
