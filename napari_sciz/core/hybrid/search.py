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
    scan: bool = True,
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
    last one that did not are tried (sizes are not monotone in them; not with ``scan``
    false: a search for any size near ``nbytes``, as the loop filter's slope needs).
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
    search = _SizeSearch(
        codec, block, nbytes, deadline=deadline, cancel=cancel, bracket=bracket, exact=exact,
        widen=widen, first=first,
    )  # fmt: skip
    return search.run(iterations, search.start_position(start), fill, scan)


class _SizeSearch:
    """The state of one :func:`encode_to_size` search: the bracket ``[lo_t, hi_t]`` of
    positions, the sizes at its edges (``lo_size`` fits, ``hi_size`` does not; None until
    seen), the best stream that fits and the encodes made."""

    def __init__(
        self,
        codec: BaseCodec,
        block: np.ndarray,
        nbytes: int,
        *,
        deadline: float | None,
        cancel: Callable[[], bool] | None,
        bracket: tuple[float, float],
        exact: Callable[[np.ndarray], bool] | None,
        widen: bool,
        first: bool,
    ) -> None:
        self.codec, self.block, self.nbytes = codec, block, nbytes
        self.shape3 = tuple(int(n) for n in block.shape)
        self.deadline, self.cancel, self.exact = deadline, cancel, exact
        self.widen, self.first = widen, first
        self.bracket = bracket
        self.lo_t, self.hi_t = bracket
        self.width = self.hi_t - self.lo_t
        self.lo_size: int | None = None
        self.hi_size: int | None = None
        self.best: bytes | None = None
        self.best_t = math.nan
        self.encodes = 0
        self.last = 0.0  # seconds the previous encode took
        self.typical = codec.slope
        self.prev: tuple[float, int] | None = None  # the previous (position, size) of a secant
        self.floor = False  # whether the lowest quality of the bracket was tried
        self.checks = 0  # exactness checks made

    def start_position(self, start: float | None) -> float:
        """Where the search starts: ``start`` if given, else where a rate-driven codec's own
        guess or a proxy's probe puts ``nbytes`` (the probe also sets the slope), else the
        bracket's middle."""
        codec, lo_t, hi_t = self.codec, self.lo_t, self.hi_t
        t = 0.5 * (lo_t + hi_t)
        guess = codec.param_for_size(self.block, self.nbytes)
        if guess is not None and codec.lo < guess < codec.hi:  # a rate-driven codec: start there
            u = (
                (math.log(guess) - math.log(codec.lo)) / (math.log(codec.hi) - math.log(codec.lo))
                if codec.log
                else (guess - codec.lo) / (codec.hi - codec.lo)
            )
            t = min(max(u if codec.increasing else 1.0 - u, lo_t), hi_t)
        proxy = codec.proxy() if guess is None and start is None else None
        if proxy is not None and self.typical is not None and self.bracket == (0.0, 1.0):
            aim = int(_PROBE_AIM * self.nbytes)
            probed = _probe(proxy, self.block, aim, t, self.typical, self.deadline, self.cancel)
            if probed is not None:  # where the faster setting codes the aim, and its slope
                t, self.typical = probed
        if start is not None:
            t = min(max(start, lo_t), hi_t)
        return t

    def size_at(self, t: float) -> tuple[int, bytes]:
        """The codec's stream at position ``t`` and its size (counted as an encode)."""
        self.encodes += 1
        stream = self.codec.encode(self.block, _param(self.codec, t))
        return len(stream), stream

    def out_of_time(self) -> bool:
        """Whether an encode as long as the last one would end past the deadline."""
        if self.first and self.encodes == 0:
            return False
        return self.deadline is not None and time.perf_counter() + self.last > self.deadline

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise CancelledError("compression cancelled; no output written")

    def run(self, iterations: int, t: float, fill: bool, scan: bool = True) -> BaseLayer | None:
        """Up to ``iterations`` encodes from position ``t``, then :meth:`finish`."""
        fills = fill and self.codec.filler(_param(self.codec, t)) is not None
        for i in range(iterations):
            self._check_cancel()
            if self.out_of_time():
                break
            t0 = time.perf_counter()
            try:
                size, stream = self.size_at(t)
            except Exception:  # noqa: BLE001 - a codec that cannot code this block is skipped
                return None
            self.last = time.perf_counter() - t0
            if size <= self.nbytes:
                done, exact = self._fits(t, size, stream)
                if exact is not None:
                    return exact
                if done:
                    break
            else:
                self.hi_t, self.hi_size = t, size
            tried = _param(self.codec, t)
            if fills and _jump(self.codec, (self.lo_t, self.lo_size), (self.hi_t, self.hi_size)):
                break  # the fill goes on from the stream that fits
            following = self._next(i, t, size)
            if following is None:
                break
            t = following
            if _param(self.codec, t) == tried:
                break  # (the same stream again: the top or bottom of the range)
        return self.finish(fills, scan)

    def _fits(self, t: float, size: int, stream: bytes) -> tuple[bool, BaseLayer | None]:
        """Record a stream that fits: whether the search is done, and the layer when the
        stream reproduces the block (:func:`exact_for`)."""
        if self.best is None or size > len(self.best):
            self.best, self.best_t = stream, t
        flat = self.lo_size == size and abs(t - self.lo_t) >= _FLAT_SPAN
        self.lo_t, self.lo_size = t, size
        if size >= (1.0 - _TOLERANCE) * self.nbytes or flat:
            return True, None  # (in the window, or the sizes no longer grow with the quality)
        small = size <= _EXACT_BELOW * self.nbytes
        if self.exact is not None and small and self.checks < _EXACT_CHECKS:
            self.checks += 1
            values = self.codec.decode(stream, self.shape3)  # type: ignore[arg-type]
            if self.exact(values):  # (no higher quality can be more accurate)
                return True, BaseLayer(self.codec, stream, values, t, self.encodes)
        return False, None

    def _next(self, i: int, t: float, size: int) -> float | None:
        """The next position after an encode of ``size`` bytes at ``t`` (None: stop)."""
        lo_t, hi_t, lo_size, hi_size = self.lo_t, self.hi_t, self.lo_size, self.hi_size
        if lo_size is not None and hi_size is not None and i % 2 == 0:
            a, b = math.log(max(lo_size, 1)), math.log(max(hi_size, 1))
            frac = (math.log(self.nbytes) - a) / (b - a) if b > a else 0.5
            return lo_t + min(max(frac, 0.1), 0.9) * (hi_t - lo_t)
        if lo_size is None and t <= lo_t + 1e-3 and (not self.widen or lo_t <= 0.0):
            return None
        if lo_size is None and self.codec.slope is None and size > _FAR * self.nbytes:
            if not self.floor:
                self.floor = True  # far above: whether the lowest quality fits at all first
                return lo_t
        if self.typical is not None and (lo_size is None or hi_size is None):
            return self._secant(t, size)
        return 0.5 * (lo_t + hi_t)

    def _secant(self, t: float, size: int) -> float:
        """With one side known, a secant step towards ``nbytes`` (the codec's typical slope
        first), from above towards a little less (a stream that fits is what a deadline
        keeps); with ``widen``, a step past the bracket moves its edge out by its width."""
        slope = _secant_slope(self.typical, self.prev, (t, size))  # type: ignore[arg-type]
        fits = size <= self.nbytes
        aim = self.nbytes if fits else (1.0 - _BELOW) * self.nbytes
        step = abs(math.log(aim / max(size, 1))) / slope
        self.prev = (t, size)
        if self.widen and fits and t + step > self.hi_t:
            self.hi_t = min(self.hi_t + self.width, 1.0)
        elif self.widen and not fits and t - step < self.lo_t:
            self.lo_t = max(self.lo_t - self.width, 0.0)
        return min(t + step, self.hi_t) if fits else max(t - step, self.lo_t)

    def finish(self, fills: bool, scan: bool = True) -> BaseLayer | None:
        """The best stream that fits, after the fill (or, with ``scan``, a scan between the
        last sizes found) when it is short of ``nbytes``; the lowest quality when none
        fitted yet."""
        codec, best, nbytes = self.codec, self.best, self.nbytes
        narrow = self.hi_t - self.lo_t < 1e-3  # a jump at one parameter: nothing between
        short = best is not None and len(best) < (1.0 - _TOLERANCE) * nbytes
        if short and fills and not self.out_of_time():
            values = codec.decode(best, self.shape3)  # type: ignore[arg-type]
            plain = BaseLayer(codec, best, values, self.best_t, self.encodes)  # type: ignore[arg-type]
            over = None if self.hi_size is None else (_param(codec, self.hi_t), self.hi_size)
            return _filled(
                plain, _param(codec, self.best_t), self.block, nbytes, over, self.deadline,
                self.cancel,
            )  # fmt: skip
        if scan and short and self.hi_size is not None and not narrow:
            self._scan()
        if self.best is None:
            if self.out_of_time() or (self.floor and self.lo_t == 0.0):
                return None
            try:
                size, stream = self.size_at(0.0)
            except Exception:  # noqa: BLE001
                return None
            if size > nbytes:
                return None
            self.best, self.best_t = stream, 0.0
        values = codec.decode(self.best, self.shape3)  # type: ignore[arg-type]
        return BaseLayer(codec, self.best, values, self.best_t, max(self.encodes, 1))

    def _scan(self) -> None:
        """Sizes jump between nearby parameters (x265's mode decisions flip): look between
        the largest stream that fits and the smallest that does not for a larger one."""
        for t in np.linspace(self.lo_t, self.hi_t, _SCAN_POINTS + 2)[1:-1]:
            if (self.cancel is not None and self.cancel()) or self.out_of_time():
                break
            size, stream = self.size_at(float(t))
            if len(self.best) < size <= self.nbytes:  # type: ignore[arg-type]
                self.best, self.best_t = stream, float(t)


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
