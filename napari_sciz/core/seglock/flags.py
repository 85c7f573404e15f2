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


def _members(flat: np.ndarray, c: int) -> np.ndarray:
    """Indices of the voxels of context ``c`` in raster order (``flat``: the contexts)."""
    return np.flatnonzero(flat == c)


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

    flat = ctx.reshape(-1)
    total = np.bincount(flat, minlength=N_CONTEXTS)
    ones = np.bincount(flat, flags.reshape(-1), minlength=N_CONTEXTS).astype(np.uint64)
    values = flags.reshape(-1)
    coder = constriction.stream.stack.AnsCoder()
    for c in reversed(range(N_CONTEXTS)):
        if 0 < ones[c] < total[c]:
            model = _model(int(ones[c]), int(total[c]))
            coder.encode_reverse(values[_members(flat, c)].astype(np.int32), model)
    return ones, coder.get_compressed().astype("<u4").tobytes()


def decode(ctx: np.ndarray, ones: np.ndarray, words: bytes) -> np.ndarray:
    """The flags (bool, ``ctx``'s shape) coded by :func:`encode`."""
    import constriction

    flat = ctx.reshape(-1)
    total = np.bincount(flat, minlength=N_CONTEXTS)
    if np.any(ones > total):
        raise FormatError("segmentation lock: more flags than voxels in a context")
    if len(words) % 4:
        raise FormatError("segmentation lock: truncated flag stream")
    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, "<u4").astype(np.uint32))
    except ValueError as exc:
        raise FormatError(f"segmentation lock: corrupted flag stream ({exc})") from exc
    flags = np.zeros(flat.size, bool)
    for c in range(N_CONTEXTS):
        if not ones[c]:
            continue
        where = _members(flat, c)
        if ones[c] == total[c]:
            flags[where] = True
        else:
            flags[where] = coder.decode(_model(int(ones[c]), int(total[c])), where.size) > 0
    if not coder.is_empty():
        raise FormatError("segmentation lock: the flag stream has words left over")
    return flags.reshape(ctx.shape)
