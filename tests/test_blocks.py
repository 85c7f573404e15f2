"""Tests of the block grid and the byte allocation (napari_sciz.core.blocks)."""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_sciz.core.blocks import BlockGrid, allocate_bytes
from napari_sciz.errors import FormatError

MIN_BLOCK = 4096  # for_shape never makes blocks smaller than this


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the body runs longer than ``seconds``."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "setitimer"
    ):  # pragma: no cover - only on platforms without SIGALRM
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise TimeoutError(f"took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def check_tiling(grid: BlockGrid, block_voxels: int) -> None:
    """Every element is in exactly one block, blocks obey the size limit and the numbering."""
    cover = np.zeros(grid.shape, np.int32)
    lead_nd = len(grid.lead_shape)
    for i in range(grid.n_blocks):
        sl = grid.block_slices(i)
        assert len(sl) == len(grid.shape)
        cover[sl] += 1
        assert grid.block_voxels(i) == math.prod(grid.block_shape3(i))
        assert grid.block_voxels(i) == cover[sl].size
        assert grid.block_voxels(i) <= max(block_voxels, MIN_BLOCK)
        assert all(n >= 1 for n in grid.block_shape3(i))
        assert all(n <= b for n, b in zip(grid.block_shape3(i), grid.block_shape, strict=True))
        # blocks are numbered volume by volume (C order over the leading axes)
        volume, start, stop = grid.block_box(i)
        assert volume == i // grid.blocks_per_volume
        if lead_nd:
            assert sl[:lead_nd] == np.unravel_index(volume, grid.lead_shape)
        assert tuple(b - a for a, b in zip(start, stop, strict=True)) == grid.block_shape3(i)
    np.testing.assert_array_equal(cover, 1)
    assert grid.n_blocks == grid.n_volumes * grid.blocks_per_volume


@pytest.mark.parametrize(
    ("shape", "block_voxels"),
    [
        ((64, 64), 2**22),
        ((64, 64), 4096),
        ((1000, 37), 4096),
        ((16, 64, 64), 2**22),
        ((16, 64, 64), 4096),
        ((16, 64, 64), 10000),
        ((15, 33, 47), 4096),
        ((2, 8, 48, 40), 4096),
        ((2, 3, 5, 30, 31), 4096),
        ((1, 1, 1, 2, 2), 4096),
        ((3, 1, 200, 200), 4096),
    ],
)
def test_for_shape_tiles_exactly(shape: tuple[int, ...], block_voxels: int) -> None:
    grid = BlockGrid.for_shape(shape, block_voxels)
    assert grid.shape == shape
    assert grid.spatial_ndim == (2 if len(shape) == 2 else 3)
    check_tiling(grid, block_voxels)


def test_for_shape_single_block_when_it_fits() -> None:
    grid = BlockGrid.for_shape((16, 64, 64), 2**22)
    assert grid.n_blocks == 1
    assert grid.block_shape == (16, 64, 64)
    assert grid.block_slices(0) == (slice(0, 16), slice(0, 64), slice(0, 64))
    grid2 = BlockGrid.for_shape((30, 40), 2**22)
    assert grid2.volume_shape == (1, 30, 40)
    assert grid2.block_slices(0) == (slice(0, 30), slice(0, 40))
    assert grid2.lead_shape == () and grid2.n_volumes == 1


def test_for_shape_stack_repeats_the_grid_per_volume() -> None:
    grid = BlockGrid.for_shape((2, 3, 16, 64, 64), 4096)
    assert grid.lead_shape == (2, 3)
    assert grid.n_volumes == 6
    assert grid.volume_shape == (16, 64, 64)
    assert grid.n_blocks == 6 * grid.blocks_per_volume
    assert grid.blocks_per_volume == 16
    # the blocks are even: 16 blocks of 4096 voxels
    assert all(grid.block_voxels(i) == 4096 for i in range(grid.n_blocks))


def test_for_shape_small_limits_are_raised_to_the_minimum() -> None:
    grid = BlockGrid.for_shape((16, 64, 64), 1)
    assert grid.n_blocks == 16
    assert max(grid.block_voxels(i) for i in range(grid.n_blocks)) <= MIN_BLOCK


@pytest.mark.parametrize(
    ("shape", "block_voxels"),
    [
        ((289, 289, 289), 4096),  # 289 = 17 * 17: 18 blocks per axis are no smaller than 17
        ((306, 306, 306), 4096),
    ],
)
def test_for_shape_terminates_on_square_extents(shape: tuple[int, ...], block_voxels: int) -> None:
    with time_limit(5):
        grid = BlockGrid.for_shape(shape, block_voxels)
    assert all(grid.block_voxels(i) <= block_voxels for i in range(grid.n_blocks))
    # tiling without materialising the volume: extents along each axis add up
    for axis in range(3):
        total = sum(
            grid.block_shape3(i)[axis]
            for i in range(grid.n_blocks)
            if all(grid._split(i)[1][a] == 0 for a in range(3) if a != axis)
        )
        assert total == grid.volume_shape[axis]


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 40), min_size=2, max_size=5).filter(
        lambda s: s[-1] >= 2 and s[-2] >= 2 and math.prod(s) <= 60000
    ),
    block_voxels=st.integers(1, 30000),
)
def test_for_shape_tiling_property(shape: list[int], block_voxels: int) -> None:
    with time_limit(10):
        grid = BlockGrid.for_shape(shape, block_voxels)
    check_tiling(grid, block_voxels)
    assert BlockGrid.from_header(grid.to_header(), shape) == grid


