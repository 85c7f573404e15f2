"""Guided refinement: a plainly fitted field trained further for a task, checked as decoded.

The plainly fitted block, rate-controlled and decoded, is the reference; training goes on with
the guidance loss (:mod:`napari_sciz.core.guidance`) and the candidate with the best task score
within the PSNR allowance is kept (see docs/guidance.md).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from .code import DEBUG, dense_eval, evaluate_code
from .entropy import BlockCode
from .model import LatentField
from .ratecontrol import rate_control
from .training import BlockFit, Loop, Span, crop_shape, split_span, train

if TYPE_CHECKING:  # pragma: no cover
    from ..guidance import Guidance

__all__ = ["guided_refinement"]

#: learning rates of the guided refinement (faster than the plain fit's: the task terms need
#: the latents to move, and the candidates are checked as decoded)
LR_GUIDED_LATENT = 1e-3
LR_GUIDED_MLP = 2e-3
#: a guided refinement expected to take fewer joint steps trains only the synthesis MLP, on
#: the fixed features of the latents (a step then costs a small fraction of a joint one)
GUIDED_MIN_JOINT_STEPS = 150
#: voxels per step of the guided refinement: smaller crops than the plain fit's, for more steps
GUIDED_BATCH = 2**16
#: the guided refinement is coded and decoded this many times (evenly spaced, the last at its
#: end); each decoded candidate is checked against the reference
GUIDED_CHECKPOINTS = 4


def guided_refinement(
    field: LatentField,
    guidance: Guidance,
    lam: float,
    loop: Loop,
    span: Span,
    low: int,
    high: int,
    steps_before: int,
    joint: bool = True,
) -> BlockFit:
    """Refine a plainly fitted field for a task; keep the best candidate within the allowance.

    The plainly fitted field, rate-controlled and decoded, is the *reference*. Training then
    goes on from it with the guidance loss, whose weights are relative to the reference's
    error (:meth:`Guidance.calibrate`), and with faster learning rates. The field is coded
    and decoded :data:`GUIDED_CHECKPOINTS` times (the last at the end). Of the reference and
    these candidates, the one whose decoded block has the smallest task error (as the
    benchmark measures it) is kept, among those whose PSNR is at most ``max_psnr_loss`` dB
    below the reference's. Without ``joint`` only the synthesis MLP is trained, on the fixed
    features of the reference's latents (for blocks whose joint steps are too slow for the
    time left).
    """
    from ..blocks import finalize

    shape = field.config.shape
    config = field.config
    vmin, vmax = loop.vmin, loop.vmax
    span_v = vmax - vmin
    flat = loop.target.reshape(-1)
    target_np = loop.target.cpu().numpy().astype(np.float64)

    def candidate() -> tuple[float, float, BlockCode, bytes, np.ndarray]:
        code, payload = rate_control(field, vmin, vmax, low, high, flat)
        rec = evaluate_code(code, shape, "cpu")
        # scored as the decoder will return it: clipped to the range, integers rounded (the
        # decoded histogram, hence its Otsu threshold, depends on both)
        out = finalize(rec, np.int64 if loop.integral else np.float64, (vmin, vmax))
        norm = ((out.astype(np.float64) - vmin) / span_v).reshape(shape)
        mse = float(np.mean((norm - target_np) ** 2))
        return mse, guidance.task_error(norm, target_np), code, payload, rec

    if loop.crop is not None and flat.numel() > GUIDED_BATCH:
        loop = dataclasses.replace(loop, crop=crop_shape(shape, GUIDED_BATCH))
    began = time.perf_counter()
    ref = candidate()
    coding = time.perf_counter() - began
    candidates = [ref]
    with torch.no_grad():
        rec0 = dense_eval(field, [torch.round(g) for g in field.latents]).reshape(-1)
        guidance.calibrate(rec0, flat, shape)
        del rec0
    groups = [{"params": list(field.linears.parameters()), "lr": LR_GUIDED_MLP}]
    fixed = None
    if joint:
        groups.append({"params": list(field.latents), "lr": LR_GUIDED_LATENT})
    else:
        with torch.no_grad():
            fixed = field.dense_features([torch.round(g) for g in field.latents])
            fixed = fixed.reshape(*shape, -1)
    optimizer = torch.optim.Adam(groups)
    parts = GUIDED_CHECKPOINTS
    if span.deadline is not None:
        # each piece trains at least as long as its candidate takes to code, or is not started
        parts = min(parts, int(max(span.deadline - time.perf_counter(), 0.0) // (2 * coding)))
        if parts < 1:
            _mse, _task, code, payload, rec = ref
            scores = [(-10 * math.log10(max(ref[0], 1e-30)), ref[1])]
            return BlockFit(code, payload, rec, steps_before, config, scores, 0)
    pieces = split_span(span, coding, parts)
    step = steps_before
    for piece in pieces:
        piece.first_step = step
        taken, lam = train(field, optimizer, lam, loop, piece, extra=guidance.loss, fixed=fixed)
        step += taken
        if DEBUG:
            print(
                f"  guided piece: {taken} steps (joint {joint}); coding {coding:.1f} s", flush=True
            )
        if taken:
            candidates.append(candidate())
    limit = ref[0] * 10.0 ** (guidance.max_psnr_loss / 10.0)
    allowed = [c for c in candidates if c[0] <= limit]
    best = min(allowed, key=lambda c: (c[1], c[0]))
    if DEBUG:
        for c in candidates:
            print(
                f"  guided candidate: psnr {-10 * math.log10(max(c[0], 1e-12)):.3f} "
                f"task {c[1]:.4f}{' (kept)' if c is best else ''}",
                flush=True,
            )
    _mse, _task, code, payload, rec = best
    scores = [(-10 * math.log10(max(c[0], 1e-30)), c[1]) for c in candidates]
    return BlockFit(code, payload, rec, step, config, scores, candidates.index(best))
