"""Which classical codec codes a hybrid block's base, and at which of its settings.

Per block, :func:`_choose_base` codes the base with each available classical codec
(:data:`~.bases.BASES`) at the block's bytes and ranks them by the error left once a loop
filter is fitted on each; the time after the filter stage then goes to
:func:`_refine_base`, which searches the slower settings of every codec tried near the
parameter its first search found. At low rates the codecs are also tried at half the
in-plane resolution (:func:`_halved_rivals`). Used by :mod:`.codec`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..bitstream.layout import _varint
from .bases import BASES, BaseCodec
from .candidate import _Candidate, _err, _filtered, _fitting, _near, _rank_error, _ranked
from .halved import HalvedBase
from .search import BaseLayer, encode_to_size
from .tracker import BlockTracker

#: designing the filter that ranks a base takes about this many of its encodes (measured:
#: 1.75 s against a 1.0 s SPERR encode of a 4 Mi-voxel block); a block's first base is ranked
#: only when the next codec can still start after it
_RANK_ENCODES = 2.0
#: share of a time budget the choice of the base codec may take
_CHOICE_SHARE = 0.4
#: share of a time budget by which a slower setting of the chosen base codec stops searching
_REFINE_SHARE = 0.9
#: a slower setting's search starts only while this many of its encodes fit in the time left
#: (a search near a known parameter takes about 4-8)
_REFINE_ENCODES = 12
#: ... or this many times the encodes of the codec's first search, when fewer (SPERR's rate
#: mode lands in one or two: nbsd at 30 s never reached its slabs while 12 were asked for)
_REFINE_PER_FIRST = 3
#: bits per voxel at or below which the base codecs are also tried at half the in-plane
#: resolution (:func:`_halved_rivals`). It won on squared error only at these rates (hybrid,
#: 30 s: bbbc034 and stardist_img2d at 256x +0.07 / +0.04 dB and at 512x +0.24 / +0.18 dB,
#: 0.05 / 0.03 dB behind at 128x; the 8-bit FIB-SEM crop at 128x-512x +0.02 to +0.11 dB;
#: nbsd and the CT and bead stacks behind, up to 6 dB), so above them it is not searched
HALVED_MAX_BPV = 0.1
#: share of a codec's full-resolution search time its halved search may take (a quarter of
#: the voxels: its encodes take about a quarter of the time)
_HALVED_SEARCH_SHARE = 0.5
#: times the seconds a codec's full-resolution search took without finding a stream that
#: its halved search may take (pydicom's two 512x512 slices at 512x with 30 s: HEVC gave up
#: after 0.26-0.40 s, and its halved search found the stream that wins by 2.4 dB only when
#: it was given 0.40 s)
_FAILED_SEARCH_TIMES = 2.0
#: share of a time budget by which the loop filter's base searches stop refining (its stage
#: follows the choice: :func:`.codec._with_filter`)
_FILTER_SHARE = 0.85
#: the loop filter's stage takes about this many times a filter design's time (a ranking's
#: in the choice; spotiflow's telomere time-lapse, 2 Mi-voxel blocks: designs 1.2-1.6 s, the
#: stage 4.2-5.6 s). A halved search starts only while it, its design and this many more
#: end before :data:`_FILTER_SHARE` (ending by the refinement's share, that time-lapse at
#: 256x with 30 s had no time left to re-code a base for its filter's room and kept the base
#: coded for the slope: a file 9 % short, 280x)
_FILTER_STAGE_DESIGNS = 4.0


def halved_bases(shape3: tuple[int, int, int]) -> tuple[BaseCodec, ...]:
    """The base codecs at half the in-plane resolution (:mod:`.halved`) for a block of
    ``shape3``; the usual ones where its planes are too small to halve."""
    usable = tuple(h for h in (HalvedBase(c) for c in BASES) if h.supports(shape3))
    return usable or BASES


def _choose_base(
    target: np.ndarray,
    nbytes: int,
    clock: BlockTracker,
    seed: int,
    exact: Callable[[np.ndarray], bool] | None,
    halved: bool = False,
) -> tuple[BaseLayer | None, list[tuple[BaseLayer, float]]]:
    """The base codec whose stream of ``nbytes``, once filtered, is the most accurate
    (``halved``: of the codecs at half the in-plane resolution, :func:`halved_bases`).

    With a budget, the codecs share the first :data:`_CHOICE_SHARE` of it: each one's search
    gets its part (:attr:`~.bases.BaseCodec.choice_weight`) of what is left when it starts (a
    fast codec leaves more to the next), and stops before its part ends
    (:func:`~.search.encode_to_size`). A stream that reproduces the block (``exact``,
    :func:`~.search.exact_for`; None: not checked) wins: the smallest such stream is
    returned. Also returns every codec's stream with the seconds its search took (for
    :func:`_refine_base`).
    """
    shape3 = tuple(int(n) for n in target.shape)
    best: tuple[float, BaseLayer, float] | None = None
    tried: list[tuple[BaseLayer, float]] = []
    end = clock.before(_CHOICE_SHARE)
    whole: BaseLayer | None = None  # the smallest stream that reproduces the block
    alone = False  # the first base was not ranked: no time for another
    ranks: list[float] = []  # each ranked stream's filtered error, as tried's order
    failed: list[tuple[BaseCodec, float]] = []  # codecs with no stream in the bytes
    design = 0.0  # seconds of the longest filter design that ranked a stream
    codecs = halved_bases(shape3) if halved else BASES
    usable = [c for c in codecs if c.available() and c.supports(shape3)]  # type: ignore[arg-type]
    for k, codec in enumerate(usable):
        deadline = None
        if end is not None:
            now = time.perf_counter()
            if best is not None and now >= end:
                break
            share = codec.choice_weight / sum(c.choice_weight for c in usable[k:])
            deadline = now + max(end - now, 0.0) * share
        t0 = time.perf_counter()
        # (no base yet: its first encode starts even when the choice's time is already gone,
        # as on a slow or loaded machine with a tight budget)
        layer = encode_to_size(
            codec, target, nbytes, deadline=deadline, cancel=clock.cancel, first=best is None,
            exact=exact,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        if layer is None:
            failed.append((codec, seconds))
            continue
        tried.append((layer, seconds))
        clock.base_searched(seconds, layer.encodes)
        if exact is not None and exact(layer.values):
            # (nothing is more accurate; another codec's exact stream may be smaller)
            if whole is None or len(layer.stream) < len(whole.stream):
                whole, clock.base_seconds = layer, seconds
            continue
        if whole is not None:
            continue
        # ranking a base designs a filter on it (about _RANK_ENCODES encodes' time)
        ranked_by = time.perf_counter() + _RANK_ENCODES * clock.encode_seconds
        more = k + 1 < len(usable) and (end is None or ranked_by < end)
        if best is None and not more:
            # the only base this block gets (no codec after it, or no time for one): nothing
            # to rank it against, so its filter is not designed twice (a tight budget)
            best, alone = (0.0, layer, layer.error(target)), True
            clock.base_seconds = seconds
            clock.report(_CHOICE_SHARE, best[2], layer.values)
            break
        designed = time.perf_counter()
        err = _rank_error(_filtered(layer, target, 4, seed, avail=nbytes), target, nbytes)
        design = max(design, time.perf_counter() - designed)
        ranks.append(_ranked(err, codec))
        if best is None or _ranked(err, codec) < best[0]:
            best = (_ranked(err, codec), layer, err)
            clock.base_seconds = seconds
        clock.report(_CHOICE_SHARE * (k + 1) / len(usable), best[2], best[1].values)
    if whole is not None:
        return whole, tried
    if best is not None and not (halved or alone):
        measured = _Measured(tried, ranks, failed, design)
        best = _halved_rivals(best, measured, target, nbytes, clock, seed)
    return (None if best is None else best[1]), tried


@dataclass
class _Measured:
    """What :func:`_choose_base` measured: each stream with its search's seconds (``tried``),
    its filtered error as ranked (``ranks``, in the same order), the codecs that had no
    stream in the bytes with the seconds they searched (``failed``), and the longest filter
    design's seconds (``design``)."""

    tried: list[tuple[BaseLayer, float]]
    ranks: list[float]
    failed: list[tuple[BaseCodec, float]]
    design: float


