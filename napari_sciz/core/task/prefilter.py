"""Task guidance of hybrid mode: code a pre-filtered volume, chosen by the task's score.

The classical base layers of hybrid mode cannot take a loss, but what they are given to code
can change. Under task guidance the encoder codes a *pre-filtered* version of the volume,
chosen per volume by measuring the task on trial decodes:

* **Segmentation** (:func:`banded`). The pipeline a biologist runs
  (:func:`napari_sciz.core.task.score.segment`) thresholds the Gaussian-smoothed volume at its
  Otsu level: the noise of a voxel matters only where the smoothed value lies near that level.
  Voxels outside a band ``|G*v - T| < k * noise`` (grown by two voxels; around the labels'
  boundaries when the user gives labels) are replaced by their smoothed value, so the base
  spends its bytes on the boundaries. Candidates: no band, ``k`` in :data:`BAND_WIDTHS`;
  score: object F1 at IoU >= 0.5, then voxel Dice.
* **Perceptual** (:func:`smoothed`, :mod:`.valuemap`). A light Gaussian pre-smoothing (sigma
  in :data:`SMOOTH_SIGMAS`) removes noise the base would otherwise spend bytes on, which keeps
  more of the structure MS-SSIM weighs; a power map of the intensities (exponents in
  :data:`POWER_EXPONENTS`, alone or after the lightest smoothing) gives the dark values, where
  an error is a lost structure, more of the codec's precision than the bright ones, where
  shot noise hides it (the decoder maps the values back); a sensitivity curve (alone or
  after the lightest smoothing) gives every intensity the precision MS-SSIM's weight of the
  voxels of that intensity asks for, measured on the volume. The plain volume and the
  curves are also candidates coded at half the in-plane resolution (the codec's base codes
  the planes' 2x2 means in the same bytes, the decoder interpolates them back:
  :mod:`napari_sciz.core.hybrid.halved`), which puts the bytes on the coarser scales MS-SSIM
  weighs most. Score: MS-SSIM, then gradient similarity.

Each candidate is coded with SPERR at the target size (the proxy: one encode), decoded and
scored against the original; the best score among the candidates at most
:data:`MAX_PSNR_LOSS` dB of PSNR below the plain volume wins (the plain volume wins ties).
The hybrid encoder then codes the plain volume and the winner (time allowing, the next ones
of :attr:`TaskChoice.ranked` too) and keeps the file that scores best by the same rule
(:mod:`napari_sciz.core.task.guided`), so a guided file never scores
worse than the plain file it was measured against. The decoder is unchanged, but for the
value map (header ``value_map``) and the segmentation lock (:mod:`napari_sciz.core.seglock`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ...errors import CancelledError
from .band import _SIGMA, band_mask, banded, smoothed
from .choice import MAX_PSNR_LOSS, Candidate, TaskChoice
from .valuemap import PowerMap, ValueMap, fit_curve

__all__ = [
    "BAND_WIDTHS",
    "Candidate",
    "LOCK_SHARES",
    "MAX_PSNR_LOSS",
    "POWER_EXPONENTS",
    "SMOOTH_SIGMAS",
    "TaskChoice",
    "band_mask",
    "banded",
    "choose_prefilter",
    "smoothed",
    "value_map_of",
    "variant",
]

#: band half-widths tried, in units of the noise's standard deviation
BAND_WIDTHS = (2.0, 3.0, 5.0)
#: pre-smoothing sigmas (voxels along the finest axis) tried under perceptual guidance
SMOOTH_SIGMAS = (0.5, 0.7)
#: exponents of the power maps tried under perceptual guidance (:mod:`.valuemap`)
POWER_EXPONENTS = (0.5, 0.35)
#: shares of the bytes tried for a segmentation lock (:mod:`napari_sciz.core.seglock`)
LOCK_SHARES = (0.2, 0.35)
#: perceptual candidates whose MS-SSIM is within this share of the best one's gain over the
#: plain volume tie: the one with the highest PSNR (the gentlest) ranks first
TIE_SHARE = 0.02


def _proxy_decode(volume: np.ndarray, nbytes: int) -> np.ndarray | None:
    """``volume`` through SPERR at about ``nbytes`` bytes (None without SPERR)."""
    from ..hybrid.bases import SPERRBase

    sperr = SPERRBase()
    if not sperr.available():
        return None
    block = volume.reshape((1, *volume.shape) if volume.ndim == 2 else volume.shape)
    bpp = 8.0 * nbytes / volume.size
    stream = sperr.encode(block, bpp)
    return sperr.decode(stream, block.shape).reshape(volume.shape)  # type: ignore[arg-type]


def _halved_proxy_decode(volume: np.ndarray, nbytes: int) -> np.ndarray | None:
    """``volume``'s planes halved, through SPERR at about ``nbytes`` bytes, interpolated back
    (:mod:`napari_sciz.core.hybrid.halved`; None without SPERR)."""
    from ..hybrid.halved import halve, unhalve

    shape3 = (1, *volume.shape) if volume.ndim == 2 else volume.shape
    decoded = _proxy_decode(halve(volume.reshape(shape3)), nbytes)
    return None if decoded is None else unhalve(decoded, shape3).reshape(volume.shape)  # type: ignore[arg-type]


def _candidates(guidance: str, lock: bool) -> list[Candidate]:
    """The candidates in the order they are measured: the plain volume first."""
    if guidance != "segmentation":
        return [
            Candidate("none"),
            *(Candidate("smooth", x) for x in SMOOTH_SIGMAS),
            Candidate("curve"),  # (before the power maps: a deadline cuts the last ones)
            Candidate("curve", halved=True),
            *(Candidate("power", None, p) for p in POWER_EXPONENTS),
            Candidate("power", SMOOTH_SIGMAS[0], POWER_EXPONENTS[0]),
            Candidate("curve", SMOOTH_SIGMAS[0]),
            Candidate("none", halved=True),
            Candidate("curve", SMOOTH_SIGMAS[0], halved=True),
        ]
    locks = [Candidate("lock", f) for f in LOCK_SHARES] if lock else []
    return [Candidate("none"), *locks, *(Candidate("band", x) for x in BAND_WIDTHS)]


def _locked_proxy(
    volume: np.ndarray,
    v: np.ndarray,
    nbytes: int,
    share: float,
    choice: TaskChoice,
    voxel_size: Sequence[float] | None,
) -> tuple[np.ndarray, int, float] | None:
    """The proxy decode at ``1 - share`` of the bytes with a lock in the rest, the lock's
    size, and the seconds it took to build (None without SPERR, or when no lock fits). A
    time-lapse's frames get one lock for all (:mod:`napari_sciz.core.seglock.frames`)."""
    from ..blocks import finalize
    from ..seglock.gauss import warm_up
    from ..seglock.select import build_lock
    from .score import _sigmas

    decoded = _proxy_decode(v, int(nbytes * (1.0 - share)))
    if decoded is None:
        return None
    vrange = (float(volume.min()), float(volume.max()))
    base = finalize(decoded, volume.dtype, vrange)
    assert choice.reference is not None
    warm_up()  # (compiled outside the time measured: a stack's locks are planned with it)
    started = time.perf_counter()
    if choice.spacings is not None:  # (a time-lapse: one lock for its frames, as it is coded)
        from ..seglock.frames import build_frames_lock
        from .frames import frame_voxel_size

        frame = frame_voxel_size(voxel_size)
        made = build_frames_lock(
            volume, base, int(nbytes * share), _sigmas(2, frame, _SIGMA), choice.reference,
            choice.spacings, vrange, frame,
        )  # fmt: skip
        if made is None:
            return None
        return made.corrected, len(made.payload), time.perf_counter() - started
    lock = build_lock(
        volume, base, int(nbytes * share), _sigmas(volume.ndim, voxel_size, _SIGMA),
        choice.reference, choice.spacing, vrange, voxel_size,
    )  # fmt: skip
    if lock is None:
        return None
    return lock.corrected, len(lock.payload), time.perf_counter() - started


