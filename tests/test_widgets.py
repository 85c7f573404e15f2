"""Tests of the napari widgets (pytest-qt + napari's ``make_napari_viewer`` fixture).

Run under a display, e.g. ``xvfb-run -a pytest tests/test_widgets.py`` (do not set
``QT_QPA_PLATFORM=offscreen``: napari's canvas needs OpenGL). The end-to-end tests fit a real
8x64x64 crop of the confocal nuclei stack on the CPU with a handful of steps.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_sciz._widgets import CompressWidget, DecodeRegionWidget  # noqa: E402
from napari_sciz._widgets._geometry import (  # noqa: E402
    RATIO_STOPS,
    bounds_to_slice,
    format_bytes,
    format_duration,
    nearest_ratio_index,
    region_placement,
)

SHARED_NUCLEI = Path(__file__).resolve().parents[2] / "shared" / "data" / "nbsd_cells3d_nuclei.tif"
HAS_CODEC = importlib.util.find_spec("napari_sciz.core.api") is not None
needs_codec = pytest.mark.skipif(not HAS_CODEC, reason="the codec (napari_sciz.core.api) is absent")

#: Steps of the small end-to-end fits (fast on a CPU, enough to get a real reconstruction).
STEPS = 25
SCALE = (2.0, 0.5, 0.5)
TRANSLATE = (5.0, 10.0, 20.0)


def _nuclei_crop() -> np.ndarray:
    """An 8x64x64 uint16 crop of real confocal nuclei (bundled sample, else the shared file)."""
    try:
        from napari_sciz._sample_data import load_sample

        stack = load_sample("cells3d_nuclei")
    except (ImportError, KeyError, FileNotFoundError, OSError):
        if not SHARED_NUCLEI.is_file():
            pytest.skip("no nuclei sample available")
        import tifffile

        stack = tifffile.imread(SHARED_NUCLEI)
    z0 = max(stack.shape[0] // 2 - 4, 0)
    y0 = max(stack.shape[1] // 2 - 32, 0)
    x0 = max(stack.shape[2] // 2 - 32, 0)
    return np.ascontiguousarray(stack[z0 : z0 + 8, y0 : y0 + 64, x0 : x0 + 64])


@pytest.fixture(autouse=True)
def _settings_dir(tmp_path, monkeypatch):
    """Keep the plugin's settings file out of the user's configuration."""
    monkeypatch.setenv("NAPARI_SCIZ_CONFIG_DIR", str(tmp_path / "config"))


@pytest.fixture
def notes():
    """Notifications shown during the test (napari's notification manager)."""
    from napari.utils.notifications import notification_manager

    received: list = []
    notification_manager.notification_ready.connect(received.append)
    yield received
    notification_manager.notification_ready.disconnect(received.append)


@pytest.fixture
def viewer_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = CompressWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Compress (INR)")
    pair = [viewer, widget]
    yield pair
    pair.clear()  # pytest keeps fixture values: drop them so napari's leak check passes


def _errors(notes) -> list[str]:
    return [str(n.message) for n in notes if str(n.severity).lower().endswith("error")]


# ---------------------------------------------------------------------------------- pure helpers
def test_ratio_stops_are_log_spaced_from_4_to_2048():
    assert RATIO_STOPS[0] == 4 and RATIO_STOPS[-1] == 2048
    steps = np.diff(np.log2(RATIO_STOPS))
    assert np.all(steps > 0) and steps.max() < 0.4
    assert RATIO_STOPS[nearest_ratio_index(64)] == 64
    assert RATIO_STOPS[nearest_ratio_index(1e9)] == 2048


def test_formatting():
    assert format_bytes(999) == "999 B"
    assert format_bytes(12_345) == "12.3 kB"
    assert format_bytes(4_560_000) == "4.56 MB"
    assert format_duration(42) == "42 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(3720) == "1 h 02 min"
    assert format_duration(None) == "?"


def test_bounds_to_slice_uses_voxel_footprints():
    assert bounds_to_slice(9.6, 20.4, 100) == slice(10, 21)
    assert bounds_to_slice(20.4, 9.6, 100) == slice(10, 21)
    assert bounds_to_slice(-5, 3.2, 8) == slice(0, 4)
    s = bounds_to_slice(50, 60, 8)
    assert s.stop - s.start == 0


def test_region_placement_pixel_centres():
    scale, translate = np.array([2.0, 0.5]), np.array([5.0, 10.0])
    start = np.array([3, 7])
    for s in (1, 2, 4):
        new_scale, new_translate = region_placement(start, [s, s], scale, translate)
        np.testing.assert_allclose(new_scale, scale / s)
        np.testing.assert_allclose(new_translate, translate + scale * (start - 0.5 + 0.5 / s))
        # sample j sits at voxel position start + (j + 0.5)/s - 0.5 of the source
        j = np.arange(2 * s)
        world = new_translate[1] + new_scale[1] * j
        voxel = start[1] + (j + 0.5) / s - 0.5
        np.testing.assert_allclose(world, translate[1] + scale[1] * voxel)


def test_importing_the_widgets_does_not_import_torch():
    code = (
        "import sys, napari_sciz, napari_sciz._widgets, napari_sciz._demo; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------------------------- UI only
def test_widget_controls(viewer_widget):
    viewer, widget = viewer_widget
    layer = viewer.add_image(np.zeros((4, 32, 32), np.uint16), name="stack")
    assert widget.selected_layer() is layer

    # ratio slider: 4x..2048x, predicted size = raw bytes / ratio
    widget.ratio_slider.setValue(widget.ratio_slider.minimum())
    assert widget.ratio == 4
    widget.ratio_slider.setValue(widget.ratio_slider.maximum())
    assert widget.ratio == 2048
    widget.set_ratio(16)
    assert widget.ratio == 16 and widget.ratio_label.text() == "16x"
    assert format_bytes(4 * 32 * 32 * 2 / 16) in widget.size_label.text()

    # guidance: every mode is enabled; the Labels picker only for segmentation guidance
    model = widget.guidance_combo.model()
    for i in (0, 1, 2):
        assert model.item(i).isEnabled()
        assert "not available" not in model.item(i).text()
    assert not widget.labels_combo.isEnabled()
    widget.guidance_combo.setCurrentIndex(widget.guidance_combo.findData("segmentation"))
    assert widget.labels_combo.isEnabled()
    assert widget.labels_combo.currentData() is None  # automatic (Otsu)
    labels = viewer.add_labels(np.zeros((4, 32, 32), np.uint8), name="cells")
    assert widget.labels_combo.findData(id(labels)) > 0
    # the Advanced section shows the weights of the chosen guidance only
    assert not widget.weight_groups["segmentation"].isHidden()
    assert widget.weight_groups["perceptual"].isHidden()
    assert widget.guidance_weights("segmentation") == {}
    widget.weight_spins["segmentation"]["side"].setValue(0.6)
    assert widget.guidance_weights("segmentation") == {"side": 0.6}
    widget.guidance_combo.setCurrentIndex(widget.guidance_combo.findData("perceptual"))
    assert not widget.labels_combo.isEnabled()
    assert widget.weight_groups["segmentation"].isHidden()
    assert not widget.weight_groups["perceptual"].isHidden()
    widget.guidance_combo.setCurrentIndex(0)
    assert all(group.isHidden() for group in widget.weight_groups.values())

    # effort presets -> budgets; custom budget
    for key, seconds in (("fast", 15), ("balanced", 60), ("best", 180)):
        widget.set_effort(key)
        assert widget.budget == seconds and not widget.budget_spin.isEnabled()
    widget.set_effort(42)
    assert widget.budget == 42 and widget.budget_spin.isEnabled()

    # the device list is filled lazily, with what really exists
    assert not widget.device_combo.populated
    widget.device_combo.populate()
    names = [widget.device_combo.itemData(i) for i in range(widget.device_combo.count())]
    assert names[0] == "auto" and "cpu" in names


def test_current_time_point_only(viewer_widget):
    viewer, widget = viewer_widget
    data = np.arange(3 * 2 * 4 * 8 * 8, dtype=np.uint16).reshape(3, 2, 4, 8, 8)
    layer = viewer.add_image(data, name="tczyx")
    assert widget.current_only_check.isEnabled()
    assert "time point" in widget.current_only_check.text()
    viewer.dims.set_current_step(0, 2)
    viewer.dims.set_current_step(1, 1)
    widget.current_only_check.setChecked(True)
    array, leading = widget._prepare_input(layer)
    assert leading == (2, 1)
    np.testing.assert_array_equal(array, data[2, 1])
    widget.current_only_check.setChecked(False)
    array, leading = widget._prepare_input(layer)
    assert leading == () and array.shape == data.shape


def test_single_time_point_results_sit_at_their_index(make_napari_viewer):
    from napari_sciz._widgets._viewer import placement_kwargs

    viewer = make_napari_viewer()
    layer = viewer.add_image(
        np.zeros((3, 2, 4, 8, 8), np.uint16), scale=(10, 1, 2, 0.5, 0.5), translate=(5, 0, 1, 2, 3)
    )
    kwargs = placement_kwargs(layer, leading=(2, 1))
    np.testing.assert_allclose(kwargs["scale"], layer.scale)
    np.testing.assert_allclose(kwargs["translate"], [25, 1, 1, 2, 3])
    recon = viewer.add_image(np.ones((1, 1, 4, 8, 8), np.float32), **kwargs)
    np.testing.assert_allclose(
        recon.data_to_world((0, 0, 0, 0, 0)), layer.data_to_world((2, 1, 0, 0, 0))
    )


def test_field_of_view_region(make_napari_viewer):
    from napari_sciz._widgets._viewer import camera, viewbox_size

    viewer = make_napari_viewer()
    src = viewer.add_image(
        np.zeros((6, 100, 120), np.uint16),
        name="compressed",
        scale=SCALE,
        translate=TRANSLATE,
        metadata={"sciz": {"role": "reconstruction"}, "sciz_bytes": b"not decoded here"},
    )
    region = DecodeRegionWidget(viewer)
    viewer.window.add_dock_widget(region, name="Decode region")
    region.region_combo.setCurrentIndex(region.region_combo.findData("__field_of_view__"))
    assert region.source_layer() is src and region.shapes_layer() is None
    viewer.dims.set_current_step(0, 3)
    cam = camera(viewer)
    cam.center = (cam.center[0], 30.0, 40.0)  # world (y, x) = voxel (40, 40)
    h, w = viewbox_size(viewer)
    cam.zoom = max(h, w) / 10.0  # the view spans at most 10 world units = 20 voxels
    request = region.region_request()
    z, y, x = request.roi
    assert z == slice(3, 4)
    half_y, half_x = h / cam.zoom, w / cam.zoom  # in voxels (scale 0.5): (h / 2 / zoom) / 0.5
    assert abs(y.start - (40 - half_y)) <= 1 and abs(y.stop - (40 + half_y)) <= 1.5
    assert abs(x.start - (40 - half_x)) <= 1 and abs(x.stop - (40 + half_x)) <= 1.5


def test_bad_inputs_are_notified(viewer_widget, notes):
    viewer, widget = viewer_widget
    thin = viewer.add_image(np.zeros((5, 1, 40), np.uint16), name="thin")
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(id(thin)))
    assert widget.start() is None
    errors = _errors(notes)
    assert any("thin" in e and "(5, 1, 40)" in e for e in errors)
    assert not widget.running and widget.start_button.isEnabled()


def test_save_without_result_is_notified(viewer_widget, notes, tmp_path):
    _viewer, widget = viewer_widget
    assert widget.save(tmp_path / "x.sciz") is None
    assert not (tmp_path / "x.sciz").exists()
    assert any("Nothing to save" in e for e in _errors(notes))


# ---------------------------------------------------------------------------------- with codec
@needs_codec
def test_compress_end_to_end(viewer_widget, qtbot, notes, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QMessageBox

    from napari_sciz._widgets._viewer import grid
    from napari_sciz.core.api import decompress

    viewer, widget = viewer_widget
    data = _nuclei_crop()
    src = viewer.add_image(data, name="nuclei", scale=SCALE, translate=TRANSLATE)
    widget.set_ratio(16)
    widget.steps_spin.setValue(STEPS)
    widget.device_combo.populate()
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    progress: list[int] = []
    widget.progress_bar.valueChanged.connect(progress.append)

    worker = widget.start()
    assert worker is not None and widget.running and not widget.start_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert not _errors(notes), _errors(notes)
    assert widget.result is not None and progress and progress[-1] == 1000

    # three layers side by side: original | reconstruction | delta, same world frame
    _, recon, delta = widget.result_layers
    names = [layer.name for layer in viewer.layers]
    assert names == ["nuclei", "nuclei sciz 16x", "nuclei delta 16x"]
    assert grid(viewer).enabled
    for layer in (recon, delta):
        np.testing.assert_allclose(layer.scale, SCALE)
        np.testing.assert_allclose(layer.translate, TRANSLATE)
        assert layer.data.shape == data.shape
    result = widget.result
    np.testing.assert_allclose(
        delta.data, data.astype(np.float32) - np.asarray(result.reconstruction, np.float32)
    )
    # a dark-centred diverging map, symmetric limits at the 99.5th percentile of |delta|
    dmax = float(np.percentile(np.abs(delta.data), 99.5)) or float(np.abs(delta.data).max())
    np.testing.assert_allclose(delta.contrast_limits, (-dmax, dmax), rtol=1e-5)
    assert delta.colormap.name == "sciz delta"
    np.testing.assert_allclose(delta.colormap.map(np.array([0.5]))[0, :3], 0.0, atol=1e-6)
    # every panel says what it is, on the canvas, in a font its longest name fits
    assert all(layer.name_overlay.visible for layer in (src, recon, delta))
    sizes = {layer.name_overlay.font_size for layer in (src, recon, delta)}
    assert len(sizes) == 1 and 7 <= sizes.pop() <= 12

    # linked contrast between original and reconstruction
    np.testing.assert_allclose(recon.contrast_limits, src.contrast_limits)
    src.contrast_limits = (100.0, 2000.0)
    np.testing.assert_allclose(recon.contrast_limits, (100.0, 2000.0))

    # metrics in the widget and in the layers' metadata
    info = recon.metadata["sciz"]
    for key in ("ratio", "nbytes", "psnr", "ssim", "max_error", "encode_seconds", "device"):
        assert key in info and delta.metadata["sciz"][key] == info[key]
    assert info["role"] == "reconstruction" and delta.metadata["sciz"]["role"] == "delta"
    assert info["ratio"] == pytest.approx(result.ratio) and info["target_ratio"] == 16
    assert recon.metadata["sciz_bytes"] == result.data
    assert info["psnr"] > 15
    for label in widget.metric_labels.values():
        assert label.text() != "-"
    assert "dB" in widget.metric_labels["psnr"].text()
    assert widget.metric_labels["max_error"].text() == str(int(result.max_error))  # (uint16)

    # the last ratio becomes the default of File > Save
    settings = pytest.importorskip("napari_sciz._settings")
    assert settings.get_default_ratio() == pytest.approx(16)

    # Save writes a readable file; overwriting asks first
    path = tmp_path / "nuclei.sciz"
    assert widget.save(path) == path and path.is_file()
    assert path.read_bytes() == result.data
    np.testing.assert_allclose(
        decompress(path), np.asarray(result.reconstruction), atol=1e-3 * dmax + 1e-3
    )
    answers = iter([QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes])
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: next(answers))
    path.write_bytes(b"old")
    assert widget.save(path) is None and path.read_bytes() == b"old"
    assert widget.save(path) == path and path.read_bytes() == result.data

    # never over the file the layer was read from; a failed save keeps the result to retry
    source = tmp_path / "source.sciz"
    source.write_bytes(b"the original")
    src.metadata["sciz_path"] = str(source)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    assert widget.save(source) is None and source.read_bytes() == b"the original"
    assert any("input file" in e for e in _errors(notes))
    assert widget.save(tmp_path / "nodir" / "x.sciz") is None
    assert any("no such folder" in e for e in _errors(notes))
    assert widget.save_button.isEnabled() and widget.result is result


@needs_codec
@pytest.mark.parametrize("guidance", ["segmentation", "perceptual"])
def test_guided_fit_shows_its_task_score(viewer_widget, qtbot, notes, guidance):
    viewer, widget = viewer_widget
    viewer.add_image(_nuclei_crop(), name="nuclei", scale=SCALE)
    widget.set_ratio(16)
    widget.steps_spin.setValue(STEPS)
    widget.guidance_combo.setCurrentIndex(widget.guidance_combo.findData(guidance))
    widget.device_combo.populate()
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert not _errors(notes), _errors(notes)
    text = widget.metric_labels["task"].text()
    task = widget.result_layers[1].metadata["sciz"]["task"]
    if guidance == "segmentation":
        assert text.startswith("object F1 ") and 0 <= task["object_f1"] <= 1
        assert task["objects"] > 0
    else:
        assert text.startswith("MS-SSIM ") and 0 < task["ms_ssim"] <= 1


@needs_codec
def test_cancel_stops_quickly_and_writes_nothing(
    viewer_widget, qtbot, notes, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    viewer, widget = viewer_widget
    viewer.add_image(_nuclei_crop(), name="nuclei")
    widget.set_effort(600)
    widget.device_combo.populate()
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    worker = widget.start()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.progress_bar.value() > 0, timeout=60_000)
    t0 = time.perf_counter()
    with qtbot.waitSignal(worker.finished, timeout=5_000):
        widget.cancel()
    elapsed = time.perf_counter() - t0
    print(f"cancel took {elapsed:.3f} s")
    assert elapsed < 2.0, f"cancel took {elapsed:.2f} s"
    assert widget.result is None and not widget.running
    assert [layer.name for layer in viewer.layers] == ["nuclei"]
    assert list(tmp_path.iterdir()) == [tmp_path / "config"] or not list(tmp_path.iterdir())
    assert not list(tmp_path.rglob("*.sciz"))
    assert not _errors(notes)
    assert any("cancelled" in str(n.message).lower() for n in notes)
    assert widget.start_button.isEnabled() and not widget.save_button.isEnabled()


@needs_codec
def test_codec_errors_are_notified(viewer_widget, qtbot, notes):
    viewer, widget = viewer_widget
    data = np.ones((4, 16, 16), np.float32)
    data[1, 2, 3] = np.nan
    viewer.add_image(data, name="with nan", contrast_limits=(0, 1))
    widget.steps_spin.setValue(5)
    widget.device_combo.populate()
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert widget.result is None
    assert _errors(notes), "no error notification"
    assert [layer.name for layer in viewer.layers] == ["with nan"]


@needs_codec
def test_segmentation_guidance_with_labels(viewer_widget, qtbot, notes):
    viewer, widget = viewer_widget
    data = np.zeros((2, 24, 24), np.uint16)
    data[:, 6:18, 6:18] = 1000
    image = viewer.add_image(data, name="blob")
    viewer.add_labels(np.zeros((2, 10, 10), np.uint8), name="wrong")
    viewer.add_labels(np.zeros(data.shape, np.uint8), name="unpainted")
    good = viewer.add_labels((data > 0).astype(np.uint8), name="mask")
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(id(image)))
    widget.guidance_combo.setCurrentIndex(widget.guidance_combo.findData("segmentation"))
    widget.set_ratio(4)
    widget.steps_spin.setValue(5)
    widget.device_combo.populate()
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    widget.labels_combo.setCurrentIndex(widget.labels_combo.findText("wrong"))
    assert widget.start() is None
    assert any("same shape" in e for e in _errors(notes))
    widget.labels_combo.setCurrentIndex(widget.labels_combo.findText("unpainted"))
    assert widget.start() is None
    assert any("marks no object" in e for e in _errors(notes))
    widget.labels_combo.setCurrentIndex(widget.labels_combo.findData(id(good)))
    widget.weight_spins["segmentation"]["boundary"].setValue(0.25)
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert widget.result is not None
    assert widget.result.header["guidance"] == "segmentation"
    assert widget.result.header["guidance_weights"] == {"boundary": 0.25}


