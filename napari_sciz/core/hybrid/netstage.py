"""The neural filter's stage of a hybrid block's coding (:mod:`.nnfilter`).

After the loop filter, :func:`_network_probe` trains the widest network within
:data:`_NETWORK_SHARE` of the block's bytes for a few steps and keeps the trainer only when
that already removes more error than the network's bytes would as base bytes; then, after
the base searches, :func:`_with_network` trains it on, makes room for it in the payload and
keeps it only when the block comes out more accurate.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from ..bitstream.layout import _varint
from .candidate import _ERROR_PER_BYTE, _Candidate, _fitting, _layers_bytes, _mse, _near
from .nnfilter import coded_size_estimate
from .nntrain import QUANTIZED_STEPS, NetworkTrainer
from .search import encode_to_size
from .tracker import BlockTracker

#: most of a block's bytes the neural filter may take (its width is the widest that fits)
_NETWORK_SHARE = 0.03

#: hidden units per layer the neural filter is tried with, widest first
_NETWORK_WIDTHS = (16, 12, 8, 6, 4)

#: hidden layers of the neural filter
_NETWORK_DEPTH = 2

#: blocks smaller than this get no neural filter
_MIN_NETWORK_VOXELS = 1 << 15

#: training steps of the probe that decides whether a neural filter is worth its time
_PROBE_STEPS = 100

#: ... which stops at this share of a time budget
_PROBE_SHARE = 0.7

#: ... and starts only while this many encodes of the base fit in the budget left (measured
#: on a 4 Mi-voxel block with a 0.72 s SPERR encode: 3.9 s for the probe's feature sampling,
#: torch's first start and the rebasing, before any training)
_PROBE_ENCODES = 8.0

#: training steps of a neural filter (without a budget: the caller's ``steps``)
_NETWORK_STEPS = 800

#: a neural filter is trained when the probe removes this much more of the error than its
#: bytes would remove as base bytes (the full training removes about twice the probe's)
_PROBE_MARGIN = 0.005

#: share of a time budget by which the base searches stop when a neural filter is trained
_NETWORK_START = 0.7

#: ... by which its training stops
_NETWORK_TRAIN_END = 0.85

#: ... and by which its weights' precision is chosen
_NETWORK_QUANTIZED_END = 0.88

#: bytes a base re-coded to make room for the network leaves for its refitted filter to grow
_REFIT_SLACK = 8

#: ... by which the base re-coded to make room for it must be found
_NETWORK_RECODE_END = 0.92

#: ... and by which the network's training on that base stops
_NETWORK_END = 0.96


def _network_width(flat: bool, avail: int) -> int | None:
    """The widest neural filter within :data:`_NETWORK_SHARE` of ``avail`` bytes, or None."""
    for hidden in _NETWORK_WIDTHS:
        if coded_size_estimate(flat, hidden, _NETWORK_DEPTH) <= _NETWORK_SHARE * avail:
            return hidden
    return None


def _error_per_byte(best: _Candidate, avail: int, clock: BlockTracker) -> float:
    """Mean squared error one more byte of the base removes: the slope measured for the
    loop filter, else :data:`_ERROR_PER_BYTE`'s rule of thumb."""
    if clock.slope is not None:
        return clock.slope
    return _ERROR_PER_BYTE * best.error / max(avail, 1)


def _price(best: _Candidate, avail: int, clock: BlockTracker) -> float:
    """Share of ``best``'s error one more byte of the base removes (a network's bytes are
    priced at it)."""
    return _error_per_byte(best, avail, clock) / best.error


def _network_probe(
    best: _Candidate,
    target: np.ndarray,
    avail: int,
    clock: BlockTracker,
    seed: int,
    steps: int | None,
) -> NetworkTrainer | None:
    """A trainer of the neural filter after a few steps, when they show it worth its bytes
    and time (None: the block is too small or too accurate, or the probe removed too little)."""
    flat = target.shape[0] == 1
    hidden = _network_width(flat, avail)
    if hidden is None or target.size < _MIN_NETWORK_VOXELS or best.error == 0.0:
        return None
    deadline = clock.before(_PROBE_SHARE)
    if deadline is not None and time.perf_counter() > deadline:
        return None
    if not clock.has_time_for(_PROBE_ENCODES):
        return None  # a probe (feature sampling, torch's start) that would overrun the budget
    trainer = NetworkTrainer(
        best.base.values, best.values, target, hidden=hidden, depth=_NETWORK_DEPTH, seed=seed
    )
    probe = _PROBE_STEPS if steps is None else min(_PROBE_STEPS, steps)
    trainer.train(probe, deadline, clock.cancel)
    nbytes = coded_size_estimate(flat, hidden, _NETWORK_DEPTH)
    cost = _price(best, avail, clock) * (nbytes + len(_varint(nbytes)))
    return trainer if trainer.sample_gain() > cost + _PROBE_MARGIN else None


def _with_network(
    best: _Candidate,
    trainer: NetworkTrainer,
    target: np.ndarray,
    avail: int,
    clock: BlockTracker,
    seed: int,
    steps: int | None,
) -> _Candidate:
    """``best`` with the trained neural filter, when it removes more error than its bytes.

    The network trains on ``best``'s base until :data:`_NETWORK_TRAIN_END` of the budget, then
    through the quantizer at the precision that pays best (:meth:`NetworkTrainer.quantize`). It
    fits in the bytes the base and filter left, or the base is re-coded that much smaller
    (and its filter refitted; the network trains a quarter of its steps more on it) when the
    network removes more error than those bytes would (:func:`_error_per_byte`); the result
    is kept only when it is more accurate.
    """
    if trainer.filtered is not best.values:  # the refined base won: train on it
        trainer.rebase(best.base.values, best.values)
    total = _NETWORK_STEPS if steps is None else steps
    trainer.train(max(total - trainer.steps, 1), clock.before(_NETWORK_TRAIN_END), clock.cancel)
    quantized = min(QUANTIZED_STEPS, max(total // 8, 1))
    price = _price(best, avail, clock)
    trainer.quantize(price, clock.before(_NETWORK_QUANTIZED_END), clock.cancel, quantized)
    net = trainer.result()
    values = net.apply(best.base.values, best.values)
    error = _mse(values, target)
    nbytes = len(net.to_bytes())
    extra = nbytes + len(_varint(nbytes))
    shrink = extra - (avail - _layers_bytes(best.base, best.filter_bytes))
    if shrink <= 0:
        return (
            replace(best, values=values, error=error, network=net) if error < best.error else best
        )
    if error + _error_per_byte(best, avail, clock) * shrink >= best.error:
        return best
    base = encode_to_size(
        best.base.codec, target, len(best.base.stream) - shrink - _REFIT_SLACK,
        deadline=clock.before(_NETWORK_RECODE_END), cancel=clock.cancel, bracket=_near(best.base),
    )  # fmt: skip
    if base is None:
        return best
    wide = best.wide if best.filt is not None else True
    cand = _fitting(base, target, avail - extra, best.classes or 4, wide, seed)
    if _layers_bytes(cand.base, cand.filter_bytes) + extra > avail:
        return best
    # the network learnt on the larger base: a few more steps on the smaller one
    trainer.rebase(cand.base.values, cand.values)
    trainer.train(max(total // 4, 1), clock.before(_NETWORK_END), clock.cancel)
    net = trainer.result()
    values = net.apply(cand.base.values, cand.values)
    error = _mse(values, target)
    return replace(cand, values=values, error=error, network=net) if error < best.error else best
