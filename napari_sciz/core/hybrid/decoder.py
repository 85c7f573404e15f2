"""Decoding hybrid blocks, whole or a few planes at a time.

A viewer asks for one plane at a time. :class:`HybridBlock` decodes a block's base layer as far
as the planes asked for need (an HEVC base frame by frame, up to the plane after the last one
asked for; SPERR and JPEG XL bases at once) and its field, if any, once, and runs the loop
filter and the neural filter only on the planes asked for (a plane needs one or, with a wide
filter or a network, two neighbours on each side in the base), keeping the filtered planes
for the next request; a whole-block decode is the request of every plane.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from ...errors import FormatError
from .loopfilter import parse_loop_filter
from .nnfilter import parse_neural_filter
from .payload import parse
from .planes import PlaneSource

__all__ = ["HybridBlock", "decode_hybrid_block"]


class HybridBlock:
    """One hybrid block's decoded base, filter and field; filtered planes on demand.

    Parameters
    ----------
    payload : bytes
        The block payload.
    shape3 : tuple of int
        The block's shape ``(D, H, W)``.

    Raises
    ------
    FormatError
        Not a hybrid payload, an unknown version or base codec, a truncated stream or one
        that does not match the block's shape.
    """

    def __init__(self, payload: bytes, shape3: tuple[int, int, int]) -> None:
        layers = parse(payload, shape3)
        self.shape3 = shape3
        self._base: PlaneSource | None = layers.codec.planes(layers.base, shape3)
        self._filter = parse_loop_filter(layers.filt) if layers.filt else None
        if self._filter is not None and self._filter.flat != (shape3[0] == 1):
            raise FormatError("hybrid loop filter does not match the block's shape")
        self._network = parse_neural_filter(layers.network) if layers.network else None
        if self._network is not None and self._network.flat != (shape3[0] == 1):
            raise FormatError("hybrid neural filter does not match the block's shape")
        self._field: np.ndarray | None = None
        if layers.field:
            self._field = _decode_field(layers.field, shape3)
        self._values = np.empty(shape3, dtype=np.float64)
        self._done = np.zeros(shape3[0], dtype=bool)
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes held: the base and field until every plane is done, and the planes."""
        held = [self._values, self._base, self._field]
        return sum(a.nbytes for a in held if a is not None)

    def _base_span(self, lo: int, hi: int) -> np.ndarray:
        assert self._base is not None
        return self._base.span(lo, hi)

    def planes(self, z0: int = 0, z1: int | None = None) -> np.ndarray:
        """Float64 values (unclipped) of planes ``z0:z1`` (a view; do not modify)."""
        stop = self.shape3[0] if z1 is None else z1
        with self._lock:
            todo = np.flatnonzero(~self._done[z0:stop]) + z0
            if todo.size:
                lo, hi = int(todo[0]), int(todo[-1]) + 1
                # the filters read `reach` planes on each side (clamped)
                r = max([f.reach for f in (self._filter, self._network) if f is not None] + [0])
                base = self._base_span(max(lo - r, 0), min(hi + r, self.shape3[0]))
                if self._filter is None:
                    values = base[lo:hi].copy()
                else:
                    values = self._filter.apply(base, lo, hi)
                if self._network is not None:
                    values = self._network.apply(base, values, lo, hi)
                if self._field is not None:
                    values += self._field[lo:hi]
                if not np.all(np.isfinite(values)):
                    raise FormatError("hybrid block decodes to non-finite values")
                self._values[lo:hi] = values
                self._done[lo:hi] = True
                if self._done.all():  # every plane filtered: the base is no longer needed
                    self._base = self._field = None
        return self._values[z0:stop]


def _decode_field(inr: bytes, shape3: tuple[int, int, int]) -> np.ndarray:
    from ..lossy.code import evaluate_code
    from ..lossy.entropy import decode_block, read_architecture
    from ..lossy.model import FieldConfig

    first, n_levels, hidden, layers = read_architecture(inr)
    config = FieldConfig(shape3, first, n_levels, hidden, layers)
    code = decode_block(inr, config.grid_shapes(), config.mlp_shapes())
    return np.asarray(evaluate_code(code, shape3, "cpu"), dtype=np.float64).reshape(shape3)


def decode_hybrid_block(payload: bytes, shape3: tuple[int, int, int]) -> np.ndarray:
    """Decode a hybrid block payload to float64 values of shape ``shape3`` (unclipped).

    Raises
    ------
    FormatError
        Not a hybrid payload, an unknown version or base codec, a truncated stream or one
        that does not match the block's shape.
    """
    values = HybridBlock(payload, shape3).planes()
    if not math.isfinite(float(np.abs(values).max())):
        raise FormatError("hybrid block decodes to non-finite values")
    return values