@needs_codec
@pytest.mark.parametrize("mode", ["lossless", "bounded", "hybrid"])
def test_coding_modes(viewer_widget, qtbot, notes, mode):
    viewer, widget = viewer_widget
    data = _nuclei_crop()[:4]
    image = viewer.add_image(data, name="nuclei")
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(id(image)))
    widget.mode_combo.setCurrentIndex(widget.mode_combo.findData(mode))
    assert widget.guidance_combo.isEnabled() is (mode == "hybrid")
    assert widget.ratio_slider.isEnabled() is (mode == "hybrid")
    assert widget.max_error_spin.isEnabled() is (mode == "bounded")
    widget.max_error_spin.setValue(3)
    widget.set_ratio(16)
    widget.steps_spin.setValue(5)
    widget.device_combo.populate()
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert not _errors(notes)
    result = widget.result
    assert result is not None and result.header["mode"] == mode
    recon = np.asarray(result.reconstruction)
    if mode == "lossless":
        np.testing.assert_array_equal(recon, data)
        assert "lossless" in widget.metric_labels["ratio"].text()
    elif mode == "bounded":
        assert np.max(np.abs(recon.astype(np.int64) - data)) <= 3
    else:
        assert 0.98 * 16 <= result.ratio <= 1.1 * 16
    assert any(layer.name.startswith("nuclei sciz") for layer in viewer.layers)


