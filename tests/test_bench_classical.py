"""Tests of the classical-codec anchors (napari_sciz.bench.classical) and the benchmark runner.

The real-data tests use a small crop of ``nbsd_cells3d_nuclei.tif`` from the ``shared/data``
folder beside the repository and are skipped when it is absent; HEVC and FFV1 need ``ffmpeg``
(with libx265) on ``PATH`` and are skipped without it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("imagecodecs")
pytest.importorskip("skimage")

from napari_sciz.bench import classical as C  # noqa: E402
from napari_sciz.bench.run import main as bench_main  # noqa: E402
from napari_sciz.bench.run import update_section  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NUCLEI = DATA / "nbsd_cells3d_nuclei.tif"


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """An 8x64x64 uint16 crop of a real confocal stack."""
    if not NUCLEI.is_file():
        pytest.skip(f"real data not found: {NUCLEI}")
    import tifffile

    vol = tifffile.imread(NUCLEI)
    return np.ascontiguousarray(vol[26:34, 96:160, 96:160])


# --------------------------------------------------------------------------------------------------
# bisection
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("increasing", [True, False])
def test_bisection_fits_and_next_step_violates(increasing: bool) -> None:
    def size(p: float) -> int:  # size grows with quality; always odd, never equal to the budget
        q = p if increasing else 10.0 - p
        return 2 * int(1000 * q) + 1

    res = C.bisect_quality(size, 8642, 0.0, 10.0, increasing=increasing, iterations=30, rtol=0)
    assert res.param is not None and res.violating_param is not None
    assert res.nbytes is not None and res.nbytes <= 8642
    assert size(res.violating_param) > 8642
    assert abs(res.violating_param - res.param) < 1e-6
    assert res.feasible[0] == res.param


def test_bisection_integer_adjacent() -> None:
    res = C.bisect_quality(lambda p: int(100 * p), 1234, 0, 51, increasing=True, integer=True)
    assert res.param == 12 and res.violating_param == 13


def test_bisection_unreachable_and_trivial() -> None:
    res = C.bisect_quality(lambda p: 10_000, 100, 1.0, 2.0, increasing=True)
    assert res.param is None and res.feasible == []
    res = C.bisect_quality(lambda p: 10, 100, 1.0, 2.0, increasing=True)
    assert res.param == 2.0 and res.violating_param is None


def test_bisection_tolerates_non_monotone_spot_and_errors() -> None:
    def size(p: float) -> int:
        if 4.0 < p < 4.5:
            raise RuntimeError("codec refused")
        bump = 3000 if 2.0 < p < 2.3 else 0  # a non-monotone spot on the low-quality side
        return int(1000 * p) + bump

    res = C.bisect_quality(size, 5555, 0.0, 10.0, increasing=True, iterations=30, rtol=0, scan=9)
    assert res.param is not None
    assert size(res.param) <= 5555
    fitting = [t.param for t in res.trials if t.fits]
    assert res.param == max(fitting)


def test_bisection_on_real_codec_next_step_violates(crop: np.ndarray) -> None:
    codec = C.CODECS["sperr"]
    if not codec.available():
        pytest.skip("SPERR not available")
    budget = crop.nbytes // 12

    def size(p: float) -> int:
        return codec.encode(crop, p).nbytes

    lo, hi = codec.param_range(crop, 12.0)
    res = C.bisect_quality(size, budget, lo, hi, increasing=True, log=True, iterations=20, rtol=0)
    assert res.param is not None and res.violating_param is not None
    assert size(res.param) <= budget < size(res.violating_param)
    assert res.violating_param / res.param < 1.0 + 1e-3


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def test_mosaic_roundtrip_and_layout() -> None:
    vol = np.arange(7 * 5 * 3, dtype=np.uint16).reshape(7, 5, 3)
    mosaic, (rows, cols) = C.tile_mosaic(vol)
    assert rows * cols >= 7 and mosaic.shape == (rows * 5, cols * 3)
    np.testing.assert_array_equal(C.untile_mosaic(mosaic, 7, 5, 3, cols), vol)
    assert sorted(C.mosaic_layout(60, 256, 256)) == [6, 10]  # no empty tile
    assert C.mosaic_layout(16, 256, 256) == (4, 4)


def test_get_codec_aliases() -> None:
    assert C.get_codec("JPEG XL") is C.CODECS["jpegxl"]
    assert C.get_codec("j2k") is C.CODECS["jpeg2k"]
    with pytest.raises(KeyError):
        C.get_codec("nope")


# --------------------------------------------------------------------------------------------------
# codecs on real data
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(C.CODECS))
def test_codec_round_trip_at_ratio(name: str, crop: np.ndarray) -> None:
    codec = C.CODECS[name]
    if not codec.available():
        pytest.skip(f"{name} not available here (HEVC needs ffmpeg with libx265)")
    enc = codec.encode(crop, codec.param_range(crop, 8.0)[1 if codec.increasing else 0])
    dec = codec.decode(enc)
    assert dec.dtype == crop.dtype and dec.shape == crop.shape

    res = codec.encode_at_ratio(crop, 8.0, iterations=10)
    assert res is not None, f"{name} cannot reach 8x on the crop"
    assert res.codec == name and res.target_ratio == 8.0
    assert res.ratio >= 8.0
    assert res.nbytes <= crop.nbytes / 8.0
    assert math.isclose(res.ratio, crop.nbytes / res.nbytes)
    assert 15.0 < res.psnr < 100.0
    assert -1.0 <= res.ssim <= 1.0
    assert res.max_error >= 0 and res.encode_seconds >= 0 and res.decode_seconds >= 0
    assert json.loads(json.dumps(res.to_dict()))["codec"] == name


def test_sperr_quality_improves_with_budget(crop: np.ndarray) -> None:
    codec = C.CODECS["sperr"]
    if not codec.available():
        pytest.skip("SPERR not available")
    low = codec.encode_at_ratio(crop, 32.0, compute_ssim=False)
    high = codec.encode_at_ratio(crop, 4.0, compute_ssim=False)
    assert low is not None and high is not None
    assert high.psnr > low.psnr


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_other_dtypes_round_trip(dtype: type) -> None:
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:4, 0:32, 0:32]
    vol = (100 * np.sin(x / 5.0) * np.cos(y / 7.0) + 20 * z + rng.normal(0, 2, x.shape)).astype(
        dtype if dtype is not np.uint8 else np.float64
    )
    if dtype is np.uint8:
        vol = np.clip(vol + 128, 0, 255).astype(np.uint8)
    for name in ("jpegxl", "sperr", "sz3", "hevc"):
        codec = C.CODECS[name]
        if not codec.available():
            continue
        res = codec.encode_at_ratio(vol, 4.0, iterations=8, compute_ssim=False)
        assert res is not None and res.ratio >= 4.0, name
        assert res.psnr > 20.0, name


@pytest.mark.parametrize("name", ["jpegxl", "jpeg2k"])
def test_an_rgb_image_is_coded_as_one_by_the_image_codecs(name: str) -> None:
    """JPEG XL and JPEG 2000 get an RGB image as the colour image it is (their colour
    transform), not as a mosaic of 3-pixel-wide slices: the fair anchor."""
    codec = C.CODECS[name]
    if not codec.available():
        pytest.skip(f"{name} not available")
    y, x = np.mgrid[0:64, 0:48]
    base = 120 + 60 * np.sin(y / 6.0) * np.cos(x / 7.0)
    rgb = np.clip(np.stack([base, 0.8 * base + 20, base - 30], axis=-1), 0, 255).astype(np.uint8)
    res = codec.encode_at_ratio(rgb, 8.0, iterations=10, compute_ssim=False)
    assert res is not None and res.ratio >= 8.0
    assert res.psnr > 48.0  # (as 64 slices of 48x3 pixels: 45.9 and 40.4 dB)
    enc = codec.encode(rgb, codec.param_range(rgb, 8.0)[1 if codec.increasing else 0])
    assert enc.state.get("colour") and codec.decode(enc).shape == rgb.shape


def test_lossless_sizes_exact(crop: np.ndarray) -> None:
    entries = C.lossless_sizes(crop)
    names = {e.codec for e in entries}
    assert {"zstd (level 19)", "JPEG XL (mosaic)", "JPEG-LS (mosaic)"} <= names
    for e in entries:
        assert e.exact, e.codec
        assert math.isclose(e.ratio, crop.nbytes / e.nbytes)
        if not e.codec.startswith("FFV1"):  # FFV1 expands this sparse-histogram crop
            assert e.ratio > 1.0, e.codec


# --------------------------------------------------------------------------------------------------
# runner
# --------------------------------------------------------------------------------------------------


def test_update_section_replaces_only_its_own(tmp_path: Path) -> None:
    md = tmp_path / "docs" / "benchmarks.md"
    update_section(md, "lossy", "old lossy table")
    text = md.read_text()
    assert text.startswith("# Benchmarks")
    text = text + "\nSome prose by a human.\n\n<!-- bench:guidance:start -->\nguidance\n"
    text += "<!-- bench:guidance:end -->\n\ntrailing words\n"
    md.write_text(text)
    update_section(md, "lossy", "new lossy table\n\nwith two paragraphs")
    new = md.read_text()
    assert "old lossy table" not in new
    assert "new lossy table\n\nwith two paragraphs" in new
    assert new.replace("new lossy table\n\nwith two paragraphs", "old lossy table") == text
    update_section(md, "lossless", "lossless table")
    final = md.read_text()
    assert final.startswith(new.rstrip("\n"))
    assert final.count("<!-- bench:lossless:start -->") == 1
    assert final.rstrip().endswith("<!-- bench:lossless:end -->")


def test_update_section_rejects_malformed(tmp_path: Path) -> None:
    md = tmp_path / "b.md"
    md.write_text("x\n<!-- bench:lossy:start -->\nno end\n")
    with pytest.raises(ValueError):
        update_section(md, "lossy", "t")
    with pytest.raises(ValueError):
        update_section(md, "bad key", "t")
    assert md.read_text() == "x\n<!-- bench:lossy:start -->\nno end\n"


def test_bench_main_skip_ours(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    data = tmp_path / "data"
    data.mkdir()
    z, y, x = np.mgrid[0:6, 0:40, 0:40]
    vol = (1000 + 800 * np.sin(x / 6.0) * np.cos(y / 5.0) + 30 * z).astype(np.uint16)
    tifffile.imwrite(data / "wave.tif", vol)
    tifffile.imwrite(data / "flat2d.tif", vol[0])
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nkeep me\n")
    js = tmp_path / "r.json"
    argv = ["--data", str(data), "--skip-ours", "--codecs", "sperr,jpeg2k", "--ratios", "4,8"]
    argv += ["--out", str(out), "--json", str(js), "-q"]
    assert bench_main(argv) == 0
    text = out.read_text()
    assert "keep me" in text
    assert "<!-- bench:classical:start -->" in text and "### wave" in text
    assert "flat2d" not in text  # 2D images are skipped without --all
    record = json.loads(js.read_text())
    assert [v["name"] for v in record["volumes"]] == ["wave"]
    res = record["volumes"][0]["results"]["4x"]["sperr"]
    assert res["status"] == "ok" and res["ratio"] >= 4.0
    assert "--skip-ours" in record["meta"]["command"]


def test_render_markdown_with_ours_columns() -> None:
    from napari_sciz.bench.run import render_markdown

    def rec(codec: str, db: float, status: str = "ok") -> dict:
        return {
            "codec": codec,
            "status": status,
            "psnr": db,
            "ssim": 0.9,
            "ratio": 16.2,
            "encode_seconds": 1.0,
            "decode_seconds": 0.1,
        }

    record = {
        "meta": {
            "environment": {
                "device": "cuda:0: GPU X",
                "cpu": "CPU Y (2 cores)",
                "torch": "2",
                "imagecodecs": "1",
                "ffmpeg": None,
            },
            "skip_ours": False,
            "codecs": ["sperr", "jpegxl", "sz3"],
            "budget": 120.0,
            "date": "today",
            "command": "sciz bench",
            "threads": 1,
            "iterations": 16,
            "ratios": [16.0],
        },
        "volumes": [
            {
                "name": "v",
                "shape": [2, 8, 8],
                "dtype": "uint16",
                "raw_nbytes": 256,
                "ratios": [16.0],
                "results": {
                    "16x": {
                        "ours": rec("ours", 40.0),
                        "sperr": rec("sperr", 39.0),
                        "jpegxl": rec("jpegxl", 38.5),
                        "sz3": rec("sz3", 0.0, "unreachable"),
                    }
                },
            }
        ],
        "roi_decode": {
            "roi": "1:2,0:8,0:8",
            "volume": "v",
            "ratio": 16.0,
            "seconds": 0.004,
            "repeats": 3,
            "device": "cpu",
            "full_decode_seconds": 0.1,
        },
    }
    md = render_markdown(record)
    assert "GPU X" in md and "`sciz bench`" in md and "4.0 ms" in md
    row = next(line for line in md.splitlines() if line.startswith("| 16x"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].startswith("40.00 / 0.900 / 16.2x")
    assert cells[2].startswith("**39.00**")  # best classical in bold
    assert cells[4] == "—"  # SZ3 cannot reach the ratio
    assert cells[-3:] == ["SPERR 39.00", "+1.00", "+1.50"]  # best, ours − best, ours − bar
