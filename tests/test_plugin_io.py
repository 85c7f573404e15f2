"""napari contributions: lazy .sciz reader, .sciz writer, sample data, settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from napari_sciz import _settings
from napari_sciz._reader import LazySciZArray, _layer_data, napari_get_reader, read_sciz
from napari_sciz._sample_data import SAMPLES, cells3d_nuclei, ct_phantom, load_sample
from napari_sciz._writer import write_sciz
from napari_sciz.errors import SciZError


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never read or write the user's real napari-sciz settings."""
    folder = tmp_path / "config"
    monkeypatch.setenv("NAPARI_SCIZ_CONFIG_DIR", str(folder))
    return folder


class FakeReader:
    """Stand-in for SciZReader: serves a numpy array and records every index it is given."""

    def __init__(self, data: np.ndarray, **attrs: Any) -> None:
        self._data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.ndim = data.ndim
        self.keys: list[Any] = []
        self.axes = attrs.get("axes", "ZYX")
        self.voxel_size = attrs.get("voxel_size", (2.0, 0.5, 0.5))
        self.units = attrs.get("units", "micrometer")
        self.header = attrs.get("header", {"name": "fake", "value_range": [3, 250]})

    def __getitem__(self, key: Any) -> np.ndarray:
        self.keys.append(key)
        return self._data[key]


def _planes(keys: list[Any], axis: int = 0) -> set[int]:
    """The single index each key takes on ``axis``; fails if a key spans several planes."""
    planes = set()
    for key in keys:
        item = key[axis] if isinstance(key, tuple) else key
        if isinstance(item, slice):
            start, stop, _ = item.indices(10**9)
            assert stop - start == 1, f"key {key!r} decodes several planes"
            item = start
        assert isinstance(item, int), f"key {key!r} is not a single plane"
        planes.add(item)
    return planes


# --- reader: no codec needed -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "image.tif",
        "volume.npy",
        "archive.sciz.zip",
        "folder",
        Path("a.tif"),
        ["a.sciz", "b.tif"],
        [],
    ],
)
def test_get_reader_declines_other_paths(path: Any) -> None:
    assert napari_get_reader(path) is None


@pytest.mark.parametrize("path", ["a.sciz", "A.SCIZ", Path("x/y.sciz"), ["a.sciz", "b.sciz"]])
def test_get_reader_accepts_sciz(path: Any) -> None:
    assert napari_get_reader(path) is read_sciz


def test_layer_data_decodes_nothing_and_uses_header() -> None:
    data = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7)
    reader = FakeReader(data)
    array, kwargs, layer_type = _layer_data(Path("/tmp/stem.sciz"), reader)
    assert layer_type == "image"
    assert reader.keys == []  # opening decodes nothing
    assert isinstance(array, LazySciZArray)
    assert array.shape == data.shape and array.dtype == data.dtype and array.ndim == 3
    assert kwargs["name"] == "fake"
    assert kwargs["scale"] == [2.0, 0.5, 0.5]
    assert kwargs["contrast_limits"] == [3.0, 250.0]
    assert kwargs["units"] == ["micrometer"] * 3
    assert kwargs["axis_labels"] == ("z", "y", "x")
    assert kwargs["rgb"] is False
    assert kwargs["metadata"]["sciz_header"]["name"] == "fake"


def test_layer_data_fallbacks() -> None:
    """No name -> file stem; short voxel size is right-aligned; no value range -> middle plane."""
    data = np.arange(2 * 5 * 6 * 7, dtype=np.float32).reshape(2, 5, 6, 7)
    reader = FakeReader(
        data, axes=None, voxel_size=(0.5, 0.25, 0.25), units=("furlongish",), header={}
    )
    _, kwargs, _ = _layer_data(Path("/tmp/my_volume.sciz"), reader)
    assert kwargs["name"] == "my_volume"
    assert kwargs["scale"] == [1.0, 0.5, 0.25, 0.25]
    assert "units" not in kwargs  # unknown unit: shown without units rather than failing
    assert "axis_labels" not in kwargs
    middle = data[1, 2]
    assert kwargs["contrast_limits"] == [float(middle.min()), float(middle.max())]
    assert len(reader.keys) == 1  # only the middle plane was decoded


def test_lazy_array_indexing_and_cache() -> None:
    data = np.random.default_rng(0).integers(0, 1000, (4, 8, 9), dtype=np.uint16)
    reader = FakeReader(data)
    array = LazySciZArray(reader)
    np.testing.assert_array_equal(array[np.int64(2)], data[2])
    np.testing.assert_array_equal(array[1, 2:5, ::2], data[1, 2:5, ::2])
    n = len(reader.keys)
    np.testing.assert_array_equal(array[2], data[2])  # cached: no second decode
    assert len(reader.keys) == n
    assert reader.keys[0] == 2 and type(reader.keys[0]) is int  # numpy ints become ints
    np.testing.assert_array_equal(np.asarray(array), data)
    assert len(array) == 4 and array.size == data.size and array.nbytes == data.nbytes