def _prefiltered(
    v: np.ndarray,
    guidance: str,
    setting: float,
    voxel_size: Sequence[float] | None,
    labels: np.ndarray | None,
) -> np.ndarray:
    if guidance == "segmentation":
        return banded(v, setting, voxel_size, labels)
    return smoothed(v, voxel_size, setting)


def _reference(
    v: np.ndarray, voxel_size: Sequence[float] | None, labels: np.ndarray | None
) -> tuple[np.ndarray, int]:
    """The segmentation decodes are scored against, and the watershed seed spacing."""
    from scipy import ndimage as ndi

    from .score import seed_distance, segment_original

    if labels is None:
        return segment_original(v, voxel_size)
    spacing = seed_distance(v, voxel_size)
    lab = np.asarray(labels)
    return (ndi.label(lab > 0)[0] if lab.dtype == bool or lab.max() <= 1 else lab), spacing


def _frames_reference(
    v: np.ndarray, voxel_size: Sequence[float] | None, labels: np.ndarray | None
) -> tuple[np.ndarray, list[int]]:
    """:func:`_reference` of a 2D time-lapse segmented frame by frame, and each frame's seed
    spacing (a mask given as labels is split into objects frame by frame; labels numbered
    as tracks, the same number for a cell in every frame, are numbered on over the frames:
    a frame's objects are scored as its own)."""
    from scipy import ndimage as ndi

    from .frames import (
        frame_labels,
        frame_seed_distances,
        frame_voxel_size,
        segment_original_frames,
    )

    frame = frame_voxel_size(voxel_size)
    if labels is None:
        return segment_original_frames(v, frame)
    spacings = frame_seed_distances(v, frame)
    lab = np.asarray(labels)
    if not (lab.dtype == bool or lab.max() <= 1):
        return frame_labels(iter(lab), lab.shape), spacings
    return frame_labels((ndi.label(f > 0)[0] for f in lab), lab.shape), spacings


