"""Bytes a hybrid base cannot take go to a field fitted on its residual
(:func:`napari_sciz.core.hybrid.codec._spare_field`)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sciz.core.hybrid import codec as hybrid_codec
from napari_sciz.core.hybrid.bases import HEVCBase
from napari_sciz.core.hybrid.candidate import _plain
from napari_sciz.core.hybrid.decoder import decode_hybrid_block
from napari_sciz.core.hybrid.search import BaseLayer

pytest.importorskip("imagecodecs")


def _smooth_ct() -> np.ndarray:
    """A smooth synthetic CT block with a raised square (float64, 4x96x96)."""
    from scipy import ndimage

    rng = np.random.default_rng(1)
    ct = ndimage.gaussian_filter(rng.normal(size=(4, 96, 96)), 6) * 40000 - 1000
    ct[:, 32:64, 32:64] += 2500
    return ct.astype(np.float32).astype(np.float64)


def test_a_base_short_of_its_bytes_leaves_them_to_a_field() -> None:
    hevc = HEVCBase()
    if not hevc.available():
        pytest.skip("HEVC is not installed")
    target = _smooth_ct()
    # x265's finest setting, far short of the block's bytes at 64x
    stream = hevc.encode(target, hevc.lo)
    base = BaseLayer(hevc, stream, hevc.decode(stream, target.shape))
    best = _plain(base, target)
    high = target.size * 4 // 64
    assert hybrid_codec._spare_share(best, high) > hybrid_codec._SPARE_FIELD_SHARE
    cand, steps = hybrid_codec._spare_field(best, target, (0, high), None, 0, steps=20)
    assert cand is not None and steps == 20
    assert cand.error < best.error and cand.base is base and cand.inr
    payload = hybrid_codec.pack(hevc.ident, stream, b"", b"", cand.inr, False)
    assert len(payload) <= high
    decoded = decode_hybrid_block(payload, target.shape)  # (what a reader makes of it)
    np.testing.assert_allclose(decoded, cand.values, rtol=0, atol=1e-3)
    # a base that fills its bytes gets none
    full = hybrid_codec._spare_field(best, target, (0, len(stream) + 200), None, 0, steps=20)
    assert full == (None, 0)
