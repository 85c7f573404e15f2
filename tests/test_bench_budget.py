"""The budget benchmark times real ``sciz compress`` processes and renders its table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")


def test_cases_run_as_processes_and_render(tmp_path: Path) -> None:
    from napari_sciz.bench import budget

    z, y, x = np.mgrid[:6, :40, :48]
    vol = (1000 + 400 * np.sin(x / 5) * np.cos(y / 7) + 20 * z).astype(np.uint16)
    src = tmp_path / "tiny.tif"
    tifffile.imwrite(src, vol)
    rows = []
    for mode in ("lossy", "lossless", "bounded"):
        row = budget.run_case(src, mode, ratio=16, budget=2.0, workdir=tmp_path)
        assert "error" not in row, row
        row.update(volume="tiny", shape="6x40x48")
        rows.append(row)
    lossy, lossless, bounded = rows
    assert lossy["budget"] == 2.0 and lossless["budget"] is None
    assert 0 < lossy["encode_s"] <= lossy["wall_s"]
    assert lossy["ratio"] > 8 and lossless["psnr"] is None and bounded["psnr"] > 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.tif"]  # outputs removed
    with budget.background_load(1):
        pass  # starts and stops cleanly
    bad = budget.run_case(tmp_path / "missing.tif", "lossy", 16, 2.0, tmp_path)
    assert "error" in bad
    record = {
        "environment": {"cpu": "test"},
        "date": "now",
        "command": "budget",
        "device": "cpu",
        "budget": 2.0,
        "ratio": 16.0,
        "load": 1,
        "rows": [*rows, {**bad, "volume": "missing", "shape": "?"}],
    }
    text = budget.render(record)
    assert "| tiny | 6x40x48 | lossy |" in text and "| lossless |" in text
    assert "failed:" in text and "Worst overrun" in text
