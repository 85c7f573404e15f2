"""Task pre-filters and power maps made block by block, for volumes too large to copy whole.

The encoder reads what it codes one block at a time (``source[box]``,
:meth:`~napari_sciz.core.encode.BlockEncoder.encode`). For a volume measured on its central
box (over :data:`~napari_sciz.core.task.score.SCORE_WHOLE_VOXELS` voxels: a whole float64
copy of a 1 Gi-voxel stack takes 8 GiB, and a band pre-filter makes several) the guided
coding hands it a :class:`BlockwiseVariant` (:func:`blockwise_variant`) instead of the
pre-filtered volume: each block is cut out with a
halo as wide as the filters reach (the Gaussian's radius, and the band's growth), filtered,
cut back and mapped. Inside the halo every value is computed from the same voxels by the
same operations as on the whole volume, and a halo clipped at the volume's edge meets the
same edge handling, so the blocks equal the whole volume's pre-filter (tests check it). The
band's two global levels (the Otsu threshold of the smoothed volume and the noise's
standard deviation) are those of the region the candidates were measured on.

A stack (4D or more: time points or channels of volumes; or the channels of a 2D image,
:func:`~napari_sciz.core.stacking.stacked_axes`) gets a :class:`StackedVariant`
(:func:`blockwise_variant` with a region that picks one volume of the stack): every volume or
image is pre-filtered on its own, as a :class:`BlockwiseVariant` of it (no smoothing across
time points or channels), and mapped by the stack's power map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .band import _GROW, _SIGMA, band_levels, banded, smoothed
from .choice import Candidate, TaskChoice
from .prefilter import _chose, value_map_of
from .score import _sigmas
from .valuemap import ValueMap

__all__ = ["BlockwiseVariant", "StackedVariant", "blockwise_variant"]

#: scipy's Gaussian reaches ``int(_TRUNCATE * sigma + 0.5)`` voxels (its default truncate)
_TRUNCATE = 4.0


@dataclass(frozen=True)
class BlockwiseVariant:
    """What the codec codes for a candidate, made for one block at a time.

    Attributes
    ----------
    volume : numpy.ndarray
        The volume (2D or 3D, any real dtype), read a block and its halo at a time.
    guidance : {"segmentation", "perceptual"}
        The task: a band (segmentation) or a smoothing (perceptual) pre-filter.
    setting : float or None
        Band half-width (noise standard deviations, or voxels around ``labels``) or
        smoothing sigma; None: no pre-filter.
    value_map : PowerMap or CurveMap or None
        The map applied after the pre-filter.
    voxel_size : sequence of float or None
        Physical voxel size (the Gaussians' sigmas per axis).
    labels : numpy.ndarray or None
        The user's labels (a band around their boundaries).
    levels : tuple of float or None
        The band's threshold and noise level (segmentation without labels).
    """

    volume: np.ndarray
    guidance: str
    setting: float | None
    value_map: ValueMap | None
    voxel_size: Sequence[float] | None = None
    labels: np.ndarray | None = None
    levels: tuple[float, float] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The volume's shape."""
        return tuple(self.volume.shape)

    def halo(self) -> tuple[int, ...]:
        """Voxels each axis's box grows by so that its inside is exact."""
        ndim = self.volume.ndim
        if self.setting is None:
            return (0,) * ndim
        if self.guidance != "segmentation":
            sigmas = _sigmas(ndim, self.voxel_size, self.setting)
            return tuple(int(_TRUNCATE * s + 0.5) + 1 for s in sigmas)
        # the band: the mask (the smoothing's or the labels' edges, then its growth) and the
        # smoothing outside it
        sigmas = _sigmas(ndim, self.voxel_size, _SIGMA)
        radii = [int(_TRUNCATE * s + 0.5) for s in sigmas]
        if self.labels is None:
            return tuple(r + _GROW + 1 for r in radii)
        reach = 1 + int(round(self.setting)) + _GROW
        return tuple(max(r, reach) + 1 for r in radii)

    def __getitem__(self, key: Any) -> np.ndarray:
        """The pre-filtered and mapped values of ``volume[key]`` (float64)."""
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.volume.ndim - len(key))
        grown, inner = [], []
        for k, n, h in zip(key, self.volume.shape, self.halo(), strict=True):
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step != 1:
                    raise ValueError("a blockwise variant is read in boxes (step 1)")
                pick: Any = slice
            else:
                start, stop, pick = int(k) % n, int(k) % n + 1, None
            lo, hi = max(start - h, 0), min(stop + h, n)
            grown.append(slice(lo, hi))
            inner.append(slice(start - lo, stop - lo) if pick is slice else start - lo)
        box = tuple(grown)
        values = np.asarray(self.volume[box], np.float64)
        if self.setting is not None:
            values = self._prefiltered(values, box)
        values = values[tuple(inner)]
        return values if self.value_map is None else self.value_map.forward(values)

    def _prefiltered(self, values: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
        assert self.setting is not None
        if self.guidance != "segmentation":
            return smoothed(values, self.voxel_size, self.setting)
        if self.labels is not None:
            labels = np.asarray(self.labels[box])
            return banded(values, self.setting, self.voxel_size, labels)
        if self.levels is None:  # (the measured region smooths to a constant: no band)
            return smoothed(values, self.voxel_size)
        return banded(values, self.setting, self.voxel_size, levels=self.levels)


@dataclass(frozen=True)
class StackedVariant:
    """What the codec codes for a candidate of a stack, a block at a time.

    Every volume (or image) of the stack, the axes after its ``lead`` ones, is pre-filtered
    on its own (``template`` with that volume and its labels), so no filter reaches across
    time points or channels; the power map is the stack's.

    Attributes
    ----------
    volume : numpy.ndarray
        The stack.
    template : BlockwiseVariant
        The settings every volume is pre-filtered and mapped with (its ``volume`` and
        ``labels``: those of the volume measured).
    labels : numpy.ndarray or None
        The user's labels, the stack's shape.
    lead : int
        The stack's leading axes (default: all but the last three).
    """

    volume: np.ndarray
    template: BlockwiseVariant
    labels: np.ndarray | None = None
    lead: int = -1

    @property
    def n_lead(self) -> int:
        """The stack's leading axes."""
        return self.lead if self.lead >= 0 else self.volume.ndim - 3

    @property
    def shape(self) -> tuple[int, ...]:
        """The stack's shape."""
        return tuple(self.volume.shape)

    def of_volume(self, index: tuple[int, ...]) -> BlockwiseVariant:
        """The variant of the volume (or image) at ``index`` (an integer per leading axis)."""
        labels = None if self.labels is None else self.labels[index]
        return replace(self.template, volume=self.volume[index], labels=labels)

    def __getitem__(self, key: Any) -> np.ndarray:
        """The pre-filtered and mapped values of ``volume[key]`` (float64); the leading axes
        are indexed by integers or slices, the others by boxes (step 1)."""
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.volume.ndim - len(key))
        n_lead = self.n_lead
        lead, spatial = key[:n_lead], key[n_lead:]
        ranges = [
            range(*k.indices(n)) if isinstance(k, slice) else [int(k) % n]
            for k, n in zip(lead, self.volume.shape, strict=False)
        ]
        kept = [i for i, k in enumerate(lead) if isinstance(k, slice)]
        parts = [
            self.of_volume(tuple(r[j] for r, j in zip(ranges, at, strict=True)))[spatial]
            for at in np.ndindex(*map(len, ranges))
        ]
        counts = [len(ranges[i]) for i in kept]
        inner = parts[0].shape if parts else ()
        out = np.stack(parts) if parts else np.empty((0, *inner))
        # (np.ndindex walks the kept ranges in C order: the stacked parts take their shape)
        return out.reshape(*counts, *inner) if kept else out.reshape(inner)


