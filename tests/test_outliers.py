"""Isolated extreme voxels stored exactly, apart from the coded volume (core.outliers)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sciz import compress, open_sciz
from napari_sciz.core.bitstream import container
from napari_sciz.core.outliers import (
    Outliers,
    decode_outliers,
    encode_outliers,
    find_outliers,
)
from napari_sciz.errors import FormatError

pytest.importorskip("imagecodecs")


def _tissue(shape: tuple[int, ...] = (8, 48, 40), seed: int = 0) -> np.ndarray:
    """A smooth volume (values about 19,400-20,600) with noise, uint16."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*(np.linspace(0, 3, n) for n in shape), indexing="ij")
    smooth = 20000 + 600 * np.sin(grids[-1] + grids[-2]) * np.cos(grids[0])
    return np.clip(smooth + rng.normal(0, 20, shape), 0, 65535).astype(np.uint16)


def _with_hot(vol: np.ndarray, n: int = 7, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    flat = rng.choice(vol.size, n, replace=False)
    out = vol.copy()
    out.reshape(-1)[flat[:-1]] = 65535  # hot pixels
    out.reshape(-1)[flat[-1]] = 0  # and a dead one
    return out, np.sort(flat)


def test_planted_hot_and_dead_voxels_are_found_and_nothing_in_clean_data() -> None:
    vol = _tissue()
    assert find_outliers(vol) is None
    hot, where = _with_hot(vol)
    found = find_outliers(hot)
    assert found is not None
    np.testing.assert_array_equal(found.indices, where)
    np.testing.assert_array_equal(found.values, hot.reshape(-1)[where])


def test_too_many_extreme_voxels_are_not_outliers() -> None:
    vol = _tissue()
    many = vol.copy()
    many.reshape(-1)[:: max(1, vol.size // 200)] = 65535  # ~200 of 15,360: a feature
    assert find_outliers(many) is None


def test_cleaned_replaces_outliers_by_their_neighbours_only() -> None:
    hot, where = _with_hot(_tissue())
    found = find_outliers(hot)
    assert found is not None
    clean = found.cleaned(hot)
    keep = np.ones(hot.size, bool)
    keep[where] = False
    np.testing.assert_array_equal(clean.reshape(-1)[keep], hot.reshape(-1)[keep])
    rest = hot.reshape(-1)[keep]
    assert rest.min() <= clean.reshape(-1)[where].min()
    assert clean.reshape(-1)[where].max() <= rest.max()


@pytest.mark.parametrize("dtype", ["uint16", "int8", "float32"])
def test_payload_round_trip(dtype: str) -> None:
    values = np.array([1, -2 if dtype != "uint16" else 2, 3, 4]).astype(dtype)
    found = Outliers(np.array([0, 5, 6, 4000], np.int64), values)
    back = decode_outliers(encode_outliers(found, np.dtype(dtype)), np.dtype(dtype), 4001)
    np.testing.assert_array_equal(back.indices, found.indices)
    np.testing.assert_array_equal(back.values, found.values)
    assert back.values.dtype == np.dtype(dtype)


def test_bad_payloads_are_format_errors() -> None:
    found = Outliers(np.array([3, 9], np.int64), np.array([7, 8], np.uint16))
    good = encode_outliers(found, np.dtype(np.uint16))
    bad = {
        "truncated": good[:-1],
        "overlong": good + b"\0",
        "magic": b"XXX" + good[3:],
        "version": good[:3] + b"\x09" + good[4:],
        "outside": good,  # (read as an array of 5 voxels)
        "repeated": encode_outliers(
            Outliers(np.array([3, 3], np.int64), np.array([7, 8], np.uint16)), np.uint16
        ),
        "empty": b"",
    }
    for name, payload in bad.items():
        size = 5 if name == "outside" else 100
        with pytest.raises(FormatError):
            decode_outliers(payload, np.dtype(np.uint16), size)


def test_a_hybrid_file_keeps_its_hot_pixels_exact_and_the_rest_precise() -> None:
    vol = _tissue((8, 64, 64))
    hot, where = _with_hot(vol)
    plain = compress(vol, ratio=24, mode="hybrid", steps=20)
    result = compress(hot, ratio=24, mode="hybrid", steps=20)
    assert result.header["outliers"] == {"version": 1, "count": where.size}
    assert result.header["model"]["version"] >= 7
    lo, hi = result.header["value_range"]  # the coded voxels' range: the outliers lie outside
    assert 0 < lo and hi < 65535
    assert any("outlier voxels" in m for m in result.messages)
    assert result.ratio >= 24 * 0.95
    rec = result.reconstruction.reshape(-1)
    np.testing.assert_array_equal(rec[where], hot.reshape(-1)[where])
    keep = np.ones(vol.size, bool)
    keep[where] = False
    err = np.abs(rec[keep].astype(float) - hot.reshape(-1)[keep])
    err_plain = np.abs(plain.reconstruction.reshape(-1)[keep].astype(float) - vol.reshape(-1)[keep])
    assert err.mean() < 1.5 * err_plain.mean()  # the rest coded about as well as without
    reader = open_sciz(result.data)
    np.testing.assert_array_equal(reader.decode(), result.reconstruction)
    z, y, x = np.unravel_index(where[0], vol.shape)
    region = reader[z, max(y - 2, 0) : y + 3, :]
    assert region[min(y, 2), x] == hot[z, y, x]
    scaled = reader.decode(scale=2)
    assert scaled.shape == (16, 128, 128)


def test_a_header_count_that_disagrees_with_the_payload_is_a_format_error() -> None:
    hot, _where = _with_hot(_tissue((8, 64, 64)))
    result = compress(hot, ratio=24, mode="hybrid", steps=20)
    with container.SciZFile(result.data) as f:
        header = dict(f.header)
        payloads = [f.payload(i) for i in range(f.n_payloads)]
    header["outliers"] = {"version": 1, "count": 3}
    with pytest.raises(FormatError):
        open_sciz(container.pack(header, payloads)).decode()
    header["outliers"] = {"version": 1, "count": 7}
    header["mode"] = "lossless"
    with pytest.raises(FormatError):
        open_sciz(container.pack(header, payloads))
    del header["outliers"]
    header["mode"] = "hybrid"
    with pytest.raises(FormatError):  # one payload too many for the blocks
        open_sciz(container.pack(header, payloads))


def test_only_an_end_with_a_wide_gap_is_cut() -> None:
    """Hot pixels at the top do not make the noise tail at the bottom outliers, and a dead
    pixel close to the range (a gap narrower than the rest of it) is kept in the volume."""
    vol = _tissue((1, 128, 128)).reshape(128, 128)
    vol[5, 7] = vol[100, 3] = 65535
    vol[50, 50] = int(vol.min()) - 300  # below the range, by less than the range
    found = find_outliers(vol)
    assert found is not None
    np.testing.assert_array_equal(found.indices, [5 * 128 + 7, 100 * 128 + 3])


def test_a_tiny_file_that_cannot_afford_the_list_is_coded_as_it_is() -> None:
    vol = _tissue((1, 16, 16)).reshape(16, 16)
    vol[2, 2] = 65535
    result = compress(vol, ratio=3, mode="hybrid", steps=20)
    assert "outliers" not in result.header
    assert result.ratio >= 3 * 0.95
    np.testing.assert_array_equal(open_sciz(result.data).decode(), result.reconstruction)


def test_found_slab_by_slab_as_in_one_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    import napari_sciz.core.outliers as outliers

    hot, where = _with_hot(_tissue())
    whole = find_outliers(hot)
    monkeypatch.setattr(outliers, "_SLAB", 1000)  # 16 slabs, the last one short
    sliced = find_outliers(hot)
    assert whole is not None and sliced is not None
    np.testing.assert_array_equal(sliced.indices, where)
    np.testing.assert_array_equal(sliced.indices, whole.indices)
