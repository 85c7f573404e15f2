"""A 2D time-lapse segmented frame by frame, as a biologist segments one.

The task scores (:mod:`.score`) segment a 3D array as one volume: a 2D time-lapse
(``TYX``) is then smoothed across neighbouring frames and its objects are tubes through
time. Frame by frame, each frame is smoothed, thresholded at its own Otsu level and split by
its own watershed (:func:`~.score.segment` in 2D); the labels are made unique over the
frames, so :func:`~.score.segmentation_fidelity` of two such labellings matches objects
within frames and gives the object F1 pooled over the frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ...errors import InvalidInputError

__all__ = [
    "frame_fidelity",
    "frame_labels",
    "frame_seed_distances",
    "frame_voxel_size",
    "segment_frames",
    "segment_original_frames",
]


def _frames(volume: np.ndarray) -> np.ndarray:
    a = np.asarray(volume)
    if a.ndim != 3:
        raise InvalidInputError(f"a time-lapse of 2D frames is 3D (T, Y, X), got {a.ndim}D")
    return a


def frame_voxel_size(voxel_size: Sequence[float] | None) -> tuple[float, ...] | None:
    """A frame's pixel size (``(y, x)``) from the time-lapse's voxel size (or None)."""
    return None if voxel_size is None else tuple(voxel_size)[-2:]


def frame_labels(frames: Iterable[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Each frame's labels (0 = background, 1..n) stacked into ``shape``, numbered on over
    the frames so that no two frames share a label."""
    out = np.zeros(shape, np.int32)
    offset = 0
    for t, labels in enumerate(frames):
        out[t] = np.where(labels > 0, labels + offset, 0)
        offset += int(labels.max(initial=0))
    return out


def frame_seed_distances(
    volume: np.ndarray, voxel_size: Sequence[float] | None = None
) -> list[int]:
    """The watershed seed spacing of each frame (:func:`~.score.seed_distance`);
    ``voxel_size`` is that of a frame (``(y, x)``)."""
    from .score import seed_distance

    return [seed_distance(frame, voxel_size) for frame in _frames(volume)]


def segment_original_frames(
    volume: np.ndarray, voxel_size: Sequence[float] | None = None
) -> tuple[np.ndarray, list[int]]:
    """:func:`segment_frames` of an original time-lapse and its :func:`frame_seed_distances`,
    each frame's from one smoothing, threshold and labelling
    (:func:`~.score.segment_original`)."""
    from .score import segment_original

    a = _frames(volume)
    segmented = [segment_original(frame, voxel_size) for frame in a]
    return frame_labels((s[0] for s in segmented), a.shape), [s[1] for s in segmented]


def segment_frames(
    volume: np.ndarray,
    voxel_size: Sequence[float] | None = None,
    *,
    min_distances: Sequence[int] | None = None,
) -> np.ndarray:
    """Each frame of ``volume`` (``T, Y, X``) segmented on its own; labels unique over frames.

    Parameters
    ----------
    volume : numpy.ndarray
        The time-lapse.
    voxel_size : sequence of float, optional
        A frame's pixel size (``(y, x)``).
    min_distances : sequence of int, optional
        Seed spacing per frame (default: :func:`frame_seed_distances` of ``volume``; pass
        the original's when segmenting a decode).

    Returns
    -------
    numpy.ndarray
        int32 labels, 0 = background.
    """
    from .score import segment

    a = _frames(volume)
    if min_distances is None:
        min_distances = frame_seed_distances(a, voxel_size)
    if len(min_distances) != a.shape[0]:
        raise InvalidInputError(
            f"{len(min_distances)} seed spacings for a time-lapse of {a.shape[0]} frames"
        )
    frames = zip(a, min_distances, strict=True)
    return frame_labels(
        (segment(frame, voxel_size, min_distance=int(spacing)) for frame, spacing in frames),
        a.shape,
    )


def frame_fidelity(
    original: np.ndarray, decoded: np.ndarray, voxel_size: Sequence[float] | None = None
) -> Any:
    """:func:`~.score.segmentation_fidelity` of ``decoded``'s frames against
    ``original``'s, each segmented with the original frame's seed spacing: object F1 pooled
    over the frames (a :class:`~.score.SegmentationScore`)."""
    from .score import segmentation_fidelity

    reference, spacings = segment_original_frames(original, voxel_size)
    return segmentation_fidelity(
        reference, segment_frames(decoded, voxel_size, min_distances=spacings)
    )