def choose_prefilter(
    volume: np.ndarray,
    nbytes: int,
    guidance: str,
    *,
    voxel_size: Sequence[float] | None = None,
    labels: np.ndarray | None = None,
    deadline: float | None = None,
    cancel: Callable[[], bool] | None = None,
    locks: bool = True,
    frames: bool = False,
) -> tuple[np.ndarray, TaskChoice]:
    """The version of ``volume`` to code under task ``guidance``, and why.

    Parameters
    ----------
    volume : numpy.ndarray
        2D or 3D intensities (bright objects for segmentation).
    nbytes : int
        Bytes the volume will be coded in.
    guidance : {"segmentation", "perceptual"}
        The task.
    voxel_size : sequence of float, optional
        Physical step per axis.
    labels : numpy.ndarray, optional
        The user's labels (segmentation: the reference, and the band around their boundaries).
    deadline : float, optional
        ``perf_counter`` time: no candidate starts that the previous one's duration says would
        end after it (the plain volume is always measured). Moved on by the time the
        original's segmentation takes (the coded files are scored against it too).
    cancel : callable, optional
        Checked before every candidate (:class:`~napari_sciz.errors.CancelledError`).
    locks : bool
        Whether segmentation locks are candidates (never with ``labels``).
    frames : bool
        ``volume`` is a 2D time-lapse (``T, Y, X``): segmentation guidance scores it frame
        by frame (:mod:`.frames`), and its locks are a lock per frame.

    Returns
    -------
    volume : numpy.ndarray
        The pre-filtered volume (float64), or ``volume`` itself when none measured better.
    choice : TaskChoice
    """
    t0 = time.perf_counter()
    v = np.asarray(volume, np.float64)
    choice = TaskChoice(guidance)
    if guidance == "segmentation" and frames:
        choice.reference, choice.spacings = _frames_reference(v, voxel_size, labels)
    elif guidance == "segmentation":
        choice.reference, choice.spacing = _reference(v, voxel_size, labels)
    if deadline is not None:  # (the reference scores the coded files too: not the proxy's)
        deadline += time.perf_counter() - t0
    lockable = locks and labels is None and np.asarray(volume).dtype.kind in "uif"
    measured: list[_M] = []
    last = 0.0  # seconds the previous candidate took
    maps = _Maps(v)
    for cand in _candidates(guidance, lockable):
        if cancel is not None and cancel():
            raise CancelledError("compression cancelled; no output written")
        started = time.perf_counter()
        if measured and deadline is not None and started + last > deadline:
            break  # (the next candidate would end after the deadline)
        trial = _trial(cand, np.asarray(volume), v, nbytes, choice, voxel_size, labels, maps)
        if trial.decoded is None:
            if cand.kind != "none" or cand.halved:
                continue  # (no lock fits; nothing to map or to halve)
            break  # (no SPERR)
        scoring = time.perf_counter()
        score = choice.score(v, trial.decoded, voxel_size)
        choice.score_seconds = max(choice.score_seconds, time.perf_counter() - scoring)
        last = time.perf_counter() - started
        choice.scores[cand.label] = score
        lock = {"lock_bytes": trial.lock_bytes, "lock_seconds": trial.lock_seconds}
        measured.append((score, replace(cand, **lock), trial))
    choice.seconds = time.perf_counter() - t0
    if not measured:
        return volume, choice
    plain = measured[0][0]
    within = [m for m in measured[1:] if m[0]["psnr"] >= plain["psnr"] - MAX_PSNR_LOSS]
    within.sort(key=lambda m: choice.key(m[0]), reverse=True)
    if guidance == "perceptual":
        within = _gentlest_first(within, plain)
    choice.ranked = [m[1] for m in within]
    if not within or not choice.key(within[0][0]) > choice.key(plain):
        return volume, choice
    best, trial = within[0][1], within[0][2]
    _chose(choice, best, trial.value_map)
    # (a lock, and the volume at half resolution, code the volume itself)
    return (volume if best.kind in ("lock", "none") else trial.coded), choice


