"""Segmentation guidance of hybrid mode: spend the bytes where the segmentation can change.

The pipeline a biologist runs (:func:`napari_sciz.core.taskscore.segment`) thresholds the
Gaussian-smoothed volume at its Otsu level: the noise of a voxel matters only where the
smoothed value lies near that level. Away from it, noise is bytes the classical base layer
spends without changing a single label. So, under segmentation guidance, the encoder codes a
*task-banded* version of the volume: voxels outside a band around the threshold are replaced
by their smoothed value (the band: ``|G*v - T| < k * noise``, grown by two voxels; around the
labels' boundaries instead when the user gives labels), and the base spends its bytes on the
boundaries.

The band's width is chosen per volume by measurement, not by a constant: each candidate
(none, ``k`` of :data:`BAND_WIDTHS`) is coded with SPERR at the target size, decoded and
segmented, and the candidate whose segmentation matches the original's best (object F1 at
IoU >= 0.5, then voxel Dice) wins, among those whose PSNR is at most :data:`MAX_PSNR_LOSS` dB
below the plain volume's; "none" wins ties. The hybrid encoder then codes both the plain
volume and the chosen band and keeps the file that scores better by the same rule
(:func:`napari_sciz.core.api.compress`), so a guided file never segments worse than the
plain one it was measured against. The decoder is unchanged (the band only changes what is
coded).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import CancelledError

__all__ = ["BAND_WIDTHS", "MAX_PSNR_LOSS", "BandChoice", "banded", "better", "choose_band"]

#: band half-widths tried, in units of the noise's standard deviation
BAND_WIDTHS = (2.0, 3.0, 5.0)
#: voxels the band grows by (the smoothing's reach)
_GROW = 2
#: Gaussian sigma (voxels along the finest axis) of the segmentation and of the smoothing
_SIGMA = 1.0
#: the most PSNR (dB, against the original) a band may cost against the plain volume
MAX_PSNR_LOSS = 1.0


@dataclass
class BandChoice:
    """What :func:`choose_band` measured and chose.

    Attributes
    ----------
    width : float or None
        The chosen band half-width (noise standard deviations); None: the volume as it is.
    scores : dict
        Per candidate (``"none"``, ``"2"``, ...): object F1 and Dice of the proxy decode.
    seconds : float
        Time the choice took.
    """

    width: float | None
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    #: the reference segmentation and the watershed seed spacing the scores used
    reference: np.ndarray | None = field(default=None, repr=False)
    spacing: int = 3

    def score(
        self, original: np.ndarray, decoded: np.ndarray, voxel_size: Sequence[float] | None
    ) -> dict[str, float]:
        """Object F1, Dice and PSNR of ``decoded`` as the choice measured its candidates."""
        from .taskscore import segment, segmentation_fidelity

        assert self.reference is not None
        seg = segmentation_fidelity(
            self.reference, segment(decoded, voxel_size, min_distance=self.spacing)
        )
        return {"f1": seg.f1, "dice": seg.dice, "psnr": _psnr(original, decoded)}

    def to_header(self) -> dict:
        """The header entries of a file coded with this choice."""
        return {"guidance": "segmentation", "task_band": self.width}

    def describe(self) -> str:
        """One line for the user: the band chosen and the scores that chose it."""
        chosen = "none" if self.width is None else f"{self.width:g}"
        parts = ", ".join(f"{k}: F1 {v['f1']:.3f}" for k, v in self.scores.items())
        return (
            f"segmentation guidance: band {chosen} noise s.d. chosen on a SPERR proxy "
            f"({parts}; {self.seconds:.1f} s)"
        )


def _psnr(original: np.ndarray, decoded: np.ndarray) -> float:
    a = np.asarray(original, np.float64)
    span = float(a.max() - a.min()) or 1.0
    mse = float(np.mean((np.asarray(decoded, np.float64) - a) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(span * span / mse))


def better(candidate: dict[str, float], plain: dict[str, float]) -> bool:
    """Whether ``candidate`` segments better than ``plain`` (object F1, then Dice) at a PSNR
    at most :data:`MAX_PSNR_LOSS` dB below it."""
    if candidate["psnr"] < plain["psnr"] - MAX_PSNR_LOSS:
        return False
    return (candidate["f1"], candidate["dice"]) > (plain["f1"], plain["dice"])


def _smoothed(volume: np.ndarray, voxel_size: Sequence[float] | None) -> np.ndarray:
    from scipy import ndimage as ndi

    from .taskscore import _sigmas

    return ndi.gaussian_filter(volume, _sigmas(volume.ndim, voxel_size, _SIGMA))


def band_mask(
    volume: np.ndarray,
    width: float,
    voxel_size: Sequence[float] | None = None,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Voxels whose noise can change the segmentation (bool, the volume's shape).

    Without ``labels``: ``|G*v - T| < width * noise`` (``T`` the Otsu level of ``G*v``, noise
    the standard deviation of ``v - G*v``); with ``labels``: within ``width`` voxels of a
    boundary between labels. Both grown by two voxels.
    """
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    if labels is not None:
        lab = np.asarray(labels)
        edge = np.zeros(lab.shape, bool)
        for axis in range(lab.ndim):
            step = np.diff(lab, axis=axis) != 0
            lead = [slice(None)] * lab.ndim
            lead[axis] = slice(1, None)
            edge[tuple(lead)] |= step
            lead[axis] = slice(None, -1)
            edge[tuple(lead)] |= step
        return ndi.binary_dilation(edge, iterations=int(round(width)) + _GROW)
    smooth = _smoothed(volume, voxel_size)
    if float(smooth.max()) == float(smooth.min()):
        return np.zeros(volume.shape, bool)
    noise = float(np.std(volume - smooth))
    near = np.abs(smooth - threshold_otsu(smooth)) < width * noise
    return ndi.binary_dilation(near, iterations=_GROW)