def _halved_rivals(
    best: tuple[float, BaseLayer, float],
    measured: _Measured,
    target: np.ndarray,
    nbytes: int,
    clock: BlockTracker,
    seed: int,
) -> tuple[float, BaseLayer, float]:
    """``best`` (rank, layer, filtered error), or a codec coding the block at half the
    in-plane resolution (:class:`~.halved.HalvedBase`) when that ranks better.

    Tried only at :data:`HALVED_MAX_BPV` bits per voxel or fewer, on planes a halved codec
    supports. From what the choice ``measured``, each codec ranked is tried, the best
    first, then each codec that had no stream in the bytes (pydicom's two 512x512 slices at
    512x: HEVC has none, halved it codes 2.5 dB better than SPERR; kept only when it is the
    best), while the search (given :data:`_HALVED_SEARCH_SHARE` of the full-resolution
    search's time, :data:`_FAILED_SEARCH_TIMES` times it after a search that found nothing),
    its filter's design (as long as the choice's longest) and the loop filter's stage
    after it (:data:`_FILTER_STAGE_DESIGNS`) end before
    :data:`_FILTER_SHARE` of the budget. The choice's streams and ranks keep each codec's
    better stream, so the refinement searches the slower settings of that one (a codec may
    lose at full resolution and win halved: on stardist_img2d at 512x SPERR won the choice
    and HEVC, refined, the file; halved, HEVC wins).
    """
    if 8.0 * nbytes / target.size > HALVED_MAX_BPV:
        return best
    tried, ranks, design = measured.tried, measured.ranks, measured.design
    end = clock.before(_FILTER_SHARE)
    order = sorted(range(len(ranks)), key=ranks.__getitem__)
    queue: list[tuple[float, int | None, BaseCodec, float]] = [
        (ranks[i], i, tried[i][0].codec, tried[i][1]) for i in order
    ]
    queue += [(np.inf, None, codec, seconds) for codec, seconds in measured.failed]
    for rank, at, inner, seconds in queue:
        codec = HalvedBase(inner)
        if not codec.supports(target.shape):  # type: ignore[arg-type]
            continue
        # (a search that found nothing may have ended after a few encodes: twice its time)
        allowed = seconds * (_HALVED_SEARCH_SHARE if at is not None else _FAILED_SEARCH_TIMES)
        now = time.perf_counter()
        if end is not None and now + allowed + design * (1 + _FILTER_STAGE_DESIGNS) > end:
            break
        deadline = None if end is None else now + allowed
        half = encode_to_size(codec, target, nbytes, deadline=deadline, cancel=clock.cancel)
        if half is None:
            continue
        entry = (half, time.perf_counter() - now)
        err = _rank_error(_filtered(half, target, 4, seed, avail=nbytes), target, nbytes)
        if _ranked(err, codec) >= (best[0] if at is None else rank):
            continue  # (a codec with no stream at full resolution is kept only as the best)
        if at is None:
            tried.append(entry)
            ranks.append(_ranked(err, codec))
        else:
            tried[at], ranks[at] = entry, _ranked(err, codec)
        if _ranked(err, codec) < best[0]:
            best = (_ranked(err, codec), half, err)
            clock.base_seconds = entry[1]
            clock.report(_CHOICE_SHARE, err, half.values)
    return best


