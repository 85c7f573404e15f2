"""One segmentation lock for every frame of a 2D time-lapse.

A biologist segments a time-lapse frame by frame (:mod:`napari_sciz.core.task.frames`), so
each frame has its own threshold surface (its own Otsu level). Locking each frame apart
(:mod:`.stacked`, header ``segmentation_lock`` version 3) paid a payload head, a table of
counts and the end of an ANS stream per frame, about 45 bytes, for a few flags each: on a
200-frame time-lapse at 256x more bytes than the flags themselves. This lock codes the flags
of all frames in one stream, their contexts pooled (:class:`.payload.FramesLockPayload`;
header version 4): each frame keeps its own levels, which the decoder computes from its
own decode of the frame, and the groups of switches are ranked over the whole time-lapse,
so the bytes go to the frames whose objects need them. Measured on the telomere time-lapse
against a SPERR stand-in decode at 256x with 11.8 kB for the lock: every one of its 5,436
groups in 4.8 kB (frame F1 0.998), where the per-frame locks coded 2,932 groups of 108
frames in 7.6 kB (0.963).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ...errors import CancelledError, FormatError
from . import crc
from .geometry import contexts, otsu, smooth
from .payload import FramesLockPayload, stored
from .project import lock_sides
from .select import _locked, _margin, _order, _Switches, _wrong_objects, coded_prefix

__all__ = [
    "FramesLock",
    "PreparedFrames",
    "apply_frames_lock",
    "build_frames_lock",
    "prepare_frames_lock",
]

#: pixels connected within a frame only (a group of switches never spans frames)
_IN_FRAME = np.zeros((3, 3, 3), bool)
_IN_FRAME[1] = True


@dataclass
class FramesLock:
    """A time-lapse's lock built by :func:`build_frames_lock`.

    Attributes
    ----------
    payload : bytes
        The lock payload (:class:`.payload.FramesLockPayload`).
    corrected : numpy.ndarray
        The decoded time-lapse with the lock applied, in the file's dtype.
    groups, groups_total : int
        Groups of switched pixels coded, and found, over every frame.
    switched, locked, frames : int
        Pixels switched; frames with a switch, and in the time-lapse.
    """

    payload: bytes
    corrected: np.ndarray
    groups: int
    groups_total: int
    switched: int
    locked: int
    frames: int


def _stacked(sigmas: Sequence[float]) -> tuple[float, ...]:
    """A frame's sigmas for the whole time-lapse (none along time: frame by frame)."""
    return (0.0, *sigmas)


def frame_levels(decoded: np.ndarray, sigmas: Sequence[float]) -> tuple[np.ndarray, ...]:
    """The smoothed frames of ``decoded``, each frame's Otsu level and its contexts (uint8)."""
    smoothed = smooth(decoded, _stacked(sigmas))
    levels = np.array([otsu(frame) for frame in smoothed])
    ctx = np.stack([contexts(frame, t) for frame, t in zip(smoothed, levels, strict=True)])
    return smoothed, levels, ctx


def _switches(
    original: np.ndarray, decoded: np.ndarray, sigmas: Sequence[float],
    references: np.ndarray, spacings: Sequence[int], voxel_size: Sequence[float] | None,
    cancel: Callable[[], bool] | None,
) -> _Switches | None:  # fmt: skip
    """What differs between each frame's segmentations of ``original`` and ``decoded``."""
    from ..task.score import segment

    smoothed_o = smooth(original, _stacked(sigmas))
    side_o = np.stack([frame > otsu(frame) for frame in smoothed_o])
    smoothed_d, levels, ctx = frame_levels(decoded, sigmas)
    side_d = smoothed_d > levels[:, None, None]
    wrong = np.zeros(decoded.shape, bool)
    for t, spacing in enumerate(spacings):
        if cancel is not None and cancel():
            raise CancelledError("compression cancelled; no output written")
        labels = segment(decoded[t], voxel_size, min_distance=int(spacing))
        wrong[t] = _wrong_objects(references[t], labels)
    groups, order = _order(side_o != side_d, ctx, wrong, _IN_FRAME)
    if order.size == 0:
        return None
    rank = np.zeros(order.size + 1, np.int64)
    rank[order] = np.arange(1, order.size + 1)
    return _Switches(smoothed_o, levels, side_d, ctx, rank[groups], order)


def _head_size(frames: int) -> Callable[[np.ndarray], int]:
    """The payload's bytes before the words, for counts ``ones`` (no offsets)."""

    def head(ones: np.ndarray) -> int:
        return len(FramesLockPayload((1.0, 1.0), 0.0, 0, 0, frames, {}, ones, b"").pack())

    return head


