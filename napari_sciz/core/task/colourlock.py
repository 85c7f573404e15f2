"""Segmentation guidance of a colour image coded as decorrelated planes: the planes coded in
fewer bytes, each channel locked in the rest.

An 8- or 16-bit RGB(A) image is coded in hybrid mode as decorrelated planes of its samples
(:mod:`..colourtransform`): about 1.5 dB above its samples coded as they are. A biologist
segments its channels (a stain each), not the planes, so segmentation guidance codes the
planes in part of the ratio's bytes, decodes the channels through the transform as the
reader does, and spends the rest on a segmentation lock of each channel against the
original channel's segmentation (:func:`~napari_sciz.core.seglock.stacked.build_stacked_locks`;
header ``segmentation_lock`` version 5: the reader applies each channel's lock to the
channel it decodes through the transform). The plain planes are coded too, in half the
time, and the locked file is kept when its channels segment better (object F1, then Dice,
averaged over the channels) at most :data:`~.choice.CODED_PSNR_LOSS` dB of the image's PSNR
below the plain file. The lock's share of the bytes starts at a fifth and, while the time
left holds another coding, moves down where the lock cost more PSNR than allowed and up
where it did not (:data:`LOCK_SHARES`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from ...errors import RatioUnreachableError
from ..bitstream import container
from ..result import CompressResult
from . import score as task_score
from .choice import CODED_PSNR_LOSS
from .guided import TrialClock

if TYPE_CHECKING:  # pragma: no cover
    from ..colourtransform import ColourTransform

__all__ = ["FIRST_SHARE", "LOCK_SHARES", "LOCK_VERSION", "colour_segmentation"]

#: shares of the file's bytes the channels' locks may be given: from :data:`FIRST_SHARE`, the
#: next smaller one while a lock costs more PSNR than allowed, else the next larger one (the
#: lock candidates segmentation guidance measures on one-channel volumes, :mod:`.prefilter`,
#: and half the smaller one)
LOCK_SHARES = (0.1, 0.2, 0.35)
#: the share tried first
FIRST_SHARE = 0.2
#: ``segmentation_lock`` version of a colour image's channels locked through its transform
LOCK_VERSION = 5
#: the guidance the header records
GUIDANCE = "segmentation"
#: the smallest lock worth coding (bytes)
_MIN_LOCK_BYTES = 64
#: share of a locked coding's time kept for building the locks after its base
_LOCK_TIME_SHARE = 0.15

#: the note of an image whose channels are too large to lock
_TOO_LARGE = (
    "segmentation guidance: a colour image of more than "
    f"{task_score.SCORE_WHOLE_VOXELS} pixels per channel is coded as decorrelated planes "
    "without locks (a lock is built against a whole channel's segmentation)"
)

#: codes decorrelated planes at a ratio in a time (seconds, or None): the default hybrid
#: coding of the planes, its reconstruction the decoded planes
PlaneCoder = Callable[[np.ndarray, float, "float | None"], CompressResult]


@dataclass(frozen=True)
class _Channels:
    """The original channels (samples first) and how each one segments."""

    image: np.ndarray
    labels: list[np.ndarray]
    spacings: list[int]
    voxel_size: Sequence[float] | None

    @classmethod
    def of(cls, image: np.ndarray, voxel_size: Sequence[float] | None) -> _Channels:
        """Each channel of ``image`` segmented by the task's pipeline."""
        spacings, labels = [], []
        for channel in image:
            segmented, spacing = task_score.segment_original(channel, voxel_size)
            spacings.append(spacing)
            labels.append(segmented)
        return cls(image, labels, spacings, voxel_size)

    def score(self, decoded: np.ndarray) -> tuple[float, float]:
        """(object F1, Dice) of ``decoded``'s channels (samples first), averaged."""
        f1, dice = [], []
        for k, channel in enumerate(decoded):
            labels = task_score.segment(channel, self.voxel_size, min_distance=self.spacings[k])
            got = task_score.segmentation_fidelity(self.labels[k], labels)
            f1.append(got.f1)
            dice.append(got.dice)
        return float(np.mean(f1)), float(np.mean(dice))


