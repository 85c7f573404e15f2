"""A base codec's stream at a byte target: the size search of the hybrid encoder.

:func:`encode_to_size` searches a codec's quality parameter (:mod:`.bases`) for the most
accurate stream that fits a number of bytes, within a deadline; :class:`BaseLayer` is what it
finds: the stream, its decoded values and where its parameter lies.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...errors import CancelledError
from ..metrics import squared_error_sum
from .bases import BaseCodec

__all__ = ["BaseLayer", "encode_to_size", "exact_for"]


@dataclass
class BaseLayer:
    """A base stream and its decoded values."""

    codec: BaseCodec
    stream: bytes
    values: np.ndarray
    #: where the stream's quality parameter lies in the codec's range (0 to 1)
    position: float = math.nan
    #: encodes the size search ran to find it
    encodes: int = 1

    def error(self, target: np.ndarray) -> float:
        """Mean squared error against ``target``."""
        return squared_error_sum(self.values, target) / target.size if target.size else 0.0


#: parameters tried between the last fitting and non-fitting ones when the search ends short
_SCAN_POINTS = 4
#: a codec with a filler (:meth:`~.bases.BaseCodec.filler`) stops its parameter search once the
#: fitting and non-fitting parameters are this close (0 to 1; for HEVC 0.3 CRF, about what a
#: fill spans): the fill searches between their sizes
_FILL_BRACKET = 0.005
#: a size change this many times the codec's typical slope between close positions is a jump
_JUMP = 4.0
#: encodes of a fill search
_FILL_ITERATIONS = 8
#: a search stops once a stream lands this close below the bytes
_TOLERANCE = 0.005
#: a codec without a typical slope whose first streams are this many times too large tries
#: the lowest quality of its bracket next: if even that does not fit, the search ends (JPEG
#: XL at 256x: 12-25 s of bisection found that nothing fits, now 0.7-1.6 s)
_FAR = 2.0
#: how far below the bytes a secant step from a stream too large aims
_BELOW = 0.03
#: encodes of a proxy's probe (:func:`_probe`), and the log size within which it stops
_PROBE_ENCODES = 3
_PROBE_TOLERANCE = 0.08
#: the share of the bytes a probe aims at: the real setting's streams are 0.83-1.33x the
#: proxy's, and a first stream that fits gives the search a stream to keep
_PROBE_AIM = 0.85
#: a stream that fits in this share of the bytes or less is decoded and checked for exactness
#: before a higher quality is tried (an exact stream cannot be bettered: a block with a few
#: flat regions took 14 SPERR and 14 JPEG XL encodes of one size, 295 s for 16 Mi voxels)
_EXACT_BELOW = 0.5
#: exactness checks (decodes) one search makes at most
_EXACT_CHECKS = 2
#: the share of voxels equal to their neighbour from which streams are checked for exactness
#: (a block of flat regions; noise has few)
_FLAT_NEIGHBOURS = 0.5
#: two streams that fit, this far apart in quality (0 to 1) and of the same size: the sizes
#: no longer grow, and the search ends
_FLAT_SPAN = 0.05


def encode_to_size(
    codec: BaseCodec,
    block: np.ndarray,
    nbytes: int,
    *,
    iterations: int = 14,
    deadline: float | None = None,
    cancel: Callable[[], bool] | None = None,
    bracket: tuple[float, float] = (0.0, 1.0),
    start: float | None = None,
    fill: bool = True,
    first: bool = False,
    exact: Callable[[np.ndarray], bool] | None = None,
    widen: bool = False,
) -> BaseLayer | None:
    """The best-quality stream of ``codec`` for ``block`` of at most ``nbytes`` bytes.

    The quality parameter is searched by regula falsi on the logarithm of the stream size
    (bisection steps in between; secant steps from the codec's typical slope,
    :attr:`~.bases.BaseCodec.slope`, while all sizes lie on one side of ``nbytes``), from
    ``start`` (a position in ``bracket``) when given, stopping once a stream lands within
    :data:`_TOLERANCE` (0.5 %) of ``nbytes``; a codec without a slope whose first stream is
    :data:`_FAR` times too large tries the bracket's lowest quality next. A codec with a
    proxy (:meth:`~.bases.BaseCodec.proxy`: HEVC ``medium``), searched over its whole range
    from scratch, starts where the proxy codes :data:`_PROBE_AIM` of the bytes, with the
    slope the proxy measured there (:func:`_probe`). When it ends further
    below, the codec's filler
    (:meth:`~.bases.BaseCodec.filler`: HEVC; unless ``fill`` is false) grows the largest
    stream that fits towards ``nbytes`` and is kept when more accurate, or, for a codec
    without one, :data:`_SCAN_POINTS` parameters between the last one that fitted and the
    last one that did not are tried (sizes are not monotone in them).
    With a ``deadline`` (a ``perf_counter`` time) no encode starts that the previous one's
    duration says would end after it: the best stream that fits so far is returned, or
    ``None`` when none fits yet. ``cancel`` is checked before every encode
    (:class:`~napari_sciz.errors.CancelledError`). ``bracket`` narrows the search to part of
    the parameter's range (0 to 1, as :attr:`BaseLayer.position`) around a known answer;
    with ``widen`` it is only where the search starts: while every stream lies on one side
    of ``nbytes``, a secant step that would leave it moves its edge out by the bracket's
    width (x265 ``slow`` coded pydicom at ``medium``'s CRF 21 % smaller, and a bracket of
    +-3.4 CRF left its search 5.5 % short of the bytes).
    ``first``: the first encode starts even past the deadline (a block's only chance of a
    base: without one its field codes everything, far worse, in no less time). ``exact``
    tells whether decoded values reproduce the block (:func:`exact_for`): a stream that fits
    in :data:`_EXACT_BELOW` of the bytes and decodes exactly ends the search (at most
    :data:`_EXACT_CHECKS` decodes). The search also ends when its next parameter is the one
    just tried, or two streams :data:`_FLAT_SPAN` apart have one size (the top of the range,
    where sizes stop growing).

    Returns
    -------
    BaseLayer or None
        ``None`` when even the lowest quality does not fit, the codec fails on the block, or
        the deadline came before a stream fitted.
    """
    shape3 = tuple(int(n) for n in block.shape)

    def to_param(t: float) -> float:
        return _param(codec, t)

    encodes = 0

    def size_at(t: float) -> tuple[int, bytes]:
        nonlocal encodes
        encodes += 1
        stream = codec.encode(block, to_param(t))
        return len(stream), stream

    best: bytes | None = None
    best_t = math.nan
    lo_t, hi_t = bracket
    width = hi_t - lo_t
    lo_size, hi_size = None, None
    t = 0.5 * (lo_t + hi_t)
    guess = codec.param_for_size(block, nbytes)
    if guess is not None and codec.lo < guess < codec.hi:  # a rate-driven codec: start there
        u = (
            (math.log(guess) - math.log(codec.lo)) / (math.log(codec.hi) - math.log(codec.lo))
            if codec.log
            else (guess - codec.lo) / (codec.hi - codec.lo)
        )
        t = min(max(u if codec.increasing else 1.0 - u, lo_t), hi_t)
    typical = codec.slope
    proxy = codec.proxy() if guess is None and start is None else None
    if proxy is not None and typical is not None and bracket == (0.0, 1.0):
        aim = int(_PROBE_AIM * nbytes)
        probed = _probe(proxy, block, aim, t, typical, deadline, cancel)
        if probed is not None:  # where the faster setting codes the aim, and its slope
            t, typical = probed
    if start is not None:
        t = min(max(start, lo_t), hi_t)
    last = 0.0  # seconds the previous encode took
    fills = fill and codec.filler(to_param(t)) is not None
    prev: tuple[float, int] | None = None  # the previous (position, size) of a secant step
    floor = False  # whether the lowest quality of the bracket was tried
    checks = 0  # exactness checks made

    def out_of_time() -> bool:
        if first and encodes == 0:
            return False
        return deadline is not None and time.perf_counter() + last > deadline

    for i in range(iterations):
        if cancel is not None and cancel():
            raise CancelledError("compression cancelled; no output written")
        if out_of_time():
            break
        t0 = time.perf_counter()
        try:
            size, stream = size_at(t)
        except Exception:  # noqa: BLE001 - a codec that cannot code this block is skipped
            return None
        last = time.perf_counter() - t0
        if size <= nbytes:
            if best is None or size > len(best):
                best, best_t = stream, t
            flat = lo_size == size and abs(t - lo_t) >= _FLAT_SPAN
            lo_t, lo_size = t, size
            if size >= (1.0 - _TOLERANCE) * nbytes or flat:
                break  # (in the window, or the sizes no longer grow with the quality)
            if exact is not None and size <= _EXACT_BELOW * nbytes and checks < _EXACT_CHECKS:
                checks += 1
                values = codec.decode(stream, shape3)  # type: ignore[arg-type]
                if exact(values):  # (no higher quality can be more accurate)
                    return BaseLayer(codec, stream, values, t, encodes)
        else:
            hi_t, hi_size = t, size
        tried = to_param(t)
        if fills and _jump(codec, (lo_t, lo_size), (hi_t, hi_size)):
            break  # the fill goes on from the stream that fits
        if lo_size is not None and hi_size is not None and i % 2 == 0:
            a, b = math.log(max(lo_size, 1)), math.log(max(hi_size, 1))
            frac = (math.log(nbytes) - a) / (b - a) if b > a else 0.5
            t = lo_t + min(max(frac, 0.1), 0.9) * (hi_t - lo_t)
        elif lo_size is None and t <= lo_t + 1e-3 and (not widen or lo_t <= 0.0):
            break
        elif lo_size is None and codec.slope is None and size > _FAR * nbytes and not floor:
            floor, t = True, lo_t  # far above: whether the lowest quality fits at all first
        elif typical is not None and (lo_size is None or hi_size is None):
            # one side known: a secant step towards nbytes (the codec's typical slope first),
            # from above towards a little less (a stream that fits is what a deadline keeps)
            slope = _secant_slope(typical, prev, (t, size))
            aim = nbytes if size <= nbytes else (1.0 - _BELOW) * nbytes
            step = abs(math.log(aim / max(size, 1))) / slope
            prev = (t, size)
            if widen and size <= nbytes and t + step > hi_t:
                hi_t = min(hi_t + width, 1.0)
            elif widen and size > nbytes and t - step < lo_t:
                lo_t = max(lo_t - width, 0.0)
            t = min(t + step, hi_t) if size <= nbytes else max(t - step, lo_t)
        else:
            t = 0.5 * (lo_t + hi_t)
        if to_param(t) == tried:
            break  # (the same stream again: the top or bottom of the range)
    narrow = hi_t - lo_t < 1e-3  # a jump at one parameter: nothing between to try
    short = best is not None and len(best) < (1.0 - _TOLERANCE) * nbytes
    if short and fills and not out_of_time():
        plain = BaseLayer(codec, best, codec.decode(best, shape3), best_t, encodes)  # type: ignore[arg-type]
        over = None if hi_size is None else (to_param(hi_t), hi_size)
        return _filled(plain, to_param(best_t), block, nbytes, over, deadline, cancel)
    if short and hi_size is not None and not narrow:
        # sizes jump between nearby parameters (x265's mode decisions flip): look between
        # the largest stream that fits and the smallest that does not for a larger one
        for t in np.linspace(lo_t, hi_t, _SCAN_POINTS + 2)[1:-1]:
            if (cancel is not None and cancel()) or out_of_time():
                break
            size, stream = size_at(float(t))
            if len(best) < size <= nbytes:
                best, best_t = stream, float(t)
    if best is None:
        if out_of_time() or (floor and lo_t == 0.0):
            return None
        try:
            size, stream = size_at(0.0)
        except Exception:  # noqa: BLE001
            return None
        if size > nbytes:
            return None
        best, best_t = stream, 0.0
    values = codec.decode(best, shape3)  # type: ignore[arg-type]
    return BaseLayer(codec, best, values, best_t, max(encodes, 1))


def exact_for(target: np.ndarray) -> Callable[[np.ndarray], bool] | None:
    """Whether decoded values reproduce ``target`` (within half a step of its integers when
    every value is an integer, as the decoded volume is rounded; equal otherwise), or None
    when a codec is unlikely to (fewer than :data:`_FLAT_NEIGHBOURS` of the voxels equal
    their neighbour along the last axis: noise, where checking would only cost decodes)."""
    if target.size == 0 or target.shape[-1] < 2:
        return None
    same = np.count_nonzero(target[..., 1:] == target[..., :-1])
    if same < _FLAT_NEIGHBOURS * target[..., 1:].size:
        return None
    integral = bool(np.array_equal(target, np.rint(target)))

    def exact(values: np.ndarray) -> bool:
        if values.shape != target.shape:
            return False
        if integral:
            return bool(np.all(np.abs(values - target) < 0.5))
        return bool(np.array_equal(values, target))

    return exact


def _param(codec: BaseCodec, t: float) -> float:
    """The quality parameter of ``codec`` at position ``t`` (0 to 1, stream size growing)."""
    u = t if codec.increasing else 1.0 - t
    if codec.log:
        return math.exp(math.log(codec.lo) + u * (math.log(codec.hi) - math.log(codec.lo)))
    return codec.lo + u * (codec.hi - codec.lo)


def _probe(
    proxy: BaseCodec,
    block: np.ndarray,
    nbytes: int,
    t: float,
    typical: float,
    deadline: float | None,
    cancel: Callable[[], bool] | None,
) -> tuple[float, float] | None:
    """Where ``proxy`` (a much faster setting, :meth:`~.bases.BaseCodec.proxy`) codes
    ``nbytes``, and its log-size slope there: up to :data:`_PROBE_ENCODES` secant steps from
    ``t`` (the first with the ``typical`` slope), ending within :data:`_PROBE_TOLERANCE` in
    log size. None when out of time or when the proxy fails."""
    slope, prev = typical, None
    for _ in range(_PROBE_ENCODES):
        if cancel is not None and cancel():
            raise CancelledError("compression cancelled; no output written")
        if deadline is not None and time.perf_counter() > deadline:
            return None
        try:
            size = len(proxy.encode(block, _param(proxy, t)))
        except Exception:  # noqa: BLE001 - the search goes on without a probe
            return None
        slope = _secant_slope(typical, prev, (t, size))
        miss = math.log(nbytes / max(size, 1))
        prev, t = (t, size), min(max(t + miss / slope, 0.0), 1.0)
        if abs(miss) < _PROBE_TOLERANCE:
            break
    return t, slope


def _jump(codec: BaseCodec, low: tuple[float, int | None], high: tuple[float, int | None]) -> bool:
    """Whether the sizes of two close positions (fitting and not) differ by a jump: a log-size
    change :data:`_JUMP` times the codec's typical slope over a step under
    :data:`_FILL_BRACKET`."""
    (lo_t, lo_size), (hi_t, hi_size) = low, high
    if lo_size is None or hi_size is None or hi_t - lo_t >= _FILL_BRACKET:
        return False
    typical = codec.slope if codec.slope is not None else 0.0
    return math.log(max(hi_size, 1) / max(lo_size, 1)) > _JUMP * typical * (hi_t - lo_t)


def _secant_slope(typical: float, prev: tuple[float, int] | None, now: tuple[float, int]) -> float:
    """The log-size slope through two encodes, within a factor 4 of ``typical`` (which it is
    with one)."""
    if prev is None or prev[0] == now[0] or min(prev[1], now[1]) < 1:
        return typical
    measured = abs(math.log(now[1] / prev[1]) / (now[0] - prev[0]))
    return min(max(measured, typical / 4), typical * 4)


def _filled(
    plain: BaseLayer,
    param: float,
    block: np.ndarray,
    nbytes: int,
    over: tuple[float, int] | None,
    deadline: float | None,
    cancel: Callable[[], bool] | None,
) -> BaseLayer:
    """``plain`` (its codec at ``param``, short of ``nbytes``; ``over``: the parameter and size
    of the smallest stream found that did not fit) or, when more accurate, the largest stream
    that fits of the codec's filler at ``param`` (:meth:`~.bases.BaseCodec.filler`) or of its
    shrinker at ``over``'s parameter (:meth:`~.bases.BaseCodec.shrinker`)."""
    shape3 = tuple(int(n) for n in block.shape)
    size = len(plain.stream)
    start = 0.5  # the fill level where the size should reach nbytes (log-linear guess)
    if over is not None and over[1] > size:
        start = min(max(math.log(nbytes / size) / math.log(over[1] / size), 0.1), 0.9)
    # from above first (the strongest shrink, the size rising to nbytes): where shrinking
    # does not bring the size under nbytes its first encode says so, and where it does the
    # filler cannot grow the stream either (the same adaptive quantization shrinks it)
    shrinker = None if over is None else plain.codec.shrinker(over[0], shape3)  # type: ignore[arg-type]
    variants = [(shrinker, 0.0), (plain.codec.filler(param), start)]
    best, encodes = plain, plain.encodes
    for codec, first in variants:
        if codec is None or best is not plain:
            continue
        found = encode_to_size(
            codec,
            block,
            nbytes,
            iterations=_FILL_ITERATIONS,
            deadline=deadline,
            cancel=cancel,
            start=first,
        )
        if found is None:
            continue
        encodes += found.encodes
        if found.stream != plain.stream and found.error(block) < best.error(block):
            best = found
    return BaseLayer(plain.codec, best.stream, best.values, plain.position, encodes)
