"""Application guidance: extra training losses that favour what a downstream task needs.

Following INIF (application-guided fitting), the fitting loop of a block may add a task loss to
the plain ``MSE + lambda * rate`` objective. Two guidance modes are implemented:

``"segmentation"``
    The reference mask of the block is the given labels (``labels > 0``) or, without labels, an
    automatic foreground segmentation (Otsu threshold of the block). Voxels reconstructed on the
    wrong side of the reference threshold cost their squared distance to it (``side`` weight);
    optionally the reconstruction is soft-thresholded (a sigmoid) and scored by soft Dice
    against the mask (``dice`` weight, off by default); the squared error on a band of voxels
    around the mask's boundary gets an extra weight (``boundary``), since that is where a
    threshold segmentation flips.
``"perceptual"``
    ``1 - SSIM`` of the crop as the evaluation computes it (per 2D slice, 7x7 uniform window;
    ``ssim`` weight) plus, optionally, the L1 distance of the finite-difference gradients
    (``gradient`` weight). LPIPS is not used: it needs pretrained weights, which the codec does
    not ship or download.

Weights are relative: :meth:`Guidance.calibrate` scales every term so that its excess at the
block's starting point is worth ``weight`` times the starting MSE (see ``docs/guidance.md``).

The module is Qt-free and imports torch only inside functions, so importing it is cheap. The
fitting loop calls :meth:`Guidance.prepare` once per block (normalised values in ``[0, 1]``) and
:meth:`Guidance.loss` on every training crop; :meth:`Guidance.objective` scores a whole block
(used to decide whether training beat its starting point). Decoding is unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError
from .refmask import _labels_threshold, boundary_band, otsu_threshold
from .taskloss import _gradient_l1, soft_dice, ssim_slices, ssim_torch

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "DEFAULT_WEIGHTS",
    "GUIDANCE_MODES",
    "Guidance",
    "boundary_band",
    "check_guidance",
    "defaults_of",
    "make_guidance",
    "weight_overrides",
    "otsu_threshold",
    "soft_dice",
    "ssim_slices",
    "ssim_torch",
]

#: Guidance modes understood by :func:`napari_sciz.core.api.compress`.
GUIDANCE_MODES: tuple[str, ...] = ("none", "segmentation", "perceptual")

#: Default weights of the extra loss terms of each mode (normalised intensities in [0, 1]).
DEFAULT_WEIGHTS: dict[str, dict[str, float]] = {
    "none": {},
    "segmentation": {
        "dice": 20.0,
        "side": 0.3,
        "boundary": 0.1,
        "sharpness": 0.3,
        "band_radius": 1.0,
        "max_psnr_loss": 1.0,
    },
    "perceptual": {"ssim": 30.0, "gradient": 0.0, "max_psnr_loss": 1.0},
}


#: Defaults of earlier versions (a header records only the weights that differ from the
#: defaults of its writer, named by its ``library`` entry).
EARLIER_DEFAULTS: dict[str, dict[str, dict[str, float]]] = {
    "0.1.0": {
        "none": {},
        "segmentation": {
            "dice": 0.0,
            "side": 0.3,
            "boundary": 0.1,
            "sharpness": 0.01,
            "band_radius": 1.0,
        },
        "perceptual": {"ssim": 0.4, "gradient": 0.0},
    },
}


def defaults_of(library: Any, mode: str) -> dict[str, float]:
    """The default weights of ``mode`` in the version named by a header's ``library`` entry.

    ``library`` is e.g. ``"napari-sciz 0.1.0"``; an unknown or missing entry gives this
    version's :data:`DEFAULT_WEIGHTS`.

    Examples
    --------
    >>> defaults_of("napari-sciz 0.1.0", "perceptual")
    {'ssim': 0.4, 'gradient': 0.0}
    """
    version = str(library).rsplit(" ", 1)[-1] if isinstance(library, str) else ""
    table = EARLIER_DEFAULTS.get(version, DEFAULT_WEIGHTS)
    return dict(table.get(mode, DEFAULT_WEIGHTS.get(mode, {})))


def check_guidance(
    mode: Any, weights: Mapping[str, float] | None = None
) -> tuple[str, dict[str, float]]:
    """Validate a guidance mode and its weights; return the mode and the complete weights.

    Parameters
    ----------
    mode : str or None
        ``"none"``, ``"segmentation"`` or ``"perceptual"`` (``None`` means ``"none"``).
    weights : mapping, optional
        Overrides of :data:`DEFAULT_WEIGHTS` for that mode.

    Returns
    -------
    tuple
        ``(mode, weights)`` with every weight of the mode filled in.

    Raises
    ------
    InvalidInputError
        Unknown mode, unknown weight name, or a negative / non-finite weight.
    """
    mode = "none" if mode is None else mode
    if not isinstance(mode, str) or mode.lower() not in GUIDANCE_MODES:
        raise InvalidInputError(
            f"unknown guidance {mode!r}; choose one of {', '.join(GUIDANCE_MODES)}"
        )
    mode = mode.lower()
    full = dict(DEFAULT_WEIGHTS[mode])
    if weights:
        if not isinstance(weights, Mapping):
            raise InvalidInputError("guidance_weights must be a mapping of name to number")
        for key, value in weights.items():
            if key not in full:
                known = ", ".join(full) or "none"
                raise InvalidInputError(
                    f"unknown guidance weight {key!r} for {mode!r} guidance (known: {known})"
                )
            try:
                v = float(value)
            except (TypeError, ValueError):
                v = math.nan
            if not (math.isfinite(v) and v >= 0):
                raise InvalidInputError(f"guidance weight {key!r} must be >= 0, got {value!r}")
            full[key] = v
    return mode, full


def weight_overrides(mode: str, weights: Mapping[str, float]) -> dict[str, float]:
    """The weights of ``mode`` that differ from :data:`DEFAULT_WEIGHTS` (what a header records).

    At high ratios a file of a small stack is a few hundred bytes, and every header byte is
    taken from the latents: recording all the weights of a guided fit cost stardist_img3d 4-8 %
    of its payload at 256x. The header's ``library`` entry names the version whose defaults
    fill in the rest.

    Examples
    --------
    >>> weight_overrides("segmentation", {**DEFAULT_WEIGHTS["segmentation"], "side": 1.0})
    {'side': 1.0}
    """
    defaults = DEFAULT_WEIGHTS[mode]
    return {k: float(v) for k, v in weights.items() if defaults.get(k) != float(v)}


class Guidance:
    """Extra loss terms of one guidance mode for the blocks of one image.

    Parameters
    ----------
    mode : str
        ``"none"``, ``"segmentation"`` or ``"perceptual"``.
    weights : mapping, optional
        Overrides of :data:`DEFAULT_WEIGHTS`:

        * segmentation: ``side`` (weight of the squared distance to the threshold of the
          voxels on its wrong side), ``dice`` (weight of ``1 - soft Dice``), ``boundary``
          (weight of the squared error on the boundary band), ``sharpness``
          (sigmoid temperature of the soft threshold, in units of the RMS error of the
          reconstruction it is calibrated on), ``band_radius`` (half-width of the boundary
          band in voxels), ``max_psnr_loss`` (dB the fit may give up for its task);
        * perceptual: ``ssim`` (weight of ``1 - SSIM``), ``gradient`` (weight of the L1
          distance of finite-difference gradients), ``max_psnr_loss``.

    Examples
    --------
    >>> import numpy as np
    >>> g = Guidance("segmentation")
    >>> block = np.zeros((1, 32, 32)); block[0, 8:24, 8:24] = 1
    >>> g.prepare(block, None)
    >>> round(g.threshold, 1)
    0.0
    """

    def __init__(self, mode: str = "none", weights: Mapping[str, float] | None = None) -> None:
        self.mode, self.weights = check_guidance(mode, weights)
        self.threshold = 0.5
        self.mask: torch.Tensor | None = None
        self.band: torch.Tensor | None = None
        self.mse0: float | None = None
        self.scales: dict[str, float] | None = None
        self.floors: dict[str, float] = {}
        #: temperature of the soft threshold: ``sharpness`` times the RMS error of the
        #: calibration reconstruction (``sharpness`` itself before calibration)
        self.temperature = float(self.weights.get("sharpness", 1.0))

    @property
    def max_psnr_loss(self) -> float:
        """How many dB of PSNR the guided fit may give up against its plain reference."""
        return float(self.weights.get("max_psnr_loss", 0.0))

    @property
    def active(self) -> bool:
        """Whether the mode adds any loss term."""
        return self.mode != "none"

    def header(self) -> dict[str, Any]:
        """The ``"guidance"`` entry of the file header: mode and weights (JSON-ready)."""
        return {"mode": self.mode, "weights": dict(self.weights)}

    def prepare(
        self,
        block_normalised: np.ndarray,
        labels_block: np.ndarray | None = None,
        device: str = "cpu",
    ) -> None:
        """Compute the block's reference segmentation (segmentation mode; a no-op otherwise).

        Parameters
        ----------
        block_normalised : numpy.ndarray
            ``(D, H, W)`` block values scaled to ``[0, 1]``.
        labels_block : numpy.ndarray, optional
            Labels of the same voxels (``> 0`` is foreground). Without labels, the Otsu
            threshold of the block defines the foreground.
        device : str
            Torch device of the training tensors.
        """
        import torch

        if self.mode != "segmentation":
            return
        x = np.asarray(block_normalised, np.float64)
        if labels_block is not None:
            mask = np.asarray(labels_block).reshape(x.shape) > 0
            self.threshold = _labels_threshold(x, mask)
        else:
            self.threshold = otsu_threshold(x)
            mask = x > self.threshold
        band = boundary_band(mask, int(self.weights["band_radius"]))
        self.mask = torch.from_numpy(mask.astype(np.float32)).to(device)
        self.band = torch.from_numpy(band.astype(np.float32)).to(device)

    def total_weight(self) -> float:
        """Sum of the weights of the loss terms (the share of the start's MSE they are worth)."""
        keys = ("dice", "side", "boundary") if self.mode == "segmentation" else ("ssim", "gradient")
        return float(sum(self.weights.get(k, 0.0) for k in keys)) if self.active else 0.0

    def task_error(self, pred: np.ndarray, target: np.ndarray) -> float:
        """The task error of a decoded block, as the benchmark measures it (0 is perfect).

        segmentation: ``1 - Dice`` of the decoded block thresholded at its own Otsu threshold
        against the reference mask; perceptual: ``1 - SSIM`` (per 2D slice, 7x7 uniform
        window, :func:`napari_sciz.core.metrics.ssim`). ``pred`` and ``target`` are the
        normalised ``(D, H, W)`` block.
        """
        import torch

        if self.mode == "segmentation":
            if self.mask is None:
                raise RuntimeError("Guidance.prepare must be called before task_error")
            ref = self.mask.cpu().numpy() > 0.5
            seg = pred > otsu_threshold(pred)
            denom = int(ref.sum()) + int(seg.sum())
            return 0.0 if denom == 0 else 1.0 - 2.0 * float((ref & seg).sum()) / denom
        if self.mode == "perceptual":
            with torch.no_grad():
                a = torch.from_numpy(np.asarray(pred, np.float64))
                b = torch.from_numpy(np.asarray(target, np.float64))
                return 1.0 - float(ssim_slices(a, b))
        return 0.0

    def terms(
        self,
        pred_crop: torch.Tensor,
        target_crop: torch.Tensor,
        crop_slices: Sequence[slice],
    ) -> dict[str, torch.Tensor]:
        """The unweighted guidance terms of a crop (each 0 for a perfect reconstruction).

        segmentation: ``dice`` (``1 - soft Dice`` of the soft-thresholded reconstruction
        against the reference mask), ``side`` (mean squared distance to the threshold of the
        voxels on its wrong side) and ``boundary`` (mean squared error on the boundary band,
        zero outside it); perceptual: ``ssim`` (``1 - SSIM`` as the evaluation measures it:
        per 2D slice, 7x7 uniform window) and ``gradient`` (L1 distance of the
        finite-difference gradients).
        """
        import torch

        shape = tuple(s.stop - s.start for s in crop_slices)
        pred = pred_crop.reshape(shape)
        ref = target_crop.reshape(shape)
        if self.mode == "segmentation":
            if self.mask is None or self.band is None:
                raise RuntimeError("Guidance.prepare must be called before loss")
            sl = tuple(crop_slices)
            mask = self.mask[sl]
            band = self.band[sl]
            prob = torch.sigmoid((pred - self.threshold) / max(self.temperature, 1e-6))
            # wrong side of the threshold: squared distance to it, zero where the
            # reconstruction segments like the original (and for the original itself)
            sign = 2.0 * mask - 1.0
            wrong = torch.relu(sign * (self.threshold - pred))
            return {
                "dice": 1.0 - soft_dice(prob, mask),
                "side": (wrong * wrong).mean(),
                "boundary": (band * (pred - ref) ** 2).mean(),
            }
        if self.mode == "perceptual":
            return {
                "ssim": 1.0 - ssim_slices(pred, ref),
                "gradient": _gradient_l1(pred, ref),
            }
        return {}

    def calibrate(self, pred: torch.Tensor, target: torch.Tensor, shape: Sequence[int]) -> None:
        """Scale the weights to the block's own error at the starting point.

        Each term ``T`` is measured from its floor ``T*`` (its value for the original itself:
        the soft Dice of the soft-thresholded original is not exactly 1) and gets the factor
        ``weight * MSE0 / (T0 - T*)``, where ``MSE0`` and ``T0`` are the MSE and the term of
        ``pred`` (the starting reconstruction of the whole block). A weight is then the share
        of the starting MSE that the term's whole excess is worth, whatever the block's PSNR.
        The guided objective of the start is ``(1 + sum(weights)) * MSE0``, so a field that
        beats it (the keep-best check) has an MSE at most ``1 + sum(weights)`` times the
        start's. Without calibration the weights are absolute factors.
        """
        import torch

        with torch.no_grad():
            p = pred.reshape(tuple(int(n) for n in shape))
            t = target.reshape(p.shape)
            mse0 = float(torch.mean((p - t) ** 2))
            # the soft threshold is as sharp as the block's error calls for: a 53 dB bead and a
            # 23 dB nuclei stack flip their border voxels over very different distances
            self.temperature = float(self.weights.get("sharpness", 1.0)) * math.sqrt(mse0)
            slices = tuple(slice(0, int(n)) for n in p.shape)
            values = {k: float(v) for k, v in self.terms(p, t, slices).items()}
            floors = {k: float(v) for k, v in self.terms(t, t, slices).items()}
        self.mse0 = max(mse0, 1e-12)
        self.floors = floors
        # a term already at its floor at the start has nothing to gain: it is left out
        self.scales = {
            k: self.weights[k] * self.mse0 / (v - floors[k]) if v - floors[k] > 1e-12 else 0.0
            for k, v in values.items()
        }

    def loss(
        self,
        pred_crop: torch.Tensor,
        target_crop: torch.Tensor,
        crop_slices: Sequence[slice],
    ) -> torch.Tensor:
        """Extra loss of a training crop (0 for ``"none"``).

        Parameters
        ----------
        pred_crop, target_crop : torch.Tensor
            Reconstruction and original of the crop, normalised, flat or ``(d, h, w)``.
        crop_slices : sequence of slice
            Position of the crop in the block (three slices with explicit bounds).

        Returns
        -------
        torch.Tensor
            Scalar to add to the MSE: the sum of the terms (less their floors), each times its
            scale (see :meth:`calibrate`; the plain weight before calibration).
        """
        import torch

        out = torch.zeros((), device=pred_crop.device)
        for key, value in self.terms(pred_crop, target_crop, crop_slices).items():
            if self.scales is None:
                out = out + self.weights[key] * value
            elif self.scales[key]:
                out = out + self.scales[key] * (value - self.floors[key])
        return out

    def objective(self, pred: torch.Tensor, target: torch.Tensor, shape: Sequence[int]) -> float:
        """The guided objective ``MSE + loss`` of a whole ``shape`` block (no gradient)."""
        import torch

        with torch.no_grad():
            p = pred.reshape(tuple(shape))
            t = target.reshape(p.shape)
            slices = tuple(slice(0, int(n)) for n in p.shape)
            return float(torch.mean((p - t) ** 2) + self.loss(p, t, slices))


def make_guidance(mode: Any, weights: Mapping[str, float] | None = None) -> Guidance | None:
    """A :class:`Guidance` for ``mode``, or ``None`` for ``"none"`` (validates both)."""
    g = Guidance(mode, weights)
    return g if g.active else None
