"""Segmentation- and perceptual-guided fitting (napari_sciz.core.guidance)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_sciz.core.guidance import (  # noqa: E402
    DEFAULT_WEIGHTS,
    Guidance,
    boundary_band,
    check_guidance,
    otsu_threshold,
    soft_dice,
    ssim_torch,
)
from napari_sciz.errors import InvalidInputError  # noqa: E402


def _blob(shape=(6, 24, 24)) -> np.ndarray:
    rng = np.random.default_rng(0)
    z, y, x = np.indices(shape)
    c = np.array(shape) / 2
    r = np.sqrt(((z - c[0]) * 2) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)
    vol = np.where(r < 7, 3000.0, 500.0) + rng.normal(0, 60, shape)
    return vol.clip(0, 65535).astype(np.uint16)


def test_otsu_separates_a_bimodal_array():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(10, 1, 5000), rng.normal(30, 2, 3000)])
    t = otsu_threshold(values)
    assert 14 < t < 25
    # every sample of each mode on its side
    assert (values[:5000] <= t).mean() > 0.99 and (values[5000:] > t).mean() > 0.99
    # two exact levels: the threshold lies between them
    two = np.array([0.0] * 10 + [1.0] * 30)
    assert 0.0 <= otsu_threshold(two) < 1.0
    assert otsu_threshold(np.full(5, 7.0)) == 7.0


def test_otsu_matches_skimage_when_available():
    filters = pytest.importorskip("skimage.filters")
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.normal(0.2, 0.05, 4000), rng.normal(0.7, 0.1, 2000)])
    assert abs(otsu_threshold(values) - filters.threshold_otsu(values)) < 0.01


def test_soft_dice_of_identical_masks_is_one():
    m = torch.zeros(4, 16, 16)
    m[:, 4:12, 4:12] = 1
    assert float(soft_dice(m, m)) == pytest.approx(1.0, abs=1e-6)
    assert float(soft_dice(torch.zeros(8), torch.zeros(8))) == pytest.approx(1.0)
    assert float(soft_dice(1 - m, m)) < 0.01


def test_boundary_band_is_a_shell():
    m = np.zeros((1, 12, 12), bool)
    m[0, 4:8, 4:8] = True
    band = boundary_band(m, 1)
    assert band[0, 3, 5] and band[0, 4, 5] and not band[0, 0, 0]
    assert not band[0, 5:7, 5:7].any()  # the interior is not boundary
    assert not boundary_band(np.zeros((3, 5, 5), bool)).any()


def test_ssim_of_identical_crops_is_one_and_drops_with_noise():
    rng = np.random.default_rng(3)
    a = torch.from_numpy(rng.random((8, 16, 16)).astype(np.float32))
    assert float(ssim_torch(a, a)) == pytest.approx(1.0, abs=1e-5)
    noisy = a + 0.3 * torch.randn_like(a)
    assert float(ssim_torch(a, noisy)) < 0.9
    flat = a[:1]  # a 2D crop gets a 2D window
    assert float(ssim_torch(flat, flat, gaussian=False)) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("mode", ["segmentation", "perceptual"])
def test_guidance_loss_is_zero_on_a_perfect_crop_and_has_gradients(mode):
    block = _blob().astype(np.float64)
    norm = (block - block.min()) / (block.max() - block.min())
    g = Guidance(mode)
    g.prepare(norm, None)
    target = torch.from_numpy(norm.astype(np.float32))
    sl = (slice(1, 5), slice(2, 20), slice(3, 21))
    ref = target[sl].reshape(-1)
    pred = (ref + 0.1 * torch.randn_like(ref)).requires_grad_(True)
    loss = g.loss(pred, ref, sl)
    loss.backward()
    assert float(loss.detach()) > 0 and pred.grad is not None and float(pred.grad.abs().sum()) > 0
    if mode == "perceptual":
        assert float(g.loss(ref, ref, sl)) == pytest.approx(0.0, abs=1e-5)
    # calibrated, the terms are measured from their floors: the original scores 0
    g.calibrate(target.reshape(-1) + 0.1, target, target.shape)
    full = g.objective(target.reshape(-1), target, target.shape)
    assert full == pytest.approx(0.0, abs=1e-6)


def test_check_guidance_validates_modes_and_weights():
    assert check_guidance(None) == ("none", {})
    mode, weights = check_guidance("Perceptual", {"ssim": 0.5})
    assert mode == "perceptual" and weights == {**DEFAULT_WEIGHTS["perceptual"], "ssim": 0.5}
    with pytest.raises(InvalidInputError, match="unknown guidance"):
        check_guidance("lpips")
    with pytest.raises(InvalidInputError, match="unknown guidance weight"):
        check_guidance("segmentation", {"ssim": 1})
    with pytest.raises(InvalidInputError, match=">= 0"):
        check_guidance("perceptual", {"ssim": -1})


# ------------------------------------------------------------------------------- through the API
@pytest.mark.parametrize("mode", ["none", "segmentation", "perceptual"])
def test_guided_compress_records_the_guidance(mode):
    from napari_sciz.core.api import compress, decompress

    vol = _blob()
    result = compress(vol, 8, steps=8, device="cpu", guidance=mode)
    assert result.header["guidance"] == mode
    # default weights are not recorded (header bytes are latent bytes at high ratios)
    assert "guidance_weights" not in result.header
    assert result.summary()["guidance"] == mode
    assert decompress(result.data).shape == vol.shape
    assert result.psnr > 20


def test_compress_with_labels_and_weights():
    from napari_sciz.core.api import compress

    vol = _blob()
    labels = (vol > 1500).astype(np.uint8)
    result = compress(
        vol,
        8,
        steps=8,
        device="cpu",
        guidance="segmentation",
        labels=labels,
        guidance_weights={"dice": 0.05},
    )
    assert result.header["guidance_weights"] == {"dice": 0.05}


def test_bad_guidance_arguments_are_invalid_input():
    from napari_sciz.core.api import compress

    vol = _blob()
    with pytest.raises(InvalidInputError, match="shape"):
        compress(vol, 8, steps=2, guidance="segmentation", labels=np.zeros((6, 24, 23), np.uint8))
    with pytest.raises(InvalidInputError, match="no object"):  # an unpainted labels layer
        compress(vol, 8, steps=2, guidance="segmentation", labels=np.zeros(vol.shape, np.uint8))
    with pytest.raises(InvalidInputError, match="unknown guidance"):
        compress(vol, 8, steps=2, guidance="psychovisual")
    with pytest.raises(InvalidInputError, match="segmentation"):
        compress(vol, 8, steps=2, guidance="perceptual", labels=np.zeros(vol.shape, np.uint8))
    with pytest.raises(InvalidInputError, match="unknown guidance weight"):
        compress(vol, 8, steps=2, guidance="perceptual", guidance_weights={"dice": 1.0})


# ------------------------------------------------------------------------------------------ CLI
def test_cli_guidance_and_labels_round_trip(tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")
    from napari_sciz.cli import main

    vol = _blob()
    src, lab, out = tmp_path / "in.tif", tmp_path / "labels.tif", tmp_path / "out.sciz"
    tifffile.imwrite(src, vol)
    tifffile.imwrite(lab, (vol > 1500).astype(np.uint8))
    args = ["compress", str(src), "-o", str(out), "--ratio", "8", "--steps", "5"]
    args += ["--device", "cpu", "--guidance", "segmentation", "--labels", str(lab), "--json"]
    weights = ["--guidance-weight", "side=0.5", "--guidance-weight", "boundary=0"]
    assert main(args + weights) == 0
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    header = json.loads(capsys.readouterr().out)
    text = json.dumps(header)
    assert '"guidance": "segmentation"' in text
    assert header["header"]["guidance_weights"] == {"side": 0.5, "boundary": 0.0}
    assert main(["info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "segmentation" in shown and "side=0.5" in shown
    # labels without segmentation guidance, and labels of the wrong shape: one-line errors
    bad = args[:-5] + ["--force", "--labels", str(lab)]
    assert main(bad) == 1
    assert "--guidance segmentation" in capsys.readouterr().err
    tifffile.imwrite(lab, np.zeros((6, 24, 20), np.uint8))
    assert main(args[:-1] + ["--force"]) == 1
    assert "shape" in capsys.readouterr().err


# ------------------------------------------------------------------- relative weights, metrics
@pytest.mark.parametrize("mode", ["segmentation", "perceptual"])
def test_calibrated_weights_are_relative_to_the_block_error(mode):
    """After calibration the start's guided objective is (1 + sum of weights) x its MSE,
    whatever the size of that error (a 59 dB block is steered as gently as a 25 dB one)."""
    block = _blob().astype(np.float64)
    norm = (block - block.min()) / (block.max() - block.min())
    target = torch.from_numpy(norm.astype(np.float32)).reshape(-1)
    rng = np.random.default_rng(4)
    noise = torch.from_numpy(rng.normal(size=norm.size).astype(np.float32))
    weights = {"side": 0.3, "boundary": 0.1} if mode == "segmentation" else {"ssim": 0.4}
    ratios = []
    for sigma in (0.1, 0.001):
        g = Guidance(mode, weights)
        g.prepare(norm, None)
        start = target + sigma * noise
        g.calibrate(start, target, norm.shape)
        mse0 = float(torch.mean((start - target) ** 2))
        objective = g.objective(start, target, norm.shape)
        # terms already at their floor at the start (no voxel on the wrong side) are left out
        active = sum(g.weights[k] for k, scale in g.scales.items() if scale > 0)
        if sigma == 0.1:
            assert active == pytest.approx(g.total_weight())
        assert objective == pytest.approx((1 + active) * mse0, rel=1e-4)
        # a better reconstruction has a lower guided objective
        better = target + 0.5 * sigma * noise
        assert g.objective(better, target, norm.shape) < objective
        ratios.append(g.objective(target, target, norm.shape) / mse0)
    # a perfect reconstruction scores (close to) zero at both noise levels
    assert max(ratios) < 0.05


def test_ssim_slices_is_the_evaluation_ssim():
    """The perceptual loss optimises the SSIM that the benchmark reports."""
    from napari_sciz.core.guidance import ssim_slices
    from napari_sciz.core.metrics import ssim

    rng = np.random.default_rng(5)
    a = rng.random((3, 20, 24))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    b[0, 0, 0], b[0, 0, 1] = 0.0, 1.0
    a[0, 0, 0], a[0, 0, 1] = 0.0, 1.0  # data range 1, as in the normalised fit
    mine = float(ssim_slices(torch.from_numpy(a), torch.from_numpy(b)))
    assert mine == pytest.approx(ssim(a, b), abs=1e-4)


@pytest.mark.parametrize("mode", ["segmentation", "perceptual"])
def test_guided_fit_keeps_the_best_task_score_within_the_psnr_allowance(monkeypatch, mode):
    """Every candidate is scored as decoded; the kept one has the smallest task error among
    those at most ``max_psnr_loss`` dB below the plain reference, and is what is returned."""
    from napari_sciz.core.lossy import fit, guided

    decoded = []
    real_evaluate = guided.evaluate_code

    def recording(code, shape, device="cpu"):
        rec = real_evaluate(code, shape, device)
        decoded.append(rec)
        return rec

    monkeypatch.setattr(guided, "evaluate_code", recording)
    block = _blob().astype(np.float64)
    g = Guidance(mode, {"max_psnr_loss": 0.5})
    result = fit.fit_block(block, (300, 340), steps=40, guidance=g)
    assert result.guided is not None
    # the reference and one candidate per checkpoint, each decoded once
    assert len(result.guided) == 1 + guided.GUIDED_CHECKPOINTS
    lo, span = block.min(), block.max() - block.min()
    target = (block - lo) / span

    def measured(rec):
        # as the decoder returns it: clipped to the block's range (float block: no rounding)
        norm = (np.clip(rec, lo, lo + span) - lo) / span
        psnr = -10 * np.log10(max(float(np.mean((norm - target) ** 2)), 1e-30))
        return psnr, g.task_error(norm, target)

    scores = [measured(r) for r in decoded[-len(result.guided) :]]
    np.testing.assert_allclose(np.array(scores), np.array(result.guided), atol=1e-9)
    ref_psnr = scores[0][0]
    allowed = [i for i, (p, _t) in enumerate(scores) if p >= ref_psnr - 0.5 - 1e-9]
    best = min(allowed, key=lambda i: (scores[i][1], -scores[i][0]))
    assert scores[result.kept][1] == pytest.approx(scores[best][1])
    np.testing.assert_allclose(measured(result.reconstruction), scores[result.kept], atol=1e-9)
    assert scores[result.kept][0] >= ref_psnr - 0.5 - 1e-9
    assert 300 * 0.9 <= len(result.payload) <= 340


def test_a_zero_allowance_keeps_psnr():
    """``max_psnr_loss=0``: a candidate is kept only if it is no worse than the reference."""
    from napari_sciz.core.lossy import fit

    block = _blob().astype(np.float64)
    g = Guidance("perceptual", {"max_psnr_loss": 0.0, "ssim": 1000.0})
    result = fit.fit_block(block, (300, 340), steps=40, guidance=g)
    assert result.guided[result.kept][0] >= result.guided[0][0] - 1e-9


def test_cli_guidance_weight_errors(tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")
    from napari_sciz.cli import main

    src, out = tmp_path / "in.tif", tmp_path / "out.sciz"
    tifffile.imwrite(src, _blob())
    base = ["compress", str(src), "-o", str(out), "--ratio", "8", "--steps", "2"]
    assert main(base + ["--guidance-weight", "side=0.5"]) == 1
    assert "--guidance segmentation or perceptual" in capsys.readouterr().err
    assert main(base + ["--guidance", "perceptual", "--guidance-weight", "side=0.5"]) == 1
    assert "unknown guidance weight 'side'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(base + ["--guidance", "perceptual", "--guidance-weight", "ssim"])
    assert "NAME=VALUE" in capsys.readouterr().err
    assert not out.exists()


def test_integer_blocks_are_scored_rounded_as_decoded():
    """A uint16 block's candidates are scored as the decoder returns them: clipped, rounded."""
    from napari_sciz.core.lossy import fit

    block = _blob()
    g = Guidance("segmentation")
    result = fit.fit_block(block, (300, 340), steps=20, guidance=g)
    lo, hi = float(block.min()), float(block.max())
    out = np.rint(np.clip(result.reconstruction, lo, hi))
    norm = (out - lo) / (hi - lo)
    target = (block.astype(np.float64) - lo) / (hi - lo)
    assert g.task_error(norm, target) == pytest.approx(result.guided[result.kept][1], abs=1e-12)