@pytest.fixture(scope="module")
def compressed():
    """A real .sciz of the 8x64x64 crop (module-wide: fitted once)."""
    if not HAS_CODEC:
        pytest.skip("the codec (napari_sciz.core.api) is absent")
    from napari_sciz.core.api import compress

    data = _nuclei_crop()
    return data, compress(data, 16, steps=STEPS, device="cpu", seed=0)


@needs_codec
def test_region_decode_places_the_layer_exactly(make_napari_viewer, qtbot, compressed):
    from napari_sciz.core.api import decompress

    data, result = compressed
    viewer = make_napari_viewer()
    recon = viewer.add_image(
        np.asarray(result.reconstruction),
        name="nuclei sciz",
        scale=SCALE,
        translate=TRANSLATE,
        metadata={"sciz": {"role": "reconstruction"}, "sciz_bytes": result.data},
    )
    region = DecodeRegionWidget(viewer)
    viewer.window.add_dock_widget(region, name="Decode region")
    assert region.source_layer() is recon

    viewer.dims.set_current_step(0, 5)
    shapes = region.add_rectangle_layer()
    assert region.shapes_layer() is shapes
    # world rectangle y 14.2..20.9, x 25.6..36.1 = data y 8.4..21.8, x 11.2..32.2: voxels
    # whose footprint [i - 0.5, i + 0.5) meets it: y 8..22, x 11..32
    z = viewer.dims.point[0]
    corners = [[z, 14.2, 25.6], [z, 14.2, 36.1], [z, 20.9, 36.1], [z, 20.9, 25.6]]
    region.live_check.setChecked(False)
    np.testing.assert_allclose(shapes.scale, SCALE)  # the rectangle layer shares the frame
    shapes.add_rectangles(np.array([shapes.world_to_data(c) for c in corners]))
    for sampling, index in ((1, 0), (2, 1), (4, 2)):
        region.sampling_combo.setCurrentIndex(index)
        worker = region.decode()
        assert worker is not None
        qtbot.waitUntil(lambda: region.worker is None, timeout=60_000)
        roi = (slice(5, 6), slice(8, 23), slice(11, 33))
        assert region.last_request.roi == roi
        layers = [
            layer
            for layer in viewer.layers
            if isinstance(layer.metadata.get("sciz"), dict)
            and layer.metadata["sciz"].get("role") == "region"
        ]
        assert len(layers) == 1
        layer = layers[0]
        expected = decompress(result.data, roi=roi, scale=(1, sampling, sampling))
        np.testing.assert_array_equal(layer.data, expected)
        assert expected.shape == (1, 15 * sampling, 22 * sampling)
        factors = np.array([1, sampling, sampling])
        start = np.array([5, 8, 11])
        np.testing.assert_allclose(layer.scale, np.array(SCALE) / factors)
        np.testing.assert_allclose(
            layer.translate, np.array(TRANSLATE) + np.array(SCALE) * (start - 0.5 + 0.5 / factors)
        )
        if sampling == 1:  # native sampling reproduces the full decode
            np.testing.assert_allclose(
                layer.data.astype(float), decompress(result.data)[roi].astype(float), atol=1
            )

    # moving the rectangle re-decodes (debounced) with live updates on
    region.live_check.setChecked(True)
    region.sampling_combo.setCurrentIndex(0)
    qtbot.waitUntil(lambda: region.worker is None, timeout=60_000)
    moved = np.array(corners) + np.array([0.0, 2.0, 0.0])
    shapes.data = [np.array([shapes.world_to_data(c) for c in moved])]
    qtbot.waitUntil(
        lambda: (
            region.last_request is not None
            and region.last_request.roi == (slice(5, 6), slice(12, 27), slice(11, 33))
            and region.worker is None
        ),
        timeout=60_000,
    )