def test_header_round_trip() -> None:
    for shape in [(64, 64), (16, 64, 64), (2, 8, 48, 40), (2, 3, 5, 30, 31)]:
        grid = BlockGrid.for_shape(shape, 4096)
        h = grid.to_header()
        assert set(h) == {"block_shape", "counts", "spatial_ndim", "count"}
        assert h["count"] == grid.n_blocks
        assert BlockGrid.from_header(h, shape) == grid
        assert BlockGrid.from_header(h, list(shape)) == grid


def _bad(h: dict, **changes: object) -> dict:
    out = dict(h)
    out.update(changes)
    return out


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h: _bad(h, spatial_ndim=4),
        lambda h: _bad(h, spatial_ndim=1),
        lambda h: _bad(h, spatial_ndim=2),  # 3D array described as 2D
        lambda h: _bad(h, counts=[1, 1, 1]),  # does not tile (blocks too small)
        lambda h: _bad(h, counts=[2, 4, 4]),
        lambda h: _bad(h, block_shape=[16, 64, 64]),  # 16 blocks of the whole volume
        lambda h: _bad(h, block_shape=[0, 16, 16], counts=[1, 4, 4]),
        lambda h: _bad(h, block_shape=[4, 16], counts=[4, 4]),
        lambda h: _bad(h, block_shape=[4, 16, 16, 1], counts=[4, 4, 4, 1]),
        lambda h: _bad(h, block_shape=[-4, 16, 16]),
    ],
)
def test_from_header_rejects_inconsistent_grids(mutate: Callable[[dict], dict]) -> None:
    grid = BlockGrid.for_shape((16, 64, 64), 4096)
    with pytest.raises(FormatError):
        BlockGrid.from_header(mutate(grid.to_header()), grid.shape)


def test_from_header_rejects_2d_grid_for_stack_and_huge_blocks() -> None:
    grid2 = BlockGrid.for_shape((64, 64), 4096)
    with pytest.raises(FormatError):
        BlockGrid.from_header(grid2.to_header(), (1, 64, 64))
    n = 2**11 + 1
    huge = {"block_shape": [n, n, n], "counts": [1, 1, 1], "spatial_ndim": 3, "count": 1}
    with pytest.raises(FormatError, match="implausibly large"):
        BlockGrid.from_header(huge, (n, n, n))


def test_from_header_missing_keys_raise_key_error() -> None:
    # the reader turns these into FormatError (tested in test_codec.py)
    with pytest.raises(KeyError):
        BlockGrid.from_header({"spatial_ndim": 3}, (4, 4, 4))


