"""The wide least-squares sub-predictor of lossless payload version 6 (lossless/xls.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_sciz.core.lossless import decode_block, encode_block
from napari_sciz.core.lossless.predict import _Neighbours
from napari_sciz.core.lossless.xls import (
    IN_SLICE,
    PREV_SLICE,
    XLS_BYTES,
    XLSParams,
    ext_values,
    fit_xls,
)
from napari_sciz.errors import FormatError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _extra_at(v: np.ndarray, z: int, y: int, x: int, nv: np.ndarray) -> list[int]:
    """The 14 extra neighbours of one voxel, from their definition (format.md)."""
    d, h, w = v.shape
    out = []
    for dy, dx, fb in IN_SLICE:
        yy, xx = y + dy, x + dx
        out.append(int(v[z, yy, xx]) if yy >= 0 and 0 <= xx < w else int(nv[fb]))
    for dy, dx in PREV_SLICE:
        yy, xx = min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)
        out.append(int(v[z - 1, yy, xx]) if z > 0 else 0)
    out.append(int(v[z - 2, y, x]) if z >= 2 else int(nv[4]))
    return out


@pytest.mark.parametrize("shape", [(4, 9, 11), (3, 1, 7), (2, 5, 1), (1, 4, 4)])
def test_extra_neighbours_follow_their_definition(shape: tuple[int, int, int]) -> None:
    d, h, w = shape
    v = np.random.default_rng(d * h * w).integers(0, 1000, shape).astype(np.int64)
    nbrs = _Neighbours(d, h, w)
    vflat = np.concatenate([np.zeros(h * w, np.int64), v.ravel()])
    pos = np.arange(h * w, dtype=np.int64)
    for z in range(d):
        nv = vflat[nbrs.index(pos + z * h * w, pos)]
        got = ext_values(v, z, pos, nv)
        for p in range(h * w):
            y, x = divmod(p, w)
            assert got[:, p].tolist() == _extra_at(v, z, y, x, nv[:, p]), (z, y, x)


def test_weights_bytes_round_trip_and_reject_bad_lengths() -> None:
    z, y, x = np.meshgrid(np.arange(3), np.arange(30), np.arange(30), indexing="ij")
    v = (500 + 100 * np.sin(x / 4.0) + 50 * np.cos(y / 3.0 + z)).astype(np.int64)
    params = fit_xls(v)
    for thr in (None, np.arange(7, dtype=np.int64) * 100):  # gradient or intensity classes
        params.thr = thr
        data = params.to_bytes()
        assert len(data) == params.nbytes <= XLS_BYTES
        back = XLSParams.from_bytes(data)
        assert np.array_equal(back.w, params.w) and np.array_equal(back.b, params.b)
        assert (back.thr is None) == (thr is None)
        assert thr is None or np.array_equal(back.thr, thr)
        for bad in (data[:-1], bytes([2]) + data[1:], data + b"\0"):
            with pytest.raises(FormatError):
                XLSParams.from_bytes(bad)
    unsorted = bytearray(params.to_bytes())
    unsorted[1:9] = (10**6).to_bytes(8, "little")  # first threshold above the others
    with pytest.raises(FormatError):
        XLSParams.from_bytes(bytes(unsorted))


def test_a_smooth_field_is_predicted_almost_exactly() -> None:
    """Quadratic surfaces are predicted by 25 neighbours far better than by the planar
    predictor: the fitted weights reproduce them up to rounding."""
    z, y, x = np.meshgrid(np.arange(4), np.arange(40), np.arange(40), indexing="ij")
    v = (3 * x * x + 2 * y * y + x * y + 40 * z).astype(np.int64) // 4
    from napari_sciz.core.lossless.tokens import _encode_v2_core

    bits_x = _encode_v2_core(v, 0b10000000)[1]
    bits_p = _encode_v2_core(v, 0b100)[1]
    assert bits_x < 0.6 * bits_p
    res = _encode_v2_core(v, 0b10000000, shift=0)[0]["res"].reshape(v.shape)
    inner = np.s_[2:, 3:-3, 3:-3]  # (away from the borders' fallbacks)
    assert np.abs(res[inner]).max() <= 1


@pytest.mark.skipif(not (DATA / "philips_ct_phantom_crop.tif").exists(), reason="no shared data")
def test_ct_phantom_takes_the_wide_least_squares(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CT phantom the encoder picks the wide least squares (mask bit 7) and the block
    is at least 3 % smaller than without it."""
    import tifffile

    from napari_sciz.core.lossless import raster

    ct = tifffile.imread(DATA / "philips_ct_phantom_crop.tif")[:8]
    payload = encode_block(ct)
    assert payload[:4] == b"SZL\x07" and payload[52] >> 7
    assert np.array_equal(decode_block(payload, ct.dtype, ct.shape), ct)
    monkeypatch.setattr(raster, "_XLS_MIN_VOXELS", ct.size + 1)
    without = encode_block(ct)
    assert not without[52] >> 7
    assert len(payload) < 0.97 * len(without)


