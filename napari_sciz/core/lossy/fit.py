"""Fitting one block's field under a byte budget (rate-distortion training + rate control).

Training minimises ``MSE + lambda * bits / voxels`` where ``bits`` is the Laplace estimate of
the latents' coded size. Quantization is simulated by additive uniform noise for the first part
of training, then by straight-through rounding. ``lambda`` is steered during training so that
the estimated size tracks the block's budget, and a final bisection on the latent quantization
step lands the real entropy-coded payload inside the requested byte window.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ...errors import CancelledError
from .code import DEBUG, constant_code, dense_eval, evaluate_code
from .entropy import BlockCode, encode_block
from .model import FieldConfig, LatentField, laplace_bits
from .ratecontrol import attach_arm, payload_bytes, rate_control
from .start import best_start, retarget_start

if TYPE_CHECKING:  # pragma: no cover
    from ..guidance import Guidance

__all__ = ["BlockFit", "StepInfo", "fit_block"]

#: Fraction of training spent with noise as the quantization proxy (the rest uses rounding).
NOISE_PHASE = 0.0
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
#: steps between two measurements of the real coded size during training
RATE_CHECK = 20
#: share of a time budget the choice of the starting point may use
START_SHARE = 0.6
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
#: the same with guidance, which needs time for its refinement
START_SHARE_GUIDED = 0.35
#: with guidance, the share of the time (or steps) of the plain fit that makes the reference;
#: the guided refinement gets the rest (see docs/guidance.md)
GUIDED_REFERENCE_SHARE = 0.4
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
#: codings of the payload rate control typically needs (15 measured on neuroproof at 64x;
#: 0.24 s each for its 128^3 block), reserved from a time budget
RC_CODINGS = 12


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
    field, coding = _start(
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
    if on_preview is not None:
        # the starting point is already a good reconstruction: show it at once
        with torch.no_grad():
            start = dense_eval(field, [torch.round(g) for g in field.latents])
        on_preview(start.double().cpu().numpy() * span + vmin)
    with torch.no_grad():
        rec0 = dense_eval(field, [torch.round(g) for g in field.latents]).reshape(-1)
        mse0 = float(torch.mean((rec0 - target) ** 2))
        del rec0
    # high-rate slope of the distortion-rate curve: dD/dR = -2 ln 2 D
    lam = 2 * math.log(2) * max(mse0, 1e-10) * n_vox / budget_bits
    if on_step is not None:
        # report the starting point (step 0) before training, which may not run at all when
        # choosing the start used up a short time budget
        elapsed = time.perf_counter() - t0
        frac0 = 0.0 if budget is None else min(elapsed / max(budget, 1e-9), 1.0)
        on_step(StepInfo(0, frac0, mse0, -10 * math.log10(max(mse0, 1e-12)), elapsed))
    loop = _Loop(
        target=target.reshape(shape),
        crop=_crop_shape(shape, batch) if batch < n_vox else None,
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
    share = 1.0 if guidance is None else GUIDED_REFERENCE_SHARE
    if budget is None:
        plain = _Span(steps=round(share * (steps or 0)), progress=(0.0, share))
    else:
        # rate control codes the payload about RC_CODINGS times after training: keep that time
        train_end = t0 + max(0.5, 0.9 * budget - 0.5 - RC_CODINGS * coding)
        origin = t0  # the schedule counts from t0: the start's time is part of the budget
        if guidance is not None:
            origin = time.perf_counter()
            train_end = origin + share * max(train_end - origin, 0.0)
        plain = _Span(deadline=train_end, progress=(0.0, share), origin=origin)
    start_state = {k: v.detach().clone() for k, v in field.state_dict().items()}
    optimizer = torch.optim.Adam(
        [
            {"params": list(field.latents), "lr": LR_LATENT},
            {"params": list(field.linears.parameters()), "lr": LR_MLP},
        ]
    )
    began = time.perf_counter()
    step, lam = _train(field, optimizer, lam, loop, plain)
    step_seconds = (time.perf_counter() - began) / step if step else math.inf
    if step:
        # keep the fitted field only if it beats its transform-coded starting point
        with torch.no_grad():
            rec = dense_eval(field, [torch.round(g) for g in field.latents]).reshape(-1)
            mse_fit = float(torch.mean((rec - target) ** 2))
            if DEBUG:
                print(
                    f"  keep-best: start {mse0:.4g} fit {mse_fit:.4g} ({step} steps, "
                    f"{time.perf_counter() - t0:.1f} s)",
                    flush=True,
                )
            if mse_fit > mse0:
                field.load_state_dict(start_state)
    if guidance is not None:
        if budget is None:
            rest = _Span(steps=max((steps or 0) - plain.steps, 0), progress=(share, 1.0))
        else:
            rest = _Span(deadline=t0 + 0.9 * budget - 0.5, progress=(share, 1.0))
        joint = float(rest.steps)
        if rest.deadline is not None:
            # expected joint steps in the time left, a step's cost taken as its voxels'
            shrink = min(GUIDED_BATCH, n_vox) / min(batch, n_vox)
            joint = (rest.deadline - time.perf_counter()) / (step_seconds * shrink)
        return _guided_refinement(
            field, guidance, lam, loop, rest, low, high, step, joint >= GUIDED_MIN_JOINT_STEPS
        )
    code, payload = rate_control(field, vmin, vmax, low, high, target)
    reconstruction = evaluate_code(code, shape, "cpu")
    return BlockFit(code, payload, reconstruction, step, config)


def _start(
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


@dataclass
class _Loop:
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
class _Span:
    """How long a training phase runs (``steps`` or a ``deadline``) and its share of progress."""

    steps: int = 0
    deadline: float | None = None
    progress: tuple[float, float] = (0.0, 1.0)
    first_step: int = 0
    #: when the time of a deadline span counts from (default: when training starts)
    origin: float | None = None


def _train(
    field: LatentField,
    optimizer: torch.optim.Optimizer,
    lam: float,
    loop: _Loop,
    span: _Span,
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
    scales = _level_scales(field)
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
            scales = _level_scales(field)
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


def _guided_refinement(
    field: LatentField,
    guidance: Guidance,
    lam: float,
    loop: _Loop,
    span: _Span,
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
        loop = dataclasses.replace(loop, crop=_crop_shape(shape, GUIDED_BATCH))
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
    pieces = _split(span, coding, parts)
    step = steps_before
    for piece in pieces:
        piece.first_step = step
        taken, lam = _train(field, optimizer, lam, loop, piece, extra=guidance.loss, fixed=fixed)
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


def _split(span: _Span, coding_seconds: float, parts: int) -> list[_Span]:
    """``parts`` equal pieces of a training span, each followed by a coding."""
    lo, hi = span.progress
    edges = [lo + (hi - lo) * i / parts for i in range(parts + 1)]
    if span.deadline is None:
        cuts = [span.steps * i // parts for i in range(parts + 1)]
        return [
            _Span(steps=cuts[i + 1] - cuts[i], progress=(edges[i], edges[i + 1]))
            for i in range(parts)
        ]
    now = time.perf_counter()
    train = max(span.deadline - now - parts * coding_seconds, 0.0) / parts
    return [
        _Span(
            deadline=now + (i + 1) * train + i * coding_seconds,
            progress=(edges[i], edges[i + 1]),
        )
        for i in range(parts)
    ]


def _level_scales(field: LatentField) -> list[torch.Tensor]:
    """Laplace scale of each level's rounded latents (their mean absolute value)."""
    with torch.no_grad():
        return [torch.round(g).abs().mean().clamp_min(0.02) for g in field.latents]


def _crop_shape(shape: tuple[int, ...], batch: int) -> tuple[int, int, int]:
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
