"""The transform-coded start of a fit: a closed-loop Laplacian pyramid at the block's bytes.

Before any training, the latent grids are set to a Laplacian pyramid of the block (each level
the least-squares residual of the coarser ones, refined by a few projection steps), quantized
with a step chosen so that its estimated coded size meets the block's budget; the MLP starts
as the identity sum of the levels. :func:`best_start` tries finest levels 0, 1 and 2 and keeps
the most accurate; :func:`retarget_start` re-quantizes a start for another budget; and
:func:`start_field` ties them to the entropy model of the latents (static, or the ARM when it
saves bytes).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .code import DEBUG, MAX_LATENT, dense_eval
from .entropy import BlockCode, encode_block
from .model import FieldConfig, LatentField
from .ratecontrol import attach_arm, payload_bytes

__all__ = ["best_start", "init_from_pyramid", "retarget_start", "start_field"]

#: steepest-descent iterations refining each pyramid level (least-squares projection)
REFINE_ITERS = 3


#: Ratio of the quantization steps of two successive latent levels (coarser levels finer).
LEVEL_GAIN = 2.0


#: step ratios tried for the chosen finest level (smooth data prefers larger ones)
GAIN_CANDIDATES = (1.5, 2.5)

#: whether the encoder fits the autoregressive entropy model of the latents (:mod:`.arm`)
USE_ARM = True
#: share of a time budget one fit of the ARM may use, and the shortest budget that tries it
ARM_SHARE = 0.04
ARM_MIN_BUDGET = 8.0
#: smallest byte window that tries the ARM: its ~200 bytes of weights would need a saving of
#: more than 13 % below it (measured savings on small payloads: -6 % to +3 %)
ARM_MIN_PAYLOAD = 1500
#: the start is chosen again for the ARM's bits when it saves more than this factor
ARM_RESTART_SAVING = 1.15


def best_start(
    config: FieldConfig,
    x: torch.Tensor,
    target_bits: float,
    device: str,
    seconds: float | None = None,
    score: Callable[[torch.Tensor], float] | None = None,
) -> tuple[LatentField, float]:
    """Initialise fields whose finest level is 0, 1 or 2 and keep the most accurate one.

    Sharp-edged images (CT phantoms, EM) need the full-resolution level even at high ratios,
    smooth fluorescence does better spending the bits on coarser levels; trying the three
    pyramid starting points at the same budget decides cheaply. With ``seconds``, candidates
    are tried only while they fit in that time (the default architecture always is).
    """
    best: tuple[float, LatentField, float] | None = None

    def attempt(first: int, gain: float) -> None:
        nonlocal best
        cfg = FieldConfig.choose(config.shape, target_bits, first_level=first)
        cfg = FieldConfig(cfg.shape, cfg.first_level, cfg.n_levels, config.hidden, config.layers)
        field = LatentField(cfg).to(device)
        field.level_gain = gain
        correction = init_from_pyramid(field, x, target_bits)
        with torch.no_grad():
            rec = dense_eval(field, [torch.round(g) for g in field.latents])
            err = float(torch.mean((rec - x) ** 2)) if score is None else score(rec)
        if DEBUG:
            print(f"  start first={first} gain={gain} score={err:.5g}", flush=True)
        if best is None or err < best[0]:
            best = (err, field, correction)

    firsts = []
    for first in (0, 1, 2):
        level = FieldConfig.choose(config.shape, target_bits, first_level=first).first_level
        if level not in firsts:
            firsts.append(level)
    # the default first, then the alternatives while they fit in the time allowed
    default = FieldConfig.choose(config.shape, target_bits).first_level
    firsts.sort(key=lambda level: level != default)
    started = time.perf_counter()
    for n, first in enumerate(firsts):
        attempt(first, LEVEL_GAIN)
        each = (time.perf_counter() - started) / (n + 1)
        if seconds is not None and time.perf_counter() - started + each > seconds:
            return best[1], best[2]  # type: ignore[index]
    assert best is not None
    # then the step ratio between levels, for the chosen finest level
    chosen = best[1].config.first_level
    for gain in GAIN_CANDIDATES:
        if seconds is not None and time.perf_counter() - started + each > seconds:
            break
        attempt(chosen, gain)
    return best[1], best[2]


def start_field(
    config: FieldConfig,
    x: torch.Tensor,
    budget_bits: float,
    device: str,
    value_range: tuple[float, float],
    window: tuple[int, int],
    budget: float | None,
    start_time: tuple[float, float] | None,
    seed: int,
) -> tuple[LatentField, float]:
    """The starting field with its latents' entropy model, sized to the byte window.

    The transform-coded start is chosen for the bits the static models would spend; the ARM
    is then fitted to its latents and kept when it makes the payload smaller, and the start is
    chosen again for the bits that saving buys (its finest level and step ratio depend on
    them: the CT phantom at 64x saves 38 % and wants a finer first level), the ARM refitted to
    it, and the pyramid rebuilt until its real payload lands in the window.

    Returns
    -------
    field, coding : LatentField, float
        The start, and the seconds one coding of its payload takes (what rate control repeats).
    """
    vmin, vmax = value_range
    low, high = window
    use_arm = USE_ARM and high >= ARM_MIN_PAYLOAD and (budget is None or budget >= ARM_MIN_BUDGET)
    arm_seconds = None if budget is None else ARM_SHARE * budget
    deadline = None if start_time is None else start_time[0] + start_time[1]
    first = None if start_time is None else (0.5 if use_arm else 1.0) * start_time[1]
    field, _correction = best_start(config, x, budget_bits, device, first)
    bits = budget_bits
    if use_arm:
        saving = attach_arm(field, vmin, vmax, arm_seconds, seed)
        left = None if deadline is None else deadline - time.perf_counter()
        if saving > ARM_RESTART_SAVING and (left is None or left > 0):
            bits = budget_bits * saving
            field, _correction = best_start(config, x, bits, device, left)
            attach_arm(field, vmin, vmax, arm_seconds, seed)
    return field, retarget_start(field, x, bits, vmin, vmax, low, high, deadline=deadline)


def retarget_start(
    field: LatentField,
    x: torch.Tensor,
    target_bits: float,
    vmin: float,
    vmax: float,
    low: int,
    high: int,
    tries: int = 3,
    deadline: float | None = None,
) -> float:
    """Rebuild the starting pyramid until its real payload lands in ``[low, high]``.

    The pyramid is sized by an estimate of the coded latents less an estimate of the rest of
    the payload; on small blocks the estimate missed by 10-15 % (stardist_img3d at 256x: 525
    bytes for a 585-603 byte window). Training moves the latents too little to make up for it,
    so rate control had to re-quantize the trained latents, which cost up to 0.8 dB. Each try
    scales the target by the real size's miss of the window's middle; with ``deadline``
    (``time.perf_counter()`` seconds) no try starts that the previous one says would end past it.

    Returns
    -------
    float
        Seconds one coding of the payload took (what rate control repeats).
    """
    goal = 0.5 * (low + high)
    bits = target_bits
    each = 0.0
    coding = 0.0
    for _ in range(tries):
        began = time.perf_counter()
        size = payload_bytes(field, vmin, vmax)
        coding = time.perf_counter() - began
        if low <= size <= high:
            return coding
        if deadline is not None and time.perf_counter() + each > deadline:
            return coding  # rate control will re-quantize instead: late is worse than 0.8 dB
        bits *= goal / max(size, 1)
        began = time.perf_counter()
        init_from_pyramid(field, x, bits)
        each = max(each, time.perf_counter() - began)
    return coding


def _interp_matrix(n: int, g: int, step: int) -> torch.Tensor:
    """``(n, g)`` weights of the field's linear interpolation along one axis.

    The same map as :func:`~napari_sciz.core.lossy.model._upsample` (``align_corners`` onto a
    grid padded to ``(g - 1) * step + 1`` nodes, then cropped to ``n``), as a matrix.
    """
    padded = 1 if n <= 1 else (g - 1) * step + 1
    src = torch.arange(n, dtype=torch.float64)
    src = src * ((g - 1) / (padded - 1)) if padded > 1 else torch.zeros(n, dtype=torch.float64)
    i0 = src.floor().clamp(max=g - 1).long()
    i1 = (i0 + 1).clamp(max=g - 1)
    frac = src - i0
    w = torch.zeros(n, g, dtype=torch.float64)
    rows = torch.arange(n)
    w.index_put_((rows, i0), 1.0 - frac, accumulate=True)
    w.index_put_((rows, i1), frac, accumulate=True)
    return w.float()


class _Separable:
    """The field's trilinear upsampling of one level and its adjoint, as three small matrices.

    Encoder-side only (the decoder uses ``F.interpolate``): torch's CPU backward of
    ``upsample_trilinear3d`` took 0.29 s per call on a 2x512x512 block, which made the
    transform-coded start of that block take 41 s; the separable products take milliseconds.
    """

    def __init__(self, grid_shape: Sequence[int], level: int, shape: Sequence[int]) -> None:
        step = 2**level
        self.mats = [_interp_matrix(n, g, step) for n, g in zip(shape, grid_shape, strict=True)]

    def up(self, g: torch.Tensor) -> torch.Tensor:
        """Grid -> voxels."""
        wz, wy, wx = (m.to(g.device, g.dtype) for m in self.mats)
        return torch.einsum("zyx,dz,hy,wx->dhw", g, wz, wy, wx)

    def down(self, r: torch.Tensor) -> torch.Tensor:
        """Voxels -> grid: the adjoint of :meth:`up`."""
        wz, wy, wx = (m.to(r.device, r.dtype) for m in self.mats)
        return torch.einsum("dhw,dz,hy,wx->zyx", r, wz, wy, wx)


def _refine_projection(
    g: torch.Tensor, target: torch.Tensor, level: int, shape: tuple[int, ...], iterations: int
) -> torch.Tensor:
    """Improve coarse coefficients ``g`` so that their trilinear upsampling fits ``target``.

    A few steepest-descent iterations on ``||target - U g||^2`` (``U``: the field's trilinear
    upsampling, as separable matrices), starting from the box-filter average.
    """
    if iterations <= 0:
        return g.detach()
    op = _Separable(g.shape, level, shape)
    g = g.detach()
    for _ in range(iterations):
        grad = op.down(target - op.up(g))
        ug = op.up(grad)
        denom = float((ug * ug).sum())
        if denom <= 0:
            break
        g = g + (float((grad * grad).sum()) / denom) * grad  # exact line search
    return g


def _pyramid(
    field: LatentField,
    x: torch.Tensor,
    scales: Sequence[float] | None = None,
    refine: int = REFINE_ITERS,
) -> list[torch.Tensor]:
    """Laplacian-pyramid coefficients of ``x`` on the field's latent grids (finest first).

    With ``scales`` (latent units per intensity, one per level) the pyramid is built closed
    loop: each level is rounded to integers before the next finer level codes what the
    rounded coarser levels missed, and the integer coefficients are returned.
    """
    import torch.nn.functional as F

    from .model import _upsample

    shape = field.config.shape
    residual = x.clone()
    coeffs: list[torch.Tensor] = [torch.zeros(0)] * field.config.n_levels
    for i in reversed(range(field.config.n_levels)):
        level = field.config.levels[i]
        gshape = field.config.grid_shapes()[i]
        if level == 0:
            g = residual.clone()
        else:
            step = 2**level
            padded = tuple(
                1 if n <= 1 else (gs - 1) * step + 1 for n, gs in zip(shape, gshape, strict=True)
            )
            pad = [0, padded[2] - shape[2], 0, padded[1] - shape[1], 0, padded[0] - shape[0]]
            r = F.pad(residual[None, None], pad, mode="replicate")
            g = F.interpolate(r, size=gshape, mode="area")[0, 0]
            g = _refine_projection(g, residual, level, shape, refine)
        if scales is not None:
            coeffs[i] = g * scales[i]
            g = torch.round(coeffs[i]) / scales[i]
        else:
            coeffs[i] = g
        residual = residual - _upsample(g, level, shape)
    return coeffs


def _entropy_bits(q: torch.Tensor) -> float:
    flat = q.to(torch.int64).reshape(-1)
    counts = torch.bincount(flat - flat.min()).double()
    counts = counts[counts > 0]
    return float(-(counts * torch.log2(counts / flat.numel())).sum())


def _coded_latent_bits(qs: list[torch.Tensor], config: FieldConfig) -> float:
    code = BlockCode(
        config.first_level,
        config.n_levels,
        config.hidden,
        config.layers,
        0.0,
        1.0,
        1.0,
        latents=[q.cpu().numpy().astype(np.int32) for q in qs],
        mlp=[np.zeros(s, np.int32) for s in config.mlp_shapes()],
        mlp_exponents=[0] * len(config.mlp_shapes()),
    )
    return 8.0 * len(encode_block(code))


@torch.no_grad()
def init_from_pyramid(field: LatentField, x: torch.Tensor, target_bits: float) -> float:
    """Start from a Laplacian pyramid of the block with quantization steps that fit the budget.

    The MLP is set up so that its output is exactly the sum of the interpolated latents (a
    linear synthesis). Level ``i`` is stored with ``alpha * LEVEL_GAIN**i`` latent units per
    normalised intensity; ``alpha`` is bisected so that the coded size of the rounded pyramid
    matches the budget. Fitting then improves this transform-coding starting point.

    Returns
    -------
    float
        Ratio of the real (context-coded) latent size to the factorized entropy estimate, used
        to translate the budget into a target for the training-time rate estimate.
    """
    config = field.config
    coeffs = _pyramid(field, x)
    gain = field.level_gain
    gains = [gain**i for i in range(config.n_levels)]

    def quantized(alpha: float) -> list[torch.Tensor]:
        return [torch.round(c * alpha * g) for c, g in zip(coeffs, gains, strict=True)]

    def bisect(goal: float, lo: float, hi: float, iterations: int) -> float:
        for _ in range(iterations):
            mid = math.sqrt(lo * hi)
            if sum(_entropy_bits(q) for q in quantized(mid)) > goal:
                hi = mid
            else:
                lo = mid
        return lo

    peak = max(float(c.abs().max() * g) for c, g in zip(coeffs, gains, strict=True))
    alpha_cap = min(2.0**16, MAX_LATENT / max(peak, 1e-12))
    alpha = bisect(target_bits, 2.0**-8, alpha_cap, 11)
    qs = quantized(alpha)
    estimate = max(sum(_entropy_bits(q) for q in qs), 1.0)
    correction = min(max(_coded_latent_bits(qs, config) / estimate, 0.3), 3.0)
    alpha = bisect(target_bits / correction, alpha / 4, min(alpha * 4, alpha_cap), 6)

    # closed loop: refine alpha with the pyramid that codes the rounding errors of coarser levels
    def closed(alpha: float, refine: int = 1) -> list[torch.Tensor]:
        return _pyramid(field, x, [alpha * g for g in gains], refine)

    lo, hi = alpha / 2, min(alpha * 1.5, alpha_cap)
    for _ in range(4):
        mid = math.sqrt(lo * hi)
        if sum(_entropy_bits(torch.round(q)) for q in closed(mid)) > target_bits / correction:
            hi = mid
        else:
            lo = mid
    alpha = lo
    qs = closed(alpha, REFINE_ITERS)
    for param, q in zip(field.latents, qs, strict=True):
        param.copy_(q)
    field.steps.copy_(torch.tensor([float(np.float32(1.0 / alpha / g)) for g in gains]))
    first, *rest = field.linears
    torch.nn.init.normal_(first.weight, std=0.1)
    first.weight[0] = 1.0
    first.bias.zero_()
    first.bias[0] = 1.0
    for lin in rest[:-1]:
        torch.nn.init.normal_(lin.weight, std=0.05)
        lin.weight[:, 0] = 0.0
        lin.weight[0].zero_()
        lin.weight[0, 0] = 1.0
        lin.bias.zero_()
    last = rest[-1]
    last.weight.zero_()
    last.weight[0, 0] = 1.0
    last.bias.fill_(-1.0)
    return correction
