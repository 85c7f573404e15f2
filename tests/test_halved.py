"""Hybrid bases coded at half the in-plane resolution (:mod:`napari_sciz.core.hybrid.halved`)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sciz import compress, decompress, open_sciz
from napari_sciz.core.encode import BlockEncoder
from napari_sciz.core.hybrid import basechoice, bases, payload
from napari_sciz.core.hybrid import codec as hybrid_codec
from napari_sciz.core.hybrid.halved import HalvedBase, halve, halved_shape, unhalve
from napari_sciz.errors import FormatError

pytest.importorskip("imagecodecs")


def _image(shape: tuple[int, ...], seed: int = 3) -> np.ndarray:
    """Smooth shading, a few bright blurred blobs and noise (uint16)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), 4)
    field = ndimage.gaussian_filter(field, (0, 2, 2)[-len(shape) :])
    return np.clip(
        1000
        + 8000 * ndimage.gaussian_filter((field > 0.02) * 1.0, 2)
        + 400 * field
        + rng.normal(0, 30, shape),
        0,
        None,
    ).astype(np.uint16)


@pytest.mark.parametrize("shape3", [(2, 32, 36), (1, 33, 45), (3, 40, 41)])
def test_halving_takes_2x2_means_and_interpolates_back(shape3) -> None:
    rng = np.random.default_rng(0)
    block = rng.normal(size=shape3)
    half = halve(block)
    assert half.shape == halved_shape(shape3)
    np.testing.assert_allclose(half[:, 0, 0], block[:, :2, :2].mean(axis=(1, 2)))
    # an odd side repeats its last row / column before halving
    if shape3[1] % 2:
        np.testing.assert_allclose(half[:, -1, 0], block[:, -1, :2].mean(axis=1))
    full = unhalve(half, shape3)
    assert full.shape == shape3 and full.dtype == np.float64
    # a constant comes back as it was; a plane (a linear ramp) away from the edges, where
    # the spline's mirrored ends no longer reach
    const = np.full(shape3, 7.5)
    np.testing.assert_allclose(unhalve(halve(const), shape3), const, atol=1e-9)
    z, y, x = np.mgrid[: shape3[0], :64, :64].astype(np.float64)
    ramp = 3.0 * y - 2.0 * x + z
    back = unhalve(halve(ramp), ramp.shape)
    np.testing.assert_allclose(back[:, 16:-16, 16:-16], ramp[:, 16:-16, 16:-16], atol=1e-3)


def test_a_halved_base_codes_a_quarter_of_the_pixels_in_its_bytes() -> None:
    sperr = bases.SPERRBase()
    halved = HalvedBase(sperr)
    block = _image((3, 64, 70)).astype(np.float64)
    assert halved.ident == sperr.ident | 0x40 and halved.name == "sperr/2"
    assert halved.supports(block.shape) and not halved.supports((3, 20, 70))
    stream = halved.encode(block, 0.5)
    assert len(stream) <= 0.5 * block.size / 4 / 8 + 64
    whole = halved.decode(stream, block.shape)
    assert whole.shape == block.shape
    planes = halved.planes(stream, block.shape)
    np.testing.assert_array_equal(planes.span(1, 2)[1], whole[1])
    np.testing.assert_array_equal(planes.upto(3), whole)
    # refined, proxy, filler and shrinker stay halved
    for other in (halved.refined(), halved.filler(0.5)):
        assert other is None or isinstance(other, HalvedBase)


def test_payload_version_7_marks_a_halved_base_and_older_versions_refuse_the_bit() -> None:
    codec = HalvedBase(bases.SPERRBase())
    block = _image((1, 48, 48)).astype(np.float64)
    stream = codec.encode(block, 1.0)
    packed = payload.pack(codec.ident, stream, b"", b"", b"", flat=True)
    assert packed[0] == 7
    layers = payload.parse(packed, block.shape)
    assert isinstance(layers.codec, HalvedBase) and layers.codec.inner.ident == 1
    plain = payload.pack(1, stream, b"", b"", b"", flat=True)
    assert plain[0] == 6  # (files without a halved base stay readable by older readers)
    as_v6 = bytes([6]) + packed[1:]
    with pytest.raises(FormatError, match="unknown flags"):
        payload.parse(as_v6, block.shape)
    with pytest.raises(FormatError, match="upgrade"):
        payload.parse(bytes([8]) + packed[1:], block.shape)


