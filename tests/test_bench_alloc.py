"""The block-allocation benchmark runs both allocations on a small volume and renders them."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("imagecodecs")


def test_block_voxels_cut_a_volume_into_about_that_many_blocks() -> None:
    from napari_sciz.bench.alloc import block_voxels_for
    from napari_sciz.core.blocks import BlockGrid

    for shape in [(60, 256, 256), (16, 256, 256), (1024, 1024), (31, 61, 57)]:
        grid = BlockGrid.for_shape(shape, block_voxels_for(shape, 8))
        assert 4 <= grid.n_blocks <= 16, (shape, grid.n_blocks)


def test_measure_and_render_a_small_volume() -> None:
    from napari_sciz.bench import alloc

    z, y, x = np.mgrid[:6, :48, :64]
    vol = (1000 + 3 * z).astype(np.float64)
    vol[..., 32:] += 400 * np.sin(x[..., 32:] / 2.5) * np.cos(y[..., 32:] / 3.5)
    rec = alloc.measure("tiny", vol.astype(np.uint16), [16.0], budget=2.0, blocks=2)
    (row,) = rec["rows"]
    for key in ("probed", "detail"):
        assert row[key]["blocks"] >= 2 and 16 * 0.98 <= row[key]["ratio"] <= 16 * 1.1
    record = {"environment": {"cpu": "test"}, "date": "now", "command": "alloc",
              "budget": 2.0, "blocks": 2, "volumes": [rec]}  # fmt: skip
    text = alloc.render(record)
    assert "| tiny |" in text and "| 16x |" in text and "Mean" in text