def banded(
    volume: np.ndarray,
    width: float,
    voxel_size: Sequence[float] | None = None,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """``volume`` (float64) with the voxels outside :func:`band_mask` smoothed."""
    v = np.asarray(volume, np.float64)
    return np.where(band_mask(v, width, voxel_size, labels), v, _smoothed(v, voxel_size))


def _proxy_decode(volume: np.ndarray, nbytes: int) -> np.ndarray | None:
    """``volume`` through SPERR at about ``nbytes`` bytes (None without SPERR)."""
    from .hybrid.bases import SPERRBase

    sperr = SPERRBase()
    if not sperr.available():
        return None
    block = volume.reshape((1, *volume.shape) if volume.ndim == 2 else volume.shape)
    bpp = 8.0 * nbytes / volume.size
    stream = sperr.encode(block, bpp)
    return sperr.decode(stream, block.shape).reshape(volume.shape)  # type: ignore[arg-type]


def choose_band(
    volume: np.ndarray,
    nbytes: int,
    *,
    voxel_size: Sequence[float] | None = None,
    labels: np.ndarray | None = None,
    deadline: float | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, BandChoice]:
    """The version of ``volume`` to code under segmentation guidance, and why.

    Parameters
    ----------
    volume : numpy.ndarray
        2D or 3D intensities (bright objects).
    nbytes : int
        Bytes the volume will be coded in.
    voxel_size : sequence of float, optional
        Physical step per axis.
    labels : numpy.ndarray, optional
        The user's labels (the reference segmentation, and the band around their boundaries).
    deadline : float, optional
        ``perf_counter`` time after which no further candidate is measured.
    cancel : callable, optional
        Checked before every candidate (:class:`~napari_sciz.errors.CancelledError`).

    Returns
    -------
    volume : numpy.ndarray
        The banded volume (float64), or ``volume`` itself when no band measured better.
    choice : BandChoice
    """
    from scipy import ndimage as ndi

    from .taskscore import seed_distance, segment

    t0 = time.perf_counter()
    v = np.asarray(volume, np.float64)
    spacing = seed_distance(v, voxel_size)
    if labels is None:
        reference = segment(v, voxel_size, min_distance=spacing)
    else:
        lab = np.asarray(labels)
        reference = ndi.label(lab > 0)[0] if lab.dtype == bool or lab.max() <= 1 else lab
    choice = BandChoice(None, {}, 0.0, reference, spacing)
    plain: dict[str, float] | None = None
    best: tuple[dict[str, float], float | None, np.ndarray] | None = None
    for width in (None, *BAND_WIDTHS):
        if cancel is not None and cancel():
            raise CancelledError("compression cancelled; no output written")
        if best is not None and deadline is not None and time.perf_counter() > deadline:
            break
        candidate = v if width is None else banded(v, width, voxel_size, labels)
        decoded = _proxy_decode(candidate, nbytes)
        if decoded is None:
            choice.seconds = time.perf_counter() - t0
            return volume, choice
        score = choice.score(v, decoded, voxel_size)
        choice.scores["none" if width is None else f"{width:g}"] = score
        eligible = plain is None or score["psnr"] >= plain["psnr"] - MAX_PSNR_LOSS
        plain = plain or score
        key = (score["f1"], score["dice"])
        if eligible and (best is None or key > (best[0]["f1"], best[0]["dice"])):
            best = (score, width, candidate)
    assert best is not None
    _, choice.width, chosen = best
    choice.seconds = time.perf_counter() - t0
    return (volume if choice.width is None else chosen), choice
