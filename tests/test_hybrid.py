"""Hybrid mode: SPERR base layer + fitted residual field."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from napari_sciz import compress, decompress, open_sciz
from napari_sciz.cli import main
from napari_sciz.core import hybrid
from napari_sciz.core.metrics import psnr
from napari_sciz.errors import FormatError, InvalidInputError

pytest.importorskip("imagecodecs")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _volume() -> np.ndarray:
    rng = np.random.default_rng(5)
    z, y, x = np.mgrid[:10, :48, :40]
    edges = 1500.0 * ((x - 20) ** 2 + (y - 24) ** 2 < 150)  # a disc: sharp borders
    return (300 + edges + 80 * np.sin(z / 3.0) + rng.normal(0, 10, z.shape)).astype(np.uint16)


@pytest.fixture(scope="module")
def coded():
    vol = _volume()
    return vol, compress(vol, ratio=24, mode="hybrid", steps=20, device="cpu", block_voxels=8000)


def test_round_trip_ratio_and_regions(coded) -> None:
    vol, result = coded
    assert result.header["mode"] == "hybrid"
    assert result.header["model"]["type"] == "sperr+latent-grid"
    assert 0.98 * 24 <= result.ratio <= 1.1 * 24
    decoded = decompress(result.data)
    np.testing.assert_array_equal(decoded, result.reconstruction)
    assert psnr(vol, decoded) == pytest.approx(result.psnr)
    np.testing.assert_array_equal(
        decompress(result.data, roi="3:7,10:30,5:35"), decoded[3:7, 10:30, 5:35]
    )
    reader = open_sciz(result.data)
    np.testing.assert_array_equal(reader[4], decoded[4])


def test_never_worse_than_the_base_layer_alone(coded) -> None:
    """The encoder keeps the base alone when the residual field does not pay for its bytes."""
    vol, result = coded
    reader = open_sciz(result.data)
    for i in range(reader.grid.n_blocks):
        payload = reader._file.payload(i)
        sl = reader.grid.block_slices(i)
        block = vol[sl].astype(np.float64)
        alone = hybrid._sperr_decode(hybrid._sperr_encode(block, len(payload) - 12), block.shape)
        mse_alone = float(np.mean((alone - block) ** 2))
        mse = float(np.mean((hybrid.decode_hybrid_block(payload, block.shape) - block) ** 2))
        assert mse <= mse_alone * 1.02


def test_bad_payloads_are_format_errors(coded) -> None:
    _vol, result = coded
    reader = open_sciz(result.data)
    payload = reader._file.payload(0)
    shape3 = reader.grid.block_shape3(0)
    with pytest.raises(FormatError, match="truncated"):
        hybrid.decode_hybrid_block(payload[:20], shape3)
    with pytest.raises(FormatError, match="not a hybrid"):
        hybrid.decode_hybrid_block(b"XYZ" + payload[3:], shape3)
    newer = payload[:3] + bytes([9]) + payload[4:]
    with pytest.raises(FormatError, match="newer"):
        hybrid.decode_hybrid_block(newer, shape3)
    base_len = struct.unpack_from("<I", payload, 6)[0]
    broken = payload[:8] + bytes(base_len) + payload[8 + base_len :]
    with pytest.raises(FormatError):
        hybrid.decode_hybrid_block(broken, shape3)


def test_options_hybrid_does_not_take(coded) -> None:
    vol, result = coded
    with pytest.raises(InvalidInputError, match="guidance"):
        compress(vol, ratio=24, mode="hybrid", steps=2, guidance="perceptual")
    with pytest.raises(InvalidInputError, match="scale"):
        decompress(result.data, scale=2)


def test_2d_image_and_constant_block() -> None:
    rng = np.random.default_rng(1)
    img = (rng.random((64, 80)) * 200).astype(np.uint8)
    img[:, :40] = 7  # a constant half
    result = compress(img, ratio=6, mode="hybrid", steps=5, device="cpu", block_voxels=2560)
    assert result.reconstruction.shape == img.shape
    np.testing.assert_array_equal(decompress(result.data), result.reconstruction)
    assert np.all(result.reconstruction[:, :32] == 7)


def test_cli_hybrid_and_info(tmp_path, capsys) -> None:
    src = tmp_path / "v.npy"
    np.save(src, _volume())
    out = tmp_path / "v.sciz"
    args = ["compress", str(src), "-o", str(out), "--mode", "hybrid", "--ratio", "20"]
    assert main([*args, "--steps", "5"]) == 0
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "hybrid" in text and "SPERR base" in text
    assert main(["compress", str(src), "-o", str(tmp_path / "w.sciz"), "--mode", "hybrid"]) != 0


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "philips_ct_phantom_crop.tif").exists(), reason="no shared data")
def test_hybrid_beats_the_pure_field_on_ct() -> None:
    from napari_sciz.io import read_image

    vol = np.asarray(read_image(DATA / "philips_ct_phantom_crop.tif").data)[:8, 64:192, 64:192]
    pure = compress(vol, ratio=64, steps=10, device="cpu")
    mixed = compress(vol, ratio=64, mode="hybrid", steps=10, device="cpu")
    assert abs(mixed.ratio - pure.ratio) / pure.ratio < 0.1
    assert mixed.psnr > pure.psnr + 5.0  # SPERR's wavelets keep the phantom's sharp edges
