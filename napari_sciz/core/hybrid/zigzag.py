"""Signed integers as zigzag LEB128 varints: the coefficients of the loop filter and its
intensity map."""

from __future__ import annotations

import numpy as np

from ...errors import FormatError
from ..bitstream.layout import _varint, read_varint

__all__ = ["unzigzag", "zigzag"]


def zigzag(values: np.ndarray) -> bytes:
    """Signed integers as zigzag LEB128 varints (the container's varint)."""
    return b"".join(_varint((v << 1) ^ (v >> 63)) for v in np.asarray(values).tolist())


def unzigzag(data: bytes, pos: int, count: int) -> tuple[np.ndarray, int]:
    """``count`` integers coded by :func:`zigzag` at ``data[pos:]``, and the position after
    them; :class:`FormatError` when they are truncated or corrupted."""
    values = np.empty(count, dtype=np.int64)
    try:
        for i in range(count):
            u, pos = read_varint(data, pos)
            values[i] = (u >> 1) ^ -(u & 1)
    except (FormatError, OverflowError):
        raise FormatError("hybrid loop filter is truncated or corrupted") from None
    return values, pos
