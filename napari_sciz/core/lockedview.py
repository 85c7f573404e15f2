"""The reader's view of a segmentation-locked file (:mod:`.seglock`): volumes decoded whole,
their lock applied, kept for the next region.

A lock moves values as far as the Gaussian of the segmentation reaches from its flags, over
the whole volume, so a region of a locked volume is cut from the whole locked volume. A
single volume (header ``segmentation_lock`` version 1) is locked once and kept; a stack
(version 2, :mod:`.seglock.stacked`) has a lock per volume, and the last few volumes locked
are kept (:data:`KEEP_VOLUMES`), so that stepping through time points or channels in napari
locks each one once. A 2D time-lapse's one lock for its frames (version 4,
:mod:`.seglock.frames`) is read and its flags decoded once for the whole time-lapse; each
frame is then locked when first shown (the last :data:`KEEP_FRAMES` kept). No Qt.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .blocks import finalize

__all__ = ["KEEP_FRAMES", "KEEP_VOLUMES", "LOCK_BYTES_PER_VOXEL", "LockedView"]

#: memory a segmentation lock takes per voxel of the volume (float64 smoothing, contexts,
#: flags, the corrected copy)
LOCK_BYTES_PER_VOXEL = 48
#: locked volumes of a stack kept in memory (the least recently used go first)
KEEP_VOLUMES = 4
#: locked frames of a time-lapse kept (a frame's lock takes milliseconds)
KEEP_FRAMES = 32

Box = Sequence[tuple[int, int]]


class LockedView:
    """Regions of a segmentation-locked file.

    Parameters
    ----------
    shape : tuple of int
        The file's coded shape.
    lead : int
        Its leading axes that index the volumes (0: one volume; a stack's, as
        :func:`~napari_sciz.core.stacking.stacked_axes` counts them).
    payload : callable
        Returns the lock payload's bytes (read when first needed).
    blocks_region : callable
        Decodes a box from the blocks alone (the base decode).
    dtype, value_range
        The file's dtype and value range (the locked values are rounded and clipped into them).
    """

    def __init__(
        self, shape: tuple[int, ...], lead: int, payload: Callable[[], bytes],
        blocks_region: Callable[[Box], np.ndarray], dtype: np.dtype,
        value_range: tuple[float, float],
    ) -> None:  # fmt: skip
        self.shape, self.lead = shape, lead
        self._payload, self._blocks_region = payload, blocks_region
        self.dtype, self.value_range = dtype, value_range
        #: held while a locked volume is made: not the reader's cache lock, which the decoding
        #: threads it waits for take (holding that one deadlocked a multi-block file)
        self._lock = threading.Lock()
        self._volumes: OrderedDict[int, np.ndarray] = OrderedDict()
        self._locks: list[bytes | None] | None = None
        self._frames: Any = None  # (a time-lapse's one lock, read: .seglock.frames)
        self._warned = False

    @property
    def volumes(self) -> int:
        """Volumes locked one by one (1: a single volume)."""
        return math.prod(self.shape[: self.lead])

    @property
    def volume_voxels(self) -> int:
        """Voxels of one volume."""
        return math.prod(self.shape[self.lead :])

    def fits(self, memory_cap: int) -> bool:
        """Whether this machine has the memory to lock a volume (a warning, once, when not:
        the blocks' decode is then returned, still a valid decode)."""
        need = LOCK_BYTES_PER_VOXEL * self.volume_voxels
        if need <= memory_cap:
            return True
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"segmentation lock not applied: locking this {self.volume_voxels}-voxel "
                f"volume needs about {need / 2**30:.1f} GiB, more than this machine allows; "
                "the blocks' decode is returned",
                RuntimeWarning,
                stacklevel=4,
            )
        return False

    def region(self, box: Box) -> np.ndarray:
        """The locked decode of ``box`` (one ``(start, stop)`` per coded axis)."""
        inner = tuple(slice(a, b) for a, b in box[self.lead :])
        if not self.lead and self._one_for_frames():
            return self._frames_region(box)
        if not self.lead:
            return self._locked(0)[inner].copy()
        out = np.empty(tuple(b - a for a, b in box), self.dtype)
        for index in np.ndindex(*out.shape[: self.lead]):
            src = tuple(i + a for i, (a, _b) in zip(index, box[: self.lead], strict=True))
            volume = int(np.ravel_multi_index(src, self.shape[: self.lead]))
            if self._stack_locks()[volume] is None:  # (no lock: the base decode)
                one = [(s, s + 1) for s in src]
                out[index] = self._blocks_region([*one, *box[self.lead :]])[(0,) * self.lead]
            else:
                out[index] = self._locked(volume)[inner]
        return out

    def _one_for_frames(self) -> bool:
        """Whether the lock is a time-lapse's one lock for its frames (version 4)."""
        from .seglock.payload import FRAMES_MAGIC

        return len(self.shape) == 3 and bytes(self._payload()[:3]) == FRAMES_MAGIC

    def _frames_region(self, box: Box) -> np.ndarray:
        """``box`` of a time-lapse with one lock: its frames locked one by one (kept)."""
        from .seglock.frames import prepare_frames_lock

        with self._lock:
            if self._frames is None:
                base = self._blocks_region([(0, n) for n in self.shape])
                self._frames = prepare_frames_lock(base, self._payload())
        prepared = self._frames
        (t0, t1), inner = box[0], tuple(slice(a, b) for a, b in box[1:])
        out = np.empty((t1 - t0, *(b - a for a, b in box[1:])), self.dtype)
        for i, t in enumerate(range(t0, t1)):
            if not prepared.locks(t):
                out[i] = prepared.decoded[t][inner]
                continue
            with self._lock:
                if t not in self._volumes:
                    self._volumes[t] = finalize(prepared.frame(t), self.dtype, self.value_range)
                    while len(self._volumes) > KEEP_FRAMES:
                        self._volumes.popitem(last=False)
                self._volumes.move_to_end(t)
                out[i] = self._volumes[t][inner]
        return out

    def _stack_locks(self) -> list[bytes | None]:
        """Each volume's lock payload (a stack's; read once)."""
        from .seglock.stacked import parse_stacked

        with self._lock:
            if self._locks is None:
                self._locks = parse_stacked(self._payload(), self.volumes)
            return self._locks

    def _locked(self, volume: int) -> np.ndarray:
        """Volume ``volume`` (0 for a single volume) with its lock applied (kept)."""
        from .seglock import apply_lock

        payload = self._stack_locks()[volume] if self.lead else None
        with self._lock:
            if volume in self._volumes:
                self._volumes.move_to_end(volume)
                return self._volumes[volume]
            src = np.unravel_index(volume, self.shape[: self.lead]) if self.lead else ()
            box = [*((int(i), int(i) + 1) for i in src), *((0, n) for n in self.shape[self.lead :])]
            base = self._blocks_region(box)[(0,) * self.lead]
            values, _applied = apply_lock(base, self._payload() if payload is None else payload)
            self._volumes[volume] = finalize(values, self.dtype, self.value_range)
            while len(self._volumes) > (KEEP_VOLUMES if self.lead else 1):
                self._volumes.popitem(last=False)
            return self._volumes[volume]