def test_viewer_decodes_only_viewed_planes(make_napari_viewer) -> None:
    data = np.random.default_rng(1).integers(0, 4000, (12, 32, 40), dtype=np.uint16)
    reader = FakeReader(data, header={"name": "lazy", "value_range": [0, 4000]})
    viewer = make_napari_viewer()
    layer = viewer._add_layer_from_data(*_layer_data(Path("lazy.sciz"), reader))[0]
    assert isinstance(layer.data, LazySciZArray)
    assert tuple(layer.contrast_limits) == (0, 4000)
    shown = _planes(reader.keys)
    # the current plane (napari may also slice the layer once at its initial point, plane 0)
    assert viewer.dims.current_step[0] in shown
    assert len(shown) <= 2
    viewer.dims.set_current_step(0, 3)
    viewer.dims.set_current_step(0, 7)
    assert _planes(reader.keys) <= shown | {3, 7}
    np.testing.assert_array_equal(np.asarray(layer._slice.image.raw), data[7])


# --- sample data ---------------------------------------------------------------------------------


def test_sample_functions() -> None:
    (nuclei,) = cells3d_nuclei()
    (ct,) = ct_phantom()
    assert nuclei[0].shape == (40, 192, 192) and nuclei[0].dtype == np.uint16
    assert ct[0].shape == (16, 256, 256) and ct[0].dtype == np.uint16
    assert nuclei[1]["name"] == "cells3d nuclei" and nuclei[1]["scale"] == [0.29, 0.26, 0.26]
    assert ct[1]["name"] == "CT phantom"
    assert nuclei[2] == ct[2] == "image"
    assert int(ct[0].max()) == 1798
    assert set(SAMPLES) == {"cells3d_nuclei", "ct_phantom"}


def test_samples_open_in_napari(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    viewer.open_sample("napari-sciz", "cells3d_nuclei")
    viewer.open_sample("napari-sciz", "ct_phantom")
    names = [layer.name for layer in viewer.layers]
    assert names == ["cells3d nuclei", "CT phantom"]
    assert viewer.layers[0].data.shape == (40, 192, 192)
    np.testing.assert_allclose(viewer.layers[0].scale, [0.29, 0.26, 0.26])


# --- settings ------------------------------------------------------------------------------------


def test_settings_round_trip(_isolated_settings: Path) -> None:
    assert _settings.get_default_ratio() == 64.0
    _settings.set_default_ratio(16)
    assert _settings.get_default_ratio() == 16.0
    stored = json.loads((_isolated_settings / "settings.json").read_text())
    assert stored["default_ratio"] == 16.0
    for bad in (0.5, float("nan"), "x"):
        with pytest.raises(ValueError):
            _settings.set_default_ratio(bad)  # type: ignore[arg-type]
    (_isolated_settings / "settings.json").write_text("{not json")
    assert _settings.get_default_ratio() == 64.0


# --- with the real codec -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_volume() -> np.ndarray:
    """A real CT crop, small enough for a quick CPU fit."""
    return np.ascontiguousarray(load_sample("ct_phantom")[4:12, 64:128, 64:128])


@pytest.fixture(scope="module")
def sciz_file(tmp_path_factory: pytest.TempPathFactory, small_volume: np.ndarray) -> Path:
    from napari_sciz.core.api import compress

    path = tmp_path_factory.mktemp("sciz") / "phantom.sciz"
    result = compress(
        small_volume, ratio=8, steps=20, voxel_size=(2.0, 0.5, 0.5), name="phantom crop"
    )
    result.save(path)
    return path


def test_read_sciz_is_lazy(sciz_file: Path, small_volume: np.ndarray, monkeypatch) -> None:
    from napari_sciz.core.api import SciZReader

    calls: list[Any] = []
    original = SciZReader.__getitem__

    def spy(self: Any, key: Any) -> Any:
        calls.append(key)
        return original(self, key)

    monkeypatch.setattr(SciZReader, "__getitem__", spy)
    (layer_data,) = read_sciz(str(sciz_file))
    data, kwargs, layer_type = layer_data
    assert calls == []  # nothing decoded when opening
    assert layer_type == "image" and isinstance(data, LazySciZArray)
    assert data.shape == small_volume.shape and data.dtype == small_volume.dtype
    assert kwargs["name"] == "phantom crop"
    np.testing.assert_allclose(kwargs["scale"], [2.0, 0.5, 0.5])
    lo, hi = kwargs["contrast_limits"]
    assert lo == pytest.approx(float(small_volume.min()), abs=1)
    assert hi == pytest.approx(float(small_volume.max()), abs=1)

    plane = data[3]
    assert _planes(calls) == {3}
    assert plane.shape == small_volume.shape[1:]


def _settled(qtbot: Any, layer: Any) -> None:
    """Wait until the layer's background decodes are done and their redraws delivered."""
    loader = layer.data.loader
    qtbot.waitUntil(lambda: loader.pending() == 0, timeout=30_000)
    qtbot.wait(50)


def test_viewer_opens_sciz_lazily(
    make_napari_viewer, qtbot, sciz_file: Path, small_volume: np.ndarray, monkeypatch
) -> None:
    from napari_sciz.core.api import SciZReader, decompress

    calls: list[Any] = []
    original = SciZReader.__getitem__

    def spy(self: Any, key: Any) -> Any:
        calls.append(key)
        return original(self, key)

    monkeypatch.setattr(SciZReader, "__getitem__", spy)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(sciz_file), plugin="napari-sciz")
    assert isinstance(layer.data, LazySciZArray)
    assert layer.data.loader is not None  # bound to the layer: slices in the background
    _settled(qtbot, layer)
    z0 = viewer.dims.current_step[0]
    first = _planes(calls)
    # the plane shown, and its neighbours prefetched
    assert z0 in first and first <= set(range(z0 - 1, z0 + 3)) | {0}
    viewer.dims.set_current_step(0, 5)
    _settled(qtbot, layer)
    assert _planes(calls) <= first | set(range(3, 8))
    full = decompress(str(sciz_file))
    np.testing.assert_allclose(
        np.asarray(layer._slice.image.raw, dtype=np.float64), full[5].astype(np.float64), atol=1
    )
    # other callers still get decoded data at once, never a stand-in
    np.testing.assert_array_equal(layer.data[6], full[6])


