"""Segmentation lock: the decoded volume segments like the original where it mattered.

A biologist's segmentation (:func:`napari_sciz.core.task.score.segment`) thresholds the
Gaussian-smoothed volume at its Otsu level. At high ratios the decoded volume's threshold
surface drifts from the original's by a voxel or so; where that drift merges two nuclei,
splits one, or loses a small one, the objects no longer match. Under segmentation guidance
the hybrid encoder codes the base at fewer bytes and spends the rest on a *lock*:

* **which voxels switch sides** (:mod:`.select`): the voxels whose side of the surface
  differs between the original and the decode, in connected groups, first those around the
  objects the decode gets wrong, as many as the lock's bytes hold;
* **coded cheaply** (:mod:`.flags`): a switch is likely only near the decoded surface, so the
  flags are coded with the probability of their signed-distance class (:mod:`.geometry`);
* **applied to the values** (:mod:`.project`): the decoder moves the flagged voxels to their
  side with the smallest least-squares change of the decoded values, so that the same
  pipeline run on the decoded volume finds the original's objects there.

The lock is the file's last payload (:mod:`.payload`); the decoder applies it to the whole
decoded volume (:func:`apply_lock`). A stack has a lock per volume, in one payload
(:mod:`.stacked`), applied volume by volume (:mod:`napari_sciz.core.lockedview`); a 2D
time-lapse's frames share one (:mod:`.frames`).
"""

from __future__ import annotations

import warnings
import zlib
from typing import Any

import numpy as np

from ...errors import FormatError
from . import flags as flag_code
from .geometry import contexts, smooth
from .payload import FRAMES_MAGIC, LockPayload
from .project import lock_sides

__all__ = ["LockPayload", "apply_lock", "lock_inputs"]


def lock_inputs(decoded: np.ndarray, sigmas, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The decoded volume's smoothed values and the flags' contexts at ``threshold``."""
    smoothed = smooth(decoded, sigmas)
    return smoothed, contexts(smoothed, threshold)


def crc(array: np.ndarray) -> int:
    """CRC32 of a bool or uint8 array's bytes."""
    return zlib.crc32(np.ascontiguousarray(array, np.uint8).tobytes()) & 0xFFFFFFFF


def checked_flags(ctx: np.ndarray, lock: Any) -> np.ndarray:
    """The flags of ``lock`` (a parsed payload: ``ones``, ``words``, ``flags_crc``) decoded
    in the contexts ``ctx`` and checked (:class:`~napari_sciz.errors.FormatError`)."""
    switch = flag_code.decode(ctx, lock.ones, lock.words)
    if crc(switch) != lock.flags_crc:
        raise FormatError("segmentation lock: the flags do not match their checksum")
    return switch


def _not_applied(decoded: np.ndarray) -> tuple[np.ndarray, bool]:
    """``decoded`` unchanged, with a warning: it is not the decode the encoder locked."""
    warnings.warn(
        "segmentation lock not applied: the base layer decoded differently on this "
        "machine than where the file was written (the decoded volume is still valid)",
        RuntimeWarning,
        stacklevel=3,
    )
    return np.asarray(decoded, np.float64), False


def apply_lock(decoded: np.ndarray, data: bytes) -> tuple[np.ndarray, bool]:
    """Apply the lock payload ``data`` to the decoded volume (2D or 3D; a 2D time-lapse's
    one lock for all frames: :func:`.frames.apply_frames_lock`).

    Parameters
    ----------
    decoded : numpy.ndarray
        The decoded volume (the blocks' output, in the file's dtype).
    data : bytes
        The lock payload.

    Returns
    -------
    corrected : numpy.ndarray
        float64 values (round and clip them into the dtype).
    applied : bool
        False when the decoded volume is not the one the encoder locked (it decoded
        differently on this machine): ``decoded`` is returned unchanged, with a warning.

    Raises
    ------
    FormatError
        A corrupted or truncated payload.
    """
    if bytes(data[:3]) == FRAMES_MAGIC:  # (a 2D time-lapse's frames: one lock for all)
        from .frames import apply_frames_lock

        return apply_frames_lock(decoded, data)
    lock = LockPayload.parse(data, decoded.ndim)
    smoothed = smooth(decoded, lock.sigmas)
    t_ctx, threshold = lock.levels(smoothed)
    ctx = contexts(smoothed, t_ctx)
    if crc(ctx) != lock.context_crc:
        return _not_applied(decoded)
    switch = checked_flags(ctx, lock)
    target = (smoothed > t_ctx) ^ switch
    return lock_sides(decoded, target, switch, threshold, lock.margin, lock.sigmas), True
