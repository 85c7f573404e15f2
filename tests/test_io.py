"""Tests of napari_sciz.io: read_image / write_image / atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_sciz.errors import InvalidInputError, OutputExistsError
from napari_sciz.io import (
    ImageData,
    atomic_write,
    default_axes,
    read_image,
    write_bytes_atomic,
    write_image,
)
from napari_sciz.io import image as image_mod
from napari_sciz.io import writing as writing_mod

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _real(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real data {name} not available")
    return path


def _no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------
# reading real files
# ---------------------------------------------------------------------------------------------


def test_read_real_multipage_tiff() -> None:
    img = read_image(_real("stardist_img3d.tif"))
    assert isinstance(img, ImageData)
    assert img.data.shape == (31, 61, 57) and img.data.dtype == np.uint16
    assert img.axes == "ZYX"
    assert img.voxel_size is None and img.units is None
    assert img.name == "stardist_img3d"


def test_read_real_imagej_tiff_with_calibration() -> None:
    img = read_image(_real("bbbc034_AICS_12_134_C0.tif"))
    assert img.axes == "YX" and img.data.shape == (1024, 1024)
    assert img.units == ("µm", "µm")
    assert img.voxel_size == pytest.approx((0.065, 0.065), rel=1e-6)
    snow = read_image(_real("spam_snow_xct.tif"))
    assert snow.axes == "ZYX" and snow.data.shape == (100, 100, 100)


def test_default_axes() -> None:
    assert [default_axes(n) for n in range(7)] == [
        "",
        "X",
        "YX",
        "ZYX",
        "CZYX",
        "TCZYX",
        "QTCZYX",
    ]


# ---------------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------------

DTYPES = ["uint8", "int8", "uint16", "int16", "float16", "float32", "float64", "uint32", "int32"]


@pytest.mark.parametrize("ext", [".tif", ".ome.tif", ".npy"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_zyx(tmp_path: Path, ext: str, dtype: str) -> None:
    rng = np.random.default_rng(0)
    data = (rng.random((4, 9, 7)) * 200).astype(dtype)
    if ext == ".ome.tif" and dtype == "float16":  # OME-XML has no half-float pixel type
        with pytest.raises(InvalidInputError, match="OME-TIFF cannot hold float16"):
            write_image(tmp_path / f"vol{ext}", data)
        assert not list(tmp_path.iterdir())
        return
    out = write_image(
        tmp_path / f"vol{ext}", data, voxel_size=(2.0, 0.25, 0.5), units=("µm", "µm", "µm")
    )
    assert out == tmp_path / f"vol{ext}"
    img = read_image(out)
    np.testing.assert_array_equal(img.data, data)
    assert img.data.dtype == data.dtype
    assert img.axes == "ZYX"
    assert img.name == "vol"
    if ext == ".npy":
        assert img.voxel_size is None
    else:
        assert img.voxel_size == pytest.approx((2.0, 0.25, 0.5))
        assert img.units == ("µm", "µm", "µm")
    assert _no_temp_files(tmp_path)


@pytest.mark.parametrize("ext", [".tif", ".ome.tiff"])
@pytest.mark.parametrize(
    ("axes", "shape", "voxel", "units"),
    [
        ("YX", (12, 10), (0.1, 0.2), ("nm", "nm")),
        ("TYX", (3, 8, 8), (1.5, 0.3, 0.3), ("s", "µm", "µm")),
        ("CZYX", (2, 3, 8, 8), (1.0, 4.0, 0.5, 0.5), ("", "µm", "µm", "µm")),
        ("TZCYX", (2, 3, 2, 8, 8), (10.0, 2.0, 1.0, 0.5, 0.5), ("s", "µm", "", "µm", "µm")),
    ],
)
def test_round_trip_axes_and_calibration(
    tmp_path: Path,
    ext: str,
    axes: str,
    shape: tuple[int, ...],
    voxel: tuple[float, ...],
    units: tuple[str, ...],
) -> None:
    data = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    out = write_image(tmp_path / f"a{ext}", data, axes=axes, voxel_size=voxel, units=units)
    img = read_image(out)
    np.testing.assert_array_equal(img.data, data)
    assert img.axes == axes
    assert img.voxel_size == pytest.approx(voxel)
    assert img.units == units


def test_tif_is_imagej_when_possible(tmp_path: Path) -> None:
    data = np.zeros((3, 8, 8), np.uint16)
    out = write_image(tmp_path / "ij.tif", data, voxel_size=(2.0, 0.5, 0.5), units=["um"] * 3)
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["spacing"] == 2.0
        assert tif.imagej_metadata["unit"] == "micron"
    # not representable in ImageJ: float64, CZYX order -> plain TIFF with JSON description
    out2 = write_image(tmp_path / "plain.tif", data.astype(np.float64), voxel_size=(2, 0.5, 0.5))
    with tifffile.TiffFile(out2) as tif:
        assert not tif.is_imagej
        assert tif.shaped_metadata[0]["axes"] == "ZYX"
    img = read_image(out2)
    assert img.voxel_size == (2.0, 0.5, 0.5) and img.units == ("", "", "")


def test_plain_tiff_gets_resolution_in_cm(tmp_path: Path) -> None:
    data = np.zeros((2, 4, 8, 8), np.float64)
    out = write_image(
        tmp_path / "p.tif", data, voxel_size=(1, 1, 0.5, 0.25), units=("", "µm", "µm", "µm")
    )
    with tifffile.TiffFile(out) as tif:
        page = tif.pages[0]
        assert page.tags["ResolutionUnit"].value == 3
        num, den = page.tags["XResolution"].value
        assert num / den == pytest.approx(1e4 / 0.25)


def test_read_plain_resolution_tags(tmp_path: Path) -> None:
    path = tmp_path / "res.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8), resolution=(2e4, 1e4), resolutionunit=3)
    img = read_image(path)
    assert img.voxel_size == pytest.approx((1.0, 0.5))  # Y, X in µm
    assert img.units == ("µm", "µm")
    # inch resolution (dpi) is display information, not calibration
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8), resolution=(72, 72), resolutionunit=2)
    assert read_image(path).voxel_size is None


def test_singleton_axes_are_squeezed(tmp_path: Path) -> None:
    data = np.arange(3 * 8 * 8, dtype=np.uint16).reshape(1, 3, 1, 8, 8)
    path = tmp_path / "s.ome.tif"
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={"axes": "TZCYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 3},
    )
    img = read_image(path)
    assert img.axes == "ZYX" and img.data.shape == (3, 8, 8)
    assert img.voxel_size == (3.0, 0.5, 0.5)
    np.testing.assert_array_equal(img.data, data.reshape(3, 8, 8))
    # a single-pixel image keeps Y and X
    tifffile.imwrite(tmp_path / "px.tif", np.ones((1, 1), np.uint8))
    one = read_image(tmp_path / "px.tif")
    assert one.axes == "YX" and one.data.shape == (1, 1)


def test_npy_keeps_its_shape(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((1, 5, 6), np.float32))
    img = read_image(tmp_path / "a.npy")
    assert img.data.shape == (1, 5, 6) and img.axes == "ZYX"


@pytest.mark.parametrize("lazy", [False, True])
def test_rgb_samples_become_channels_where_they_are(tmp_path: Path, lazy: bool) -> None:
    """RGB pixels (any software's) read as napari's RGB layers hold them, channels last;
    planar samples stay first."""
    rgb = np.random.default_rng(1).integers(0, 255, (2, 6, 7, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb[0], photometric="rgb")
    tifffile.imwrite(tmp_path / "rgbz.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb[0], -1, 0), photometric="rgb",
                     planarconfig="separate")  # fmt: skip
    for name, axes, expected in (("rgb", "YXC", rgb[0]), ("rgbz", "ZYXC", rgb),
                                 ("planar", "CYX", np.moveaxis(rgb[0], -1, 0))):  # fmt: skip
        img = read_image(tmp_path / f"{name}.tif", lazy=lazy)
        assert img.axes == axes
        np.testing.assert_array_equal(np.asarray(img.data), expected)


@pytest.mark.parametrize("ext", [".tif", ".ome.tif"])
@pytest.mark.parametrize("planes", [False, True])
def test_colour_samples_last_are_written_as_rgb_pixels(
    tmp_path: Path, ext: str, planes: bool
) -> None:
    """A channels-last colour array (a decoded YXC file) is one RGB(A) page per image, not a
    stack of images 3 or 4 pixels wide."""
    from napari_sciz.io.image import write_image_planes

    rng = np.random.default_rng(2)
    for samples, dtype in ((3, np.uint8), (4, np.uint16)):
        vol = rng.integers(0, 200, (2, 6, 7, samples)).astype(dtype)
        out = tmp_path / f"c{samples}{ext}"
        if planes:  # (as sciz decompress streams them: the last two axes, X and C)
            rows = iter(vol.reshape(-1, 7, samples))
            write_image_planes(out, vol.shape, vol.dtype, rows, axes="ZYXC")
        else:
            write_image(out, vol, axes="ZYXC")
        with tifffile.TiffFile(out) as tif:
            assert len(tif.pages) == 2 and tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
            np.testing.assert_array_equal(tif.asarray(), vol)


@pytest.mark.parametrize("planes", [False, True])
def test_other_channels_last_are_written_channels_first(tmp_path: Path, planes: bool) -> None:
    """Channels last that are not RGB(A) pixels (2 channels, float) become planes of a
    channel axis before Y, calibration moved with them."""
    from napari_sciz.io.image import write_image_planes

    vol = np.random.default_rng(3).random((3, 6, 7, 2)).astype(np.float32)
    meta = dict(axes="ZYXC", voxel_size=(2.0, 0.5, 0.5, 1.0), units=("µm", "µm", "µm", ""))
    out = tmp_path / "two.tif"
    if planes:
        write_image_planes(out, vol.shape, vol.dtype, iter(vol.reshape(-1, 7, 2)), **meta)
    else:
        write_image(out, vol, **meta)
    img = read_image(out)
    assert img.axes == "ZCYX" and img.voxel_size == (2.0, 1.0, 0.5, 0.5)
    np.testing.assert_array_equal(img.data, np.moveaxis(vol, -1, 1))


def test_ome_units_and_time(tmp_path: Path) -> None:
    path = tmp_path / "t.ome.tif"
    tifffile.imwrite(
        path,
        np.zeros((4, 8, 8), np.uint16),
        ome=True,
        metadata={
            "axes": "TYX",
            "PhysicalSizeX": 80,
            "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 80,
            "PhysicalSizeYUnit": "nm",
            "TimeIncrement": 250,
            "TimeIncrementUnit": "ms",
        },
    )
    img = read_image(path)
    assert img.axes == "TYX"
    assert img.voxel_size == (250.0, 80.0, 80.0)
    assert img.units == ("ms", "nm", "nm")


def test_bigtiff_for_large_arrays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writing_mod, "_BIGTIFF_THRESHOLD", 100)
    data = np.arange(2 * 16 * 16, dtype=np.uint16).reshape(2, 16, 16)
    for name in ("big.tif", "big.ome.tif"):
        out = write_image(tmp_path / name, data, voxel_size=(1, 2, 2), units=("µm",) * 3)
        with tifffile.TiffFile(out) as tif:
            assert tif.is_bigtiff
        img = read_image(out)
        np.testing.assert_array_equal(img.data, data)
        assert img.voxel_size == (1.0, 2.0, 2.0)


def test_large_files_are_memory_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_mod, "_MMAP_THRESHOLD", 0)
    data = np.arange(3 * 8 * 8, dtype=np.uint16).reshape(3, 8, 8)
    for name in ("m.npy", "m.tif"):
        write_image(tmp_path / name, data)
        img = read_image(tmp_path / name)
        assert isinstance(img.data, np.memmap)
        assert not img.data.flags.writeable
        np.testing.assert_array_equal(img.data, data)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no such file") as e:
        read_image(tmp_path / "missing.tif")
    _one_line(e)
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    with pytest.raises(InvalidInputError, match="unsupported file type '.png'") as e:
        read_image(tmp_path / "x.png")
    _one_line(e)
    (tmp_path / "bad.tif").write_bytes(b"this is not a tiff\n" * 10)
    with pytest.raises(InvalidInputError, match="cannot read bad.tif") as e:
        read_image(tmp_path / "bad.tif")
    _one_line(e)
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(InvalidInputError, match="cannot read bad.npy"):
        read_image(tmp_path / "bad.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInputError, match="cannot read obj.npy"):
        read_image(tmp_path / "obj.npy")
    np.save(tmp_path / "str.npy", np.array(["a", "b"]))
    with pytest.raises(InvalidInputError, match="unsupported data type"):
        read_image(tmp_path / "str.npy")
    (tmp_path / "dir.tif").mkdir()
    with pytest.raises(InvalidInputError, match="not a file"):
        read_image(tmp_path / "dir.tif")


def test_write_errors(tmp_path: Path) -> None:
    data = np.zeros((4, 4), np.uint8)
    with pytest.raises(InvalidInputError, match="unsupported file type '.jpg'"):
        write_image(tmp_path / "a.jpg", data)
    with pytest.raises(InvalidInputError, match="axes"):
        write_image(tmp_path / "a.tif", data, axes="ZYX")
    with pytest.raises(InvalidInputError, match="voxel_size"):
        write_image(tmp_path / "a.tif", data, voxel_size=(1.0,))
    with pytest.raises(InvalidInputError, match="positive"):
        write_image(tmp_path / "a.tif", data, voxel_size=(1.0, -1.0))
    with pytest.raises(InvalidInputError, match="cannot write data"):
        write_image(tmp_path / "a.npy", np.array(["x"]))
    with pytest.raises(OSError, match="no such folder"):
        write_image(tmp_path / "no" / "such" / "dir.tif", data)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["out.tif", "out.npy", "out.ome.tif"])
def test_existing_output_and_force(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    out.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="--force") as e:
        write_image(out, np.ones((4, 4), np.uint8))
    _one_line(e)
    assert out.read_bytes() == b"old"
    write_image(out, np.ones((4, 4), np.uint8), force=True)
    np.testing.assert_array_equal(read_image(out).data, np.ones((4, 4), np.uint8))
    # never overwrite an input, even with force (also through another spelling of the path)
    alias = tmp_path / "." / name
    with pytest.raises(OutputExistsError, match="input"):
        write_image(out, np.zeros((4, 4), np.uint8), force=True, inputs=[str(alias)])
    assert _no_temp_files(tmp_path)


# ---------------------------------------------------------------------------------------------
# atomicity
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt, OSError])
def test_failed_write_leaves_nothing(tmp_path: Path, exc_type: type[BaseException]) -> None:
    out = tmp_path / "a.npy"
    with pytest.raises(exc_type), atomic_write(out) as fh:
        fh.write(b"partial content")
        raise exc_type("boom")
    assert list(tmp_path.iterdir()) == []
    # an existing file is untouched by a failed forced write
    out.write_bytes(b"keep")
    with pytest.raises(exc_type), atomic_write(out, force=True) as fh:
        fh.write(b"partial")
        raise exc_type("boom")
    assert out.read_bytes() == b"keep"
    assert _no_temp_files(tmp_path)


def test_failed_tiff_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fh: object, *args: object, **kwargs: object) -> None:
        fh.write(b"II*\x00 partial")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", broken)
    with pytest.raises(OSError, match=r"cannot write .*a\.tif: No space left"):
        write_image(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_concurrently_created_output_is_not_clobbered(tmp_path: Path) -> None:
    out = tmp_path / "race.bin"
    with pytest.raises(OutputExistsError), atomic_write(out) as fh:
        fh.write(b"mine")
        out.write_bytes(b"theirs")  # appears while we are writing
    assert out.read_bytes() == b"theirs"
    assert _no_temp_files(tmp_path)


def test_write_bytes_atomic_and_permissions(tmp_path: Path) -> None:
    out = write_bytes_atomic(tmp_path / "f.sciz", b"abc")
    assert out.read_bytes() == b"abc"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    with pytest.raises(OutputExistsError):
        write_bytes_atomic(out, b"def")
    write_bytes_atomic(out, b"def", force=True)
    assert out.read_bytes() == b"def"
    with pytest.raises(OutputExistsError, match="directory"):
        write_bytes_atomic(tmp_path, b"x", force=True)
    # non-path inputs (e.g. bytes sources) are ignored
    write_bytes_atomic(out, b"ghi", force=True, inputs=[b"raw bytes", np.zeros(2)])
    assert out.read_bytes() == b"ghi"


def _two_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A multi-position OME-TIFF: two image series with their own shapes and pixel sizes."""
    first = np.arange(3 * 16 * 12, dtype=np.uint16).reshape(3, 16, 12)
    second = (np.arange(2 * 8 * 10, dtype=np.uint16).reshape(2, 8, 10) * 3).astype(np.uint16)
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(first, metadata={"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
        tif.write(second, metadata={"axes": "ZYX", "PhysicalSizeX": 2.0, "PhysicalSizeY": 2.0})
    return first, second


@pytest.mark.parametrize("lazy", [False, True])
def test_each_image_series_of_a_tiff_is_read_with_its_calibration(
    tmp_path: Path, lazy: bool
) -> None:
    path = tmp_path / "positions.ome.tif"
    first, second = _two_series(path)
    img0, img1 = read_image(path, lazy=lazy), read_image(path, lazy=lazy, series=1)
    assert (img0.series_count, img1.series_count) == (2, 2)
    np.testing.assert_array_equal(np.asarray(img0.data), first)
    np.testing.assert_array_equal(np.asarray(img1.data), second)
    assert img0.voxel_size[1:] == (0.5, 0.5) and img1.voxel_size[1:] == (2.0, 2.0)
    assert (img0.name, img1.name) == ("positions", "positions (series 1)")


def test_a_series_the_file_does_not_hold_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "positions.ome.tif"
    _two_series(path)
    with pytest.raises(InvalidInputError, match=r"holds 2 image series \(0 to 1\), not series 2"):
        read_image(path, series=2)
    tifffile.imwrite(tmp_path / "one.tif", np.zeros((4, 4), np.uint8))
    assert read_image(tmp_path / "one.tif").series_count == 1
    with pytest.raises(InvalidInputError, match=r"one image series \(0\), not series 1"):
        read_image(tmp_path / "one.tif", series=1)
    np.save(tmp_path / "a.npy", np.zeros((4, 4), np.uint8))
    with pytest.raises(InvalidInputError, match="single image"):
        read_image(tmp_path / "a.npy", series=1)