def _gentlest_first(ranked: list[_M], plain: dict[str, float]) -> list[_M]:
    """``ranked`` (best MS-SSIM first) with the highest-PSNR candidate of those tied with the
    best (within :data:`TIE_SHARE` of its gain over ``plain``) moved to the front.

    Proxy scores tie to the sixth digit where the smoothing of sigma 0.5 and of 0.7 remove the
    same noise (img_terra_2d at 64x: 0.987637 and 0.987639, at 40.59 and 40.16 dB); the
    stronger smoothing then costs the coded file more PSNR than the proxy showed (1.04 dB
    against the plain file, past :data:`MAX_PSNR_LOSS`), and the gentler one serves the task
    as well.
    """
    if len(ranked) < 2:
        return ranked
    top = ranked[0][0]["ms_ssim"]
    tie = TIE_SHARE * (top - plain["ms_ssim"])
    if not tie > 0.0:
        return ranked  # (no gain over the plain volume: nothing ties with a winner)
    tied = [m for m in ranked if m[0]["ms_ssim"] >= top - tie]
    gentlest = max(tied, key=lambda m: m[0]["psnr"])  # (the first of equal PSNRs)
    return [gentlest, *(m for m in ranked if m is not gentlest)]


def _chose(choice: TaskChoice, cand: Candidate, value_map: ValueMap | None) -> None:
    """Set ``choice``'s fields to code ``cand``."""
    if cand.kind == "lock":
        choice.setting, choice.lock_share, choice.lock_bytes = None, cand.setting, cand.lock_bytes
        choice.lock_seconds = cand.lock_seconds
    else:
        choice.setting, choice.lock_share, choice.lock_bytes = cand.setting, None, 0
        choice.lock_seconds = 0.0
    choice.value_map, choice.halved = value_map, cand.halved


def variant(
    choice: TaskChoice,
    cand: Candidate,
    volume: np.ndarray,
    voxel_size: Sequence[float] | None = None,
    labels: np.ndarray | None = None,
) -> tuple[TaskChoice, np.ndarray]:
    """``choice`` set to code ``cand`` (one of its :attr:`~TaskChoice.ranked`), and what the
    codec codes for it (``volume`` itself for a lock)."""
    out = replace(choice, ranked=[])
    if cand.kind == "lock":
        _chose(out, cand, None)
        return out, volume
    coded, vmap = _coded(cand, np.asarray(volume, np.float64), choice.guidance, voxel_size, labels)
    _chose(out, cand, vmap)
    return out, coded


