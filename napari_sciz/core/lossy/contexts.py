"""Context classes and the one-byte Laplace scale codes shared by the latent coders.

Dependency-free helpers used by the static per-class coder (:mod:`.entropy`) and by the
autoregressive model (:mod:`.arm`): encoder and decoder compute both with integer arithmetic
(or from a fixed table), so they agree on every platform.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["N_CONTEXTS", "SCALE_TABLE", "dequantize_scale", "parent_context", "quantize_scale"]

# Laplace scale b is stored as one byte s: b = 2 ** (s / 16 - 6), i.e. 1/64 .. ~2**10.
_SCALE_OFFSET = 6.0
_SCALE_STEPS = 16.0


def dequantize_scale(code: int) -> float:
    """Laplace scale for a stored one-byte scale code."""
    return 2.0 ** (code / _SCALE_STEPS - _SCALE_OFFSET)


def quantize_scale(b: float) -> int:
    """Nearest one-byte scale code for the Laplace scale ``b``."""
    if not math.isfinite(b) or b <= 0:
        return 0
    return int(min(255, max(0, round((math.log2(b) + _SCALE_OFFSET) * _SCALE_STEPS))))


#: the Laplace scale of every one-byte code
SCALE_TABLE = np.array([dequantize_scale(c) for c in range(256)], dtype=np.float64)


#: Number of context classes per latent level (parent-magnitude classes).
N_CONTEXTS = 12


def parent_context(parent: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Context class of every node of a latent grid from the decoded next-coarser grid.

    The class is ``floor(2 * log2(m + 0.5)) + 2`` clipped to ``[0, N_CONTEXTS)``, where ``m`` is
    the largest ``|q|`` of the parent nodes around the node (the two parents along each axis,
    then a 3x3x3 neighbourhood). Detail coefficients are large where the coarser level is
    large, so this separates busy regions from flat background. Integer arithmetic only, so
    encoder and decoder agree on every platform.
    """
    m = np.abs(parent.astype(np.int64))
    for axis, n in enumerate(shape):
        if m.shape[axis] == n:
            continue
        j = np.arange(n)
        lo = np.minimum(j // 2, m.shape[axis] - 1)
        hi = np.minimum((j + 1) // 2, m.shape[axis] - 1)
        m = np.maximum(np.take(m, lo, axis=axis), np.take(m, hi, axis=axis))
    for axis in range(3):
        if m.shape[axis] < 2:
            continue
        padded = np.concatenate(
            [np.take(m, [0], axis=axis), m, np.take(m, [-1], axis=axis)], axis=axis
        )
        n = m.shape[axis]
        m = np.maximum(
            np.maximum(
                np.take(padded, np.arange(0, n), axis=axis),
                np.take(padded, np.arange(1, n + 1), axis=axis),
            ),
            np.take(padded, np.arange(2, n + 2), axis=axis),
        )
    # floor(2 * log2(m + 0.5)) + 2 == class, read from a table of the integer thresholds
    return _CLASS_OF[np.minimum(m, len(_CLASS_OF) - 1)]


def _class_table() -> np.ndarray:
    """Class of every ``m`` up to the first with the top class (the class of all larger)."""
    m = np.arange(1 << 8, dtype=np.int64)
    classes = np.zeros(m.shape, dtype=np.int64)
    for c in range(1, N_CONTEXTS):
        # m + 0.5 >= 2 ** ((c - 2) / 2)  <=>  (2m + 1)^2 >= 4 * 2 ** (c - 2)
        classes += ((2 * m + 1) ** 2 >= 2.0**c).astype(np.int64)
    top = int(np.argmax(classes == N_CONTEXTS - 1))
    return classes[: top + 1]


_CLASS_OF = _class_table()
