"""Every fidelity score of a decode against its original, as ``sciz score`` reports them.

The quality numbers a coding reports (PSNR, SSIM, largest error: :mod:`napari_sciz.core.metrics`,
over the whole array) and the task scores of :mod:`.score`, both tasks, measured where a guided
coding measures them (:func:`~.score.guidance_score`: a stack's middle volume, a large
volume's central box, a time-lapse frame by frame, a colour image channel by channel), plus,
with a ground-truth mask, how the original's and the decode's segmentations each score
against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import InvalidInputError

__all__ = ["decode_report", "scored_where"]


def decode_report(
    original: np.ndarray,
    decoded: np.ndarray,
    *,
    voxel_size: Sequence[float] | None = None,
    axes: str | None = None,
    ground_truth: np.ndarray | None = None,
) -> dict[str, Any]:
    """How ``decoded`` reproduces ``original``: quality and task scores.

    Parameters
    ----------
    original, decoded : numpy.ndarray
        The same shape (a colour image's samples last, as it is read and decoded).
    voxel_size : sequence of float, optional
        Physical step per axis of ``original`` (the segmentation's smoothing uses it).
    axes : str, optional
        Axis letters of ``original`` (``"TYX"``: a time-lapse segmented frame by frame;
        a last ``C``: colour samples).
    ground_truth : numpy.ndarray, optional
        Labels or a mask of ``original``'s shape (``> 0``: foreground; a mask is split into
        its connected objects). Scored where the task is scored on one grey volume or image
        (not on a colour image's channels, nor frame by frame).

    Returns
    -------
    dict
        ``psnr``, ``ssim``, ``max_error``; ``segmentation`` (object F1, Dice, objects of
        the original and of the decode, ``count_error``, and where it was measured);
        ``perceptual`` (MS-SSIM, gradient similarity); with ``ground_truth``,
        ``ground_truth`` (``original`` and ``decoded``: F1, Dice, precision, recall,
        counts), or ``ground_truth_note`` where it cannot be scored.

    Raises
    ------
    InvalidInputError
        Shapes that differ, or a ground truth of another shape.
    """
    from .. import colour
    from ..metrics import max_abs_error, psnr, ssim
    from .score import guidance_score

    a, b = np.asarray(original), np.asarray(decoded)
    if a.shape != b.shape:
        raise InvalidInputError(
            f"the decode's shape {b.shape} is not the original's {a.shape}: is it the file of "
            "this image (or series)?"
        )
    coloured = colour.is_channels_last(a.shape, axes)
    x, y = (colour.coded_first(a), colour.coded_first(b)) if coloured else (a, b)
    out: dict[str, Any] = {
        "psnr": float(psnr(x, y)),
        "ssim": float(ssim(x, y)),
        "max_error": float(max_abs_error(x, y)),
    }
    segmentation = guidance_score("segmentation", a, b, voxel_size, axes)
    if segmentation is not None:
        segmentation["count_error"] = segmentation["found"] - segmentation["objects"]
        out["segmentation"] = segmentation
    perceptual = guidance_score("perceptual", a, b, voxel_size, axes)
    if perceptual is not None:
        out["perceptual"] = perceptual
    if ground_truth is not None:
        out.update(_ground_truth(a, b, np.asarray(ground_truth), voxel_size, axes, coloured))
    return out


def _ground_truth(
    a: np.ndarray, b: np.ndarray, truth: np.ndarray, voxel_size: Sequence[float] | None,
    axes: str | None, coloured: bool,
) -> dict[str, Any]:  # fmt: skip
    """The original's and the decode's segmentations scored against ``truth``, on the part
    of the array the task is scored on."""
    from scipy import ndimage as ndi

    from ..stacking import is_time_lapse
    from .score import scored_selection, segment, segment_original, segmentation_fidelity

    if truth.shape != a.shape:
        raise InvalidInputError(
            f"the ground truth's shape {truth.shape} is not the original's {a.shape}"
        )
    if coloured:
        return {"ground_truth_note": "a ground truth is not scored on a colour image's channels"}
    index, part_axes, _extra = scored_selection(a.shape, axes)
    if is_time_lapse(a[index].ndim, part_axes):
        return {"ground_truth_note": "a ground truth is not scored frame by frame"}
    x, y, gt = a[index], b[index], truth[index]
    if gt.dtype == bool or int(gt.max(initial=0)) <= 1:
        gt = ndi.label(gt > 0)[0]
    spacing = None if voxel_size is None else list(voxel_size)[-x.ndim :]
    reference, seeds = segment_original(x, spacing)
    decoded = segment(y, spacing, min_distance=seeds)
    return {
        "ground_truth": {
            "original": segmentation_fidelity(gt, reference).to_dict(),
            "decoded": segmentation_fidelity(gt, decoded).to_dict(),
        }
    }


def scored_where(task: dict[str, float]) -> str:
    """Where a task score (:func:`~.score.guidance_score`'s) was measured, as a phrase to
    append to it (empty: the whole array): ``" on the central crop"``, ``", frame by frame
    over N frames"``, ``"; averaged over N channels"``..."""
    places = ["the central crop"] if "scored_voxels" in task else []
    for key in ("scored_channel", "scored_volume"):
        if key in task:
            places.append(f"{key[7:]} {int(task[key])} of the stack")
    where = " on " + " of ".join(places) if places else ""
    if "frames" in task:
        where = f", frame by frame over {int(task['frames'])} frames{where}"
    if "channels" in task:
        where = f"; averaged over {int(task['channels'])} channels{where}"
    return where