def test_a_file_coded_with_halved_bases_decodes_whole_and_by_region(monkeypatch) -> None:
    vol = _image((6, 96, 80))
    monkeypatch.setattr(BlockEncoder.encode, "__defaults__", (None, None, True))
    result = compress(vol, ratio=48, mode="hybrid", budget=20, device="cpu")
    decoded = decompress(result.data)
    np.testing.assert_array_equal(decoded, result.reconstruction)
    reader = open_sciz(result.data)
    names = {
        hybrid_codec.describe(reader._file.payload(i))["base"] for i in range(reader.grid.n_blocks)
    }
    assert names and all(n.endswith("/2") for n in names)
    np.testing.assert_array_equal(reader[3], decoded[3])
    np.testing.assert_array_equal(
        decompress(result.data, roi="1:4,10:70,5:60"), decoded[1:4, 10:70, 5:60]
    )
    assert result.psnr > 30


def test_blocks_too_small_to_halve_keep_the_usual_bases() -> None:
    assert basechoice.halved_bases((4, 20, 200)) == bases.BASES
    halved = basechoice.halved_bases((4, 200, 200))
    assert all(isinstance(c, HalvedBase) for c in halved)
    # HEVC halved needs frames of 64 pixels or more once halved
    assert not any(c.name == "hevc/2" for c in basechoice.halved_bases((4, 100, 100)))


def test_perceptual_guidance_codes_a_half_resolution_candidate(monkeypatch) -> None:
    from napari_sciz.core.task import prefilter
    from napari_sciz.core.task.choice import Candidate

    monkeypatch.setattr(
        prefilter,
        "_candidates",
        lambda g, lock: [Candidate("none"), Candidate("none", halved=True)],
    )
    img = _image((192, 176))
    result = compress(img, ratio=64, guidance="perceptual", budget=40, device="cpu")
    text = " ".join(result.messages)
    assert "half: MS-SSIM" in text and "half-resolution" in text
    decoded = decompress(result.data)
    np.testing.assert_array_equal(decoded, result.reconstruction)
    reader = open_sciz(result.data)
    base = hybrid_codec.describe(reader._file.payload(0))["base"]
    assert base.endswith("/2") == bool(result.header.get("task_halved"))


def test_info_names_a_halved_base_and_a_half_resolution_coding() -> None:
    from napari_sciz.cli.info import _base_name, _prefilter_text

    assert _base_name("hevc/2") == "HEVC at half resolution" and _base_name("sperr") == "SPERR"
    assert "coded at half the in-plane resolution" in _prefilter_text(
        "perceptual", {"task_halved": True}
    )
    curve = {"task_halved": True, "value_map": {"curve": [0] * 16}}
    text = _prefilter_text("perceptual", curve)
    assert "sensitivity curve" in text and text.endswith(
        "at half the in-plane resolution, interpolated back)"
    )


def test_a_smoothing_that_cost_too_much_psnr_once_is_not_coded_again() -> None:
    """Perceptual trials skip candidates smoothed at least as much as a coded file that fell
    more than the allowed PSNR below the plain file (whatever map or halving came with it)."""
    from napari_sciz.core.task.choice import Candidate, TaskChoice
    from napari_sciz.core.task.guided import _Trials

    trials = _Trials.__new__(_Trials)
    trials.choice, trials.plain_score = TaskChoice("perceptual"), {"psnr": 28.2}
    trials._smoothing = [(0.5, {"psnr": 25.5})]  # "0.5 + curve, half": 2.7 dB below
    assert trials.too_harsh(Candidate("curve", 0.5))
    assert trials.too_harsh(Candidate("smooth", 0.7))
    assert not trials.too_harsh(Candidate("curve", None, halved=True))
    assert not trials.too_harsh(Candidate("power", None, 0.35))
    trials._smoothing = [(0.5, {"psnr": 27.5})]  # within the allowance: nothing skipped
    assert not trials.too_harsh(Candidate("smooth", 0.7))
    trials.choice = TaskChoice("segmentation")  # (a band's width is no smoothing)
    trials._smoothing = [(3.0, {"psnr": 20.0})]
    assert not trials.too_harsh(Candidate("band", 5.0))


@pytest.mark.parametrize("inner", bases.BASES, ids=lambda c: c.name)
def test_every_base_codec_halved_fits_its_bytes_and_round_trips(inner) -> None:
    from napari_sciz.core.hybrid.search import encode_to_size

    if not inner.available():
        pytest.skip(f"{inner.name} is not installed")
    block = _image((2, 160, 144)).astype(np.float64)
    codec = HalvedBase(inner)
    assert codec.supports(block.shape)
    nbytes = 1500
    layer = encode_to_size(codec, block, nbytes)
    assert layer is not None and 0 < len(layer.stream) <= nbytes
    decoded = codec.decode(layer.stream, block.shape)
    np.testing.assert_array_equal(decoded, layer.values)
    assert float(np.sqrt(np.mean((decoded - block) ** 2))) < float(block.std())


