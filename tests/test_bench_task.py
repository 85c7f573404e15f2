"""The rate-task bench runs end to end on a small volume and renders its tables."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage")


def test_measure_and_render_a_small_volume() -> None:
    from napari_sciz.bench import task

    grid = np.indices((8, 48, 48)).astype(float)
    vol = np.full((8, 48, 48), 100.0)
    for c in [(4, 14, 14), (4, 34, 30)]:
        r2 = sum((g - x) ** 2 for g, x in zip(grid, c, strict=True))
        vol += 800.0 * (r2 < 36)
    vol = (vol + np.random.default_rng(0).normal(0, 10, vol.shape)).astype(np.uint16)
    rec = task.measure_volume("tiny", vol, [16, 32], budget=1.0)
    assert rec["objects"] == 2 and set(rec["curves"]) == set(task.GUIDANCES)
    for points in rec["curves"].values():
        assert len(points) == 2
        for p in points:
            assert 0 <= p["object_f1"] <= 1 and 0 < p["ms_ssim"] <= 1 and p["ratio"] > 8
    record = {
        "environment": {"cpu": "test"},
        "date": "now",
        "command": "task",
        "budget": 1.0,
        "volumes": [rec],
    }
    text = task.render(record)
    assert "| tiny (2 objects, seeds " in text and "| segmentation | " in text
