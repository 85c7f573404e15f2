"""The encoder-speed benchmark: step FLOPs, a measured time, time to quality, markdown."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from napari_sciz.bench import speed  # noqa: E402


def test_step_cost_counts_flops_and_times_a_step():
    r = speed.step_cost((4, 32, 32), 0.5, 1024, "cpu", repeats=2)
    assert r["crop_voxels"] <= 4 * 32 * 32
    # the MLP's forward and backward: at least 2 FLOPs per weight and voxel, times 3
    assert r["matmul_flops"] >= 6 * r["crop_voxels"] * r["hidden"]
    assert r["interp_flops"] > 0 and r["seconds"] > 0


def test_time_to_quality_and_markdown():
    rng = np.random.default_rng(0)
    vol = (rng.random((4, 24, 24)) * 1000).astype(np.uint16)
    rows = speed.time_to_quality(vol, 8.0, [0.5], "cpu")
    assert rows[0]["ratio"] > 6 and rows[0]["psnr"] > 0
    record = {
        "environment": {"cpu": "test cpu", "torch": "x"},
        "date": "now",
        "command": "speed",
        "device": "cpu",
        "batch": 1024,
        "bits_per_voxel": 0.5,
        "device_rate": 1e9,
        "steps": [speed.step_cost((4, 32, 32), 0.5, 1024, "cpu", repeats=1)],
        "time_to_quality": {"volume": "noise", "ratio": 8.0, "rows": rows},
    }
    text = speed.render(record)
    assert "4x32x32" in text and "Time to quality (noise, 8x" in text
    assert "1.0 GFLOP/s" in text


def test_main_without_budgets_writes_the_section(tmp_path):
    out = tmp_path / "bench.md"
    out.write_text("# benchmarks\n")
    code = speed.main(
        ["--blocks", "4x32x32", "--batch", "1024", "--budgets", "", "--out", str(out)]
    )
    assert code == 0
    text = out.read_text()
    assert "bench:speed:start" in text and "4x32x32" in text
