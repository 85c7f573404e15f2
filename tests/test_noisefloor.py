"""The noise-floor estimate of the lossless benchmark (napari_sciz.bench.noisefloor)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_sciz.bench.noisefloor import gaussian_entropy_bits, haar_noise, noise_floor_bits


def test_gaussian_entropy_is_continuous_and_exact_at_the_ends() -> None:
    assert gaussian_entropy_bits(0.0) == 0.0
    assert gaussian_entropy_bits(0.05) < 0.01  # almost always 0
    below, above = gaussian_entropy_bits(8.0), gaussian_entropy_bits(8.0 + 1e-9)
    assert abs(below - above) < 1e-4
    assert gaussian_entropy_bits(100.0) == pytest.approx(math.log2(100 * 4.1327), abs=1e-3)


def test_haar_detail_of_white_noise_has_its_standard_deviation() -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 7.0, (20, 64, 64))
    detail, mean = haar_noise(noise + 1000.0)
    assert detail.size == mean.size == 10 * 32 * 32
    assert detail.std() == pytest.approx(7.0, rel=0.03)
    assert mean.mean() == pytest.approx(1000.0, abs=0.1)


def test_the_floor_of_a_smooth_stack_under_noise_is_the_noises_entropy() -> None:
    rng = np.random.default_rng(1)
    z, y, x = np.mgrid[0:16, 0:64, 0:64]
    smooth = 2000 + 800 * np.sin(x / 9.0) * np.cos(y / 13.0) + 20 * z
    vol = np.rint(smooth + rng.normal(0, 20.0, smooth.shape)).astype(np.uint16)
    est = noise_floor_bits(vol)
    assert not est["indexed"]
    assert est["sigma"] == pytest.approx(20.0, rel=0.05)
    assert est["bits"] == pytest.approx(math.log2(20 * 4.1327), abs=0.1)
    # a stack scaled by a constant step is measured in steps, as the lossless coder codes it
    scaled = noise_floor_bits((vol.astype(np.uint32) * 50).astype(np.uint32))
    assert scaled["indexed"] and scaled["bits"] == pytest.approx(est["bits"], abs=0.05)
