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


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (maximum between-class variance over a histogram).

    Parameters
    ----------
    values : numpy.ndarray
        Any real array (NaNs are not allowed).
    bins : int
        Histogram bins.

    Returns
    -------
    float
        The threshold ``t``; the foreground is ``values > t``. A constant array returns its value.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centers = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(counts).astype(np.float64)
    w1 = w0[-1] - w0
    s0 = np.cumsum(counts * centers)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    between[(w0 == 0) | (w1 == 0)] = -1
    k = int(np.argmax(between))
    # the threshold is the upper edge of the last background bin
    return float(edges[k + 1])


def _labels_threshold(values: np.ndarray, mask: np.ndarray, bins: int = 256) -> float:
    """The threshold ``t`` whose segmentation ``values > t`` best matches ``mask`` (Dice)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    m = np.asarray(mask, bool).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo or not m.any() or m.all():
        return otsu_threshold(v, bins)
    edges = np.linspace(lo, hi, bins + 1)
    fg, _ = np.histogram(v[m], bins=edges)
    bg, _ = np.histogram(v[~m], bins=edges)
    # voxels above edge k+1 (threshold after bin k)
    tp = fg.sum() - np.cumsum(fg)
    fp = bg.sum() - np.cumsum(bg)
    dice = 2 * tp / np.maximum(2 * tp + fp + (m.sum() - tp), 1)
    return float(edges[int(np.argmax(dice)) + 1])


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a ``(2r+1)``-voxel box (separable max over each axis)."""
    out = mask.copy()
    for axis in range(out.ndim):
        if out.shape[axis] <= 1:
            continue
        for _ in range(radius):
            grown = out.copy()
            lead = [slice(None)] * out.ndim
            trail = [slice(None)] * out.ndim
            lead[axis], trail[axis] = slice(1, None), slice(None, -1)
            grown[tuple(lead)] |= out[tuple(trail)]
            grown[tuple(trail)] |= out[tuple(lead)]
            out = grown
    return out


def boundary_band(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    """Voxels within ``radius`` of the mask's boundary: ``dilate(mask) & ~erode(mask)``.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean mask of any dimensionality (axes of length 1 are left alone).
    radius : int
        Half-width of the band in voxels (a box structuring element).

    Returns
    -------
    numpy.ndarray
        Boolean band, same shape as ``mask``; empty when the mask is empty or full.
    """
    m = np.asarray(mask, bool)
    r = max(int(radius), 1)
    dilated = _dilate(m, r)
    eroded = ~_dilate(~m, r)
    return dilated & ~eroded


def soft_dice(prob: torch.Tensor, ref: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice coefficient of a probability map against a reference mask (both float).

    ``(2 * sum(p * m) + eps) / (sum(p) + sum(m) + eps)``: 1 for identical binary masks, and
    close to 1 when both are empty (``eps`` smooths crops without foreground).
    """
    inter = (prob * ref).sum()
    return (2 * inter + eps) / (prob.sum() + ref.sum() + eps)


def _gauss_kernel(size: int, sigma: float) -> torch.Tensor:
    import torch

    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _blur(x: torch.Tensor, kernels: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """Separable 'valid' filtering of ``x`` (shape ``(N, 1, D, H, W)``) along each axis."""
    import torch.nn.functional as F

    for axis, k in enumerate(kernels):
        if k is None:
            continue
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        x = F.conv3d(x, k.to(x.device, x.dtype).reshape(shape))
    return x


def ssim_torch(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    data_range: float = 1.0,
    window: int = 7,
    sigma: float = 1.5,
    gaussian: bool = True,
) -> torch.Tensor:
    """Mean SSIM of two ``(D, H, W)`` tensors (differentiable).

    The window is gaussian (``sigma``) or a box, ``window`` voxels wide along every axis longer
    than the window and absent along shorter axes (so a ``(1, H, W)`` crop gets a 2D SSIM).
    Windows are 'valid' (no padding); an input smaller than the window on every axis is
    compared as a single window.
    """
    import torch

    x = a.reshape(1, 1, *a.shape).float()
    y = b.reshape(1, 1, *b.shape).float()
    kernels: list[torch.Tensor | None] = []
    for n in a.shape:
        if n >= window:
            k = _gauss_kernel(window, sigma) if gaussian else torch.full((window,), 1.0 / window)
            kernels.append(k)
        else:
            kernels.append(None)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    if all(k is None for k in kernels):
        mx, my = x.mean(), y.mean()
        vx, vy = x.var(unbiased=False), y.var(unbiased=False)
        cxy = ((x - mx) * (y - my)).mean()
        return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    mx = _blur(x, kernels)
    my = _blur(y, kernels)
    vx = _blur(x * x, kernels) - mx * mx
    vy = _blur(y * y, kernels) - my * my
    cxy = _blur(x * y, kernels) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean()


def ssim_slices(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM of the 2D slices of two ``(D, H, W)`` tensors, as the evaluation computes it.

    Differentiable counterpart of :func:`napari_sciz.core.metrics.ssim` (scikit-image's
    default): 7x7 uniform window along the last two axes, sample covariance, ``K1=0.01``,
    ``K2=0.03``, valid windows only (the 3-pixel border is not scored), mean over all windows
    of all slices. A slice smaller than 7x7 is compared as a single window.
    """
    import torch.nn.functional as F

    d, h, w = (int(n) for n in a.shape)
    x = a.reshape(d, 1, h, w).float()
    y = b.reshape(d, 1, h, w).float()
    if h < 7 or w < 7:
        return ssim_torch(a, b, data_range=data_range, window=max(h, w) + 1)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    k = x.new_full((1, 1, 7, 7), 1.0 / 49.0)
    cov_norm = 49.0 / 48.0
    mx, my = F.conv2d(x, k), F.conv2d(y, k)
    vx = cov_norm * (F.conv2d(x * x, k) - mx * mx)
    vy = cov_norm * (F.conv2d(y * y, k) - my * my)
    cxy = cov_norm * (F.conv2d(x * y, k) - mx * my)
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean()


def _gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance of the forward differences of ``a`` and ``b`` along each long axis."""
    import torch

    total = torch.zeros((), device=a.device, dtype=a.dtype)
    n = 0
    for axis in range(a.ndim):
        if a.shape[axis] < 2:
            continue
        total = total + (torch.diff(a, dim=axis) - torch.diff(b, dim=axis)).abs().mean()
        n += 1
    return total / max(n, 1)


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