def build_frames_lock(
    original: np.ndarray,
    decoded: np.ndarray,
    nbytes: int,
    sigmas: Sequence[float],
    references: np.ndarray,
    spacings: Sequence[int],
    value_range: tuple[float, float],
    voxel_size: Sequence[float] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> FramesLock | None:
    """The lock of ``decoded``'s frames against ``original``'s in at most ``nbytes`` bytes.

    Parameters
    ----------
    original, decoded : numpy.ndarray
        The time-lapse (``T, Y, X``) and its base decode (the file's dtype).
    nbytes : int
        Bytes the lock payload may take.
    sigmas : sequence of float
        The segmentation's Gaussian sigma per axis of a frame (pixels).
    references : numpy.ndarray
        Each original frame's segmentation (:func:`napari_sciz.core.task.frames.segment_frames`).
    spacings : sequence of int
        Each frame's watershed seed spacing.
    value_range : (float, float)
        The file's value range.
    voxel_size : sequence of float, optional
        A frame's pixel size.
    cancel : callable, optional
        Checked between frames (:class:`~napari_sciz.errors.CancelledError`).

    Returns
    -------
    FramesLock or None
        None when nothing is switched or nothing fits.
    """
    sigmas = tuple(stored(s) for s in sigmas)
    sw = _switches(original, decoded, sigmas, references, spacings, voxel_size, cancel)
    if sw is None:
        return None
    frames, room = decoded.shape[0], nbytes
    margin = stored(_margin(original, sw.smoothed_o, decoded.dtype))
    for _ in range(3):  # (the offsets' bytes are known once the frames are locked)
        coded = coded_prefix(sw, room, _head_size(frames))
        if coded is None:
            return None
        k, switch, ones, words = coded
        corrected, offsets = _locked_frames(decoded, sw, switch, margin, sigmas, value_range)
        lock = FramesLockPayload(
            sigmas, margin, crc(sw.ctx), crc(switch), frames, offsets, ones, words
        ).pack()
        if len(lock) <= nbytes:
            locked = int(np.count_nonzero(switch.any(axis=(1, 2))))
            return FramesLock(
                lock, corrected, k, int(sw.order.size), int(switch.sum()), locked, frames
            )
        room -= len(lock) - nbytes
    return None


def _locked_frames(
    decoded: np.ndarray, sw: _Switches, switch: np.ndarray, margin: float,
    sigmas: Sequence[float], value_range: tuple[float, float],
) -> tuple[np.ndarray, dict[int, float]]:  # fmt: skip
    """The decoded frames with their switches applied (dtype), and the frames' threshold
    offsets that are not 0 (:func:`.select._locked`, frame by frame)."""
    target = sw.side_d ^ switch
    corrected = np.array(decoded, copy=True)
    offsets: dict[int, float] = {}
    for t in np.flatnonzero(switch.any(axis=(1, 2))):
        level = float(sw.t_ctx[t])
        offset, corrected[t] = _locked(
            decoded[t], target[t], switch[t], level, margin, sigmas, value_range
        )
        if offset:
            offsets[int(t)] = offset
    return corrected, offsets


@dataclass
class PreparedFrames:
    """A time-lapse's lock read and its flags decoded, each frame locked when asked for
    (:meth:`frame`): what the reader keeps, so that showing one frame in napari does not
    wait for every frame's projection.

    Attributes
    ----------
    decoded : numpy.ndarray
        The base decode of the frames (the file's dtype).
    switch, target : numpy.ndarray
        bool: the flagged pixels, and the side of the threshold each pixel is locked to.
    thresholds : numpy.ndarray
        Each frame's threshold (its Otsu level plus its offset).
    margin : float
        The margin kept from the thresholds.
    sigmas : tuple of float
        The smoothing's sigma per axis of a frame.
    applied : bool
        False when the frames decoded differently than where the file was written (the lock
        is then not applied, with a warning: every frame is its base decode).
    """

    decoded: np.ndarray
    switch: np.ndarray
    target: np.ndarray
    thresholds: np.ndarray
    margin: float
    sigmas: tuple[float, ...]
    applied: bool = True

    def locks(self, t: int) -> bool:
        """Whether frame ``t`` has switches (otherwise it is its base decode)."""
        return self.applied and bool(self.switch[t].any())

    def frame(self, t: int) -> np.ndarray:
        """Frame ``t`` with its switches applied (float64)."""
        if not self.locks(t):
            return np.asarray(self.decoded[t], np.float64)
        return lock_sides(
            self.decoded[t], self.target[t], self.switch[t], float(self.thresholds[t]),
            self.margin, self.sigmas,
        )  # fmt: skip


def prepare_frames_lock(decoded: np.ndarray, data: bytes) -> PreparedFrames:
    """Read a time-lapse's lock payload ``data`` and decode its flags against the decoded
    frames ``decoded`` (``T, Y, X``): every frame's smoothing, level and contexts.

    Raises
    ------
    FormatError
        A corrupted or truncated payload, or one for another number of frames.
    """
    from . import _not_applied, checked_flags

    if decoded.ndim != 3:
        raise FormatError("segmentation lock of frames: the file is not a 2D time-lapse")
    lock = FramesLockPayload.parse(data, decoded.shape[0])
    smoothed, levels, ctx = frame_levels(decoded, lock.sigmas)
    none = np.zeros(decoded.shape, bool)
    if crc(ctx) != lock.context_crc:
        _not_applied(decoded)
        return PreparedFrames(decoded, none, none, levels, lock.margin, lock.sigmas, False)
    switch = checked_flags(ctx, lock)
    target = (smoothed > levels[:, None, None]) ^ switch
    offsets = np.array([lock.offsets.get(t, 0.0) for t in range(decoded.shape[0])])
    return PreparedFrames(decoded, switch, target, levels + offsets, lock.margin, lock.sigmas)


def apply_frames_lock(decoded: np.ndarray, data: bytes) -> tuple[np.ndarray, bool]:
    """Apply a time-lapse's lock payload ``data`` to its decoded frames (``T, Y, X``).

    Returns
    -------
    corrected : numpy.ndarray
        float64 values (round and clip them into the dtype).
    applied : bool
        False when the decoded frames are not the ones the encoder locked (they decoded
        differently on this machine): ``decoded`` is returned unchanged, with a warning.

    Raises
    ------
    FormatError
        A corrupted or truncated payload, or one for another number of frames.
    """
    prepared = prepare_frames_lock(decoded, data)
    out = np.asarray(decoded, np.float64).copy()
    for t in range(decoded.shape[0]):
        if prepared.locks(t):
            out[t] = prepared.frame(t)
    return out, prepared.applied
