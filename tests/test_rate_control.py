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


@pytest.mark.parametrize(
    ("shape", "level"),
    [((2, 512, 512), 1), ((2, 64, 96), 3), ((31, 61, 57), 1), ((1, 64, 64), 2), ((5, 33, 40), 4)],
)
def test_separable_upsampling_is_the_fields_and_its_exact_adjoint(shape, level) -> None:
    from napari_sciz.core.lossy.model import _upsample

    gen = torch.Generator().manual_seed(0)
    grid = tuple(1 if n <= 1 else -(-(n - 1) // 2**level) + 1 for n in shape)
    g = torch.randn(grid, generator=gen)
    r = torch.randn(shape, generator=gen)
    op = start._Separable(grid, level, shape)
    torch.testing.assert_close(op.up(g), _upsample(g, level, shape), atol=1e-5, rtol=1e-5)
    lhs = float((op.up(g).double() * r.double()).sum())
    rhs = float((g.double() * op.down(r).double()).sum())
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_retarget_start_starts_no_try_past_its_deadline() -> None:
    import time

    x = torch.rand(8, 32, 32, generator=torch.Generator().manual_seed(1))
    cfg = FieldConfig.choose(tuple(x.shape), 8.0 * 400)
    field = start.LatentField(cfg)
    start.init_from_pyramid(field, x, 8.0 * 4000)  # ten times too big for the window
    calls: list[float] = []
    real = start.init_from_pyramid

    def counted(*args, **kwargs):
        calls.append(time.perf_counter())
        return real(*args, **kwargs)

    start.init_from_pyramid = counted
    try:
        coding = start.retarget_start(field, x, 8.0 * 400, 0.0, 1.0, 380, 420, deadline=0.0)
    finally:
        start.init_from_pyramid = real
    assert calls == [] and coding > 0  # past the deadline already: rate control will do it
