"""Coding which voxels switch sides of the threshold surface (ANS via ``constriction``).

Flags are grouped by context (:func:`.geometry.contexts`), in raster order inside a context.
A context stores how many of its voxels are flagged; a context with none (or all) flagged
codes nothing, the others code each voxel with the probability ``ones / voxels`` of that
context. Both sides know the voxel counts (from the decoded volume), so only the counts of
flagged voxels and the ANS words are stored.
"""

from __future__ import annotations

import numpy as np

from ...errors import FormatError
from .geometry import N_CONTEXTS


def _groups(ctx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxel indices sorted by context (stable), and the voxel count of every context."""
    flat = ctx.reshape(-1)
    return np.argsort(flat, kind="stable"), np.bincount(flat, minlength=N_CONTEXTS)


def _model(ones: int, total: int):  # noqa: ANN202 - a constriction model
    import constriction

    p = ones / total
    return constriction.stream.model.Categorical(np.array([1.0 - p, p]), perfect=False)


def estimate_bits(flags: np.ndarray, ctx: np.ndarray) -> float:
    """Estimated coded size of ``flags`` in bits (entropy per context; the stored counts
    not included)."""
    total = np.bincount(ctx.reshape(-1), minlength=N_CONTEXTS).astype(np.float64)
    ones = np.bincount(ctx.reshape(-1), flags.reshape(-1), minlength=N_CONTEXTS)
    mixed = (ones > 0) & (ones < total)
    p = ones[mixed] / total[mixed]
    h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return float(np.sum(total[mixed] * h))


def encode(flags: np.ndarray, ctx: np.ndarray) -> tuple[np.ndarray, bytes]:
    """Per-context counts of flagged voxels (uint64) and the ANS words of ``flags``."""
    import constriction

    order, total = _groups(ctx)
    sorted_flags = flags.reshape(-1)[order].astype(np.int32)
    ones = np.bincount(ctx.reshape(-1), flags.reshape(-1), minlength=N_CONTEXTS)
    ones = ones.astype(np.uint64)
    starts = np.concatenate([[0], np.cumsum(total)])
    coder = constriction.stream.stack.AnsCoder()
    for c in reversed(range(N_CONTEXTS)):
        if 0 < ones[c] < total[c]:
            model = _model(int(ones[c]), int(total[c]))
            coder.encode_reverse(sorted_flags[starts[c] : starts[c + 1]], model)
    return ones, coder.get_compressed().astype("<u4").tobytes()


def decode(ctx: np.ndarray, ones: np.ndarray, words: bytes) -> np.ndarray:
    """The flags (bool, ``ctx``'s shape) coded by :func:`encode`."""
    import constriction

    order, total = _groups(ctx)
    if np.any(ones > total):
        raise FormatError("segmentation lock: more flags than voxels in a context")
    if len(words) % 4:
        raise FormatError("segmentation lock: truncated flag stream")
    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, "<u4").astype(np.uint32))
    except ValueError as exc:
        raise FormatError(f"segmentation lock: corrupted flag stream ({exc})") from exc
    sorted_flags = np.zeros(order.size, bool)
    starts = np.concatenate([[0], np.cumsum(total)])
    for c in range(N_CONTEXTS):
        lo, hi = int(starts[c]), int(starts[c + 1])
        if ones[c] == total[c]:
            sorted_flags[lo:hi] = True
        elif ones[c]:
            symbols = coder.decode(_model(int(ones[c]), int(total[c])), hi - lo)
            sorted_flags[lo:hi] = symbols.astype(bool)
    if not coder.is_empty():
        raise FormatError("segmentation lock: the flag stream has words left over")
    flags = np.zeros(order.size, bool)
    flags[order] = sorted_flags
    return flags.reshape(ctx.shape)
