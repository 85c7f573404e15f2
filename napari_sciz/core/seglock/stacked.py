"""Segmentation locks of a stack: one lock per volume (time point or channel), in one payload.

A stack (``TZYX``, ``CZYX``, the channels of a colour image) is segmented volume by volume,
so each volume has its own threshold surface and its own lock (:mod:`.payload`). The file's
last payload before any outliers then holds them all (header ``segmentation_lock`` version
2; version 3: a 2D time-lapse's frames, as session 54 wrote them; their files are still
read, new ones have one lock for all frames, :mod:`.frames`; see ``docs/format.md``)::

    "SZS" u8 version (1), varint volumes, varint bytes of each volume's lock (0: none)
    | the volumes' lock payloads, in the stack's order (C order of its leading axes)
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import CancelledError, FormatError
from ..bitstream.layout import _varint, payload_head, read_varint

MAGIC = b"SZS"
VERSION = 1
_HEAD = struct.Struct("<3sB")
#: bytes left over that are worth rebuilding a volume's lock for
_REFILL_BYTES = 64

__all__ = [
    "StackedLocks",
    "build_stacked_locks",
    "pack_stacked",
    "parse_stacked",
    "stacked_overhead",
]


def pack_stacked(locks: Sequence[bytes | None]) -> bytes:
    """One payload holding the lock of each volume of a stack (None: that volume has none)."""
    sizes = [0 if lock is None else len(lock) for lock in locks]
    head = _HEAD.pack(MAGIC, VERSION) + _varint(len(locks))
    return head + b"".join(_varint(n) for n in sizes) + b"".join(lock or b"" for lock in locks)


def stacked_overhead(volumes: int, lock_bytes: int) -> int:
    """Bytes :func:`pack_stacked` adds to ``volumes`` locks of at most ``lock_bytes`` each."""
    return _HEAD.size + len(_varint(volumes)) + volumes * len(_varint(max(lock_bytes, 0)))


def parse_stacked(data: bytes, volumes: int) -> list[bytes | None]:
    """The lock payload of each of the stack's ``volumes`` (None: none for that volume).

    Raises
    ------
    FormatError
        Not a stack of locks, a newer version, another number of volumes, or truncated.
    """
    payload_head(data, _HEAD, MAGIC, VERSION, "segmentation locks of a stack")
    try:
        count, pos = read_varint(data, _HEAD.size)
        sizes = []
        for _ in range(min(count, volumes)):
            size, pos = read_varint(data, pos)
            sizes.append(size)
    except FormatError as exc:
        raise FormatError("segmentation lock: truncated payload") from exc
    if count != volumes:
        raise FormatError(f"segmentation lock: {count} volumes' locks for a stack of {volumes}")
    if pos + sum(sizes) != len(data):
        raise FormatError("segmentation lock: the volumes' locks do not fill the payload")
    out: list[bytes | None] = []
    for size in sizes:
        out.append(bytes(data[pos : pos + size]) if size else None)
        pos += size
    return out


@dataclass
class StackedLocks:
    """The locks of a stack's volumes, built by :func:`build_stacked_locks`.

    Attributes
    ----------
    payload : bytes
        The stack's lock payload (:func:`pack_stacked`).
    corrected : numpy.ndarray
        The decoded stack with each volume's lock applied, in the file's dtype.
    locked, volumes : int
        Volumes with a lock, and in the stack.
    reached : int
        Volumes whose lock was built before the deadline (the others have none; a volume
        reached may have none too: nothing to switch, or no switch that fitted its share).
    switched, groups, groups_total : int
        Voxels switched, and groups of switches coded and found, over every volume.
    """

    payload: bytes
    corrected: np.ndarray
    locked: int
    volumes: int
    switched: int
    groups: int
    groups_total: int
    reached: int = 0


def build_stacked_locks(
    original: np.ndarray,
    decoded: np.ndarray,
    lead: int,
    nbytes: int,
    sigmas: Sequence[float],
    first: tuple[int, ...],
    value_range: tuple[float, float],
    voxel_size: Sequence[float] | None = None,
    deadline: float | None = None,
    cancel: Callable[[], bool] | None = None,
    report: Callable[[int, int], None] | None = None,
) -> StackedLocks | None:
    """A lock for each volume of a stack in at most ``nbytes`` bytes in all.

    Each volume is segmented on its own (:func:`napari_sciz.core.task.score.segment`, its own
    seed spacing) and locked against its base decode (:func:`.select.build_lock`). The bytes
    are shared out as the volumes are locked: each gets an equal share of what the earlier
    ones left; what is left at the end (volumes whose switches all fitted in less) goes to
    the volumes whose switches did not all fit, in the same order. Volume ``first`` (the one
    guidance measured) is locked first; past ``deadline`` (a ``perf_counter`` time) the
    volumes left get no lock. (Keeping instead the volumes whose whole locks are smallest,
    as many as the bytes hold, locked more of a time-lapse's frames but fewer of their wrong
    objects: frame F1 0.782-0.894 against 0.796-0.919 with equal shares on the telomere
    time-lapse; not kept.)

    Parameters
    ----------
    original, decoded : numpy.ndarray
        The stack and its base decode (the file's dtype); the first ``lead`` axes index the
        volumes (2D or 3D each).
    lead : int
        Leading axes of the stack.
    nbytes : int
        Bytes the payload may take.
    sigmas : sequence of float
        The segmentation's Gaussian sigma per axis of a volume (voxels).
    first : tuple of int
        The volume to lock first.
    value_range : (float, float)
        The file's value range.
    voxel_size : sequence of float, optional
        Physical step per axis of a volume.
    deadline : float, optional
        No volume is started after it.
    cancel : callable, optional
        Checked before every volume (:class:`~napari_sciz.errors.CancelledError`).
    report : callable, optional
        Called as ``report(done, volumes)`` before each volume of the first pass.

    Returns
    -------
    StackedLocks or None
        None when no volume could be locked.
    """
    shape = original.shape[:lead]
    order = [first, *(i for i in np.ndindex(*shape) if i != first)]
    left = nbytes - stacked_overhead(len(order), nbytes)
    volumes = _Volumes(original, decoded, sigmas, value_range, voxel_size, cancel)
    locks, reached = _equal_shares(volumes, order, left, deadline, report)
    if not locks:
        return None
    corrected = np.array(decoded, copy=True)
    for index, lock in locks.items():
        corrected[index] = lock.corrected
    payload = pack_stacked([locks[i].payload if i in locks else None for i in np.ndindex(*shape)])
    found = list(locks.values())
    return StackedLocks(
        payload, corrected, len(found), len(order), sum(lk.switched for lk in found),
        sum(lk.groups for lk in found), sum(lk.groups_total for lk in found), reached,
    )  # fmt: skip


@dataclass
class _Volumes:
    """The volumes of a stack, locked one at a time (each segmented once, when first met)."""

    original: np.ndarray
    decoded: np.ndarray
    sigmas: Sequence[float]
    value_range: tuple[float, float]
    voxel_size: Sequence[float] | None
    cancel: Callable[[], bool] | None
    segmented: dict[tuple[int, ...], tuple[np.ndarray, int]] = field(default_factory=dict)

    def lock(self, index: tuple[int, ...], size: int) -> Any:
        """Volume ``index``'s lock in at most ``size`` bytes (None: none fits or needed)."""
        from ..task.score import segment_original
        from .select import build_lock

        if self.cancel is not None and self.cancel():
            raise CancelledError("compression cancelled; no output written")
        original = self.original[index]
        if index not in self.segmented:
            self.segmented[index] = segment_original(original, self.voxel_size)
        reference, spacing = self.segmented[index]
        return build_lock(
            original, self.decoded[index], size, self.sigmas, reference, spacing,
            self.value_range, self.voxel_size,
        )  # fmt: skip


_Shares = tuple[dict[tuple[int, ...], Any], int]


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() > deadline


def _equal_shares(
    volumes: _Volumes, order: list[tuple[int, ...]], left: int, deadline: float | None,
    report: Callable[[int, int], None] | None,
) -> _Shares:  # fmt: skip
    """The locks, each volume an equal share of what the earlier ones left, then what is
    left to those whose switches did not all fit; and how many volumes were reached."""
    locks: dict[tuple[int, ...], Any] = {}
    reached = 0
    for done, index in enumerate(order):
        if done and _past(deadline):
            break
        reached += 1
        if report is not None:
            report(done, len(order))
        lock = volumes.lock(index, left // (len(order) - done))
        if lock is not None:
            locks[index] = lock
            left -= len(lock.payload)
        if lock is None or lock.groups == lock.groups_total:
            volumes.segmented.pop(index, None)  # (only a volume that may get more keeps them)
    # (what volumes that needed less left goes to those whose switches did not all fit)
    for index in order:
        lock = locks.get(index)
        if lock is None or lock.groups == lock.groups_total or left < _REFILL_BYTES:
            continue
        if _past(deadline):
            break
        bigger = volumes.lock(index, len(lock.payload) + left)
        if bigger is not None and bigger.groups > lock.groups:
            locks[index] = bigger
            left -= len(bigger.payload) - len(lock.payload)
    return locks, reached