def _coded(
    cand: Candidate,
    v: np.ndarray,
    guidance: str,
    voxel_size: Sequence[float] | None,
    labels: np.ndarray | None,
    maps: _Maps | None = None,
) -> tuple[np.ndarray, ValueMap | None]:
    """What the codec codes for a pre-filter or value-map candidate (``v``: the volume as
    float64), and the map (None without one, or for a constant volume, which has nothing to
    map; ``maps``: those of ``v`` made so far)."""
    coded = v
    if cand.setting is not None:
        coded = _prefiltered(v, guidance, cand.setting, voxel_size, labels)
    vmap = (maps or _Maps(v)).of(cand)
    return (coded, None) if vmap is None else (vmap.forward(coded), vmap)


class _Maps:
    """The value maps of one volume's candidates, over its range: its sensitivity curve is
    fitted once (about a second per 4 Mi voxels), whether or not a smoothing comes first."""

    def __init__(self, v: np.ndarray) -> None:
        self.v, self.lo, self.hi = v, float(v.min()), float(v.max())
        self._curve: ValueMap | None = None

    def of(self, cand: Candidate) -> ValueMap | None:
        """``cand``'s map (None for a candidate without one, or a constant volume)."""
        if cand.kind != "curve":
            return value_map_of(cand, self.v, self.lo, self.hi)
        if self._curve is None:
            self._curve = value_map_of(cand, self.v, self.lo, self.hi)
        return self._curve


def value_map_of(cand: Candidate, sample: np.ndarray, lo: float, hi: float) -> ValueMap | None:
    """The map of a power-map or curve candidate for values in ``[lo, hi]`` (None for other
    candidates, or for a constant volume, which has nothing to map). A curve is fitted to
    ``sample``, the volume or the part of it the candidates are measured on."""
    if cand.kind not in ("power", "curve") or not hi > lo:
        return None
    if cand.kind == "curve":
        return fit_curve(sample, lo, hi)
    assert cand.exponent is not None
    return PowerMap.for_range(cand.exponent, lo, hi)


@dataclass
class _Trial:
    """One candidate measured on the proxy."""

    decoded: np.ndarray | None  # the proxy's decode in the volume's units (None: none)
    coded: np.ndarray  # what the codec would code
    lock_bytes: int = 0  # the lock's bytes (a segmentation lock)
    value_map: ValueMap | None = None  # the map ``coded`` went through
    lock_seconds: float = 0.0  # seconds the lock took to build


#: a measured candidate: its proxy scores, itself, its trial
_M = tuple[dict[str, float], Candidate, _Trial]


def _trial(
    cand: Candidate,
    volume: np.ndarray,
    v: np.ndarray,
    nbytes: int,
    choice: TaskChoice,
    voxel_size: Sequence[float] | None,
    labels: np.ndarray | None,
    maps: _Maps,
) -> _Trial:
    """One candidate's proxy decode (``volume`` as given, ``v`` the same as float64, ``maps``
    its value maps)."""
    if cand.kind == "lock":
        assert cand.setting is not None
        locked = _locked_proxy(volume, v, nbytes, cand.setting, choice, voxel_size)
        if locked is None:
            return _Trial(None, v)
        return _Trial(locked[0], v, locked[1], lock_seconds=locked[2])
    from ..hybrid.halved import MIN_SIDE

    if cand.halved and min(v.shape[-2:]) < MIN_SIDE:
        return _Trial(None, v)  # (planes too small for the codec to halve)
    coded, vmap = _coded(cand, v, choice.guidance, voxel_size, labels, maps)
    if cand.kind in ("power", "curve") and vmap is None:
        return _Trial(None, v)  # (a constant volume has nothing to map)
    decoded = (_halved_proxy_decode if cand.halved else _proxy_decode)(coded, nbytes)
    if vmap is not None and decoded is not None:
        decoded = vmap.inverse(decoded)
    return _Trial(decoded, coded, 0, vmap)
