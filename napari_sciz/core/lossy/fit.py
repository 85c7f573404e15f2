"""Fitting one block's field under a byte budget (rate-distortion training + rate control).

Training minimises ``MSE + lambda * bits / voxels`` where ``bits`` is the Laplace estimate of
the latents' coded size. Quantization is simulated by additive uniform noise for the first part
of training, then by straight-through rounding. ``lambda`` is steered during training so that
the estimated size tracks the block's budget, and a final bisection on the latent quantization
step lands the real entropy-coded payload inside the requested byte window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from .code import DEBUG, constant_code, dense_eval, evaluate_code
from .entropy import encode_block
from .guided import GUIDED_BATCH, GUIDED_MIN_JOINT_STEPS, guided_refinement
from .model import FieldConfig
from .ratecontrol import rate_control
from .start import start_field
from .training import BlockFit, Loop, Span, StepInfo, crop_shape, train

if TYPE_CHECKING:  # pragma: no cover
    from ..guidance import Guidance

__all__ = ["BlockFit", "StepInfo", "fit_block"]

#: Largest number of voxels evaluated per training step.
DEFAULT_BATCH = 2**18
#: Adam step of the latents (in quantization units). The closed-loop pyramid start is already a
#: good transform code of the block; larger steps (5e-3 before 0.2) moved latents across rounding
#: boundaries faster than the MLP could follow and lost 0.3-1.3 dB against the start (measured at
#: 300 steps on stardist_img3d, nbsd and neuroproof crops at 16-256x; see docs/method.md).
LR_LATENT = 1e-4
LR_MLP = 1e-3
#: blocks with fewer voxels are fitted single-threaded on the CPU
SMALL_BLOCK = 2**20
#: share of a time budget the choice of the starting point may use
START_SHARE = 0.6
#: the same with guidance, which needs time for its refinement
START_SHARE_GUIDED = 0.35
#: with guidance, the share of the time (or steps) of the plain fit that makes the reference;
#: the guided refinement gets the rest (see docs/guidance.md)
GUIDED_REFERENCE_SHARE = 0.4
#: codings of the payload rate control typically needs (15 measured on neuroproof at 64x;
#: 0.24 s each for its 128^3 block), reserved from a time budget
RC_CODINGS = 12


def fit_block(
    block: np.ndarray,
    byte_window: tuple[int, int],
    **kwargs: object,
) -> BlockFit:
    """Fit one block so that its payload lands in ``byte_window`` (see :func:`_fit_block`).

    On the CPU, small blocks are fitted with one thread: OpenMP's fork/join costs more than
    it gives on small tensors, and much more when other processes compete for the cores.
    """
    device = str(kwargs.get("device", "cpu"))
    small = math.prod(block.shape) < SMALL_BLOCK
    if device != "cpu" or not small:
        return _fit_block(block, byte_window, **kwargs)  # type: ignore[arg-type]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_block(block, byte_window, **kwargs)  # type: ignore[arg-type]
    finally:
        torch.set_num_threads(threads)


def _fit_block(
    block: np.ndarray,
    byte_window: tuple[int, int],
    *,
    steps: int | None = None,
    budget: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    batch: int = DEFAULT_BATCH,
    on_step: Callable[[StepInfo], None] | None = None,
    on_preview: Callable[[np.ndarray], None] | None = None,
    preview_interval: float = 3.0,
    cancel: Callable[[], bool] | None = None,
    guidance: Guidance | None = None,
    labels: np.ndarray | None = None,
) -> BlockFit:
    """Fit one block so that its payload lands in ``byte_window``.

    Parameters
    ----------
    block : numpy.ndarray
        ``(D, H, W)`` values in original units (any real dtype).
    byte_window : tuple of int
        ``(low, high)`` payload size in bytes: the payload is made at most ``high`` bytes, and
        at least ``low`` bytes unless the block is reproduced exactly with fewer.
    steps : int, optional
        Number of training steps. Exactly one of ``steps`` and ``budget`` should be given;
        without either 500 steps are used.
    budget : float, optional
        Wall-clock seconds for this block (training plus rate control).
    seed : int
        Random seed (initialisation and sampling).
    device : str
        Torch device.
    batch : int
        Voxels evaluated per step (random subset when the block is larger).
    on_step, on_preview, preview_interval, cancel
        Progress callback (every step), preview callback (normalised reconstruction in original
        units, at most every ``preview_interval`` seconds), and cancel predicate (checked every
        step; raises :class:`~napari_sciz.errors.CancelledError`).
    guidance : Guidance, optional
        Application guidance (:mod:`napari_sciz.core.guidance`): its loss is added to the
        MSE of every training crop, and the guided objective decides whether the trained field
        beats its starting point.
    labels : numpy.ndarray, optional
        Labels of the block's voxels for segmentation guidance (same shape as ``block``).

    Returns
    -------
    BlockFit
    """
    t0 = time.perf_counter()
    low, high = byte_window
    shape = tuple(int(n) for n in block.shape)
    config = FieldConfig.choose(shape, 8.0 * high)
    vmin = float(np.min(block))
    vmax = float(np.max(block))
    if vmax == vmin or not math.isfinite(vmax - vmin):
        code = constant_code(vmin, config)
        payload = encode_block(code)
        return BlockFit(code, payload, np.full(shape, vmin, np.float64), 0, config)
    if steps is None and budget is None:
        steps = 500

    gen = torch.Generator(device="cpu").manual_seed(seed)
    torch.manual_seed(seed)
    span = vmax - vmin
    target = torch.from_numpy(((np.asarray(block, np.float64) - vmin) / span).astype(np.float32))
    target = target.to(device).reshape(-1)
    if guidance is not None:
        guidance.prepare(target.reshape(shape).cpu().numpy(), labels, device=device)
    n_vox = target.numel()
    n_mlp = sum(math.prod(s) for s in config.mlp_shapes())
    budget_bits = max(
        8.0 * (0.5 * (low + high)) - 8.0 * (40 + 2 * config.n_levels) - 7.0 * n_mlp, 64.0
    )
    start_seconds = (
        None
        if budget is None
        else (START_SHARE if guidance is None else START_SHARE_GUIDED) * budget
    )
    field, coding = start_field(
        config,
        target.reshape(shape),
        budget_bits,
        device,
        (vmin, vmax),
        (low, high),
        budget,
        None if start_seconds is None else (t0, start_seconds),
        seed,
    )
    config = field.config
    mse0 = _starting_error(field, target, (vmin, span), on_preview)
    # high-rate slope of the distortion-rate curve: dD/dR = -2 ln 2 D
    lam = 2 * math.log(2) * max(mse0, 1e-10) * n_vox / budget_bits
    if on_step is not None:
        # report the starting point (step 0) before training, which may not run at all when
        # choosing the start used up a short time budget
        elapsed = time.perf_counter() - t0
        frac0 = 0.0 if budget is None else min(elapsed / max(budget, 1e-9), 1.0)
        on_step(StepInfo(0, frac0, mse0, -10 * math.log10(max(mse0, 1e-12)), elapsed))
    loop = Loop(
        target=target.reshape(shape),
        crop=crop_shape(shape, batch) if batch < n_vox else None,
        gen=gen,
        payload_bits=8.0 * 0.5 * (low + high),
        vmin=vmin,
        vmax=vmax,
        t0=t0,
        on_step=on_step,
        on_preview=on_preview,
        preview_interval=preview_interval,
        cancel=cancel,
        last_preview=time.perf_counter(),
        integral=bool(np.issubdtype(np.asarray(block).dtype, np.integer)),
    )
    plain = _plain_span(t0, steps, budget, coding, guided=guidance is not None)
    start_state = {k: v.detach().clone() for k, v in field.state_dict().items()}
    optimizer = torch.optim.Adam(
        [
            {"params": list(field.latents), "lr": LR_LATENT},
            {"params": list(field.linears.parameters()), "lr": LR_MLP},
        ]
    )
    began = time.perf_counter()
    step, lam = train(field, optimizer, lam, loop, plain)
    step_seconds = (time.perf_counter() - began) / step if step else math.inf
    if step:
        _keep_better(
            field, start_state, target, mse0, f"{step} steps, {time.perf_counter() - t0:.1f} s"
        )
    if guidance is not None:
        if budget is None:
            rest = Span(steps=max((steps or 0) - plain.steps, 0), progress=(plain.progress[1], 1.0))
        else:
            rest = Span(deadline=t0 + 0.9 * budget - 0.5, progress=(plain.progress[1], 1.0))
        joint = float(rest.steps)
        if rest.deadline is not None:
            # expected joint steps in the time left, a step's cost taken as its voxels'
            shrink = min(GUIDED_BATCH, n_vox) / min(batch, n_vox)
            joint = (rest.deadline - time.perf_counter()) / (step_seconds * shrink)
        return guided_refinement(
            field, guidance, lam, loop, rest, low, high, step, joint >= GUIDED_MIN_JOINT_STEPS
        )
    code, payload = rate_control(field, vmin, vmax, low, high, target)
    reconstruction = evaluate_code(code, shape, "cpu")
    return BlockFit(code, payload, reconstruction, step, config)


def _starting_error(
    field: torch.nn.Module,
    target: torch.Tensor,
    scale: tuple[float, float],
    on_preview: Callable[[np.ndarray], None] | None,
) -> float:
    """The mean squared error of the starting field's rounded latents against ``target``
    (normalised values); the start is shown at once through ``on_preview`` (in original units:
    ``scale`` is ``(vmin, span)``)."""
    vmin, span = scale
    with torch.no_grad():
        rec = dense_eval(field, [torch.round(g) for g in field.latents])
        if on_preview is not None:  # the start is already a good reconstruction
            on_preview(rec.double().cpu().numpy() * span + vmin)
        return float(torch.mean((rec.reshape(-1) - target) ** 2))


def _plain_span(
    t0: float, steps: int | None, budget: float | None, coding: float, *, guided: bool
) -> Span:
    """The steps, or the deadline, of the plain (MSE + rate) training from ``t0``: all of it,
    or with guidance the reference's share (:data:`GUIDED_REFERENCE_SHARE`) of what follows
    the start; rate control's :data:`RC_CODINGS` codings of ``coding`` seconds are kept."""
    share = GUIDED_REFERENCE_SHARE if guided else 1.0
    if budget is None:
        return Span(steps=round(share * (steps or 0)), progress=(0.0, share))
    train_end = t0 + max(0.5, 0.9 * budget - 0.5 - RC_CODINGS * coding)
    origin = t0  # the schedule counts from t0: the start's time is part of the budget
    if guided:
        origin = time.perf_counter()
        train_end = origin + share * max(train_end - origin, 0.0)
    return Span(deadline=train_end, progress=(0.0, share), origin=origin)


def _keep_better(
    field: torch.nn.Module,
    start_state: dict[str, torch.Tensor],
    target: torch.Tensor,
    mse0: float,
    what: str,
) -> None:
    """Back to the transform-coded starting point (``start_state``, of error ``mse0``) when
    the trained field, latents rounded, is less accurate."""
    with torch.no_grad():
        rec = dense_eval(field, [torch.round(g) for g in field.latents]).reshape(-1)
        mse_fit = float(torch.mean((rec - target) ** 2))
    if DEBUG:
        print(f"  keep-best: start {mse0:.4g} fit {mse_fit:.4g} ({what})", flush=True)
    if mse_fit > mse0:
        field.load_state_dict(start_state)