def blockwise_variant(
    choice: TaskChoice,
    cand: Candidate,
    volume: np.ndarray,
    voxel_size: Sequence[float] | None,
    labels: np.ndarray | None,
    region: tuple[Any, ...],
) -> tuple[TaskChoice, BlockwiseVariant | StackedVariant]:
    """``choice`` set to code ``cand`` (a pre-filter or power map of
    :attr:`~napari_sciz.core.task.prefilter.TaskChoice.ranked`; not a lock), and what the codec
    codes for it, made block by block (:class:`StackedVariant` for a stack: ``region``
    picks one of its volumes).

    Parameters
    ----------
    choice : TaskChoice
        What the proxy measured.
    cand : Candidate
        The candidate to code.
    volume : numpy.ndarray
        The whole volume (2D or 3D), or a stack.
    voxel_size : sequence of float or None
        Its voxel size (a stack's: that of one of its volumes).
    labels : numpy.ndarray or None
        The user's labels (a band around their boundaries).
    region : tuple
        Where the candidates were measured: the band's levels are measured there. For a
        stack, an integer per leading axis (the volume measured), then a slice per axis of
        a volume; every volume of the stack is then pre-filtered on its own.
    """
    if cand.kind == "lock":
        raise ValueError("a segmentation lock is not a pre-filter")
    lo, hi = float(np.min(volume)), float(np.max(volume))
    vmap = value_map_of(cand, volume[region], lo, hi)  # (the whole stack's range)
    levels = None
    if cand.setting is not None and choice.guidance == "segmentation" and labels is None:
        levels = band_levels(volume[region], voxel_size)
    out = replace(choice, ranked=[])
    _chose(out, cand, vmap)
    lead = tuple(r for r in region if not isinstance(r, slice))  # (a stack's volume)
    one = volume[lead] if lead else volume
    sole = None if labels is None else labels[lead] if lead else labels
    coded = BlockwiseVariant(one, choice.guidance, cand.setting, vmap, voxel_size, sole, levels)
    return out, StackedVariant(volume, coded, labels, len(lead)) if lead else coded