def _refine_base(
    best: _Candidate,
    tried: list[tuple[BaseLayer, float]],
    target: np.ndarray,
    avail: int,
    clock: BlockTracker,
    seed: int,
    until: float = 0.9,
) -> _Candidate:
    """``best``, or a base re-coded by a codec's refined settings if that is more accurate.

    The field is not fitted in hybrid blocks (:data:`.codec.BASE_SHARES`), so the time after the
    filter would go unused: for every codec tried that has refined settings (HEVC's slower
    presets first, then SPERR in slabs; SPERR's slabs first when whole-block SPERR is the
    winner, since they decode plane by plane), each one in turn searches near that codec's
    parameter, for the room the filter leaves and for all the bytes, until ``until`` of the
    budget (:data:`_REFINE_SHARE`, or less when a neural filter will be trained), starting
    only while :data:`_REFINE_ENCODES` encodes of that codec's first search (or
    :data:`_REFINE_PER_FIRST` times that search's encodes, when fewer; times the setting's
    :attr:`~.bases.BaseCodec.cost`) fit in the time left. A result is kept when, filtered, it
    is more accurate than ``best`` (a codec that lost the first choice may win at a refined
    setting).
    """
    end = clock.before(until)
    if end is None:
        return best

    def order(entry: tuple[BaseLayer, float]) -> tuple[bool, bool]:
        # a winner that decodes only as a whole first (SPERR: its slabs are a few quick
        # encodes and decode plane by plane), then codecs that decode by plane (HEVC)
        codec = entry[0].codec
        whole_winner = not best.base.codec.by_plane and _kind(codec) == _kind(best.base.codec)
        return (not whole_winner, not codec.by_plane)

    for start, seconds in sorted(tried, key=order):
        best = _refine_codec(best, start, seconds, target, avail, end, seed, clock)
    return best


def _kind(codec: BaseCodec) -> tuple[type, type]:
    """A codec's class, and its inner codec's for a halved one (:class:`~.halved.HalvedBase`)."""
    return type(codec), type(getattr(codec, "inner", None))


def _refine_codec(
    best: _Candidate,
    start: BaseLayer,
    seconds: float,
    target: np.ndarray,
    avail: int,
    end: float,
    seed: int,
    clock: BlockTracker,
) -> _Candidate:
    """:func:`_refine_base` for the refined settings of one codec (first search: ``start``,
    which took ``seconds``)."""
    anchor, codec = start, start.codec.refined()
    per_encode = seconds / max(start.encodes, 1)
    # a rate-driven codec (SPERR) lands in one or two encodes: it needs fewer than HEVC
    needed = min(_REFINE_ENCODES, _REFINE_PER_FIRST * max(start.encodes, 1))
    while codec is not None and np.isfinite(anchor.position):
        room = avail - len(_varint(len(best.filter_bytes))) - len(best.filter_bytes)
        # the filter's room, and all of it (the sizes are coarse: what is left may hold one)
        for nbytes in dict.fromkeys((room, avail - 1)):
            if end - time.perf_counter() < needed * per_encode * codec.cost:
                return best
            layer = encode_to_size(
                codec,
                target,
                nbytes,
                deadline=end,
                cancel=clock.cancel,
                bracket=_near(anchor),
                widen=True,
            )
            if layer is not None:
                wide = best.wide if best.filt is not None else True
                cand = _fitting(layer, target, avail, best.classes or 4, wide, seed)
                best = min(best, cand, key=_err)
                anchor = layer if np.isfinite(layer.position) else anchor
        codec = codec.refined()
    return best
