"""A 2D time-lapse (axes TYX) under segmentation guidance: segmented frame by frame, a lock
per frame, the file and its reader."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("skimage")

from _locks import with_lock  # noqa: E402
from _nuclei import nuclei  # noqa: E402

from napari_sciz.core.bitstream import container  # noqa: E402
from napari_sciz.core.task.frames import frame_fidelity, segment_frames  # noqa: E402
from napari_sciz.errors import FormatError  # noqa: E402


def _lapse(frames: int = 6) -> np.ndarray:
    """A time-lapse of touching nuclei that change from frame to frame (uint16)."""
    return np.stack([nuclei(40 + t, (8, 64, 64), count=9, noise=150.0)[4] for t in range(frames)])


def _locked_lapse(lapse: np.ndarray, ratio: float, share: float, progress: Any = None) -> Any:
    """The encoder's locked file of a time-lapse (``_locked_file`` with the proxy's locks of
    every frame taken as ``share`` of the bytes)."""
    from napari_sciz.core.encode import BlockEncoder, FitSettings
    from napari_sciz.core.task.guided import _locked_file
    from napari_sciz.core.task.prefilter import TaskChoice

    settings = FitSettings(
        arr=lapse, ratio=ratio, mode="hybrid", device="cpu", steps=None, budget=6.0, seed=0,
        axes="TYX", voxel_size=None, units=None, name=None, block_voxels=1 << 22,
        guidance="none", guidance_weights=None, labels=None, cancel=None,
    )  # fmt: skip
    choice = TaskChoice("segmentation")
    choice.spacings = [3] * lapse.shape[0]
    choice.lock_share, choice.lock_bytes = share, int(share * lapse.nbytes / ratio)
    return _locked_file(BlockEncoder(settings, progress=progress), choice, 6.0)


def test_a_time_lapse_gets_a_lock_per_frame_and_decodes_as_measured() -> None:
    from napari_sciz.core.api import decompress, open_sciz

    lapse = _lapse()
    told: list[str] = []
    result = _locked_lapse(lapse, 24.0, 0.35, lambda info: told.append(info.message))
    assert result is not None and result.header["segmentation_lock"] == {"version": 3}
    assert result.nbytes <= lapse.nbytes / 24
    assert [m for m in told if m.startswith("segmentation lock")][:2] == [
        "segmentation lock: frame 1 of 6",
        "segmentation lock: frame 2 of 6",
    ]
    assert any("of the time-lapse's 6 frames locked" in m for m in result.messages)
    np.testing.assert_array_equal(decompress(result.data), result.reconstruction)
    with open_sciz(result.data) as reader:
        assert reader.locked
        np.testing.assert_array_equal(reader[4, 10:50], result.reconstruction[4, 10:50])
        np.testing.assert_array_equal(reader[1:3], result.reconstruction[1:3])
    plain = decompress(_plain(lapse, 24.0).data)
    assert frame_fidelity(lapse, result.reconstruction).f1 >= frame_fidelity(lapse, plain).f1


def _plain(lapse: np.ndarray, ratio: float) -> Any:
    from napari_sciz.core.api import compress

    return compress(lapse, ratio, mode="hybrid", budget=4.0, seed=0, axes="TYX")


def test_the_header_of_a_frame_lock_needs_a_time_lapse(tmp_path, capsys) -> None:
    from napari_sciz.cli import main
    from napari_sciz.core.api import open_sciz
    from napari_sciz.core.seglock.stacked import pack_stacked

    lapse = _lapse(3)
    plain = _plain(lapse, 16.0)
    payload = pack_stacked([None, None, None])
    data = with_lock(plain, payload, 3)
    with open_sciz(data) as reader:
        assert reader.locked and reader._locked_view.lead == 1
        np.testing.assert_array_equal(reader[1], decompress_plain(plain)[1])
    as_volume = container.SciZFile(data).header
    with pytest.raises(FormatError, match="version 3 needs a 2D time-lapse"):
        with container.SciZFile(data) as f:
            payloads = [f.payload(i) for i in range(f.n_payloads)]
        open_sciz(container.pack({**as_volume, "axes": "ZYX"}, payloads))
    path = tmp_path / "lapse.sciz"
    path.write_bytes(data)
    assert main(["info", str(path)]) == 0
    assert "(0 of 3 frames)" in capsys.readouterr().out


def decompress_plain(plain: Any) -> np.ndarray:
    from napari_sciz.core.api import decompress

    return decompress(plain.data)


def test_the_proxy_measures_a_time_lapse_frame_by_frame() -> None:
    from napari_sciz.core.task.prefilter import choose_prefilter

    lapse = _lapse()
    nbytes = lapse.nbytes // 24
    _source, choice = choose_prefilter(lapse, nbytes, "segmentation", frames=True)
    assert choice.spacings is not None and len(choice.spacings) == 6
    assert np.array_equal(choice.reference, segment_frames(lapse, min_distances=choice.spacings))
    # a decode scored as the reference was: frame by frame
    same = choice.score(lapse.astype(float), lapse, None)
    assert same["f1"] == 1.0
    locks = [k for k in choice.scores if k.startswith("lock")]
    assert locks  # (the proxy locked the frames one by one)


def test_the_task_score_of_a_time_lapse_is_frame_by_frame() -> None:
    from napari_sciz._widgets._results import task_text
    from napari_sciz.core.task.score import guidance_score

    lapse = _lapse(4)
    decoded = (lapse // 200 * 200).astype(lapse.dtype)
    score = guidance_score("segmentation", lapse, decoded, axes="TYX")
    assert score is not None and score["frames"] == 4.0
    assert score["object_f1"] == pytest.approx(frame_fidelity(lapse, decoded).f1)
    as_volume = guidance_score("segmentation", lapse, decoded, axes="ZYX")
    assert as_volume is not None and "frames" not in as_volume
    assert "frame by frame over 4 frames" in task_text(score)


def test_a_guided_time_lapse_is_segmented_frame_by_frame_end_to_end() -> None:
    from napari_sciz.core.api import compress, decompress

    lapse = _lapse()
    result = compress(lapse, 24.0, guidance="segmentation", budget=20.0, seed=0, axes="TYX")
    assert any("segmented frame by frame" in m for m in result.messages)
    np.testing.assert_array_equal(decompress(result.data), result.reconstruction)


def test_the_frames_locks_keep_the_time_the_proxy_says() -> None:
    from napari_sciz.core.task.guided import _frames_lock_time

    assert _frames_lock_time(2.0, 100.0) == 85.0  # (3 s expected: the share holds it)
    assert _frames_lock_time(20.0, 100.0) == 70.0
    assert _frames_lock_time(80.0, 100.0) == 50.0  # (at most half the time)
    assert _frames_lock_time(2.0, None) is None


def test_frames_segmented_already_are_not_segmented_again() -> None:
    """The proxy hands the frames' reference segmentations to the locks: the same locks."""
    from napari_sciz.core.seglock.stacked import build_stacked_locks
    from napari_sciz.core.task.frames import frame_seed_distances

    lapse = _lapse(4)
    decoded = (lapse // 300 * 300).astype(lapse.dtype)
    spacings = frame_seed_distances(lapse)
    reference = segment_frames(lapse, min_distances=spacings)
    known = {(t,): (reference[t], s) for t, s in enumerate(spacings)}
    args = (lapse, decoded, 1, 800, (1.0, 1.0), (2,), (0.0, 65535.0))
    fresh, reused = build_stacked_locks(*args), build_stacked_locks(*args, segmented=known)
    assert fresh is not None and reused is not None
    assert fresh.payload == reused.payload
