"""Damaged-payload checks shared by the lossless block-kind tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from napari_sciz.core.lossless import decode_block
from napari_sciz.errors import FormatError


def assert_damage_refused(
    payload: bytes,
    block: np.ndarray,
    *,
    mutations: int,
    cuts: Sequence[int],
    wrong_shape: tuple[int, ...],
    wrong_dtypes: Sequence[type] = (np.float32,),
    seed: int = 3,
) -> None:
    """Every damaged ``payload`` of a versioned block kind is refused.

    ``mutations`` random 1-3 byte changes decode to a :class:`FormatError` or (damage in
    unused bits) to ``block`` itself; the truncations at ``cuts``, a newer version byte
    (offset 3), the wrong dtypes and ``wrong_shape`` are FormatErrors.
    """
    rng = np.random.default_rng(seed)
    for _ in range(mutations):
        bad = bytearray(payload)
        for pos in rng.integers(0, len(bad), rng.integers(1, 4)):
            bad[pos] = rng.integers(0, 256)
        try:
            out = decode_block(bytes(bad), block.dtype, block.shape)
        except FormatError:
            continue
        assert np.array_equal(out, block)
    for cut in cuts:
        with pytest.raises(FormatError):
            decode_block(payload[:cut], block.dtype, block.shape)
    newer = payload[:3] + bytes([2]) + payload[4:]
    with pytest.raises(FormatError, match="version"):
        decode_block(newer, block.dtype, block.shape)
    for dtype in wrong_dtypes:
        with pytest.raises(FormatError):
            decode_block(payload, np.dtype(dtype), block.shape)
    with pytest.raises(FormatError):
        decode_block(payload, block.dtype, wrong_shape)
