"""Tests of napari_sciz.core.metrics against scikit-image on real data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from napari_sciz.core import metrics
from napari_sciz.core.metrics import max_abs_error, psnr, ssim, value_range
from napari_sciz.errors import InvalidInputError

skm = pytest.importorskip("skimage.metrics")
tifffile = pytest.importorskip("tifffile")
ndi = pytest.importorskip("scipy.ndimage")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not DATA.is_dir():  # pragma: no cover - alternative checkout layouts
    DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

REAL = [
    "stardist_img3d.tif",  # uint16 3D
    "philips_ct_phantom_crop.tif",  # uint16 12-bit CT
    "neuroproof_fib25_crop128.tif",  # uint8 FIB-SEM
    "flowdec_bead_25pct.tif",  # float32
    "stardist_img2d.tif",  # uint16 2D
]


def _load(name: str, max_slices: int = 24) -> np.ndarray:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real data {name} not available")
    data = tifffile.imread(path)
    return data[:max_slices] if data.ndim == 3 else data


def _degrade(a: np.ndarray, seed: int = 0) -> np.ndarray:
    """A plausible lossy reconstruction: blurred, noisy, cast back to the original dtype."""
    rng = np.random.default_rng(seed)
    peak = float(a.max()) - float(a.min())
    b = ndi.gaussian_filter(a.astype(np.float64), 0.8)
    b += rng.normal(0.0, 0.02 * peak, a.shape)
    if a.dtype.kind in "ui":
        info = np.iinfo(a.dtype)
        b = np.clip(np.rint(b), info.min, info.max)
    return b.astype(a.dtype)


def _sk_ssim(a: np.ndarray, b: np.ndarray, **kw: object) -> float:
    peak = float(a.max()) - float(a.min())
    a3 = a.reshape(-1, *a.shape[-2:]).astype(np.float64)
    b3 = b.reshape(-1, *b.shape[-2:]).astype(np.float64)
    return float(
        np.mean(
            [skm.structural_similarity(a3[i], b3[i], data_range=peak, **kw) for i in range(len(a3))]
        )
    )


@pytest.mark.parametrize("name", REAL)
def test_ssim_matches_skimage_on_real_data(name: str) -> None:
    a = _load(name)
    b = _degrade(a)
    assert ssim(a, b) == pytest.approx(_sk_ssim(a, b), abs=1e-6)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name", REAL[:3])
def test_psnr_matches_skimage_on_real_data(name: str) -> None:
    a = _load(name)
    b = _degrade(a, seed=1)
    peak = float(a.max()) - float(a.min())
    expected = skm.peak_signal_noise_ratio(
        a.astype(np.float64), b.astype(np.float64), data_range=peak
    )
    assert psnr(a, b) == pytest.approx(expected, abs=1e-9)
    expected_max = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    assert max_abs_error(a, b) == expected_max


def test_ssim_flattens_leading_axes() -> None:
    a = _load("bia_membrane_2d_timelapse.tif")[:, :64, :64]  # T, Y, X
    b = _degrade(a)
    a4 = a.reshape(5, 1, 64, 64)
    b4 = b.reshape(5, 1, 64, 64)
    assert ssim(a4, b4) == pytest.approx(ssim(a, b), abs=1e-15)
    assert ssim(a, b) == pytest.approx(_sk_ssim(a, b), abs=1e-6)


def test_ssim_float32_inputs_computed_in_float64() -> None:
    a = _load("flowdec_bead_25pct.tif")[:8]
    b = (a + np.float32(0.01) * np.float32(a.max())).astype(np.float32)
    # scikit-image computes float32 inputs in float32; ours is float64 like its float64 path.
    assert ssim(a, b) == pytest.approx(_sk_ssim(a, b), abs=1e-9)


def test_psnr_identical_is_inf_and_known_value() -> None:
    a = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    assert psnr(a, a) == math.inf
    # peak 255, MSE 1
    assert psnr(a, a.astype(np.float64) + 1.0) == pytest.approx(20 * math.log10(255.0))
    assert max_abs_error(a, a) == 0.0


def test_constant_original_uses_peak_one() -> None:
    a = np.full((4, 8, 8), 7, dtype=np.uint16)
    assert value_range(a) == 1.0
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 1) == pytest.approx(0.0, abs=1e-12)  # MSE 1, peak 1
    assert ssim(a, a) == pytest.approx(1.0)
    s = ssim(a, a + 1)
    assert math.isfinite(s) and 0.0 < s < 1.0


def test_data_range_override() -> None:
    a = _load("stardist_img3d.tif")
    b = _degrade(a)
    full = float(a.max()) - float(a.min())
    roi_a, roi_b = a[:4, 10:40, 10:40], b[:4, 10:40, 10:40]
    assert psnr(roi_a, roi_b, data_range=full) != psnr(roi_a, roi_b)
    expected = skm.peak_signal_noise_ratio(
        roi_a.astype(float), roi_b.astype(float), data_range=full
    )
    assert psnr(roi_a, roi_b, data_range=full) == pytest.approx(expected)
    with pytest.raises(InvalidInputError):
        psnr(a, b, data_range=0)


@pytest.mark.parametrize(("shape", "win"), [((5, 5), 5), ((6, 20), 5), ((4, 10), 3)])
def test_small_images_use_smaller_odd_window(shape: tuple[int, int], win: int) -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 1000, size=shape).astype(np.uint16)
    b = (a + rng.integers(0, 50, size=shape)).astype(np.uint16)
    peak = float(a.max()) - float(a.min())
    expected = skm.structural_similarity(
        a.astype(float), b.astype(float), data_range=peak, win_size=win
    )
    assert ssim(a, b) == pytest.approx(expected, abs=1e-9)


def test_single_pixel_window() -> None:
    a = np.arange(12, dtype=np.float32).reshape(1, 12)
    assert ssim(a, a) == pytest.approx(1.0)
    s = ssim(a, a[:, ::-1].copy())
    assert math.isfinite(s) and s < 1.0


def test_mixed_and_exotic_dtypes() -> None:
    rng = np.random.default_rng(4)
    a = rng.integers(-300, 300, size=(3, 16, 16)).astype(np.int16)
    b = a.astype(np.float32) + 0.5
    assert psnr(a, b) == pytest.approx(psnr(a.astype(np.float64), b.astype(np.float64)))
    assert max_abs_error(a, b) == 0.5
    assert 0.9 < ssim(a, b) <= 1.0
    mask = a > 0
    assert psnr(mask, mask) == math.inf
    assert max_abs_error(mask, ~mask) == 1.0
    assert max_abs_error(a.tolist(), a.tolist()) == 0.0  # array-likes


def test_chunked_processing_gives_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    a = _load("stardist_img3d.tif")
    b = _degrade(a)
    ref = (psnr(a, b), max_abs_error(a, b))
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 1000)  # less than one slice per chunk
    assert psnr(a, b) == pytest.approx(ref[0], abs=1e-10)
    assert max_abs_error(a, b) == ref[1]


def test_memmap_input(tmp_path: Path) -> None:
    a = _load("stardist_img3d.tif")
    b = _degrade(a)
    np.save(tmp_path / "a.npy", a)
    m = np.load(tmp_path / "a.npy", mmap_mode="r")
    assert psnr(m, b) == psnr(a, b)
    assert ssim(m, b) == ssim(a, b)


def test_invalid_inputs() -> None:
    a = np.zeros((8, 8))
    with pytest.raises(InvalidInputError, match="shape mismatch"):
        psnr(a, np.zeros((8, 9)))
    with pytest.raises(InvalidInputError, match="2 dimensions"):
        ssim(np.zeros(10), np.zeros(10))
    with pytest.raises(InvalidInputError, match="empty"):
        max_abs_error(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(InvalidInputError, match="dtype"):
        psnr(a.astype(complex), a)
    bad = a.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        psnr(bad, a)
    assert math.isnan(psnr(a + np.arange(8), bad))


def test_squared_error_sum_matches_numpy_across_chunks() -> None:
    """The slab-wise sum equals the direct one on an array spanning several slabs."""
    rng = np.random.default_rng(3)
    a = rng.integers(0, 4096, size=(3, 1100, 1300), dtype=np.uint16)
    b = a.astype(np.float32) + rng.normal(0, 2, size=a.shape).astype(np.float32)
    direct = float(np.sum((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    assert metrics.squared_error_sum(a, b) == pytest.approx(direct, rel=1e-12)
    with pytest.raises(InvalidInputError):
        metrics.squared_error_sum(a, b[:1])


def test_a_large_slice_is_measured_in_strips_with_the_same_ssim(monkeypatch) -> None:
    """Above ``_SSIM_STRIPS_ABOVE`` pixels the map is computed in strips of rows (its
    temporaries in cache): the same mean, to rounding, uneven last strip included."""
    rng = np.random.default_rng(5)
    a = (rng.random((203, 150)) * 4000).astype(np.uint16)
    b = (a + rng.normal(0, 80, a.shape)).clip(0, 65535).astype(np.uint16)
    whole = metrics.ssim(a, b)
    monkeypatch.setattr(metrics, "_SSIM_STRIPS_ABOVE", 1000)
    monkeypatch.setattr(metrics, "_SSIM_STRIP_ROWS", 32)
    assert metrics.ssim(a, b) == pytest.approx(whole, rel=1e-13, abs=0)