def test_background_decoding_stops_with_the_layer(
    make_napari_viewer, qtbot, sciz_file: Path
) -> None:
    """A removed layer's worker thread ends; an array nobody holds stops its worker too."""
    import gc

    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(sciz_file), plugin="napari-sciz")
    _settled(qtbot, layer)
    array = layer.data
    thread = array.loader._thread
    viewer.layers.remove(layer)
    thread.join(timeout=10)
    assert not thread.is_alive() and array.loader is None
    assert array[2].shape == array.shape[1:]  # still decodes, now on the caller's thread

    lone = read_sciz(str(sciz_file))[0][0]
    lone.slice_in_background(lambda: None)
    thread = lone.loader._thread
    del lone
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_failed_background_decode_is_reported_on_the_main_thread(
    make_napari_viewer, qtbot, sciz_file: Path, monkeypatch
) -> None:
    import threading

    import napari.utils.notifications as notifications

    from napari_sciz.core.api import SciZReader
    from napari_sciz.errors import FormatError

    shown: list[tuple[str, bool]] = []
    monkeypatch.setattr(
        notifications,
        "show_error",
        lambda text: shown.append((text, threading.current_thread() is threading.main_thread())),
    )
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(sciz_file), plugin="napari-sciz")
    _settled(qtbot, layer)

    def broken(self: Any, key: Any) -> Any:
        raise FormatError("payload 3: CRC mismatch")

    monkeypatch.setattr(SciZReader, "__getitem__", broken)
    viewer.dims.set_current_step(0, layer.data.shape[0] - 1)
    qtbot.waitUntil(lambda: bool(shown), timeout=30_000)
    text, on_main = shown[0]
    assert on_main and "Cannot decode phantom crop" in text and "CRC mismatch" in text


