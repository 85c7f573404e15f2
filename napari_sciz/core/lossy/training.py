"""The training loop of one block's field: ``MSE + extra + lambda * rate`` over random crops.

Shared by the plain fit (:mod:`.fit`) and the guided refinement (:mod:`.guided`):
:class:`Loop` holds what every phase of a block's training shares, :class:`Span` how long one
phase runs, and :func:`train` runs it. Quantization is simulated by additive uniform noise for
the first :data:`NOISE_PHASE` of a phase, then by straight-through rounding; ``lambda`` is
steered so that the real coded size tracks the middle of the block's byte window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ...errors import CancelledError
from .code import DEBUG, dense_eval
from .entropy import BlockCode
from .model import FieldConfig, LatentField, laplace_bits
from .ratecontrol import payload_bytes

__all__ = [
    "BlockFit",
    "Loop",
    "Span",
    "StepInfo",
    "crop_shape",
    "level_scales",
    "split_span",
    "train",
]

#: Fraction of training spent with noise as the quantization proxy (the rest uses rounding).
NOISE_PHASE = 0.0
#: steps between two measurements of the real coded size during training
RATE_CHECK = 20


@dataclass
class StepInfo:
    """State reported after a training step of one block."""

    step: int
    fraction: float
    loss: float
    psnr: float
    elapsed: float


@dataclass
class BlockFit:
    """Result of fitting a block."""

    code: BlockCode
    payload: bytes
    reconstruction: np.ndarray
    steps: int
    config: FieldConfig
    #: with guidance, ``(PSNR dB, task error)`` of the decoded reference and of each decoded
    #: candidate of the refinement (normalised block), and the index of the one kept
    guided: list[tuple[float, float]] | None = None
    kept: int = 0


@dataclass
class Loop:
    """What every training phase of one block shares."""

    target: torch.Tensor  # normalised block, (D, H, W)
    crop: tuple[int, int, int] | None
    gen: torch.Generator
    payload_bits: float  # the middle of the byte window, in bits
    vmin: float
    vmax: float
    t0: float
    on_step: Callable[[StepInfo], None] | None = None
    on_preview: Callable[[np.ndarray], None] | None = None
    preview_interval: float = 3.0
    cancel: Callable[[], bool] | None = None
    last_preview: float = 0.0
    #: whether the block's values are integers (the decoder rounds them)
    integral: bool = False


@dataclass
class Span:
    """How long a training phase runs (``steps`` or a ``deadline``) and its share of progress."""

    steps: int = 0
    deadline: float | None = None
    progress: tuple[float, float] = (0.0, 1.0)
    first_step: int = 0
    #: when the time of a deadline span counts from (default: when training starts)
    origin: float | None = None


def train(
    field: LatentField,
    optimizer: torch.optim.Optimizer,
    lam: float,
    loop: Loop,
    span: Span,
    extra: Callable[[torch.Tensor, torch.Tensor, list[slice]], torch.Tensor] | None = None,
    fixed: torch.Tensor | None = None,
) -> tuple[int, float]:
    """Train ``field`` on ``MSE + extra + lambda * rate`` for ``span``.

    With ``fixed`` (the ``(D, H, W, n_levels)`` features of fixed latents) only the MLP is
    trained, on those features, and the rate term (constant then) is left out.

    Returns the number of steps taken and the steered ``lambda``. ``lambda`` follows the real
    coded size of the field every :data:`RATE_CHECK` steps (against the middle of the byte
    window); the learning rates follow a cosine from their base values to a tenth of them.
    """
    shape = loop.target.shape
    n_vox = loop.target.numel()
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    scales = level_scales(field)
    begin = time.perf_counter() if span.origin is None else span.origin
    lo, hi = span.progress
    step = 0
    while True:
        if span.deadline is None:
            fraction = step / span.steps if span.steps > 0 else 1.0
        else:
            length = span.deadline - begin
            fraction = (time.perf_counter() - begin) / length if length > 0 else 1.0
        if fraction >= 1.0:
            break
        if loop.cancel is not None and loop.cancel():
            raise CancelledError("compression cancelled; no output written")
        lr_scale = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * fraction))
        for g, base in zip(optimizer.param_groups, base_lrs, strict=True):
            g["lr"] = base * lr_scale
        if fixed is not None:
            lat = []
        elif fraction < NOISE_PHASE:
            lat = [g + torch.rand_like(g) - 0.5 for g in field.latents]
        else:
            lat = [g + (torch.round(g) - g).detach() for g in field.latents]
        if loop.crop is not None:
            corner = [
                int(torch.randint(0, n - c + 1, (1,), generator=loop.gen))
                for n, c in zip(shape, loop.crop, strict=True)
            ]
            where = [slice(s, s + c) for s, c in zip(corner, loop.crop, strict=True)]
            if fixed is None:
                feats = field.crop_features(lat, corner, loop.crop)
            else:
                feats = fixed[tuple(where)].reshape(-1, fixed.shape[-1])
            ref = loop.target[tuple(where)].reshape(-1)
        else:
            where = [slice(0, int(n)) for n in shape]
            feats = (
                field.dense_features(lat) if fixed is None else fixed.reshape(-1, fixed.shape[-1])
            )
            ref = loop.target.reshape(-1)
        pred = field.mlp(feats)
        mse = torch.mean((pred - ref) ** 2)
        loss = mse
        if fixed is None:
            bits = sum(laplace_bits(g, b) for g, b in zip(lat, scales, strict=True))
            loss = loss + lam * bits / n_vox
        if extra is not None:
            loss = loss + extra(pred, ref, where)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % RATE_CHECK == RATE_CHECK - 1 and fixed is None:
            # steer lambda with the real coded size of the current latents: the whole payload
            # as rate control will code it (8-bit MLP included), against the window's middle
            scales = level_scales(field)
            with torch.no_grad():
                real = 8.0 * payload_bytes(field, loop.vmin, loop.vmax)
            lam *= math.exp(0.7 * math.log(max(real, 1.0) / loop.payload_bits))
            lam = min(max(lam, 1e-12), 1e6)
            if DEBUG:
                print(
                    f"  step {step} real={real:.0f} budget={loop.payload_bits:.0f} lam={lam:.3g}",
                    flush=True,
                )
        step += 1
        if loop.on_step is not None:
            m = float(mse.detach())
            loop.on_step(
                StepInfo(
                    span.first_step + step,
                    lo + (hi - lo) * min(fraction, 1.0),
                    float(loss.detach()),
                    -10 * math.log10(max(m, 1e-12)),
                    time.perf_counter() - loop.t0,
                )
            )
        now = time.perf_counter()
        if loop.on_preview is not None and now - loop.last_preview >= loop.preview_interval:
            rec = dense_eval(field, [torch.round(g) for g in field.latents])
            loop.on_preview(rec.double().cpu().numpy() * (loop.vmax - loop.vmin) + loop.vmin)
            loop.last_preview = time.perf_counter()
    return step, lam


def split_span(span: Span, coding_seconds: float, parts: int) -> list[Span]:
    """``parts`` equal pieces of a training span, each followed by a coding."""
    lo, hi = span.progress
    edges = [lo + (hi - lo) * i / parts for i in range(parts + 1)]
    if span.deadline is None:
        cuts = [span.steps * i // parts for i in range(parts + 1)]
        return [
            Span(steps=cuts[i + 1] - cuts[i], progress=(edges[i], edges[i + 1]))
            for i in range(parts)
        ]
    now = time.perf_counter()
    train = max(span.deadline - now - parts * coding_seconds, 0.0) / parts
    return [
        Span(
            deadline=now + (i + 1) * train + i * coding_seconds,
            progress=(edges[i], edges[i + 1]),
        )
        for i in range(parts)
    ]


def level_scales(field: LatentField) -> list[torch.Tensor]:
    """Laplace scale of each level's rounded latents (their mean absolute value)."""
    with torch.no_grad():
        return [torch.round(g).abs().mean().clamp_min(0.02) for g in field.latents]


def crop_shape(shape: tuple[int, ...], batch: int) -> tuple[int, int, int]:
    """A crop of about ``batch`` voxels, as cubic as the block allows."""
    crop = [1, 1, 1]
    free = [i for i in range(3) if shape[i] > 1]
    remaining = float(batch)
    for i in sorted(free, key=lambda i: shape[i]):
        side = remaining ** (1.0 / len(free))
        crop[i] = int(min(shape[i], max(2, round(side))))
        remaining /= crop[i]
        free = [j for j in free if j != i]
    return tuple(crop)  # type: ignore[return-value]
