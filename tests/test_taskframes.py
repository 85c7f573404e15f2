"""Segmenting a 2D time-lapse frame by frame."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage")

from napari_sciz.core.task.frames import frame_seed_distances, segment_frames  # noqa: E402
from napari_sciz.core.task.score import segment, segmentation_fidelity  # noqa: E402
from napari_sciz.errors import InvalidInputError  # noqa: E402


def _blobs(t: int) -> np.ndarray:
    """A frame with two discs that drift apart with ``t``, in noise."""
    yy, xx = np.indices((48, 64))
    frame = np.zeros((48, 64))
    for cx in (20 - t, 40 + t):
        frame[(yy - 24) ** 2 + (xx - cx) ** 2 < 8**2] = 1000.0
    return frame + np.random.default_rng(t).normal(0.0, 30.0, frame.shape) + 200.0


def test_every_frame_is_segmented_on_its_own_with_labels_unique_over_frames() -> None:
    lapse = np.stack([_blobs(t) for t in range(4)])
    labels = segment_frames(lapse)
    for t in range(4):
        alone = segment(lapse[t], min_distance=frame_seed_distances(lapse)[t])
        ours = labels[t]
        assert len(np.unique(ours[ours > 0])) == alone.max() == 2
        assert np.array_equal(ours > 0, alone > 0)
    values = [set(np.unique(labels[t])) - {0} for t in range(4)]
    assert all(not (a & b) for i, a in enumerate(values) for b in values[i + 1 :])
    # pooled over the frames: a decode that loses one frame's objects
    decoded = lapse.copy()
    decoded[2] = 200.0
    spacings = frame_seed_distances(lapse)
    score = segmentation_fidelity(labels, segment_frames(decoded, min_distances=spacings))
    assert score.n_reference == 8 and score.n_test == 6
    assert score.f1 == pytest.approx(2 * 6 / 14)


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="3D"):
        segment_frames(np.zeros((8, 8)))
    with pytest.raises(InvalidInputError, match="seed spacings"):
        segment_frames(np.zeros((3, 8, 8)), min_distances=[3, 3])


def test_labels_numbered_as_tracks_are_scored_frame_by_frame() -> None:
    """A cell keeps its number in every frame (a tracking's labels): each frame's objects are
    still its own in the reference the time-lapse is scored against."""
    from napari_sciz.core.task.prefilter import _frames_reference

    tracks = np.zeros((3, 32, 32), np.uint16)
    tracks[:, 4:12, 4:12] = 7  # (the same cell, number 7, in all three frames)
    tracks[1:, 20:28, 20:28] = 9
    lapse = (tracks > 0).astype(np.uint16) * 1000 + 100
    reference, spacings = _frames_reference(lapse, None, tracks)
    assert len(spacings) == 3
    numbers = [set(np.unique(reference[t])) - {0} for t in range(3)]
    assert all(len(n) == (1 if t == 0 else 2) for t, n in enumerate(numbers))
    assert not (numbers[0] & numbers[1]) and not (numbers[1] & numbers[2])
    np.testing.assert_array_equal(reference > 0, tracks > 0)
