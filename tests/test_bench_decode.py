"""The decode benchmark runs end to end on a small volume and renders its tables."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("imagecodecs")
pytest.importorskip("tifffile")


def test_measure_and_render_a_small_volume() -> None:
    from napari_sciz.bench import decode

    z, y, x = np.mgrid[:6, :40, :48]
    vol = (1000 + 400 * np.sin(x / 5) * np.cos(y / 7) + 20 * z).astype(np.uint16)
    rec = decode.measure_volume("tiny", vol, 16, ["auto"], budget=2.0, repeat=1)
    reads = rec["reads"]
    assert {"sciz auto", "TIFF (uncompressed)", "SPERR"} <= set(reads)
    for row in reads.values():
        assert row["cold_ms"] > 0 and row["warm_ms"] > 0 and row["full_mbs"] > 0
    assert reads["sciz auto"]["coded"] == "hybrid"
    assert rec["lossless"]["sciz lossless"]["ratio"] > 1
    record = {
        "environment": {"cpu": "test"},
        "date": "now",
        "command": "decode",
        "ratio": 16.0,
        "budget": 2.0,
        "volumes": [rec],
    }
    text = decode.render(record)
    assert "### tiny" in text and "sciz auto (hybrid" in text and "| lossless |" in text
