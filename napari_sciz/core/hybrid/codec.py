"""Hybrid coding of a block: the best classical base layer, a fitted loop filter, a network.

INIF's *codec prior* (``shared/papers/003_*``), made so that it cannot lose: per block the
encoder codes the base layer with each available classical codec (SPERR, HEVC, JPEG XL,
:mod:`napari_sciz.core.hybrid.bases`) at the block's byte budget and keeps the most accurate,
so a hybrid file is never below the best of them at its size. It then fits the light
convolutional synthesis (:mod:`napari_sciz.core.hybrid.loopfilter`) on the decoded base,
choosing its number of classes by rate-distortion (its bytes are taken from the base), and
trains a small neural network over the base's neighbourhood that corrects what the linear
filter leaves (:mod:`napari_sciz.core.hybrid.nnfilter`), kept when it removes more error than
the base bytes it takes would. While the block's time budget allows, it can also try base
shares of :data:`BASE_SHARES` with the latent-grid field
(:func:`napari_sciz.core.lossy.fit.fit_block`) fitting what the filtered base still misses in
the rest of the bytes. The most accurate candidate in the byte window wins. The payload's
layout is :mod:`.payload`'s.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import RatioUnreachableError
from ..bitstream.layout import _varint
from .basechoice import _CHOICE_SHARE, _FILTER_SHARE, _REFINE_SHARE, _choose_base, _refine_base
from .bases import NO_BASE
from .candidate import (
    _MIN_FILTER_VOXELS,
    _Candidate,
    _filtered,
    _layers_bytes,
    _mse,
    _near,
    _plain,
)
from .loopfilter import FilterDesign
from .netstage import _NETWORK_START, _network_probe, _with_network
from .payload import describe, head_bytes, layer_sizes, pack
from .search import BaseLayer, encode_to_size, exact_for
from .tracker import BlockTracker

__all__ = [
    "BASE_SHARES",
    "HybridFit",
    "describe",
    "fit_hybrid_block",
    "layer_sizes",
]

#: shares of a block's budget given to the base layer when a field is fitted on the residual of
#: the filtered base. Empty: in every benchmark so far (docs/benchmarks.md) the residual field
#: never won a block over the base and filter alone, and its transform-coded start is not
#: bounded by the time budget on large blocks (a 2x512x512 CT block took 100-200 s of a 30 s
#: budget), so the encoder no longer spends the user's time on it. (0.8,) tries it again.
BASE_SHARES: tuple[float, ...] = ()
#: the smallest field payload worth fitting (architecture, ranges and a tiny MLP)
_MIN_INR_BYTES = 160
#: loop-filter class counts the encoder chooses from
FILTER_CLASSES = (1, 2, 4, 8, 16)
#: relative step of the base's byte budget used to measure its rate-distortion slope
_SLOPE_STEP = 0.1
#: the loop filter's stage takes about this many encodes of its base (measured: 5 SPERR
#: encodes' time on a 4 Mi-voxel block: a re-coded base and three filter designs); it starts
#: only while that much of the budget is left
_FILTER_ENCODES = 6.0
#: a base and filter that leave more than this share of the bytes unused are topped up
_TOP_UP_SHARE = 0.01
#: a field is fitted on the residual only with at least this many seconds left
_MIN_FIELD_SECONDS = 5.0
#: a base and filter that leave more than this share of a block's bytes unused after the
#: refinement (the codec's finest setting is short of them, and beats every other codec in
#: all of them) leave them to a field fitted on their residual (:func:`_spare_field`)
_SPARE_FIELD_SHARE = 0.1


@dataclass
class HybridFit:
    """Result of :func:`fit_hybrid_block`.

    Attributes
    ----------
    payload : bytes
        The block payload.
    reconstruction : numpy.ndarray
        Decoded values (float64, original units, unclipped).
    steps : int
        Training steps of the field fits.
    base_share : float
        Share of the payload taken by the base layer.
    base_codec : str
        Name of the base codec kept.
    filter_classes : int
        Classes of the loop filter (0: none).
    network_hidden : int
        Hidden units of the neural filter (0: none).
    """

    payload: bytes
    reconstruction: np.ndarray
    steps: int
    base_share: float
    base_codec: str = "sperr"
    filter_classes: int = 0
    network_hidden: int = 0


def _compile_kernels() -> None:
    """Compile the hybrid's numba kernels (or load them from numba's disk cache) before the
    searches time their encodes.

    Without a cache (a fresh install, a new numba) the first SPERR stream's packing compiled
    the bit coder (about 6 s on a 2-core CPU with the filter's kernels), all counted as that
    encode's time: the choice then saw no time to rank another codec and kept SPERR
    (pydicom_eCT at 64x, 30 s: 33.4 dB instead of 49.3 dB with HEVC). Once compiled (or
    loaded) in a process, these calls take microseconds.
    """
    from . import bitmix, kernels

    bitmix.warm_up()
    kernels.warm_up()


def _with_filter(
    full: BaseLayer, target: np.ndarray, avail: int, seed: int, clock: BlockTracker
) -> _Candidate:
    """The base of ``full``'s codec with the loop filter chosen by rate-distortion.

    ``full`` is the base alone in ``avail - 1`` bytes (or fewer: a search short of them is
    re-run near its parameter). The filter's classes trade its bytes against the base's: the
    base's slope (squared error per byte) is measured at ``1 - _SLOPE_STEP`` of the bytes (or
    between the short and the re-run stream), and the filter minimising ``error + slope * bytes`` is
    refitted on a base re-coded in the bytes it leaves.
    """
    codec = full.codec
    plain = _plain(full, target)
    deadline = clock.before(_FILTER_SHARE)
    if target.size < _MIN_FILTER_VOXELS or (deadline and time.perf_counter() > deadline):
        return plain
    if not clock.has_time_for(_FILTER_ENCODES):
        return plain  # the filter's designs and re-coded base would overrun the budget
    # any size near nbytes measures the slope; a base more than half a step short of its
    # bytes (a search that ran out of time in the choice) is searched for all of them instead,
    # with its fill, and the shorter of the two streams measures the slope
    short = len(full.stream) < (avail - 1) * (1 - _SLOPE_STEP / 2)
    nbytes = avail - 1 if short else int((avail - 1) * (1 - _SLOPE_STEP))
    other = encode_to_size(
        codec,
        target,
        nbytes,
        iterations=8 if short else 4,
        deadline=deadline,
        cancel=clock.cancel,
        bracket=_near(full),
        fill=short,
        scan=short,  # (any size near nbytes measures the slope)
    )
    if other is None or len(other.stream) == len(full.stream):
        return plain
    smaller = min(full, other, key=lambda layer: len(layer.stream))
    full = max(full, other, key=lambda layer: len(layer.stream))
    plain = _plain(full, target)
    slope = (smaller.error(target) - plain.error) / (len(full.stream) - len(smaller.stream))
    clock.slope = slope if slope > 0 else None
    design = FilterDesign(full.values, target, seed)
    unit = plain.error / max(design.base_error, 1e-300)  # sample error -> block error
    # the base's sizes are coarse (x265 jumps by ~5 % at low rates): what it left is free
    spare = avail - 1 - len(full.stream)
    scored = []
    for classes, wide in itertools.product(FILTER_CLASSES, (False, True)):
        filt = design.fit(classes, wide)
        fbytes = len(filt.to_bytes())
        extra = max(fbytes + len(_varint(fbytes)) - 1 - spare, 0)
        score = design.error(filt) * unit + max(slope, 0.0) * extra
        scored.append((score, classes, wide, fbytes))
    score, classes, wide, fbytes = min(scored)
    if score >= plain.error:
        return plain
    # the filter on this base with its intensity map: the bytes to leave for both
    cand = _filtered(full, target, classes, seed, wide, avail)
    fbytes = max(fbytes, len(cand.filter_bytes))
    base_room = avail - fbytes - len(_varint(fbytes))
    if _layers_bytes(full, cand.filter_bytes) <= avail:  # it fits in what the base left
        kept = cand if cand.error < plain.error else plain
        return _topped_up(kept, target, avail, (classes, wide), seed, deadline, clock)
    for _ in range(4):
        base = encode_to_size(
            codec, target, base_room, deadline=deadline, cancel=clock.cancel, bracket=_near(full)
        )
        if base is None:
            break
        cand = _filtered(base, target, classes, seed, wide, avail)
        over = _layers_bytes(base, cand.filter_bytes) - avail
        if over <= 0:
            return cand if cand.error < plain.error else plain
        base_room -= over + 8  # the refitted filter came out larger: give the base less
    # out of time or of tries: the smaller base coded for the slope leaves room for a filter
    cand = _filtered(smaller, target, classes, seed, wide, avail)
    fits = _layers_bytes(smaller, cand.filter_bytes) <= avail
    return cand if fits and cand.error < plain.error else plain


def _topped_up(
    cand: _Candidate,
    target: np.ndarray,
    avail: int,
    design: tuple[int, bool],
    seed: int,
    deadline: float | None,
    clock: BlockTracker,
) -> _Candidate:
    """``cand``, or, when its base and filter leave more than :data:`_TOP_UP_SHARE` of
    ``avail`` unused, its base searched again for the bytes the filter leaves (the codec's
    fill on: a one-frame HEVC base jumps ~12 % per quantizer step) with the filter
    (``design``: classes, wide) refitted, when that fits and is more accurate.

    A base searched in a short time (the choice's share of a 30-50 s budget) can end a
    quantizer step short: bbbc034 at 128x with a 28 s budget was coded in 15,831 of its
    16,309 bytes (a file 2 % short).
    """
    spare = avail - _layers_bytes(cand.base, cand.filter_bytes)
    if spare <= _TOP_UP_SHARE * avail or (deadline and time.perf_counter() > deadline):
        return cand
    fbytes = len(cand.filter_bytes)
    room = avail - fbytes - len(_varint(fbytes)) if fbytes else avail - 1
    base = encode_to_size(
        cand.base.codec, target, room, deadline=deadline, cancel=clock.cancel,
        bracket=_near(cand.base), widen=True,
    )  # fmt: skip
    if base is None or len(base.stream) <= len(cand.base.stream):
        return cand
    classes, wide = design
    more = _filtered(base, target, classes, seed, wide, avail) if fbytes else _plain(base, target)
    fits = _layers_bytes(base, more.filter_bytes) <= avail
    return more if fits and more.error < cand.error else cand


def _with_field(
    best: _Candidate,
    target: np.ndarray,
    window: tuple[int, int],
    share: float,
    seconds: float | None,
    seed: int,
    clock: BlockTracker,
    **fit_kwargs: Any,
) -> tuple[_Candidate | None, int]:
    """A base in ``share`` of the bytes, its filter and a field fitted on what they miss."""
    from ..lossy.fit import fit_block

    low, high = window
    room = int(share * (high - head_bytes(high)))
    base = encode_to_size(best.base.codec, target, room, cancel=clock.cancel)
    if base is None:
        return None, 0
    prior = _filtered(base, target, 4, seed)
    used = head_bytes(high) + _layers_bytes(base, prior.filter_bytes)
    if high - used < _MIN_INR_BYTES:
        return None, 0
    fit = fit_block(
        target - prior.values,
        (max(0, low - used), high - used),
        budget=seconds,
        seed=seed,
        **fit_kwargs,
    )
    values = prior.values + fit.reconstruction
    return _Candidate(base, prior.filt, values, _mse(values, target), fit.payload), fit.steps


def _field_stages(
    best: _Candidate,
    target: np.ndarray,
    window: tuple[int, int],
    budget: float | None,
    seed: int,
    clock: BlockTracker,
    fields: dict[str, Any],
) -> tuple[_Candidate, float, int]:
    """``best``, or a field fitted on its residual when that is more accurate: with the
    base re-coded in each of :data:`BASE_SHARES` of the bytes, or, keeping the base, in the
    bytes it leaves (:func:`_spare_field`); the base's share of the bytes and the field's
    training steps."""
    share, steps_done = 1.0, 0
    for base_share in BASE_SHARES:
        # the field's fit gets what is left after re-coding the base and fitting its filter
        seconds = None if budget is None else clock.left() - 1.5 * clock.base_seconds - 2.0
        if best.error == 0.0 or (seconds is not None and seconds < _MIN_FIELD_SECONDS):
            break
        on_field = clock.field_steps(clock.fraction, 1.0)
        cand, n = _with_field(
            best, target, window, base_share, seconds, seed, clock, on_step=on_field, **fields
        )
        steps_done += n
        if cand is not None and cand.error < best.error:
            best, share = cand, base_share
    if share == 1.0:
        seconds = None if budget is None else clock.left() - 2.0
        on_field = clock.field_steps(clock.fraction, 1.0)
        cand, n = _spare_field(best, target, window, seconds, seed, on_step=on_field, **fields)
        steps_done += n
        best = best if cand is None else cand
    return best, share, steps_done


def _used_bytes(best: _Candidate, high: int) -> int:
    """The bytes of a block of ``high`` bytes that ``best``'s base and filter take."""
    return head_bytes(high) + _layers_bytes(best.base, best.filter_bytes)


def _spare_share(best: _Candidate, high: int) -> float:
    """The share of a block's ``high`` bytes that ``best``'s base and filter leave unused."""
    return 1.0 - _used_bytes(best, high) / high


def _spare_field(
    best: _Candidate,
    target: np.ndarray,
    window: tuple[int, int],
    seconds: float | None,
    seed: int,
    **fit_kwargs: Any,
) -> tuple[_Candidate | None, int]:
    """``best`` with a field fitted on its residual in the bytes it leaves, when they are
    more than :data:`_SPARE_FIELD_SHARE` of the block's (None when they are not, when no
    time is left, or when the field does not lower the error), and the field's steps.

    A base whose codec reaches its finest setting short of the block's bytes leaves them
    unused: x265 stops at CRF -6 with 12-bit frames, and on a smooth synthetic float32 CT
    (6x180x180) at 64x its 6.6 kB stream, in 12 kB, beats SPERR's in all of them (2.6 times
    less squared error); the file came out at 113.8x (66.06 dB). The field takes the rest:
    64.3x, 68.15 dB with 30 s (docs/benchmarks.md, "Bytes a base cannot take").
    """
    from ..lossy.fit import fit_block

    low, high = window
    used = _used_bytes(best, high)
    spare = high - used
    if best.network is not None or best.inr or best.error == 0.0:
        return None, 0
    if spare < _MIN_INR_BYTES or spare <= _SPARE_FIELD_SHARE * high:
        return None, 0
    if seconds is not None and seconds < _MIN_FIELD_SECONDS:
        return None, 0
    fit = fit_block(
        target - best.values, (max(0, low - used), spare), budget=seconds, seed=seed, **fit_kwargs
    )
    values = best.values + fit.reconstruction
    cand = _Candidate(best.base, best.filt, values, _mse(values, target), fit.payload)
    return (cand if cand.error < best.error else None), fit.steps


def _field_only(
    target: np.ndarray,
    window: tuple[int, int],
    seconds: float | None,
    seed: int,
    **fit_kwargs: Any,
) -> tuple[_Candidate, int]:
    """No base layer (:data:`~.bases.NO_BASE`): the field fits the block's values."""
    from ..lossy.fit import fit_block

    low, high = window
    used = head_bytes(high) + 1  # the head and an empty filter's length
    if high - used < 1:  # (the field's fit says when its smallest code does not fit)
        raise RatioUnreachableError(
            f"a block of shape {target.shape} cannot be coded in {high} bytes; use a lower ratio"
        )
    window = (max(0, low - used), high - used)
    fit = fit_block(target, window, budget=seconds, seed=seed, **fit_kwargs)
    base = BaseLayer(NO_BASE, b"", np.broadcast_to(np.float64(0.0), target.shape))
    values = np.asarray(fit.reconstruction, np.float64).reshape(target.shape)
    return _Candidate(base, None, values, _mse(values, target), fit.payload), fit.steps


def fit_hybrid_block(
    block: np.ndarray,
    byte_window: tuple[int, int],
    *,
    steps: int | None = None,
    budget: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    cancel: Callable[[], bool] | None = None,
    on_step: Callable[[Any], None] | None = None,
    on_preview: Callable[[np.ndarray], None] | None = None,
    field_reserve: int = 0,
    halved: bool = False,
    **fit_kwargs: Any,
) -> HybridFit:
    """Code one block as base layer + loop filter (+ fitted residual field).

    Parameters
    ----------
    block : numpy.ndarray
        ``(D, H, W)`` values in original units.
    byte_window : tuple of int
        ``(low, high)`` payload bytes.
    steps, budget, seed, device, cancel, on_step, **fit_kwargs
        As in :func:`napari_sciz.core.lossy.fit.fit_block`; a time ``budget`` bounds the whole
        block (the base search, the filter and the field fits). ``cancel`` is checked between
        two classical encodes and every field step; ``on_step`` is called after every stage
        (:class:`~napari_sciz.core.hybrid.tracker.BlockTracker`).
    on_preview : callable, optional
        Called with the block's reconstruction (float32, original units) after every stage.
    field_reserve : int
        Bytes of the window a fitted field leaves unused (the header's growth when the fit
        writes its steps into it; :class:`~napari_sciz.core.plan.BlockJob`).
    halved : bool
        Code the base at half the in-plane resolution (:mod:`.halved`): every base codec
        codes the block's 2x2 means, interpolated back before the filters. Blocks whose
        planes are too small for it code their base as usual.

    Returns
    -------
    HybridFit
        Payload, reconstruction (float64, original units, unclipped), training steps, the
        base layer's share of the payload, the base codec and the filter's classes.
    """
    target = np.asarray(block, dtype=np.float64)
    clock = BlockTracker(budget, target, cancel, on_step, on_preview)
    _compile_kernels()  # (inside the budget, outside any encode's measured time)
    low, high = byte_window
    field_window = (max(0, low - field_reserve), high - field_reserve)
    flat = block.shape[0] == 1
    avail = high - head_bytes(high)  # base, filter length and filter (and network)
    fields = dict(steps=steps, device=device, cancel=cancel, **fit_kwargs)

    constant = target.size == 0 or float(target.min()) == float(target.max())
    exact = exact_for(target)
    full, tried = (
        (None, []) if constant else _choose_base(target, avail - 1, clock, seed, exact, halved)
    )
    clock.check_cancel()
    if full is None:  # constant, or no classical codec fits: the field codes the block alone
        seconds = None if budget is None else max(clock.left(), 0.5)
        on_field = clock.field_steps(_CHOICE_SHARE, 1.0)
        cand, n = _field_only(target, field_window, seconds, seed, on_step=on_field, **fields)
        payload = pack(cand.base.codec.ident, cand.base.stream, b"", b"", cand.inr, flat)
        clock.report(1.0, cand.error, cand.values)
        return HybridFit(payload, cand.values, n, 0.0, cand.base.codec.name, 0)
    if exact is not None and exact(full.values):  # nothing for a filter or a network to correct
        best = _plain(full, target)
        clock.report(1.0, best.error, best.values)
        payload = pack(full.codec.ident, full.stream, b"", b"", best.inr, flat)
        return HybridFit(payload, best.values, 0, 1.0, full.codec.name, 0)
    best = _with_filter(full, target, avail, seed, clock)
    trainer = _network_probe(best, target, avail, clock, seed, steps)
    refine_until = _REFINE_SHARE if trainer is None else _NETWORK_START
    best = _refine_base(best, tried, target, avail, clock, seed, refine_until)
    if trainer is not None:
        best = _with_network(best, trainer, target, avail, clock, seed, steps)
    clock.report(_FILTER_SHARE if budget is not None else 0.6, best.error, best.values)
    best, share, steps_done = _field_stages(best, target, field_window, budget, seed, clock, fields)
    clock.report(1.0, best.error, best.values)
    payload = pack(
        best.base.codec.ident, best.base.stream, best.filter_bytes, best.network_bytes,
        best.inr, flat,
    )  # fmt: skip
    hidden = 0 if best.network is None else best.network.hidden
    return HybridFit(
        payload, best.values, steps_done, share, best.base.codec.name, best.classes, hidden
    )
