"""The implicit neural representation: multi-resolution latent grids and a small MLP.

A block of ``D x H x W`` voxels is represented by latent grids at dyadic resolutions (levels
``first_level .. first_level + n_levels - 1``; level ``l`` has a node every ``2**l`` voxels) and
a small ReLU MLP (the *synthesis*) that maps the trilinearly interpolated latent values at a
coordinate to the voxel value. The field is continuous: it can be evaluated at any real
coordinate, which gives region decoding and finer sampling for free. This follows the
latent-grid design of Cool-chic (extended to 3D) with the per-image fitting of INIF.

Coordinates are in voxel units of the block: voxel ``i`` sits at coordinate ``i``. Level ``l``
node ``j`` sits at coordinate ``j * 2**l``; the grid has ``ceil((n - 1) / 2**l) + 1`` nodes so
that it covers the whole block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FieldConfig", "LatentField", "level_shape", "laplace_bits"]

Shape3 = tuple[int, int, int]


def level_shape(shape: Sequence[int], level: int) -> Shape3:
    """Shape of the latent grid of ``level`` for a block of ``shape`` voxels."""
    step = 2**level
    out = tuple(1 if n <= 1 else math.ceil((n - 1) / step) + 1 for n in shape)
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class FieldConfig:
    """Architecture of one block's field.

    Attributes
    ----------
    shape : tuple of int
        Block shape ``(D, H, W)``; ``D == 1`` for 2D images.
    first_level : int
        Finest latent level (0 = one latent per voxel).
    n_levels : int
        Number of latent levels.
    hidden : int
        Width of the MLP's hidden layers.
    layers : int
        Number of hidden layers of the MLP.
    """

    shape: Shape3
    first_level: int
    n_levels: int
    hidden: int
    layers: int = 2

    @property
    def levels(self) -> list[int]:
        """The latent levels, finest first."""
        return list(range(self.first_level, self.first_level + self.n_levels))

    def grid_shapes(self) -> list[Shape3]:
        """Shapes of the latent grids, finest first."""
        return [level_shape(self.shape, level) for level in self.levels]

    def mlp_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the MLP parameters in order (weight, bias, weight, bias, ...)."""
        dims = [self.n_levels] + [self.hidden] * self.layers + [1]
        shapes: list[tuple[int, ...]] = []
        for n_in, n_out in zip(dims[:-1], dims[1:], strict=True):
            shapes += [(n_out, n_in), (n_out,)]
        return shapes

    def n_latents(self) -> int:
        """Total number of latent values."""
        return sum(math.prod(s) for s in self.grid_shapes())

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def choose(
        cls, shape: Sequence[int], target_bits: float, first_level: int | None = None
    ) -> FieldConfig:
        """Pick an architecture for a block from its shape and its bit budget.

        The finest level is dropped when the budget is below about half a bit per voxel
        (a full-resolution grid then costs more than it gives), and the MLP is narrowed for
        very small budgets so that the weights do not eat the whole file.

        Parameters
        ----------
        shape : sequence of int
            Block shape ``(D, H, W)``.
        target_bits : float
            Bits available for the block's payload.
        first_level : int, optional
            Force the finest level instead of choosing it from the budget.
        """
        shape3 = tuple(int(n) for n in shape)
        voxels = math.prod(shape3)
        bpv = target_bits / max(voxels, 1)
        if bpv >= 0.6:
            first = 0
        elif bpv >= 0.04:
            first = 1
        else:
            first = 2
        if first_level is not None:
            first = int(first_level)
        largest = max(shape3)
        # keep levels while the grid still has more than 2 nodes along the largest axis
        top = max(first, math.ceil(math.log2(max(largest - 1, 1))) - 1)
        n_levels = max(1, min(7, top - first + 1))
        # grids that would not be finer than the block itself are useless
        while first > 0 and level_shape(shape3, first) == level_shape(shape3, first - 1):
            first -= 1
        if target_bits < 6000:
            hidden = 8
        elif target_bits < 40000:
            hidden = 12
        else:
            hidden = 16
        return cls(shape3, first, n_levels, hidden)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: dict) -> FieldConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tuple(int(n) for n in d["shape"]),  # type: ignore[arg-type]
            int(d["first_level"]),
            int(d["n_levels"]),
            int(d["hidden"]),
            int(d.get("layers", 2)),
        )


def _upsample(grid: torch.Tensor, level: int, shape: Shape3) -> torch.Tensor:
    """Trilinearly upsample a level's grid onto the block's voxels (exact node alignment)."""
    if level == 0:
        return grid
    step = 2**level
    padded = tuple(
        1 if n <= 1 else (g - 1) * step + 1 for n, g in zip(shape, grid.shape, strict=True)
    )
    up = F.interpolate(grid[None, None], size=padded, mode="trilinear", align_corners=True)[0, 0]
    return up[: shape[0], : shape[1], : shape[2]]


