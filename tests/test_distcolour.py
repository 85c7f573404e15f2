"""A colour image's transform gathered from its blocks (no cluster: the tasks run here)."""

from __future__ import annotations

import functools
import operator
from typing import Any

import numpy as np
import pytest

from napari_sciz.core import colourtransform as ct
from napari_sciz.core.blocks import BlockGrid
from napari_sciz.core.cluster import BlockSource
from napari_sciz.core.colourtransform import ColourTransform, SampleSums
from napari_sciz.core.distcolour import (
    ColourPlanes,
    TransformedSource,
    _sums_task,
    decorrelated,
    image_pair,
)
from napari_sciz.core.distoutliers import CleanedSource


def stained(h: int = 90, w: int = 70) -> np.ndarray:
    """An RGB image, samples first, whose samples move together."""
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(3)
    stain = 100 + 60 * np.sin(y / 5.0) * np.cos(x / 7.0) + rng.normal(0, 5, (h, w))
    planes = [stain, 0.7 * stain + 40, 1.2 * stain - 20 + rng.normal(0, 3, (h, w))]
    return np.clip(np.stack(planes), 0, 255).astype(np.uint8)


class LocalRun:
    """Runs a job's tasks in this process, in order (what a cluster's run returns)."""

    def map(self, kind: str, task: Any, args: list[tuple], **_kw: Any) -> list[Any]:
        return [task(*a) for a in args]


@pytest.mark.parametrize("chunk", [1 << 22, 1000, 999])
def test_the_blocks_sums_make_the_whole_images_transform(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sampled pixels of every block sum to those of the whole image (the strided
    sample of a large image included), so the transform is the one-process transform."""
    monkeypatch.setattr(ct, "_CHUNK", chunk)
    image = stained()
    grid = BlockGrid.for_shape(image.shape, 4096)
    assert grid.n_blocks > 1 and grid.counts[0] == 1
    source = BlockSource(image.shape, "uint8")
    step = ct.sample_step(image.shape[1] * image.shape[2])
    sums = [_sums_task(source, image, grid, i, step) for i in range(grid.n_blocks)]
    flat = image.reshape(3, -1)
    assert functools.reduce(operator.add, sums) == SampleSums.of(flat[:, ::step], flat)
    request = ColourPlanes(image, 8.0, image.nbytes)
    planes = decorrelated(LocalRun(), source, image, grid, request)
    assert request.transform == ColourTransform.fit(image)
    assert isinstance(planes, TransformedSource) and planes.dtype == "uint16"
    whole = request.transform.forward(image)
    for i in range(grid.n_blocks):
        sl = grid.block_slices(i)
        assert np.array_equal(planes.read(sl, image), whole[sl])
        # the measure of a block: the image's samples, and the decoded planes as samples
        original, decoded = image_pair(CleanedSource(planes, (0, 60000)), sl, image, whole[sl])
        assert np.array_equal(original, image[sl]) and np.array_equal(decoded, image[sl])
    assert image_pair(source, grid.block_slices(0), image, image[:, :4]) is None


def test_a_colour_volume_is_coded_without_the_transform() -> None:
    """Blocks of a colour volume (samples, Z, Y, X) hold one sample each: left as it is."""
    volume = np.stack([stained(40, 30)] * 2, axis=1)  # (3, 2, 40, 30)
    grid = BlockGrid.for_shape(volume.shape, 4096)
    source = BlockSource(volume.shape, "uint8")
    request = ColourPlanes(volume, 8.0, volume.nbytes)
    assert decorrelated(LocalRun(), source, volume, grid, request) is source
    assert request.transform is None
