"""Task scores: the biologist's segmentation pipeline, object F1, MS-SSIM, gradient similarity."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage")
from napari_sciz.core.task import score as taskscore  # noqa: E402
from napari_sciz.errors import InvalidInputError  # noqa: E402


def _nuclei(shape=(24, 64, 64), centres=None, radius=5.0, seed=0) -> np.ndarray:
    """Bright balls on a dim background, with noise (two of them touching)."""
    rng = np.random.default_rng(seed)
    centres = centres or [(12, 16, 16), (12, 16, 26), (12, 44, 40), (8, 40, 14)]
    grid = np.indices(shape).astype(np.float64)
    vol = np.full(shape, 100.0)
    for c in centres:
        r2 = sum((g - x) ** 2 for g, x in zip(grid, c, strict=True))
        vol += 900.0 * np.exp(-r2 / (2 * (radius / 1.5) ** 2)) * (r2 < (1.6 * radius) ** 2)
    return (vol + rng.normal(0, 20, shape)).clip(0, 4095).astype(np.uint16)


def test_pipeline_splits_touching_nuclei_and_scores_itself_perfectly() -> None:
    vol = _nuclei()
    labels = taskscore.segment(vol)
    assert labels.dtype == np.int32 and labels.max() == 4  # the touching pair is split
    score = taskscore.segmentation_fidelity(labels, labels)
    assert score.f1 == 1.0 and score.dice == 1.0 and score.count_error == 0


@pytest.mark.parametrize("voxel_size", [None, (2.0, 1.0, 1.0), (0.29, 0.26, 0.26)])
def test_an_originals_segmentation_and_seed_spacing_come_from_one_labelling(voxel_size) -> None:
    """``segment_original`` gives the labels and spacing of ``seed_distance`` then
    ``segment`` (its smoothing, threshold, components and unscaled distances shared), and
    the spacing is the one of ``ndimage.maximum`` per component it replaced."""
    from scipy import ndimage as ndi

    vol = _nuclei(radius=6.0, seed=3)
    spacing = taskscore.seed_distance(vol, voxel_size)
    labels, got = taskscore.segment_original(vol, voxel_size)
    assert got == spacing
    np.testing.assert_array_equal(labels, taskscore.segment(vol, voxel_size, min_distance=spacing))
    mask = taskscore._foreground(vol.astype(np.float64), voxel_size, 1.0)
    components, n = ndi.label(mask)
    inscribed = ndi.maximum(ndi.distance_transform_edt(mask), components, np.arange(1, n + 1))
    sizes = np.bincount(components.ravel())[1:]
    assert spacing == max(3, round(0.8 * float(np.average(inscribed, weights=sizes))))


@pytest.mark.parametrize(
    "values",
    [
        np.array([[0, 3, 3], [7, 0, 1]], np.int32),
        np.array([[5, 5], [2, 9]], np.uint8),
        np.array([[-4, 0], [2, -4]], np.int16),  # (negative: sorted)
        np.array([[0, 2**40], [7, 7]], np.int64),  # (sparse: sorted)
        np.array([[0.5, 2.0], [0.5, -1.0]]),
        np.zeros((3, 3), np.int32),
    ],
)
def test_labels_are_ranked_as_numpy_unique_ranks_them(values: np.ndarray) -> None:
    expected = np.unique(values, return_inverse=True)[1].reshape(-1)
    np.testing.assert_array_equal(taskscore._ranks(values), expected)


def test_object_f1_counts_one_to_one_matches_at_iou_half() -> None:
    ref = np.zeros((1, 10, 30), np.int32)
    ref[0, 2:8, 2:8] = 1
    ref[0, 2:8, 12:18] = 2
    ref[0, 2:8, 22:28] = 3
    test = np.zeros_like(ref)
    test[0, 2:8, 2:8] = 5  # exact
    test[0, 2:8, 12:15] = 6  # half of object 2: IoU 0.5 -> matched
    test[0, 2:4, 22:24] = 7  # a small piece of object 3: IoU 1/9 -> missed
    test[0, 0:1, 0:30] = 8  # a false object
    s = taskscore.segmentation_fidelity(ref, test)
    assert (s.n_reference, s.n_test) == (3, 4)
    assert s.recall == pytest.approx(2 / 3) and s.precision == pytest.approx(2 / 4)
    assert s.f1 == pytest.approx(2 * 2 / 7)
    empty = taskscore.segmentation_fidelity(np.zeros_like(ref), np.zeros_like(ref))
    assert empty.f1 == 1.0 and empty.dice == 1.0


def test_degradation_lowers_every_score() -> None:
    vol = _nuclei()
    rng = np.random.default_rng(3)
    noisy = (vol + rng.normal(0, 120, vol.shape)).clip(0, 4095)
    from scipy import ndimage as ndi

    blurred = ndi.gaussian_filter(vol.astype(float), 2.5)
    assert taskscore.ms_ssim(vol, vol) == pytest.approx(1.0)
    assert taskscore.gradient_similarity(vol, vol) == pytest.approx(1.0)
    for bad in (noisy, blurred):
        assert taskscore.ms_ssim(vol, bad) < 0.99
        assert taskscore.gradient_similarity(vol, bad) < 0.99
    assert taskscore.ms_ssim(vol, blurred) > taskscore.ms_ssim(vol, vol * 0 + vol.mean())
    scores = taskscore.task_scores(vol, blurred)
    assert set(scores) == {"segmentation", "ms_ssim", "gradient_similarity"}
    assert 0 <= scores["segmentation"]["f1"] <= 1


def test_voxel_size_and_ground_truth_and_2d() -> None:
    vol = _nuclei(shape=(12, 64, 64), centres=[(6, 20, 20), (6, 44, 44)])
    a = taskscore.segment(vol, voxel_size=(2.0, 0.5, 0.5))
    assert a.max() == 2
    gt = taskscore.segment(vol)
    out = taskscore.task_scores(vol, vol, voxel_size=(2.0, 0.5, 0.5), ground_truth=gt)
    assert out["ground_truth"]["original"]["f1"] == out["ground_truth"]["decoded"]["f1"]
    plane = vol[6]
    assert taskscore.segment(plane).max() == 2
    assert taskscore.ms_ssim(plane, plane) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 2, 2, 2)), np.zeros((0, 4)), np.array([[np.nan, 1.0], [0.0, 1.0]])],
)
def test_bad_input_is_refused(bad: np.ndarray) -> None:
    with pytest.raises(InvalidInputError):
        taskscore.segment(bad)
    with pytest.raises(InvalidInputError):
        taskscore.segmentation_fidelity(np.zeros((2, 2)), np.zeros((3, 2)))


@pytest.mark.parametrize("guidance", ["segmentation", "perceptual"])
def test_a_volume_too_large_to_score_whole_is_scored_on_its_centre(monkeypatch, guidance) -> None:
    vol = _nuclei()
    decoded = vol.copy()
    decoded[:, :, :8] = vol.max()  # (outside the central box: not seen)
    whole = taskscore.guidance_score(guidance, vol, decoded)
    assert whole is not None and "scored_voxels" not in whole
    monkeypatch.setattr(taskscore, "SCORE_WHOLE_VOXELS", vol.size - 1)
    monkeypatch.setattr(taskscore, "SCORE_CROP_VOXELS", vol.size // 2)
    region = taskscore.scored_region(vol.shape)
    assert [r.stop - r.start for r in region] == [24, 45, 45]
    crop = taskscore.guidance_score(guidance, vol, decoded)
    assert crop is not None and crop["scored_voxels"] == 24 * 45 * 45
    key = "dice" if guidance == "segmentation" else "ms_ssim"
    assert crop[key] == 1.0 and whole[key] < 1.0


def test_the_task_score_line_says_where_it_was_measured() -> None:
    pytest.importorskip("qtpy")
    from napari_sciz._widgets._results import task_text

    seg = {"object_f1": 0.9, "dice": 0.95, "objects": 10.0, "found": 9.0}
    assert task_text(seg) == "object F1 0.900, Dice 0.950 (9 of 10 objects)"
    assert task_text({**seg, "scored_voxels": 8.0}).endswith("objects on the central crop)")
    perc = {"ms_ssim": 0.98, "gradient_similarity": 0.9}
    assert task_text({**perc, "scored_voxels": 8.0}).endswith("(on the central crop)")


@pytest.mark.parametrize("guidance", ["segmentation", "perceptual"])
def test_a_stack_of_volumes_is_scored_on_its_middle_volume(guidance) -> None:
    vol = _nuclei()[:12, :40, :40]
    stack = np.stack([vol, vol, vol])
    decoded = stack.copy()
    decoded[0] = vol.max()  # (not the middle volume: not seen)
    score = taskscore.guidance_score(guidance, stack, decoded)
    assert score is not None and score["scored_volume"] == 1.0
    key = "dice" if guidance == "segmentation" else "ms_ssim"
    assert score[key] == 1.0
    pytest.importorskip("qtpy")
    from napari_sciz._widgets._results import task_text

    assert "on volume 1 of the stack" in task_text(score)
    both = task_text({**score, "scored_voxels": 8.0})
    assert "on the central crop of volume 1 of the stack" in both
    channels = task_text(
        {**{k: v for k, v in score.items() if k != "scored_volume"}, "scored_channel": 2.0}
    )
    assert "on channel 2 of the stack" in channels


@pytest.mark.parametrize("shape", [(70, 90), (24, 70, 40)])
def test_ms_ssim_of_a_large_scale_in_strips_of_rows_is_the_same(monkeypatch, shape) -> None:
    """Above ``_STRIPS_ABOVE`` voxels a scale's SSIM maps are computed in strips of rows with
    the window's reach around each (2D, and 3D where the depth is smoothed too): the same
    MS-SSIM to rounding."""
    from napari_sciz.core.task import perceptual

    rng = np.random.default_rng(9)
    a = rng.random(shape) * 1000.0
    b = a + rng.normal(0, 60, shape)
    whole = perceptual.ms_ssim(a, b)
    monkeypatch.setattr(perceptual, "_STRIPS_ABOVE", 500)
    assert perceptual.ms_ssim(a, b) == pytest.approx(whole, rel=1e-13, abs=0)