def test_missing_weights_are_a_format_error() -> None:
    """A version-6 block whose mask uses the wide least squares but whose weight section is
    cut to nothing (lengths made consistent) is refused, never decoded with zero weights."""
    z, y, x = np.meshgrid(np.arange(6), np.arange(64), np.arange(72), indexing="ij")
    rng = np.random.default_rng(1)
    v = 2000 + 700 * np.sin(x / 7.0 + z / 3) * np.cos(y / 11.0) + rng.normal(0, 2, x.shape)
    block = v.astype(np.uint16)
    payload = encode_block(block)
    assert payload[52] >> 7
    section = _weights_of(payload)
    at = payload.find(section) - 2
    assert int.from_bytes(payload[at : at + 2], "little") == len(section)
    cut = payload[:at] + b"\x00\x00" + payload[at + 2 + len(section) :]
    with pytest.raises(FormatError):
        decode_block(cut, block.dtype, block.shape)


def _weights_of(payload: bytes) -> bytes:
    """The weight section of a version-6 payload (found through the lane extension)."""
    from napari_sciz.core.lossless.lanes import read_lane_ext
    from napari_sciz.core.lossless.layout import _HEAD2

    d, h, w = _HEAD2.unpack_from(payload)[4:7]
    ext, _pos = read_lane_ext(payload, _HEAD2.size, (d, h, w), 6)
    assert ext.xls is not None
    return ext.xls.to_bytes()


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("intensity", [False, True])
def test_both_classifications_round_trip_in_lanes(
    monkeypatch: pytest.MonkeyPatch, axis: int, intensity: bool
) -> None:
    """Weight sets chosen by gradient level or by intensity (W + N against 7 thresholds)
    decode bit for bit, in slab and band lanes, with and without a blend."""
    from napari_sciz.core.lossless import raster, tokens, xls

    real = xls.fit_xls

    def forced(v: np.ndarray) -> XLSParams:
        params = real(v)
        params.thr = np.array([-5, 300, 900, 900, 1500, 2100, 2600]) if intensity else None
        return params

    monkeypatch.setattr(raster, "fit_xls", forced)
    monkeypatch.setattr(raster, "_XLS_MIN_VOXELS", 1)
    monkeypatch.setattr(raster, "_LANE_VOXELS", 100)
    monkeypatch.setattr(raster, "_MIN_LANE_ROWS", 4)
    monkeypatch.setattr(raster, "plan_lanes", lambda v, *_: (3, axis))
    z, y, x = np.meshgrid(np.arange(5), np.arange(36), np.arange(40), indexing="ij")
    rng = np.random.default_rng(axis + 2 * intensity)
    block = 1500 + 1000 * np.sin(x / 5.0 + z) * np.cos(y / 7.0) + rng.normal(0, 3, x.shape)
    block = block.astype(np.uint16)
    for mask in (0b10000000, 0b11000100):
        monkeypatch.setattr(tokens, "_MASKS", (mask,))
        payload = encode_block(block)
        assert payload[52] == mask and payload[86:88] == bytes([3, axis])
        ext = _weights_of(payload)
        assert ext[0] == int(intensity)
        assert np.array_equal(decode_block(payload, block.dtype, block.shape), block)