@needs_codec
def test_closing_napari_during_a_fit_does_not_hang(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = CompressWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Compress (INR)")
    viewer.add_image(_nuclei_crop(), name="nuclei")
    widget.set_effort(600)
    widget.device_combo.populate()
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    worker = widget.start()
    job = widget._job
    qtbot.waitUntil(lambda: widget.progress_bar.value() > 0, timeout=60_000)
    t0 = time.perf_counter()
    with qtbot.waitSignal(worker.finished, timeout=5_000):
        viewer.close()  # what closing the napari window does
    # closing napari itself takes a moment; the point is that it does not wait for the fit
    assert job.cancelled() and time.perf_counter() - t0 < 5.0


@needs_codec
def test_an_rgb_layer_compresses_and_shows_in_colour(viewer_widget, qtbot, notes):
    """An RGB layer is coded with its samples as channels; the reconstruction is an RGB layer
    in the source's frame and the delta one signed map (the mean over the samples)."""
    viewer, widget = viewer_widget
    y, x = np.mgrid[0:40, 0:48]
    rgb = np.stack([(y * 5) % 256, (x * 4) % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    image = viewer.add_image(rgb, rgb=True, name="photo", scale=(0.5, 0.5))
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(id(image)))
    widget.mode_combo.setCurrentIndex(widget.mode_combo.findData("lossless"))
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert not _errors(notes)
    result = widget.result
    assert result.header["channels_last"] and result.header["voxel_size"] == [1.0, 0.5, 0.5]
    src, recon, delta = widget.result_layers
    assert recon.rgb and recon.data.shape == rgb.shape
    np.testing.assert_array_equal(np.asarray(recon.data), rgb)
    assert not delta.rgb and delta.data.shape == (40, 48)
    assert tuple(recon.scale) == (0.5, 0.5) and tuple(delta.scale) == (0.5, 0.5)
    # its regions decode in colour too, sampled finely along Y and X only
    from napari_sciz.core.api import decompress

    region = widget.region
    assert region.source_layer() is recon
    region.live_check.setChecked(False)
    region.region_combo.setCurrentIndex(region.region_combo.findData("__field_of_view__"))
    region.sampling_combo.setCurrentIndex(1)
    assert region.decode() is not None
    qtbot.waitUntil(lambda: region.worker is None, timeout=60_000)
    request = region.last_request
    assert request.samples == 3 and request.roi[-1] == slice(0, 3)
    (layer,) = [x for x in viewer.layers if x.metadata.get("sciz", {}).get("role") == "region"]
    assert layer.rgb
    expected = decompress(result.data, roi=request.roi, scale=2)
    np.testing.assert_array_equal(layer.data, expected)
    rows = request.roi[0].stop - request.roi[0].start
    assert expected.shape[-1] == 3 and expected.shape[0] == 2 * rows


def test_a_boolean_mask_layer_is_coded_losslessly(viewer_widget, qtbot, notes):
    viewer, widget = viewer_widget
    mask = np.zeros((4, 32, 32), bool)
    mask[:, 5:20, 8:30] = True
    image = viewer.add_image(mask, name="mask")
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(id(image)))
    widget.set_ratio(16)
    widget.steps_spin.setValue(5)
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert not _errors(notes)
    assert widget.result.header["mode"] == "lossless"
    np.testing.assert_array_equal(np.asarray(widget.result.reconstruction), mask)
    assert any("boolean mask" in str(n.message) for n in notes)


def test_a_64_bit_integer_image_layer_is_coded_in_the_type_that_holds_it(
    viewer_widget, qtbot, notes
):
    """numpy's default integer (np.arange, many readers): coded losslessly narrowed, said."""
    viewer, widget = viewer_widget
    data = (np.arange(4 * 32 * 32).reshape(4, 32, 32) % 2000).astype(np.int64)
    image = viewer.add_image(data, name="counts")
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(id(image)))
    widget.mode_combo.setCurrentIndex(widget.mode_combo.findData("lossless"))
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert not _errors(notes)
    assert any("coded as uint16, which keeps every value" in str(n.message) for n in notes)
    np.testing.assert_array_equal(np.asarray(widget.result.reconstruction), data)