def test_images_too_small_to_halve_have_no_half_resolution_candidates() -> None:
    from napari_sciz.core.task import prefilter

    img = _image((24, 40))
    _out, choice = prefilter.choose_prefilter(img, img.nbytes // 16, "perceptual")
    assert "none" in choice.scores and "curve" in choice.scores
    assert not any(label.endswith("half") for label in choice.scores)
    assert not choice.halved


def _smooth_plane(sigma: float = 6.0) -> np.ndarray:
    """A smooth 128x128 plane (one-plane block), integral values."""
    from scipy import ndimage

    rng = np.random.default_rng(1)
    field = ndimage.gaussian_filter(rng.normal(size=(1, 128, 128)), sigma)
    return np.clip(1000 + 3000 * field, 0, None).round()


def test_the_default_base_choice_tries_halved_bases_at_low_rates(monkeypatch) -> None:
    from napari_sciz.core.hybrid.search import exact_for
    from napari_sciz.core.hybrid.tracker import BlockTracker

    target = _smooth_plane()
    searched: list[str] = []
    real = basechoice.encode_to_size

    def spy(codec, *args, **kwargs):
        searched.append(codec.name)
        return real(codec, *args, **kwargs)

    monkeypatch.setattr(basechoice, "encode_to_size", spy)

    def choose(bpv: float):
        searched.clear()
        clock = BlockTracker(None, target, None, None, None)
        nbytes = int(bpv * target.size / 8)
        return basechoice._choose_base(target, nbytes, clock, 0, exact_for(target))

    # at 0.05 bits per voxel the smooth plane codes better from its 2x2 means: the halved
    # stream wins, and replaces its codec's entry for the refinement
    best, tried = choose(0.05)
    assert isinstance(best.codec, HalvedBase)
    assert any(name.endswith("/2") for name in searched)
    assert best in [layer for layer, _ in tried]
    assert not any(layer.codec.name == best.codec.inner.name for layer, _ in tried)
    # above HALVED_MAX_BPV no halved stream is searched
    best, tried = choose(4 * basechoice.HALVED_MAX_BPV)
    assert not isinstance(best.codec, HalvedBase)
    assert not any(name.endswith("/2") for name in searched)
    # nor when the block coded halved already (perceptual guidance's candidates)
    clock = BlockTracker(None, target, None, None, None)
    best, _ = basechoice._choose_base(target, 102, clock, 0, None, halved=True)
    assert isinstance(best.codec, HalvedBase) and not isinstance(best.codec.inner, HalvedBase)


def test_a_filter_the_file_cannot_afford_does_not_rank_a_base() -> None:
    from skimage import data

    from napari_sciz.core.hybrid.candidate import _filtered, _rank_error
    from napari_sciz.core.hybrid.search import exact_for
    from napari_sciz.core.hybrid.tracker import BlockTracker

    # a 100x100 cell on a 260x260 black frame at 256x (196 bytes): the loop filter that
    # ranks each base takes 80-100 bytes, and takes the halved HEVC stream's error from 4.2
    # to 1.2, below full-resolution HEVC's 1.5; the file cannot hold it, and codes the base
    # alone (before the charge: 32.1 dB at half resolution against 37.6 dB in full)
    target = np.pad(data.cell()[:100, :100], 80)[None].astype(np.float64)
    clock = BlockTracker(None, target, None, None, None)
    best, tried = basechoice._choose_base(target, 196, clock, 0, exact_for(target))
    for layer, _ in tried:
        cand = _filtered(layer, target, 4, 0, avail=196)
        ranked = _rank_error(cand, target, 196)
        assert cand.error <= ranked <= layer.error(target)
        if cand.filt is not None:  # (charged for its bytes: nothing when they are few)
            assert ranked > cand.error
            assert _rank_error(cand, target, 10**7) == pytest.approx(cand.error, rel=1e-4)
    if bases.HEVCBase().available():
        assert best.codec.name == "hevc"


def test_a_default_file_with_a_halved_base_decodes_whole_and_by_region() -> None:
    volume = np.repeat(_smooth_plane(), 3, axis=0).astype(np.uint16)
    result = compress(volume, ratio=400, mode="hybrid", budget=20, device="cpu")
    reader = open_sciz(result.data)
    names = {
        hybrid_codec.describe(reader._file.payload(i))["base"] for i in range(reader.grid.n_blocks)
    }
    assert names and all(n.endswith("/2") for n in names)  # (nothing asked for it)
    decoded = decompress(result.data)
    np.testing.assert_array_equal(decoded, result.reconstruction)
    np.testing.assert_array_equal(reader[1], decoded[1])
    np.testing.assert_array_equal(
        decompress(result.data, roi="0:2,10:70,5:60"), decoded[0:2, 10:70, 5:60]
    )