def brute_force_blocks_in_box(grid: BlockGrid, volume: int, box3: list) -> set[int]:
    found = set()
    for i in range(grid.n_blocks):
        v, start, stop = grid.block_box(i)
        if v != volume:
            continue
        if all(
            s < b and a < e for (a, b), s, e in zip(box3, start, stop, strict=True)
        ):  # intervals overlap
            found.add(i)
    return found


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_blocks_in_box_finds_exactly_the_intersecting_blocks(data: st.DataObject) -> None:
    shape = (2, 15, 70, 50)
    grid = BlockGrid.for_shape(shape, 4096)
    volume = data.draw(st.integers(0, grid.n_volumes - 1))
    box3 = []
    for n in grid.volume_shape:
        a = data.draw(st.integers(0, n - 1))
        b = data.draw(st.integers(a + 1, n))
        box3.append((a, b))
    got = list(grid.blocks_in_box(volume, box3))
    assert {i for i, _s, _e in got} == brute_force_blocks_in_box(grid, volume, box3)
    assert len(got) == len({i for i, _s, _e in got})
    for i, start, stop in got:
        assert (volume, start, stop) == grid.block_box(i)


# --------------------------------------------------------------------------------------------
# allocate_bytes
# --------------------------------------------------------------------------------------------


def _busy_and_flat(shape: tuple[int, ...] = (16, 64, 64)) -> np.ndarray:
    rng = np.random.default_rng(0)
    arr = np.full(shape, 100, np.uint16)
    arr[..., : shape[-1] // 2] += rng.integers(0, 1000, arr[..., : shape[-1] // 2].shape).astype(
        np.uint16
    )
    return arr


def test_allocate_single_block_gets_everything() -> None:
    arr = _busy_and_flat()
    grid = BlockGrid.for_shape(arr.shape, 2**22)
    assert allocate_bytes(arr, grid, 12345.5) == [12345.5]


def test_allocate_sums_to_budget_and_favours_detail() -> None:
    arr = _busy_and_flat()
    grid = BlockGrid.for_shape(arr.shape, 4096)
    shares = allocate_bytes(arr, grid, 20000.0)
    assert len(shares) == grid.n_blocks
    assert math.isclose(sum(shares), 20000.0, rel_tol=1e-9)
    assert min(shares) >= 160 - 1e-9
    busy = [s for i, s in enumerate(shares) if grid.block_slices(i)[-1].stop <= 32]
    flat = [s for i, s in enumerate(shares) if grid.block_slices(i)[-1].start >= 32]
    assert busy and flat
    assert min(busy) > 5 * max(flat)


def test_allocate_constant_image_by_size() -> None:
    arr = np.full((15, 33, 47), 7.0, np.float32)
    grid = BlockGrid.for_shape(arr.shape, 4096)
    shares = allocate_bytes(arr, grid, 50000.0)
    sizes = np.array([grid.block_voxels(i) for i in range(grid.n_blocks)], float)
    np.testing.assert_allclose(shares, 50000.0 * sizes / sizes.sum())


def test_allocate_lifts_starved_blocks_to_the_minimum() -> None:
    arr = _busy_and_flat()
    grid = BlockGrid.for_shape(arr.shape, 4096)
    budget = grid.n_blocks * 200.0
    shares = allocate_bytes(arr, grid, budget)
    assert math.isclose(sum(shares), budget, rel_tol=1e-9)
    assert min(shares) >= 160 - 1e-6
    assert max(shares) > 200


def test_finalize_clips_and_rounds_across_chunks() -> None:
    """Slab-wise finalize equals clip + round + cast of the whole array."""
    from napari_sciz.core.blocks import finalize

    rng = np.random.default_rng(5)
    values = rng.normal(500, 400, size=(3, 700, 800))
    out = finalize(values, np.dtype(np.uint16), (0, 1000))
    assert out.dtype == np.uint16 and out.shape == values.shape
    assert np.array_equal(out, np.rint(np.clip(values, 0, 1000)).astype(np.uint16))
    as_float = finalize(values, np.dtype(np.float32), (0.0, 1000.0))
    assert np.array_equal(as_float, np.clip(values, 0, 1000).astype(np.float32))