def colour_segmentation(
    arr: np.ndarray,
    ratio: float,
    transform: ColourTransform,
    code_planes: PlaneCoder,
    *,
    budget: float | None,
    voxel_size: Sequence[float] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> CompressResult:
    """Segmentation guidance of a colour image coded through ``transform``.

    Parameters
    ----------
    arr : numpy.ndarray
        The image, samples last (3 or 4: ``YXC``, ``ZYXC``).
    ratio : float
        The ratio asked for.
    transform : ColourTransform
        Its decorrelating transform.
    code_planes : callable
        ``code_planes(planes, ratio, seconds)``: the hybrid coding of the planes.
    budget : float or None
        Time budget in seconds (None: one locked coding after the plain one).
    voxel_size : sequence of float, optional
        A channel's voxel size (the segmentation's smoothing and seeds use it).
    cancel : callable, optional
        Returns True when the job is cancelled.

    Returns
    -------
    CompressResult
        The kept file (its reconstruction in the image's layout), with notes on what was
        measured.
    """
    from ..colour import coded_first, restore_transformed

    t_start = time.perf_counter()
    clock = TrialClock(budget, t_start)
    image = coded_first(arr)
    planes = transform.forward(image)
    planes_ratio = _planes_ratio(ratio, image, transform, 0.0)
    if image[0].size > task_score.SCORE_WHOLE_VOXELS:  # (a lock needs whole channels)
        plain = code_planes(planes, planes_ratio, budget)
        plain = restore_transformed(plain, transform, arr, ratio, guidance=GUIDANCE)
        return replace(plain, messages=[*plain.messages, _TOO_LARGE])
    channels = _Channels.of(image, voxel_size)
    plain_planes = code_planes(planes, planes_ratio, clock.left(0.5))
    plain = restore_transformed(plain_planes, transform, arr, ratio, guidance=GUIDANCE)
    assert plain.reconstruction is not None
    plain_key = channels.score(np.moveaxis(plain.reconstruction, -1, 0))
    clock.took(time.perf_counter() - t_start)
    coded: list[tuple[float, tuple[float, float], CompressResult]] = []
    share: float | None = FIRST_SHARE
    while share is not None:
        started = time.perf_counter()
        locked = _locked(
            image, ratio, transform, planes, share, code_planes, channels, clock, cancel
        )
        if locked is not None:
            assert locked.reconstruction is not None
            key = channels.score(np.moveaxis(locked.reconstruction, -1, 0))
            coded.append((share, key, locked))
        clock.took(time.perf_counter() - started)
        loss = None if locked is None else plain.psnr - locked.psnr
        share = _next_share(share, loss, [c[0] for c in coded])
        if share is not None and not clock.room_for_another():
            break
    return _kept(plain, plain_key, coded, time.perf_counter() - t_start)


def _next_share(share: float, loss: float | None, tried: Sequence[float]) -> float | None:
    """The share of :data:`LOCK_SHARES` to try after ``share`` cost ``loss`` dB of PSNR
    against the plain file (None: no lock fitted): the next smaller one where it cost more
    than :data:`~.choice.CODED_PSNR_LOSS`, else the next larger one; None when that one was
    ``tried`` or there is none."""
    if loss is None:
        return None
    k = LOCK_SHARES.index(share) + (-1 if loss > CODED_PSNR_LOSS else 1)
    if not 0 <= k < len(LOCK_SHARES) or LOCK_SHARES[k] in tried:
        return None
    return LOCK_SHARES[k]


def _planes_ratio(
    ratio: float, image: np.ndarray, transform: ColourTransform, share: float
) -> float:
    """The ratio to code the planes at so that the file, with the colour keys and a lock of
    ``share`` of the bytes, meets ``ratio``."""
    from ..colour import coded_ratio

    planes_nbytes = image.size * np.dtype(np.uint16).itemsize
    got = coded_ratio(ratio / (1.0 - share), image.nbytes, transform, planes_nbytes, GUIDANCE)
    return float(got if got is not None else ratio)


def _locked(
    image: np.ndarray, ratio: float, transform: ColourTransform, planes: np.ndarray,
    share: float, code_planes: PlaneCoder, channels: _Channels, clock: TrialClock,
    cancel: Callable[[], bool] | None,
) -> CompressResult | None:  # fmt: skip
    """The planes coded in ``1 - share`` of the bytes and the channels of ``image`` (samples
    first) locked in the rest (None when no lock fits); its reconstruction samples last."""
    from ..colour import transformed_keys
    from ..seglock.stacked import build_stacked_locks

    seconds = clock.left(1.0)
    base_seconds = None if seconds is None else (1.0 - _LOCK_TIME_SHARE) * seconds
    try:
        base = code_planes(planes, _planes_ratio(ratio, image, transform, share), base_seconds)
    except RatioUnreachableError:  # (a tiny image: its planes need the lock's bytes)
        return None
    assert base.reconstruction is not None
    decoded = transform.inverse(base.reconstruction)
    header = {
        **base.header,
        **transformed_keys(base.header, transform, ratio, GUIDANCE),
        "task_lock_share": share,
        "segmentation_lock": {"version": LOCK_VERSION},
    }
    with container.SciZFile(base.data) as f:
        payloads = [f.payload(i) for i in range(f.n_payloads)]
    at = len(payloads) - (1 if "outliers" in header else 0)  # (the lock before the outliers)
    room = int(image.nbytes / ratio) - len(container.pack(header, [*payloads, b""]))
    if room < _MIN_LOCK_BYTES:
        return None
    deadline = None if seconds is None else time.perf_counter() + _LOCK_TIME_SHARE * seconds
    sigmas = task_score._sigmas(image.ndim - 1, channels.voxel_size, 1.0)
    locks = build_stacked_locks(
        image, decoded, 1, room, sigmas, (image.shape[0] // 2,), transform.value_range,
        channels.voxel_size, deadline, cancel,
    )  # fmt: skip
    if locks is None:
        return None
    blob = container.pack(header, [*payloads[:at], locks.payload, *payloads[at:]])
    note = (
        "segmentation lock of each channel (for the smooth / Otsu / watershed segmentation, "
        f"sigma 1 pixel): {locks.switched} pixels switched sides in {locks.groups} of "
        f"{locks.groups_total} groups, {locks.locked} of the {locks.volumes} channels locked, "
        f"{len(locks.payload)} bytes ({100.0 * len(locks.payload) / len(blob):.0f} % of the file)"
    )
    result = CompressResult.measured(
        image, blob, header, locks.corrected, raw_nbytes=image.nbytes,
        encode_seconds=base.encode_seconds, device=base.device, messages=[*base.messages, note],
    )  # fmt: skip
    return replace(result, reconstruction=np.moveaxis(locks.corrected, 0, -1))


def _kept(
    plain: CompressResult,
    plain_key: tuple[float, float],
    coded: list[tuple[float, tuple[float, float], CompressResult]],
    seconds: float,
) -> CompressResult:
    """The locked file that segments best, where it segments better than the plain file at
    most :data:`CODED_PSNR_LOSS` dB below it; else the plain file. With notes."""
    allowed = [c for c in coded if c[2].psnr >= plain.psnr - CODED_PSNR_LOSS and c[1] > plain_key]
    won = max(allowed, key=lambda c: c[1]) if allowed else None
    out = plain if won is None else won[2]
    tried = ", ".join(
        f"lock in {share:.0%}: F1 {key[0]:.4f} ({result.psnr:.2f} dB)"
        for share, key, result in coded
    )
    kept = "plain" if won is None else f"locked ({won[0]:.0%} of the bytes)"
    note = (
        "segmentation guidance: a colour image, coded as decorrelated planes with each "
        f"channel locked; kept the {kept} file (object F1 averaged over the channels: plain "
        f"{plain_key[0]:.4f} ({plain.psnr:.2f} dB)" + (f", {tried}" if tried else "") + ")"
    )
    higher = [c for c in coded if c[1] > plain_key]
    if won is None and higher:  # (each segmented better and cost more PSNR than allowed)
        loss = plain.psnr - max(c[2].psnr for c in higher)
        note += (
            f"; the locked file segmented better but cost {loss:.2f} dB of PSNR, more than "
            f"the {CODED_PSNR_LOSS:g} dB allowed"
        )
    return replace(out, messages=[*out.messages, note], encode_seconds=seconds)