def test_soft_threshold_follows_the_block_error():
    """After calibration the soft threshold's temperature is ``sharpness`` x the RMS error."""
    block = _blob().astype(np.float64)
    norm = (block - block.min()) / (block.max() - block.min())
    target = torch.from_numpy(norm.astype(np.float32))
    g = Guidance("segmentation", {"sharpness": 0.5})
    g.prepare(norm, None)
    assert g.temperature == pytest.approx(0.5)
    start = target + 0.04
    g.calibrate(start, target, norm.shape)
    assert g.temperature == pytest.approx(0.5 * 0.04, rel=1e-4)


def test_info_fills_in_the_defaults_of_the_writing_version():
    from napari_sciz.cli.info import _guidance_text
    from napari_sciz.core.guidance import DEFAULT_WEIGHTS, defaults_of

    assert defaults_of("napari-sciz 0.1.0", "segmentation")["dice"] == 0.0
    assert defaults_of("napari-sciz 9.9.9", "segmentation") == DEFAULT_WEIGHTS["segmentation"]
    assert defaults_of(None, "perceptual") == DEFAULT_WEIGHTS["perceptual"]
    old = _guidance_text("perceptual", None, "napari-sciz 0.1.0")
    assert old == "perceptual (ssim=0.4, gradient=0; defaults)"
    new = _guidance_text("perceptual", {"ssim": 5}, "napari-sciz 0.2.0")
    assert new == "perceptual (ssim=5, gradient=0, max_psnr_loss=1)"