def test_a_labels_layer_is_coded_losslessly_and_comes_back_as_labels(
    viewer_widget, qtbot, notes, tmp_path
):
    """The picker lists Labels layers; one is coded losslessly whatever mode was chosen (the
    mode is locked to lossless while it is picked), shown as a Labels layer, and its saved
    file opens as one."""
    from napari.layers import Labels

    from napari_sciz._reader import read_sciz

    viewer, widget = viewer_widget
    z, y, x = np.indices((3, 30, 40))
    cells = (1 + (y // 10) * 4 + x // 10) * ((y % 10 > 1) & (x % 10 > 1))
    labels = (cells * (z < 2)).astype(np.int64)  # napari's default labels dtype
    image = viewer.add_image(labels.astype(np.float32), name="raw")
    layer = viewer.add_labels(labels, name="cells", scale=(2.0, 0.5, 0.5))
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(id(image)))
    widget.mode_combo.setCurrentIndex(widget.mode_combo.findData("hybrid"))
    index = widget.layer_combo.findData(id(layer))
    assert widget.layer_combo.itemText(index) == "cells (labels)"
    widget.layer_combo.setCurrentIndex(index)
    assert widget.mode == "lossless" and not widget.mode_combo.isEnabled()
    assert not widget.guidance_combo.isEnabled() and not widget.ratio_slider.isEnabled()
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert not _errors(notes)
    result = widget.result
    assert result.header["mode"] == "lossless" and result.header["layer_type"] == "labels"
    assert result.dtype == np.uint8  # narrowed from int64
    _src, recon, delta = widget.result_layers
    assert isinstance(recon, Labels) and tuple(recon.scale) == (2.0, 0.5, 0.5)
    np.testing.assert_array_equal(np.asarray(recon.data), labels)
    assert not np.asarray(delta.data).any()
    written = widget.save(tmp_path / "cells.sciz")
    ((data, _kwargs, kind),) = read_sciz(str(written))
    assert kind == "labels"
    np.testing.assert_array_equal(np.asarray(data), labels)
    widget.layer_combo.setCurrentIndex(widget.layer_combo.findData(id(image)))
    assert widget.mode_combo.isEnabled()


def test_panel_names_shrink_to_fit_their_panels() -> None:
    """Long image names get a smaller overlay font (down to 7 points), short ones 12."""
    from types import SimpleNamespace

    from napari_sciz._widgets._viewer import panel_font_size

    class Canvas:
        def viewbox_size(self, layers):  # noqa: ANN001, ANN202 - napari's signature
            return (400.0, 216.0)

    viewer = SimpleNamespace(canvas=Canvas(), layers=[])
    sizes = [panel_font_size(viewer, [SimpleNamespace(name="x" * n)]) for n in (8, 20, 30, 60)]
    assert sizes[0] == 12 and sizes[-1] == 7
    assert sizes == sorted(sizes, reverse=True) and 7 < sizes[2] < sizes[1] < 12
    assert panel_font_size(SimpleNamespace(layers=[]), [SimpleNamespace(name="x" * 8)]) == 12


def test_the_layers_axis_labels_tell_the_codec_its_axes(viewer_widget):
    """A layer labelled (t, y, x) is coded as a time-lapse (segmentation guidance then
    segments it frame by frame); napari's default labels say nothing."""
    viewer, widget = viewer_widget
    lapse = viewer.add_image(np.zeros((4, 16, 16), np.uint16), axis_labels=("t", "y", "x"))
    assert widget._compress_options(lapse, 3)["axes"] == "TYX"
    assert widget._compress_options(lapse, 2)["axes"] == "YX"  # (the current plane only)
    plain = viewer.add_image(np.zeros((4, 16, 16), np.uint16))
    assert "axes" not in widget._compress_options(plain, 3)
