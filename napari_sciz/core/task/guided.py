"""Task guidance of hybrid mode: code the volume more than once, keep the file that serves
the task.

The classical base layers of hybrid mode cannot take a loss, so guidance works on what they
code (:mod:`.prefilter`, chosen on SPERR proxy decodes) or on what the file adds to them:

* a **pre-filtered** volume (segmentation: a task band; perceptual: light smoothing, or a
  power map or sensitivity curve of the intensities, :mod:`.valuemap`, which the decoder
  inverts) is coded beside the plain volume;
* a **segmentation lock** (:mod:`napari_sciz.core.seglock`, :mod:`.lockedfile`): the plain
  volume is coded in fewer bytes and the rest corrects the side of the segmentation's
  threshold surface where the objects need it.

Either way the plain file is coded too (half the time left each) and the file that scores
better on the task, at most 0.9 dB of PSNR below the plain file, is kept
(:meth:`.choice.TaskChoice.better`; 1 dB less a margin for the spread between runs, so
that it stays within 1 dB of an unguided run's file too). Where the codec takes a fraction
of the budget, further candidates of the proxy's ranking are coded as well, and the best
file is kept.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..encode import BlockEncoder
from ..result import CompressResult
from ..stacking import is_time_lapse, stacked_axes
from . import score as task_score
from .choice import CODED_PSNR_LOSS
from .lockedfile import _locked_file, _volume_voxel_size

__all__ = ["TrialClock", "guided_hybrid"]


def guided_hybrid(encoder: BlockEncoder, guidance: str) -> CompressResult:
    """Task guidance of hybrid mode (:mod:`.prefilter`, :mod:`napari_sciz.core.seglock`).

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
    # (the plain file and the first guided one are scored after both are coded)
    clock = TrialClock(budget, t_start, 2.0 * choice.score_seconds if choice.ranked else 0.0)
    bare = replace(choice, setting=None, lock_share=None, value_map=None, halved=False, ranked=[])
    started = time.perf_counter()
    plain = encoder.encode(arr, clock.left(0.5 if choice.chosen else 1.0), bare)
    voxel = _volume_voxel_size(s.voxel_size, stacked_axes(arr.ndim, s.axes))
    trials = _Trials(choice, arr, voxel, plain, region)
    clock.took(time.perf_counter() - started)
    for k, cand in enumerate(choice.ranked):
        first = k == 0 and choice.chosen
        if not first and not clock.room_for_another():
            break
        if not first and trials.too_harsh(cand):
            continue
        started = time.perf_counter()
        if first:
            alt, coded = choice, source
        else:
            alt, coded = _variant(choice, cand, arr, encoder, region)
        if alt.lock_share is not None:
            guided = _locked_file(encoder, alt, clock.left(1.0))
        else:
            guided = encoder.encode(coded, clock.left(1.0), alt, alt.value_map, alt.halved)
        if guided is not None:
            trials.add(cand, guided, _what(alt))
        clock.reserve = 0.0  # (scored: further trials' times include their scoring)
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
    deadline = _proxy_deadline(s.budget, guidance)
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
    deadline = _proxy_deadline(s.budget, guidance)
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


#: share of the time budget the SPERR proxy's candidates may take, by guidance (else 0.2): a
#: segmentation's first candidate after the plain volume is the lock, which the segmentation
#: of a large image (about 5 s per decode of 16 Mpx on 2 cores) kept out of a fifth of 120 s
_PROXY_SHARE = {"segmentation": 0.3}


def _proxy_deadline(budget: float | None, guidance: str) -> float | None:
    """When the proxy's candidates must end (None without a budget)."""
    if budget is None:
        return None
    return time.perf_counter() + _PROXY_SHARE.get(guidance, 0.2) * float(budget)


#: further candidates are coded while the time left is this many times the longest coding
_TRIALS_AHEAD = 1.5


class TrialClock:
    """The time budget of a guided coding: what is left, and whether another coding fits."""

    def __init__(self, budget: float | None, t_start: float, reserve: float = 0.0) -> None:
        self.budget, self.t_start = budget, t_start
        self.longest = 0.0
        #: seconds kept for work after the codings (the first files' scoring)
        self.reserve = reserve

    def _rest(self, budget: float) -> float:
        """Seconds left of ``budget``, less a margin for the encoders' last steps and the
        :attr:`reserve`."""
        return 0.95 * budget - (time.perf_counter() - self.t_start) - self.reserve

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


def _why(what: str, higher: bool, score: dict[str, float], plain: dict[str, float]) -> str:
    """Why the plain file was kept although the best guided file (``what``) scored
    ``higher`` on the task: it cost more PSNR than the keep rule allows (empty otherwise)."""
    if not higher:
        return ""
    loss = plain["psnr"] - score["psnr"]
    return (
        f"; the {what} file scored higher but cost {loss:.2f} dB of PSNR, more than the "
        f"{CODED_PSNR_LOSS:g} dB allowed"
    )


def _what(choice: Any) -> str:
    """How a guided file differs from the plain one, for the notes."""
    if choice.lock_share is not None:
        return "locked"
    if choice.halved and choice.value_map is None and choice.setting is None:
        return "half-resolution"
    return "pre-filtered" if choice.value_map is None else "value-mapped"


class _Trials:
    """The files coded under guidance, scored on the task: the best one at most
    :data:`~.choice.CODED_PSNR_LOSS` dB of PSNR below the plain file is kept."""

    def __init__(
        self, choice: Any, arr: np.ndarray, voxel_size: Sequence[float] | None,
        plain: CompressResult, region: tuple[slice, ...],
    ) -> None:  # fmt: skip
        self.choice, self.voxel_size, self.plain = choice, voxel_size, plain
        self.region, self.arr = region, arr[region]  # (scored on ``region``)
        self.plain_score: dict[str, float] | None = None  # (scored with the first trial)
        self.coded: list[tuple[str, str, dict[str, float], CompressResult]] = []
        #: the smoothing sigma (None: none) and the scores of every file coded
        self._smoothing: list[tuple[float | None, dict[str, float]]] = []

    def _score(self, result: CompressResult) -> dict[str, float]:
        assert result.reconstruction is not None
        return self.choice.score(self.arr, result.reconstruction[self.region], self.voxel_size)

    def add(self, cand: Any, result: CompressResult, what: str) -> None:
        """Score a guided file (``cand``: its candidate; ``what``: how it differs)."""
        if self.plain_score is None:
            self.plain_score = self._score(self.plain)
        score = self._score(result)
        self.coded.append((cand.label, what, score, result))
        self._smoothing.append((cand.setting, score))

    def too_harsh(self, cand: Any) -> bool:
        """Perceptual guidance: whether a file coded with a smoothing of at most ``cand``'s
        sigma (whatever map came after it) already lost more PSNR against the plain file than
        the keep rule allows. Where the codec keeps more of the volume than the SPERR proxy
        does, the smoothing removes what it would have kept, and the proxy does not see it
        (bia at 128x: every candidate within 0.25 dB of the plain volume on the proxy, those
        smoothed 1.3-2.7 dB below the plain file once coded)."""
        plain = self.plain_score
        if self.choice.guidance != "perceptual" or cand.setting is None or plain is None:
            return False
        return any(
            score["psnr"] < plain["psnr"] - CODED_PSNR_LOSS
            and sigma is not None
            and sigma <= cand.setting
            for sigma, score in self._smoothing
        )

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
            f"PSNR {score['psnr']:.2f} / {plain['psnr']:.2f} dB{self._where}"
            f"{'' if won else _why(what, choice.key(score) > choice.key(plain), score, plain)})"
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
