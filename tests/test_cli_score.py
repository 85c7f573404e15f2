"""``sciz score`` and :func:`napari_sciz.core.task.report.decode_report`: every score of a
decode against its original."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("skimage")

from napari_sciz import cli  # noqa: E402
from napari_sciz.core import api  # noqa: E402
from napari_sciz.core.task.report import decode_report  # noqa: E402
from napari_sciz.errors import InvalidInputError  # noqa: E402


def _nuclei(shape: tuple[int, ...] = (12, 64, 64), seed: int = 0) -> np.ndarray:
    """Bright round objects on a dim, noisy background."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    vol = np.full(shape, 200.0)
    for _ in range(8):
        centre = [rng.uniform(4, n - 4) for n in shape]
        r2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        vol += 2500.0 * (r2 < 25.0)
    return (vol + rng.normal(0, 60, shape)).clip(0, 65535).astype(np.uint16)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def coded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("score")
    vol = _nuclei()
    src = d / "nuclei.tif"
    tifffile.imwrite(src, vol)
    result = api.compress(vol, 24, steps=2, device="cpu")
    out = d / "nuclei.sciz"
    out.write_bytes(result.data)
    return {"vol": vol, "src": src, "out": out, "result": result, "dir": d}


def test_a_decode_is_scored_as_the_coding_measured_it_and_on_both_tasks(
    capsys: pytest.CaptureFixture[str], coded: dict
) -> None:
    code, out, err = _run(capsys, "score", str(coded["src"]), str(coded["out"]), "--json")
    assert code == 0, err
    report = json.loads(out)
    result = coded["result"]
    assert report["psnr"] == pytest.approx(result.psnr) and report["ssim"] == pytest.approx(
        result.ssim
    )
    assert report["max_error"] == result.max_error and report["ratio"] == pytest.approx(
        result.ratio
    )
    seg = report["segmentation"]
    assert 0.0 <= seg["object_f1"] <= 1.0 and 0.0 <= seg["dice"] <= 1.0
    assert seg["count_error"] == seg["found"] - seg["objects"] and seg["objects"] >= 6
    assert 0.0 < report["perceptual"]["ms_ssim"] <= 1.0
    assert "gradient_similarity" in report["perceptual"] and "ground_truth" not in report
    code, out, err = _run(capsys, "score", str(coded["src"]), str(coded["out"]))
    assert code == 0, err
    for row in ("PSNR", "SSIM", "object F1", "Dice", "count error", "MS-SSIM", "gradient"):
        assert row in out


def test_a_ground_truth_scores_the_original_and_the_decode(
    capsys: pytest.CaptureFixture[str], coded: dict
) -> None:
    truth = coded["dir"] / "truth.tif"
    from napari_sciz.core.task.score import segment

    tifffile.imwrite(truth, segment(coded["vol"]))  # (the pipeline's own labels of the original)
    code, out, err = _run(
        capsys, "score", str(coded["src"]), str(coded["out"]), "--ground-truth", str(truth),
        "--json",
    )  # fmt: skip
    assert code == 0, err
    gt = json.loads(out)["ground_truth"]
    assert gt["original"]["f1"] == 1.0 and 0.0 <= gt["decoded"]["f1"] <= 1.0
    assert gt["original"]["n_reference"] == gt["decoded"]["n_reference"] >= 6


def test_files_that_do_not_belong_together_are_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], coded: dict
) -> None:
    other = coded["dir"] / "other.tif"
    tifffile.imwrite(other, _nuclei((10, 64, 64)))
    code, _, err = _run(capsys, "score", str(other), str(coded["out"]))
    assert code == 1 and "is not the original's" in err and "Traceback" not in err
    code, _, err = _run(capsys, "score", str(coded["src"]), str(coded["dir"] / "missing.sciz"))
    assert code == 1 and "no such file" in err
    code, _, err = _run(capsys, "score", str(coded["src"]), str(coded["src"]))
    assert code == 1 and "must be a .sciz file" in err
    small = coded["dir"] / "small.tif"
    tifffile.imwrite(small, np.zeros((4, 4), np.uint8))
    code, _, err = _run(
        capsys, "score", str(coded["src"]), str(coded["out"]), "--ground-truth", str(small)
    )
    assert code == 1 and "ground truth's shape" in err


def test_identical_arrays_score_perfectly() -> None:
    vol = _nuclei((8, 48, 48), seed=2)
    report = decode_report(vol, vol.copy())
    assert report["psnr"] == np.inf and report["max_error"] == 0.0
    seg = report["segmentation"]
    assert seg["object_f1"] == 1.0 and seg["dice"] == 1.0 and seg["count_error"] == 0
    assert report["perceptual"]["ms_ssim"] == pytest.approx(1.0)
    with pytest.raises(InvalidInputError, match="is not the original's"):
        decode_report(vol, vol[:4])


def test_a_colour_image_is_scored_channel_by_channel_and_a_stack_on_its_middle_volume(
    tmp_path: Path,
) -> None:
    rgb = np.stack([_nuclei((64, 64), seed=s) // 256 for s in range(3)], axis=-1)
    rgb = rgb.astype(np.uint8)
    coded = api.compress(rgb, 12, steps=2, device="cpu")
    report = decode_report(rgb, coded.reconstruction, ground_truth=rgb > 100)
    assert report["segmentation"]["channels"] == 3.0 and report["psnr"] == pytest.approx(coded.psnr)
    assert "channel" in report["ground_truth_note"]
    stack = np.stack([_nuclei((10, 48, 48), seed=s) for s in range(3)])
    from napari_sciz.core.task.score import segment

    truth = np.stack([segment(v) for v in stack])
    truth[0] = truth[2] = 0  # (only the middle channel's is scored)
    report = decode_report(stack, stack, axes="CZYX", ground_truth=truth)
    assert report["segmentation"]["scored_channel"] == 1.0
    assert report["ground_truth"]["original"]["f1"] == 1.0
