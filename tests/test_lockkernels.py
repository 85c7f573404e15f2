"""The lock's projection on its constrained voxels only: the values of whole-box filterings,
bit for bit (files written before the kernels decode as they were written)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_sciz.core.seglock import gauss, project


def _reference_solve(
    d: np.ndarray, sign: np.ndarray, where: np.ndarray, threshold: float, margin: float,
    sigmas: Sequence[float],
) -> np.ndarray:  # fmt: skip
    """The projection of one box as first written (every filtering on the whole box): the
    specification the files of sessions 50-53 were written with."""
    wide = [float(s) * np.sqrt(2.0) for s in sigmas]
    base = ndi.gaussian_filter(d, list(sigmas)) - threshold
    lam = np.zeros(d.shape)
    y = lam
    t = 1.0
    for _ in range(project.ITERATIONS):
        smoothed = base + ndi.gaussian_filter(sign * y, wide)
        slack = np.where(where, margin - sign * smoothed, 0.0)
        lam_next = np.maximum(0.0, y + slack)
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        y = lam_next + ((t - 1.0) / t_next) * (lam_next - lam)
        lam, t = lam_next, t_next
    return ndi.gaussian_filter(sign * lam, list(sigmas))


def _sparse_mask(rng: np.random.Generator, shape: tuple[int, ...], share: float) -> np.ndarray:
    mask = rng.random(shape) < share
    if not mask.any():
        mask.flat[rng.integers(mask.size)] = True
    return mask


@pytest.mark.parametrize(
    ("shape", "sigmas"),
    [
        ((20, 40, 36), (1.0, 1.0, 1.0)),
        ((9, 31, 17), (0.5, 1.2, 2.0)),  # anisotropic voxels
        ((1, 5, 2), (1.0, 1.0, 1.0)),  # lines shorter than the kernel
        ((3, 7, 40), (0.0, 1.0, 1.0)),  # an axis not smoothed
        ((48, 50), (1.0, 1.0)),  # 2D
        ((6, 3), (1.5, 0.7)),
    ],
)
@pytest.mark.parametrize("threaded", [False, True])
def test_filtering_at_the_constraints_equals_scipy_bit_for_bit(
    shape: tuple[int, ...], sigmas: tuple[float, ...], threaded: bool, monkeypatch
) -> None:
    rng = np.random.default_rng(len(shape) * 7 + sum(shape))
    where = _sparse_mask(rng, shape, 0.08)
    field = np.where(where, rng.normal(size=shape) * 100.0, 0.0)
    wide = gauss.AtConstraints(where, sigmas)
    monkeypatch.setattr(gauss, "_RUNS_PER_PART", 2)
    with ThreadPoolExecutor(3) as threads:
        got = wide.smooth(wide.read(field), threads if threaded else None)
    expected = ndi.gaussian_filter(field, list(sigmas))[where]
    assert np.array_equal(got, expected)
    assert np.array_equal(wide.spread(wide.read(field)), field)


@pytest.mark.parametrize(
    ("shape", "sigmas"),
    [((21, 33, 40), (1.0, 1.0, 1.0)), ((2, 9, 5), (0.0, 2.0, 0.6)), ((40, 37), (1.0, 1.3))],
)
@pytest.mark.parametrize("threaded", [False, True])
def test_the_whole_smoothing_equals_scipy_bit_for_bit(
    shape: tuple[int, ...], sigmas: tuple[float, ...], threaded: bool, monkeypatch
) -> None:
    values = np.random.default_rng(sum(shape)).integers(0, 4000, shape).astype(np.uint16)
    if threaded:
        monkeypatch.setattr(gauss, "_THREADED_VOXELS", 1)
        monkeypatch.setattr(gauss, "_RUNS_PER_PART", 2)
    got = gauss.gaussian(values, sigmas)
    assert got.dtype == np.float64
    assert np.array_equal(got, ndi.gaussian_filter(values.astype(np.float64), list(sigmas)))


def _nuclei_box(ndim: int) -> tuple[np.ndarray, ...]:
    """A decode, the sides its flags should reach and the flags: a round object moved."""
    from napari_sciz.core.seglock.geometry import smooth

    if ndim == 2:
        yy, xx = np.indices((64, 64))
        original = 1000.0 * ((yy - 32) ** 2 + (xx - 32) ** 2 < 14**2)
        decoded = 1000.0 * ((yy - 32) ** 2 + (xx - 34) ** 2 < 13**2)
    else:
        zz, yy, xx = np.indices((16, 40, 40))
        original = 1000.0 * ((zz - 8) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 < 7**2)
        decoded = 1000.0 * ((zz - 8) ** 2 + (yy - 20) ** 2 + (xx - 22) ** 2 < 6**2)
    decoded = decoded + np.random.default_rng(ndim).normal(0.0, 20.0, decoded.shape)
    sigmas = (1.0,) * ndim
    side = smooth(original, sigmas) > 500.0
    switch = side != (smooth(decoded, sigmas) > 500.0)
    return decoded, side, switch


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("threaded", [False, True])
def test_the_projection_equals_the_whole_box_one_bit_for_bit(
    ndim: int, threaded: bool, monkeypatch
) -> None:
    decoded, side, switch = _nuclei_box(ndim)
    where = project.constrained(switch)
    sign = np.where(side, 1.0, -1.0)
    sigmas = (1.0,) * ndim
    if threaded:
        monkeypatch.setattr(gauss, "_THREADED_VOXELS", 1)
        monkeypatch.setattr(gauss, "_RUNS_PER_PART", 4)
    got = project._solve(decoded, sign, where, 500.0, 10.0, sigmas)
    expected = _reference_solve(decoded, sign, where, 500.0, 10.0, sigmas)
    assert np.array_equal(got, expected)
    assert np.abs(got).max() > 1.0  # (it moved something)


@pytest.mark.parametrize("sigmas", [(0.4, 1.0, 1.3), (0.0, 1.0, 1.0), (2.0, 0.7)])
def test_the_compiled_dual_steps_equal_the_whole_box_projection(sigmas) -> None:
    decoded, side, switch = _nuclei_box(len(sigmas))
    where = project.constrained(switch)
    sign = np.where(side, 1.0, -1.0)
    got = project._solve(decoded, sign, where, 500.0, 10.0, sigmas)
    expected = _reference_solve(decoded, sign, where, 500.0, 10.0, sigmas)
    assert np.array_equal(got, expected)
    assert np.abs(got).max() > 1.0


def _reference_runs(lines: np.ndarray, axis: int, need: np.ndarray | int) -> np.ndarray:
    """The runs of a pass in numpy, as first written (session 58)."""
    rows = np.argwhere(lines)
    if axis == 0 and len(rows):
        rows = rows[np.lexsort((rows[:, 0], rows[:, 1]))]
    if isinstance(need, int):
        spans = np.zeros((len(rows), 2), np.int64) + (0, need)
        return np.ascontiguousarray(np.column_stack([rows, spans]), np.int64)
    wanted = need[rows[:, 0], rows[:, 1]]
    edges = np.diff(np.pad(wanted, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    row_of, starts = np.nonzero(edges == 1)
    stops = np.nonzero(edges == -1)[1]
    new_row = np.r_[True, row_of[1:] != row_of[:-1]]
    first = new_row | np.r_[True, starts[1:] - stops[:-1] >= gauss._GAP]
    last = np.r_[first[1:], True]
    runs = np.column_stack([rows[row_of[first]], starts[first], stops[last]])
    return np.ascontiguousarray(runs, np.int64).reshape(-1, 4)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("share", [0.02, 0.3, 0.9])
def test_the_runs_of_a_pass_are_the_numpy_ones(axis: int, share: float) -> None:
    rng = np.random.default_rng(int(100 * share) + axis)
    need = rng.random((5, 7, 40)) < share
    rows = rng.random((5, 7)) < 0.5
    # (a pass's rows always need a voxel: the numpy version fails on rows that need none)
    for lines, wanted in ((need.any(axis=2), need), (rows, 40)):
        got = gauss._runs(lines, axis, wanted)
        assert got.dtype == np.int64 and got.shape[1] == 4
        np.testing.assert_array_equal(got, _reference_runs(lines, axis, wanted))
    nothing = np.zeros((5, 7), bool)
    assert gauss._runs(nothing, axis, need & False).shape == (0, 4)


def test_the_warm_up_compiles_the_kernels_real_calls_use() -> None:
    from napari_sciz.core.seglock import kernels
    from napari_sciz.core.seglock.geometry import contexts

    gauss.warm_up()
    decoded, side, switch = _nuclei_box(2)
    project.lock_sides(decoded, side, switch, 500.0, 10.0, (1.0, 1.0))
    gauss.gaussian(decoded.astype(np.uint16), (1.0, 1.0))
    contexts(decoded, 500.0)
    for kernel in (
        kernels.gaussian_pass,
        kernels.gather_at,
        kernels.scatter_at,
        kernels.distance_classes,
        kernels.dual_steps,
        kernels.row_runs,
    ):
        assert len(kernel.signatures) == 1


def _reference_contexts(smoothed: np.ndarray, threshold: float) -> np.ndarray:
    """The flags' contexts in numpy, as first written (the specification of the files'
    context checksums)."""
    from napari_sciz.core.seglock.geometry import DISTANCE_CLASSES, DISTANCE_STEP

    axes = [ax for ax in range(smoothed.ndim) if smoothed.shape[ax] > 1]
    grads = np.gradient(smoothed, axis=axes) if axes else []
    if len(axes) == 1:
        grads = [grads]
    norm = np.sqrt(sum((g * g for g in grads), np.zeros(smoothed.shape)))
    above = smoothed > threshold
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.abs(smoothed - threshold) / norm
    dist = np.where(np.isfinite(dist), dist, np.inf)
    cls = np.minimum(dist / DISTANCE_STEP, DISTANCE_CLASSES - 1).astype(np.uint8)
    return (2 * cls + above).astype(np.uint8)


@pytest.mark.parametrize(
    "shape",
    [(20, 40, 36), (1, 30, 25), (2, 3, 17), (5, 1, 9), (1, 1, 7), (1, 1, 1), (48, 50), (1, 9),
     (2, 2)],
)  # fmt: skip
@pytest.mark.parametrize("threaded", [False, True])
def test_the_contexts_equal_numpys_bit_for_bit(
    shape: tuple[int, ...], threaded: bool, monkeypatch
) -> None:
    from napari_sciz.core.seglock.geometry import contexts

    rng = np.random.default_rng(sum(shape))
    values = gauss.gaussian(rng.integers(0, 4000, shape).astype(np.uint16), (1.0,) * len(shape))
    values[tuple(0 for _ in shape)] = 2000.0  # (exactly at the level: no distance)
    if values.size > 2:  # a flat stretch: no gradient
        values.reshape(-1)[1:3] = values.reshape(-1)[1:3].mean()
    if threaded:
        monkeypatch.setattr(gauss, "_THREADED_VOXELS", 1)
    for level in (2000.0, float(np.median(values)), -1.0):
        assert np.array_equal(contexts(values, level), _reference_contexts(values, level))