def test_scrolling_never_blocks_the_main_thread(
    make_napari_viewer, qtbot, tmp_path: Path, monkeypatch
) -> None:
    """A plane takes 300 ms to decode here, yet the viewer keeps answering within 100 ms."""
    import time

    from qtpy.QtCore import QTimer

    from napari_sciz.core.api import SciZReader, compress, decompress

    volume = np.ascontiguousarray(load_sample("ct_phantom")[:12, :128, :128])
    path = tmp_path / "slow.sciz"
    compress(volume, ratio=16, steps=10).save(path)
    expected = decompress(str(path))
    original = SciZReader.__getitem__

    def slow(self: Any, key: Any) -> Any:
        time.sleep(0.3)  # a slow disk, a big block: what a decode may cost
        return original(self, key)

    monkeypatch.setattr(SciZReader, "__getitem__", slow)
    viewer = make_napari_viewer(show=True)
    (layer,) = viewer.open(str(path), plugin="napari-sciz")
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    qtbot.wait(50)
    for z in [*range(12), *range(10, 3, -1)]:
        viewer.dims.set_current_step(0, z)
        qtbot.wait(20)
    _settled(qtbot, layer)
    timer.stop()
    gaps = np.diff(ticks)
    print(f"main-thread ticks: {len(ticks)}, longest gap {gaps.max() * 1e3:.0f} ms")
    assert gaps.max() < 0.100, f"the main thread was blocked for {gaps.max() * 1e3:.0f} ms"
    # and the plane on screen is the decoded one
    np.testing.assert_array_equal(np.asarray(layer._slice.image.raw), expected[4])


def test_writer_round_trip(tmp_path: Path, small_volume: np.ndarray, monkeypatch) -> None:
    import napari_sciz.core.api as api

    used: dict[str, Any] = {}
    real_compress = api.compress

    def quick_compress(data: Any, ratio: float, **kwargs: Any) -> Any:
        used.update(kwargs, ratio=ratio)
        return real_compress(data, ratio, steps=20, **kwargs)

    monkeypatch.setattr(api, "compress", quick_compress)
    _settings.set_default_ratio(8)
    meta = {
        "name": "saved layer",
        "scale": [2.0, 0.5, 0.5],
        "units": ("micrometer",) * 3,
        "axis_labels": ("z", "y", "x"),
    }
    (written,) = write_sciz(str(tmp_path / "out"), small_volume, meta)
    assert written == str(tmp_path / "out.sciz") and Path(written).is_file()
    assert used["ratio"] == 8.0
    assert used["voxel_size"] == (2.0, 0.5, 0.5) and used["name"] == "saved layer"
    assert Path(written).stat().st_size <= small_volume.nbytes / 8

    reader = api.open_sciz(written)
    assert reader.shape == small_volume.shape and reader.dtype == small_volume.dtype
    assert reader.header.get("name") == "saved layer"
    np.testing.assert_allclose(reader.voxel_size, [2.0, 0.5, 0.5])
    assert tuple(reader.units) == ("micrometer",) * 3
    assert reader.axes == "ZYX"


