"""The starting pyramid is sized to the real payload, and rate control keeps the better knob."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_sciz.core.lossy import ratecontrol, start  # noqa: E402
from napari_sciz.core.lossy.model import FieldConfig  # noqa: E402


def _smooth_block(shape=(8, 48, 48), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    base = np.sin(6 * x) * np.cos(4 * y) + 0.5 * z
    return base + 0.05 * rng.standard_normal(shape)


@pytest.mark.parametrize("window", [(300, 330), (600, 640), (1200, 1280)])
def test_the_start_lands_in_the_window(window):
    block = _smooth_block()
    norm = (block - block.min()) / (block.max() - block.min())
    x = torch.from_numpy(norm.astype(np.float32))
    low, high = window
    bits = 8.0 * 0.5 * (low + high) - 8.0 * 60
    config = FieldConfig.choose(block.shape, bits)
    field, _ = start.best_start(config, x, bits, "cpu")
    start.retarget_start(field, x, bits, 0.0, 1.0, low, high)
    assert low <= ratecontrol.payload_bytes(field, 0.0, 1.0) <= high


def test_rate_control_keeps_the_candidate_closer_to_the_original(monkeypatch):
    block = _smooth_block(seed=1)
    norm = (block - block.min()) / (block.max() - block.min())
    x = torch.from_numpy(norm.astype(np.float32))
    bits = 8.0 * 500
    config = FieldConfig.choose(block.shape, bits)
    field, _ = start.best_start(config, x, bits, "cpu")
    size = ratecontrol.payload_bytes(field, 0.0, 1.0)
    # a window above the start's size: both knobs (finer step, rounding away) can reach it
    low, high = int(size * 1.08), int(size * 1.12)
    candidates = []
    real_evaluate = ratecontrol.evaluate_code

    def recording(code, shape, device="cpu"):
        rec = real_evaluate(code, shape, device)
        candidates.append(float(np.mean((rec - norm) ** 2)))
        return rec

    monkeypatch.setattr(ratecontrol, "evaluate_code", recording)
    code, payload = ratecontrol.rate_control(field, 0.0, 1.0, low, high, x.reshape(-1))
    assert low <= len(payload) <= high
    assert len(candidates) == 2  # both knobs landed in the window and were decoded
    chosen = float(np.mean((real_evaluate(code, block.shape) - norm) ** 2))
    assert chosen == pytest.approx(min(candidates))
