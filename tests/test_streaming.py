"""Decoding at scale: parallel region decode, slab-by-slab outputs (TIFF, .npy, OME-Zarr)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sciz import compress, decompress, open_sciz
from napari_sciz.cli import main
from napari_sciz.io import read_image
from napari_sciz.io.image import write_image_planes
from napari_sciz.io.ome_zarr import open_zarr_image, write_ome_zarr

pytest.importorskip("zarr")


def _volume() -> np.ndarray:
    rng = np.random.default_rng(3)
    z, y, x = np.mgrid[:12, :40, :48]
    return (500 + 200 * np.sin(x / 5.0 + z / 4.0) + rng.normal(0, 5, z.shape)).astype(np.uint16)


@pytest.fixture(scope="module")
def sciz_file(tmp_path_factory):
    vol = _volume()
    path = tmp_path_factory.mktemp("stream") / "vol.sciz"
    result = compress(
        vol,
        ratio=12,
        steps=3,
        device="cpu",
        block_voxels=4096,
        voxel_size=(2.0, 0.5, 0.5),
        units=("µm", "µm", "µm"),
    )
    result.save(path)
    exact = compress(vol, mode="lossless", block_voxels=4096)
    exact_path = path.with_name("exact.sciz")
    exact.save(exact_path)
    return path, exact_path, vol


@pytest.mark.parametrize("which", [0, 1])
def test_parallel_region_decode_matches_serial(sciz_file, which) -> None:
    path = sciz_file[which]
    serial = open_sciz(path)
    serial.threads = 1
    parallel = open_sciz(path)
    parallel.threads = 4
    assert parallel.grid.n_blocks > 4
    for roi in (None, "3:9,5:33,7:40", "11:12,:,:"):
        np.testing.assert_array_equal(serial.decode(roi), parallel.decode(roi))
    if which == 1:
        np.testing.assert_array_equal(parallel.decode(), sciz_file[2])


@pytest.mark.parametrize("name", ["out.tif", "out.ome.tif", "out.npy", "out.ome.zarr"])
def test_decompress_streams_every_format(sciz_file, tmp_path, name, capsys) -> None:
    path = sciz_file[0]
    out = tmp_path / name
    assert main(["decompress", str(path), "-o", str(out), "--roi", "2:11,:,4:44"]) == 0
    expected = decompress(path, roi="2:11,:,4:44")
    image = read_image(out)
    np.testing.assert_array_equal(np.asarray(image.data), expected)
    if not name.endswith(".npy"):
        assert image.axes == "ZYX"
        assert image.voxel_size == pytest.approx((2.0, 0.5, 0.5))
    assert "wrote" in capsys.readouterr().out


def test_decompress_refuses_to_overwrite_a_zarr_store(sciz_file, tmp_path) -> None:
    out = tmp_path / "out.ome.zarr"
    assert main(["decompress", str(sciz_file[0]), "-o", str(out)]) == 0
    assert main(["decompress", str(sciz_file[0]), "-o", str(out)]) != 0
    assert main(["decompress", str(sciz_file[0]), "-o", str(out), "--force"]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries


def test_write_ome_zarr_failure_leaves_nothing(tmp_path) -> None:
    def regions():
        yield (slice(0, 1), slice(None), slice(None)), np.ones((1, 4, 4), np.uint8)
        raise RuntimeError("decoder failed")

    with pytest.raises(RuntimeError):
        write_ome_zarr(tmp_path / "x.ome.zarr", (2, 4, 4), np.uint8, regions(), axes="ZYX")
    assert list(tmp_path.iterdir()) == []


def test_write_image_planes_checks_the_plane_count(tmp_path) -> None:
    from napari_sciz.errors import InvalidInputError

    planes = (np.zeros((4, 5), np.uint16) for _ in range(2))
    with pytest.raises(InvalidInputError, match="planes"):
        write_image_planes(tmp_path / "x.tif", (3, 4, 5), np.uint16, planes)
    assert list(tmp_path.iterdir()) == []


def test_a_channels_last_image_is_written_to_ome_zarr_channels_first(tmp_path) -> None:
    """OME-Zarr orders axes time, channel, space: a decoded colour file (``ZYXC``) is written
    ``CZYX``, from regions given with integer, slice and partial indices."""
    vol = np.random.default_rng(4).integers(0, 4000, (3, 8, 9, 3)).astype(np.uint16)
    store = tmp_path / "c.ome.zarr"
    regions = [((0,), vol[0]), ((slice(1, 3), slice(0, 4)), vol[1:3, :4]),
               ((slice(1, 3), slice(4, 8), slice(None), slice(None)), vol[1:3, 4:])]  # fmt: skip
    write_ome_zarr(store, vol.shape, vol.dtype, regions, axes="ZYXC",
                   voxel_size=(2.0, 0.5, 0.5, 1.0), units=("µm", "µm", "µm", ""))  # fmt: skip
    arr, axes, voxel, _units = open_zarr_image(store)
    assert axes == "CZYX" and voxel == (1.0, 2.0, 0.5, 0.5)
    np.testing.assert_array_equal(arr[...], np.moveaxis(vol, -1, 0))


def test_ome_zarr_round_trip_and_compress_from_zarr(tmp_path) -> None:
    vol = _volume()
    store = tmp_path / "in.ome.zarr"
    write_ome_zarr(
        store,
        vol.shape,
        vol.dtype,
        [((slice(0, 6),), vol[:6]), ((slice(6, 12),), vol[6:])],
        axes="ZYX",
        voxel_size=(3.0, 0.25, 0.25),
        units=("µm", "µm", "µm"),
    )
    arr, axes, voxel, units = open_zarr_image(store)
    assert axes == "ZYX" and voxel == (3.0, 0.25, 0.25) and units == ("µm", "µm", "µm")
    np.testing.assert_array_equal(arr[...], vol)
    lazy = read_image(store, lazy=True)
    np.testing.assert_array_equal(lazy.data[2:4, 5:9], vol[2:4, 5:9])
    out = tmp_path / "z.sciz"
    assert main(["compress", str(store), "-o", str(out), "--ratio", "8", "--steps", "2"]) == 0
    assert open_sciz(out).voxel_size == (3.0, 0.25, 0.25)