def test_an_rgb_layer_saves_and_opens_as_an_rgb_layer(tmp_path: Path, monkeypatch) -> None:
    """File > Save of an RGB layer codes its samples as channels (napari's scale covers Y and
    X only) and the file opens as an RGB layer with the same calibration."""
    import napari_sciz.core.api as api

    real_compress = api.compress

    def lossless(data: Any, ratio: float, **kwargs: Any) -> Any:
        return real_compress(data, mode="lossless", **kwargs)

    monkeypatch.setattr(api, "compress", lossless)
    y, x = np.mgrid[0:40, 0:36]
    rgb = np.stack([(y * 5) % 256, (x * 7) % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    meta = {"name": "photo", "rgb": True, "scale": [2.0, 0.5], "axis_labels": ("y", "x")}
    (written,) = write_sciz(str(tmp_path / "photo.sciz"), rgb, meta)
    reader = api.open_sciz(written)
    assert reader.channels_last and reader.shape == (40, 36, 3) and reader.axes == "YXC"
    assert np.array_equal(np.asarray(reader), rgb)
    array, kwargs, _ = _layer_data(Path(written), reader)
    assert kwargs["rgb"] is True and array.shape == (40, 36, 3)
    assert kwargs["scale"] == [2.0, 0.5] and kwargs["axis_labels"] == ("y", "x")
    assert kwargs["contrast_limits"] == [0.0, 255.0]
    assert np.array_equal(array[5], rgb[5])


def test_a_labels_layer_saves_losslessly_and_opens_as_labels(tmp_path: Path) -> None:
    """File > Save of a labels layer (napari's int64) codes it losslessly as label blocks in
    the smallest integer type that holds it; the file opens as a labels layer again."""
    import napari_sciz.core.api as api
    from napari_sciz._writer import write_sciz_labels
    from napari_sciz.core.lossless import labelblock

    z, y, x = np.mgrid[:4, :40, :48]
    seeds = np.random.default_rng(4).random((20, 3)) * [4, 40, 48]
    dist = ((np.stack([z, y, x], -1)[..., None, :] - seeds) ** 2).sum(-1)
    labels = (dist.argmin(axis=-1) + 300).astype(np.int64)
    meta = {"name": "cells", "scale": [2.0, 0.5, 0.5], "axis_labels": ("z", "y", "x")}
    (written,) = write_sciz_labels(str(tmp_path / "cells"), labels, meta)
    assert written.endswith("cells.sciz")
    reader = api.open_sciz(written)
    assert reader.header["layer_type"] == "labels" and reader.header["mode"] == "lossless"
    assert reader.dtype == np.uint16 and np.array_equal(np.asarray(reader), labels)
    assert labelblock.is_label_block(reader._file.payload(0))
    assert Path(written).stat().st_size * 50 < labels.nbytes
    array, kwargs, layer_type = _layer_data(Path(written), reader)
    assert layer_type == "labels" and "contrast_limits" not in kwargs and "rgb" not in kwargs
    assert kwargs["scale"] == [2.0, 0.5, 0.5] and kwargs["name"] == "cells"
    assert np.array_equal(array[2], labels[2])
    with pytest.raises(SciZError, match="32-bit"):
        write_sciz_labels(str(tmp_path / "big"), labels + 2**40, meta)


def test_writer_default_ratio_is_64(tmp_path: Path, monkeypatch) -> None:
    import napari_sciz.core.api as api

    seen: list[float] = []

    class Result:
        def save(self, path: Any, force: bool = False, inputs: Any = ()) -> None:
            Path(path).write_bytes(b"stub")

    def fake_compress(data: Any, ratio: float, **kwargs: Any) -> Result:
        seen.append(ratio)
        return Result()

    monkeypatch.setattr(api, "compress", fake_compress)
    write_sciz(str(tmp_path / "x.sciz"), np.zeros((4, 4, 4), np.uint16), {"name": "x"})
    assert seen == [64.0]


def test_writer_refuses_the_layers_own_file_and_missing_folders_before_fitting(
    tmp_path: Path, monkeypatch
) -> None:
    import napari_sciz.core.api as api
    from napari_sciz.errors import OutputExistsError, OutputFolderError

    def no_fit(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the fit started before the output was checked")

    monkeypatch.setattr(api, "compress", no_fit)
    source = tmp_path / "opened.sciz"
    source.write_bytes(b"the layer's own file")
    data = np.zeros((4, 4, 4), np.uint16)
    for metadata in ({"sciz_path": str(source)}, {"sciz": {"path": str(source)}}):
        with pytest.raises(OutputExistsError, match="input file"):
            write_sciz(str(source), data, {"name": "x", "metadata": metadata})
    assert source.read_bytes() == b"the layer's own file"
    with pytest.raises(OutputFolderError, match="no such folder"):
        write_sciz(str(tmp_path / "nodir" / "x.sciz"), data, {"name": "x"})


def test_save_layer_from_napari(
    make_napari_viewer, tmp_path: Path, small_volume: np.ndarray, monkeypatch
) -> None:
    import napari_sciz.core.api as api

    real_compress = api.compress
    monkeypatch.setattr(
        api, "compress", lambda data, ratio, **kw: real_compress(data, ratio, steps=20, **kw)
    )
    _settings.set_default_ratio(8)
    viewer = make_napari_viewer()
    viewer.add_image(small_volume, name="from napari", scale=(2.0, 0.5, 0.5))
    path = tmp_path / "saved.sciz"
    viewer.layers.save(str(path), selected=False, plugin="napari-sciz")
    assert path.is_file()
    viewer.layers.clear()
    (layer,) = viewer.open(str(path), plugin="napari-sciz")
    assert isinstance(layer.data, LazySciZArray)
    assert layer.name == "from napari"
    assert layer.data.shape == small_volume.shape
    np.testing.assert_allclose(layer.scale, [2.0, 0.5, 0.5])


def test_open_file_replaced_while_open_keeps_decoding_what_was_opened(
    sciz_file: Path, tmp_path: Path, small_volume: np.ndarray
) -> None:
    import shutil

    from napari_sciz.core.api import compress, decompress
    from napari_sciz.io import write_bytes_atomic

    path = tmp_path / "live.sciz"
    shutil.copyfile(sciz_file, path)
    expected = decompress(str(path))
    (layer_data,) = read_sciz(str(path))
    lazy = layer_data[0]
    np.testing.assert_array_equal(np.asarray(lazy[0]), expected[0])
    replacement = compress(small_volume[::-1].copy(), ratio=8, mode="lossless")
    write_bytes_atomic(path, replacement.data, force=True)  # e.g. another `sciz compress --force`
    # the open layer reads the file it opened (its descriptor), not half of each
    for z in range(small_volume.shape[0]):
        np.testing.assert_array_equal(np.asarray(lazy[z]), expected[z])
    np.testing.assert_array_equal(decompress(str(path)), small_volume[::-1])
