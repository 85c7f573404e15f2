"""The rate-task bench runs end to end on a small volume and renders its tables."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage")


def test_measure_and_render_a_small_volume() -> None:
    from napari_sciz.bench import task

    grid = np.indices((8, 48, 48)).astype(float)
    vol = np.full((8, 48, 48), 100.0)
    for c in [(4, 14, 14), (4, 34, 30)]:
        r2 = sum((g - x) ** 2 for g, x in zip(grid, c, strict=True))
        vol += 800.0 * (r2 < 36)
    vol = (vol + np.random.default_rng(0).normal(0, 10, vol.shape)).astype(np.uint16)
    rec = task.measure_volume("tiny", vol, [16, 32], budget=1.0)
    assert rec["objects"] == 2 and set(rec["curves"]) == set(task.GUIDANCES)
    for points in rec["curves"].values():
        assert len(points) == 2
        for p in points:
            assert 0 <= p["object_f1"] <= 1 and 0 < p["ms_ssim"] <= 1 and p["ratio"] > 8
    assert all(p["coded"] == "none" for p in rec["curves"]["none"])
    record = {
        "environment": {"cpu": "test"},
        "date": "now",
        "command": "task",
        "budget": 1.0,
        "volumes": [rec],
    }
    text = task.render(record)
    assert "| tiny (2 objects, seeds " in text and "| segmentation | " in text


@pytest.mark.parametrize(
    ("header", "coded"),
    [
        ({}, "none"),
        ({"task_band": 3.0}, "3"),
        ({"task_smooth": 0.5}, "0.5"),
        ({"value_map": {"power": 0.35, "offset": 40.0}}, "power 0.35"),
        ({"task_smooth": 0.5, "value_map": {"curve": [0, -1]}}, "0.5 + curve"),
        ({"task_lock_share": 0.35}, "lock 0.35"),
        ({"task_halved": True}, "half"),
        ({"task_halved": True, "value_map": {"curve": [0, -1]}}, "curve, half"),
        ({"value_map": {"slopes": "gf"}}, "curve"),
    ],
)
def test_the_coded_variant_is_named_as_the_proxy_names_it(header, coded) -> None:
    from napari_sciz.bench.task import coded_variant

    assert coded_variant(header) == coded


def _pt(target: float, nbytes: int, f1: float, mode: str = "hybrid") -> dict:
    return {
        "mode": mode, "target": target, "ratio": target, "nbytes": nbytes, "psnr": 30.0,
        "object_f1": f1, "ms_ssim": 0.9,
    }  # fmt: skip


def test_savings_bounds_and_gains_of_curves() -> None:
    from napari_sciz.bench import task

    overlapping = {
        "none": [_pt(128, 2000, 0.80), _pt(256, 1000, 0.70)],
        "segmentation": [_pt(128, 2000, 0.85), _pt(256, 1000, 0.75)],
    }
    rec = task.score_curves({"curves": overlapping})
    # half the score step between the points: 2^-0.5 of the bytes
    assert rec["saving"]["segmentation_f1"] == pytest.approx(100 * (0.5**0.5 - 1))
    assert rec["gain"]["segmentation_f1"] == pytest.approx(0.05)
    above = {
        "none": [_pt(128, 2000, 0.76), _pt(256, 1000, 0.77)],
        "segmentation": [_pt(128, 2000, 0.97), _pt(256, 1000, 0.99)],
    }
    rec = task.score_curves({"curves": above})
    assert rec["saving"]["segmentation_f1"] is None
    # 0.76 and 0.77 are reached at 1000 bytes by both curves: no saving can be claimed
    assert rec["bound"]["segmentation_f1"] == pytest.approx(0.0)
    assert rec["gain"]["segmentation_f1"] == pytest.approx(0.215)
    rising = {
        "none": [_pt(128, 2000, 0.77), _pt(256, 1000, 0.76)],
        "segmentation": [_pt(128, 2000, 0.97), _pt(256, 1000, 0.99)],
    }
    rec = task.score_curves({"curves": rising})
    # 0.77 needs 2000 bytes unguided, 1000 guided; 0.76 1000 both: sqrt(0.5) - 1
    assert rec["bound"]["segmentation_f1"] == pytest.approx(100 * (0.5**0.5 - 1))
    text = task._saving_text(rec, "segmentation_f1")
    assert text.startswith("<= -29.3 %")
    flat = {  # (a score at its ceiling everywhere: nothing to claim)
        "none": [_pt(128, 2000, 1.0), _pt(256, 1000, 1.0)],
        "segmentation": [_pt(128, 2000, 1.0), _pt(256, 1010, 1.0)],
    }
    rec = task.score_curves({"curves": flat})
    assert rec["bound"]["segmentation_f1"] == pytest.approx(1.0, abs=0.01)


def test_extend_keeps_the_earlier_points(tmp_path) -> None:
    import json

    from napari_sciz.bench import task

    path = tmp_path / "earlier.json"
    path.write_text(json.dumps({"volumes": [{"name": "v", "curves": {"none": [_pt(64, 9, 1)]}}]}))
    assert task._earlier_curves(str(path)) == {"v": {"none": [_pt(64, 9, 1)]}}
    assert task._earlier_curves(None) == {}


def test_extend_replaces_the_points_measured_again() -> None:
    from napari_sciz.bench import task

    old = [{**_pt(128, 9, 1), "target": 128.0}, {**_pt(512, 9, 1), "target": 512.0}]
    new = [{**_pt(130, 10, 1), "target": 128.0}]
    merged = task._merged(old, new)
    assert [p["target"] for p in merged] == [128.0, 512.0]
    assert merged[0] is new[0]


def test_a_time_lapse_is_also_scored_frame_by_frame() -> None:
    """``--frames``: each frame segmented on its own, F1 pooled over the frames, with its
    own saving and gain, and its columns in the tables."""
    from napari_sciz.bench import task

    yy, xx = np.indices((40, 48))
    frames = []
    for t in range(6):
        frame = np.full((40, 48), 100.0)
        for cx in (14 + t, 34):
            frame += 900.0 * ((yy - 20) ** 2 + (xx - cx) ** 2 < 30)
        frames.append(frame)
    lapse = np.stack(frames) + np.random.default_rng(1).normal(0, 10, (6, 40, 48))
    lapse = lapse.astype(np.uint16)
    rec = task.measure_volume("lapse", lapse, [16, 32], 1.0, guidances=("none",), frames=True)
    assert rec["objects_frames"] == 12
    for p in rec["curves"]["none"]:
        assert 0 <= p["object_f1_frames"] <= 1 and 0 <= p["dice_frames"] <= 1
    guided = [dict(p, nbytes=p["nbytes"] - 10) for p in rec["curves"]["none"]]
    rec["curves"]["segmentation"] = guided
    scored = task.score_curves(rec)
    assert scored["gain"]["segmentation_f1_frames"] == pytest.approx(0.0)
    text = task.render(
        {"environment": {}, "date": "now", "command": "task", "budget": 1.0, "volumes": [scored]}
    )
    assert "| lapse (12 objects in its frames) | " in text and "| F1 frames |" in text
    # points of an earlier record without the frame scores: n/a, not an error
    del scored["curves"]["none"][0]["object_f1_frames"]
    assert "| n/a | n/a |" in task.render(
        {"environment": {}, "date": "now", "command": "task", "budget": 1.0, "volumes": [scored]}
    )
