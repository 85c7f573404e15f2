"""Differentiable task terms of the guided fit: soft Dice, SSIM (3D and per slice), gradients.

torch is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["soft_dice", "ssim_slices", "ssim_torch"]


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
