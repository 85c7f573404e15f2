"""A 2D time-lapse (axes TYX) under segmentation guidance: segmented frame by frame, one lock
for its frames (a lock per frame in older files), the file and its reader."""

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
    from napari_sciz.core.task.lockedfile import _locked_file
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


def test_a_time_lapse_gets_one_lock_for_its_frames_and_decodes_as_measured() -> None:
    from napari_sciz.core.api import decompress, open_sciz

    lapse = _lapse()
    told: list[str] = []
    result = _locked_lapse(lapse, 24.0, 0.35, lambda info: told.append(info.message))
    assert result is not None and result.header["segmentation_lock"] == {"version": 4}
    assert result.nbytes <= lapse.nbytes / 24
    assert "segmentation lock" in told
    assert any("of the time-lapse's 6 frames (one lock for all)" in m for m in result.messages)
    np.testing.assert_array_equal(decompress(result.data), result.reconstruction)
    with open_sciz(result.data) as reader:
        assert reader.locked and reader._locked_view.lead == 0
        np.testing.assert_array_equal(reader[4, 10:50], result.reconstruction[4, 10:50])
        assert set(reader._locked_view._volumes) <= {4}  # (one frame shown: one locked)
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
    # version 4: one lock for the frames, locked whole
    one = with_lock(plain, _no_switch_lock(decompress_plain(plain)), 4)
    with open_sciz(one) as reader:
        assert reader.locked and reader._locked_view.lead == 0
        np.testing.assert_array_equal(reader[1], decompress_plain(plain)[1])
    path.write_bytes(one)
    assert main(["info", str(path)]) == 0
    assert "(one for its 3 frames)" in capsys.readouterr().out
    with container.SciZFile(one) as f:
        payloads = [f.payload(i) for i in range(f.n_payloads)]
    with pytest.raises(FormatError, match="version 4 needs a 2D time-lapse"):
        open_sciz(container.pack({**container.SciZFile(one).header, "axes": "ZYX"}, payloads))


def _no_switch_lock(decoded: np.ndarray) -> bytes:
    """A frames lock of ``decoded`` without a single flag (it decodes to it as it is)."""
    from napari_sciz.core.seglock import crc
    from napari_sciz.core.seglock.frames import frame_levels
    from napari_sciz.core.seglock.payload import FramesLockPayload

    _smoothed, _levels, ctx = frame_levels(decoded, (1.0, 1.0))
    ones, none = np.zeros(34, np.uint64), np.zeros(decoded.shape, bool)
    frames = decoded.shape[0]
    return FramesLockPayload((1.0, 1.0), 1.0, crc(ctx), crc(none), frames, {}, ones, b"").pack()


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
    assert locks  # (the proxy locked the frames, one lock for all)


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
    from napari_sciz.core.task.lockedfile import _one_lock_time

    assert _one_lock_time(2.0, 100.0) == 85.0  # (3 s expected: the share holds it)
    assert _one_lock_time(20.0, 100.0) == 70.0
    assert _one_lock_time(80.0, 100.0) == 50.0  # (at most half the time)
    assert _one_lock_time(2.0, None) is None


def _decoded(lapse: np.ndarray, step: int = 300) -> np.ndarray:
    """A stand-in decode of ``lapse``: coarsely quantized, its segmentation wrong in places."""
    return (lapse // step * step).astype(lapse.dtype)


def test_one_lock_codes_more_of_the_frames_switches_than_a_lock_per_frame() -> None:
    """The frames' flags in one stream: no head, counts and stream end per frame."""
    from napari_sciz.core.seglock.frames import build_frames_lock
    from napari_sciz.core.seglock.stacked import build_stacked_locks
    from napari_sciz.core.task.frames import frame_seed_distances

    lapse = _lapse(8)
    decoded = _decoded(lapse)
    spacings = frame_seed_distances(lapse)
    reference = segment_frames(lapse, min_distances=spacings)
    vrange = (0.0, 65535.0)
    per_frame = build_stacked_locks(lapse, decoded, 1, 600, (1.0, 1.0), (4,), vrange)
    joint = build_frames_lock(lapse, decoded, 600, (1.0, 1.0), reference, spacings, vrange)
    assert per_frame is not None and joint is not None
    assert len(joint.payload) <= 600 and joint.frames == 8
    assert joint.groups > per_frame.groups
    assert joint.switched > per_frame.switched
    scored = frame_fidelity(lapse, joint.corrected).f1
    assert scored >= frame_fidelity(lapse, per_frame.corrected).f1
    assert scored > frame_fidelity(lapse, decoded).f1


def test_a_frames_lock_decodes_to_what_the_encoder_made() -> None:
    from napari_sciz.core.blocks import finalize
    from napari_sciz.core.seglock import apply_lock
    from napari_sciz.core.seglock.frames import build_frames_lock
    from napari_sciz.core.task.frames import frame_seed_distances

    lapse = _lapse(5)
    decoded = _decoded(lapse)
    spacings = frame_seed_distances(lapse)
    reference = segment_frames(lapse, min_distances=spacings)
    vrange = (float(lapse.min()), float(lapse.max()))
    lock = build_frames_lock(lapse, decoded, 4000, (1.0, 1.0), reference, spacings, vrange)
    assert lock is not None and lock.groups == lock.groups_total  # (all fit)
    values, applied = apply_lock(decoded, lock.payload)
    assert applied
    np.testing.assert_array_equal(finalize(values, lapse.dtype, vrange), lock.corrected)
    # another decode than the one locked: returned as it is, with a warning
    with pytest.warns(RuntimeWarning, match="lock not applied"):
        values, applied = apply_lock(_decoded(lapse, 250), lock.payload)
    assert not applied
    with pytest.raises(FormatError, match="frames"):
        apply_lock(decoded[:4], lock.payload)


def test_a_frames_lock_payload_round_trips_and_refuses_damage() -> None:
    from napari_sciz.core.seglock.payload import FramesLockPayload

    ones = np.zeros(34, np.uint64)
    ones[[3, 5]] = [7, 300]
    offsets = {2: 1.5, 40: -0.25}
    lock = FramesLockPayload((1.0, 0.5), 2.25, 17, 99, 41, offsets, ones, b"\x01\x02\x03\x04")
    data = lock.pack()
    back = FramesLockPayload.parse(data, 41)
    assert back.sigmas == (1.0, 0.5) and back.margin == 2.25 and back.offsets == offsets
    assert (back.context_crc, back.flags_crc, back.frames) == (17, 99, 41)
    np.testing.assert_array_equal(back.ones, ones)
    assert back.words == b"\x01\x02\x03\x04"
    with pytest.raises(FormatError, match="41 frames' lock for 40 frames"):
        FramesLockPayload.parse(data, 40)
    for cut in (2, 8, 20, 30):
        with pytest.raises(FormatError):
            FramesLockPayload.parse(data[:cut], 41)
    with pytest.raises(FormatError, match="newer"):
        FramesLockPayload.parse(data[:3] + b"\x09" + data[4:], 41)
    with pytest.raises(ValueError, match="float32"):
        FramesLockPayload((1.0, 0.1), 2.25, 17, 99, 41, {}, ones, b"").pack()
