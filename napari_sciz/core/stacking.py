"""Which leading axes of an array are a stack of volumes or images, not space.

Shared by the encoder's task guidance (:mod:`.task.guided`, :mod:`.task.score`) and the reader of
segmentation locks (:mod:`.header`, :mod:`.lockedview`), which must agree on it. No heavy
imports. A 2D time-lapse (``TYX``) is coded as one volume, but segmented frame by frame
(:func:`is_time_lapse`, :mod:`.task.frames`).
"""

from __future__ import annotations

__all__ = ["is_time_lapse", "stacked_axes"]


def stacked_axes(ndim: int, axes: str | None = None) -> int:
    """How many leading axes of an array are not space but a stack of volumes or images.

    The codec takes the last three axes as a volume: an array of more has ``ndim - 3``
    leading axes (time points, channels). A 3D array whose ``axes`` start with ``C`` (either
    case) is a stack of 2D channels (a colour image is coded so); other 3D arrays (``ZYX``,
    and a 2D time-lapse ``TYX``) are one volume.
    """
    if ndim > 3:
        return ndim - 3
    return 1 if ndim == 3 and axes is not None and axes[:1].upper() == "C" else 0


def is_time_lapse(ndim: int, axes: str | None = None) -> bool:
    """Whether a 3D array is a 2D time-lapse (``axes`` starting with ``T``, either case):
    coded as one volume, segmented frame by frame by segmentation guidance and its scores
    (:mod:`napari_sciz.core.task.frames`)."""
    return ndim == 3 and axes is not None and axes[:1].upper() == "T"