class LatentField(nn.Module):
    """Latent grids plus synthesis MLP for one block.

    Parameters
    ----------
    config : FieldConfig
        The architecture.
    """

    def __init__(self, config: FieldConfig) -> None:
        super().__init__()
        self.config = config
        self.latents = nn.ParameterList(
            [nn.Parameter(torch.zeros(s)) for s in config.grid_shapes()]
        )
        #: dequantization step of each level: features are ``latent * step``
        self.register_buffer("steps", torch.ones(config.n_levels))
        #: ratio of the steps of two successive levels (``steps[i] = steps[0] / gain**i``)
        self.level_gain = 2.0
        #: the autoregressive entropy model of the latents (:class:`.arm.ArmWeights`), or
        #: ``None`` for the static per-class models; set by the encoder once fitted
        self.arm: Any = None
        dims = [config.n_levels] + [config.hidden] * config.layers + [1]
        self.linears = nn.ModuleList(
            [nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)]
        )

    def mlp(self, features: torch.Tensor) -> torch.Tensor:
        """Apply the synthesis MLP to ``(P, n_levels)`` features, giving ``(P,)`` values."""
        h = features
        for i, linear in enumerate(self.linears):
            h = linear(h)
            if i < len(self.linears) - 1:
                h = torch.relu(h)
        return h[:, 0]

    def dense_features(self, latents: Sequence[torch.Tensor]) -> torch.Tensor:
        """Interpolated latent features at every voxel, shape ``(D*H*W, n_levels)``."""
        shape = self.config.shape
        ups = [
            _upsample(g * st, lvl, shape)
            for g, st, lvl in zip(latents, self.steps, self.config.levels, strict=True)
        ]
        return torch.stack(ups, dim=-1).reshape(-1, len(ups))

    def crop_features(
        self, latents: Sequence[torch.Tensor], start: Sequence[int], size: Sequence[int]
    ) -> torch.Tensor:
        """Interpolated latent features on the voxels of a crop, shape ``(prod(size), n_levels)``.

        Only the latent nodes around the crop are upsampled, so the cost is proportional to the
        crop, not to the block.
        """
        cols = []
        for grid, st, level in zip(latents, self.steps, self.config.levels, strict=True):
            step = 2**level
            sl = []
            offs = []
            out_size = []
            for axis in range(3):
                s0, c = int(start[axis]), int(size[axis])
                if grid.shape[axis] == 1:
                    sl.append(slice(0, 1))
                    offs.append(0)
                    out_size.append(1)
                    continue
                a = s0 // step
                b = min(-(-(s0 + c - 1) // step), grid.shape[axis] - 1)
                b = max(b, a + 1) if a + 1 < grid.shape[axis] else b
                sl.append(slice(a, b + 1))
                offs.append(s0 - a * step)
                out_size.append((b - a) * step + 1)
            sub = grid[sl[0], sl[1], sl[2]] * st
            if level > 0:
                sub = F.interpolate(
                    sub[None, None], size=tuple(out_size), mode="trilinear", align_corners=True
                )[0, 0]
            sub = sub[
                offs[0] : offs[0] + int(size[0]),
                offs[1] : offs[1] + int(size[1]),
                offs[2] : offs[2] + int(size[2]),
            ]
            cols.append(sub.reshape(-1))
        return torch.stack(cols, dim=-1)

    def dense(self, latents: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Evaluate the field at every voxel of the block, shape ``(D, H, W)``."""
        lat = list(self.latents) if latents is None else list(latents)
        return self.mlp(self.dense_features(lat)).reshape(self.config.shape)

    def sample(
        self, coords: torch.Tensor, latents: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Evaluate the field at arbitrary block coordinates.

        Parameters
        ----------
        coords : torch.Tensor
            ``(P, 3)`` coordinates ``(z, y, x)`` in voxel units of the block; values outside
            ``[0, n - 1]`` are clamped to the border.
        latents : sequence of torch.Tensor, optional
            Latent grids to use instead of the module's own.

        Returns
        -------
        torch.Tensor
            ``(P,)`` values.
        """
        lat = list(self.latents) if latents is None else list(latents)
        shape = self.config.shape
        hi = torch.tensor([max(n - 1, 0) for n in shape], dtype=coords.dtype, device=coords.device)
        c = torch.minimum(coords.clamp_min(0), hi)
        feats = []
        for grid, st, level in zip(lat, self.steps, self.config.levels, strict=True):
            gshape = grid.shape
            pos = c / float(2**level)
            norm = []
            for axis in range(3):
                n = gshape[axis]
                norm.append(
                    pos[:, axis] * (2.0 / (n - 1)) - 1.0
                    if n > 1
                    else torch.zeros_like(pos[:, axis])
                )
            # grid_sample wants (x, y, z) = (W, H, D) order
            g = torch.stack([norm[2], norm[1], norm[0]], dim=-1).reshape(1, 1, 1, -1, 3)
            v = F.grid_sample(grid[None, None], g, mode="bilinear", align_corners=True)
            feats.append(v.reshape(-1) * st)
        return self.mlp(torch.stack(feats, dim=-1))


def laplace_bits(y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Estimated bits to code the values ``y`` (integers, or integers plus uniform noise).

    Uses a zero-mean Laplace distribution of the given ``scale`` integrated over unit bins:
    the differentiable proxy of the entropy coder's cost.
    """
    b = scale.clamp_min(1e-3)
    upper = _laplace_cdf(y + 0.5, b)
    lower = _laplace_cdf(y - 0.5, b)
    p = (upper - lower).clamp_min(2.0**-24)
    return -torch.log2(p).sum()


def _laplace_cdf(v: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.5 + 0.5 * torch.sign(v) * (1.0 - torch.exp(-v.abs() / b))
