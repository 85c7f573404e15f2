"""The effort benchmark runs end to end on a small volume and renders its table."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("imagecodecs")


def test_measure_and_render_a_small_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_sciz.bench import effort
    from napari_sciz.core import plan

    monkeypatch.setitem(plan.EFFORT_PRESETS, "fast", (1.0, 0.0))
    monkeypatch.setitem(plan.EFFORT_PRESETS, "balanced", (2.0, 0.0))
    z, y, x = np.mgrid[:6, :40, :48]
    vol = (1000 + 400 * np.sin(x / 5) * np.cos(y / 7) + 20 * z).astype(np.uint16)
    rec = effort.measure("tiny", vol, [16.0], ["fast", "balanced"])
    assert [r["effort"] for r in rec["rows"]] == ["fast", "balanced"]
    assert [r["budget"] for r in rec["rows"]] == [1.0, 2.0]
    for row in rec["rows"]:
        res = row["result"]
        assert res is not None and 16 * 0.98 <= res["ratio"] <= 16 * 1.1 and res["psnr"] > 20
        assert res["layers"] and res["layers"][0]["base"]  # (the default mode is hybrid)
    record = {"environment": {"cpu": "test"}, "date": "now", "command": "effort", "volumes": [rec]}
    text = effort.render(record)
    assert "### tiny" in text and "| 16x | fast |" in text and "| 16x | balanced |" in text
