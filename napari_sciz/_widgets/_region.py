"""Region decode on demand: decode a rectangle of a compressed layer from its ``.sciz`` bytes.

The region is decoded pixel-wise from the compressed stream with
:func:`napari_sciz.core.api.decompress` (``roi=`` and ``scale=``), never cropped from the
in-memory reconstruction, and shown as an image layer placed exactly over the region (see
:mod:`napari_sciz._widgets._geometry` for the pixel-centre convention).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..errors import InvalidInputError, SciZError
from ._geometry import bounds_to_slice
from ._region_source import (
    RegionRequest,
    _compressed_shape,
    _decode_job,
    _samples,
    compressed_source,
    sampling_scale,
)
from ._viewer import (
    camera,
    current_data_index,
    field_of_view_corners,
    placement_kwargs,
    to_world,
    world_to_layer,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["DecodeRegionWidget", "RegionRequest", "compressed_source", "sampling_scale"]

_FOV = "__field_of_view__"
_DEBOUNCE_MS = 400
_SAMPLING = (1, 2, 4)


class DecodeRegionWidget(QWidget):
    """Decode a region of a compressed layer from its ``.sciz`` bytes, optionally finer sampled.

    The region is a rectangle drawn in a Shapes layer (its selected shape, else the last one) or
    the current field of view, over the current slice or a z-range. The decoded samples are added
    as an image layer placed exactly over the region; moving or redrawing the rectangle updates it
    (debounced, decoded in a worker thread).

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose layers are used.
    parent : QWidget, optional
        Parent widget.
    """

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: Any = None
        self._pending = False
        self._watched_shapes: Any = None
        self._region_layers: dict[int, Any] = {}
        self.last_request: RegionRequest | None = None
        self._armed = False  # live updates start after the first decode or rectangle

        self._build_controls()
        self._lay_out()
        self._connect()
        self._refresh_lists()

    def _build_controls(self) -> None:
        """The pickers, the depth and sampling controls, the buttons and the status line."""
        self.source_combo = QComboBox()
        self.source_combo.setToolTip(
            "A layer made by the Compress widget (it keeps the .sciz bytes)"
        )
        self.region_combo = QComboBox()
        self.region_combo.setToolTip(
            "Rectangle: the selected (else the last) shape of a Shapes layer. "
            "Field of view: what the canvas shows now."
        )
        self.new_rect_button = QPushButton("Draw rectangle")
        self.new_rect_button.setToolTip(
            "Add a Shapes layer in rectangle mode: drag a box on the canvas"
        )
        self.depth_combo = QComboBox()
        self.depth_combo.addItems(["current slice", "z-range"])
        self.z0_spin = QSpinBox()
        self.z1_spin = QSpinBox()
        for spin, tip in ((self.z0_spin, "first slice"), (self.z1_spin, "last slice (included)")):
            spin.setToolTip(tip)
            spin.setEnabled(False)
        self.sampling_combo = QComboBox()
        for s in _SAMPLING:
            self.sampling_combo.addItem(f"{s}x" if s > 1 else "1x (native)", s)
        self.sampling_combo.setToolTip("Decode the INR on a finer grid than the original voxels")
        self.live_check = QCheckBox("Update when the region changes")
        self.live_check.setChecked(True)
        self.decode_button = QPushButton("Decode region")
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)

    def _lay_out(self) -> None:
        """Place the controls: a form (source, region, depth, sampling), then the buttons."""
        region_row = QHBoxLayout()
        region_row.addWidget(self.region_combo, 1)
        region_row.addWidget(self.new_rect_button)
        z_row = QHBoxLayout()
        z_row.addWidget(self.depth_combo, 1)
        z_row.addWidget(self.z0_spin)
        z_row.addWidget(QLabel("to"))
        z_row.addWidget(self.z1_spin)

        form = QFormLayout()
        form.addRow("Compressed", self.source_combo)
        form.addRow("Region", region_row)
        form.addRow("Depth", z_row)
        form.addRow("Sampling", self.sampling_combo)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self.live_check)
        layout.addWidget(self.decode_button)
        layout.addWidget(self.status_label)

    def _connect(self) -> None:
        """The debounce timer, the controls' signals and the viewer's layer, camera and slice
        events."""
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(_DEBOUNCE_MS)
        self._timer.timeout.connect(self.decode)

        self.decode_button.clicked.connect(self.decode)
        self.new_rect_button.clicked.connect(self.add_rectangle_layer)
        self.depth_combo.currentIndexChanged.connect(self._on_depth_mode)
        self.source_combo.currentIndexChanged.connect(self._on_source_changed)
        self.region_combo.currentIndexChanged.connect(self._on_region_changed)
        for signal in (
            self.z0_spin.valueChanged,
            self.z1_spin.valueChanged,
            self.sampling_combo.currentIndexChanged,
        ):
            signal.connect(self._schedule)

        layers_events = self.viewer.layers.events
        layers_events.inserted.connect(self._refresh_lists)
        layers_events.removed.connect(self._refresh_lists)
        cam = camera(self.viewer)
        cam.events.center.connect(self._on_camera_changed)
        cam.events.zoom.connect(self._on_camera_changed)
        self.viewer.dims.events.current_step.connect(self._on_slice_changed)
        self.destroyed.connect(self._timer.stop)

    # ------------------------------------------------------------------ lists
    def _refresh_lists(self, event: Any = None) -> None:
        """Refill the source and region pickers from the viewer's layers (keeps the selection)."""
        try:
            self._fill_sources()
            self._fill_regions()
        except RuntimeError:  # pragma: no cover - widget already deleted
            pass

    def _fill_sources(self, select: Any = None) -> None:
        current = select if select is not None else self.source_layer()
        self.source_combo.blockSignals(True)
        self.source_combo.clear()
        for layer in self.viewer.layers:
            if compressed_source(layer) is not None:
                self.source_combo.addItem(layer.name, id(layer))
        index = self.source_combo.findData(id(current)) if current is not None else -1
        if index < 0 and self.source_combo.count():
            index = self.source_combo.count() - 1
        self.source_combo.setCurrentIndex(index)
        self.source_combo.blockSignals(False)
        self._on_source_changed()

    def _fill_regions(self) -> None:
        from napari.layers import Shapes

        current = self.region_combo.currentData()
        self.region_combo.blockSignals(True)
        self.region_combo.clear()
        for layer in self.viewer.layers:
            if isinstance(layer, Shapes):
                self.region_combo.addItem(f"rectangle in {layer.name}", id(layer))
        self.region_combo.addItem("current field of view", _FOV)
        index = self.region_combo.findData(current) if current is not None else -1
        self.region_combo.setCurrentIndex(max(index, 0))
        self.region_combo.blockSignals(False)
        self._on_region_changed()

    def refresh_sources(self, select: Any = None) -> None:
        """Refill the list of compressed layers, selecting ``select`` when given."""
        self._fill_sources(select)

    def _layer_by_id(self, key: Any) -> Any:
        for layer in self.viewer.layers:
            if id(layer) == key:
                return layer
        return None

    def source_layer(self) -> Any:
        """The selected compressed layer (or None)."""
        return self._layer_by_id(self.source_combo.currentData())

    def shapes_layer(self) -> Any:
        """The selected Shapes layer (None for the field of view)."""
        key = self.region_combo.currentData()
        return None if key == _FOV else self._layer_by_id(key)

    # ------------------------------------------------------------------ events
    def _on_source_changed(self, *_: Any) -> None:
        layer = self.source_layer()
        k = len(_compressed_shape(layer)) if layer is not None else 0
        has_z = k >= 3
        self.depth_combo.setEnabled(has_z)
        if has_z:
            nz = _compressed_shape(layer)[k - 3]
            for spin in (self.z0_spin, self.z1_spin):
                spin.blockSignals(True)
                spin.setRange(0, max(nz - 1, 0))
                spin.blockSignals(False)
            if self.z1_spin.value() == 0:
                self.z1_spin.setValue(nz - 1)
        self._on_depth_mode()
        self.decode_button.setEnabled(layer is not None)

    def _on_depth_mode(self, *_: Any) -> None:
        z_range = self.depth_combo.isEnabled() and self.depth_combo.currentIndex() == 1
        self.z0_spin.setEnabled(z_range)
        self.z1_spin.setEnabled(z_range)
        self._schedule()

    def _on_region_changed(self, *_: Any) -> None:
        shapes = self.shapes_layer()
        if shapes is self._watched_shapes:
            return
        if self._watched_shapes is not None:
            try:
                self._watched_shapes.events.data.disconnect(self._on_shapes_data)
            except (TypeError, ValueError, RuntimeError):  # pragma: no cover
                pass
        self._watched_shapes = shapes
        if shapes is not None:
            shapes.events.data.connect(self._on_shapes_data)
        self._schedule()

    def _on_shapes_data(self, event: Any = None) -> None:
        action = str(getattr(event, "action", "") or "")
        if action in ("adding", "changing", "removing"):
            return
        self._armed = True
        self._schedule()

    def _on_camera_changed(self, event: Any = None) -> None:
        """The field of view follows the camera (panning / zooming)."""
        if self.shapes_layer() is None:
            self._schedule()

    def _on_slice_changed(self, event: Any = None) -> None:
        """The "current slice" follows the dims slider (not in z-range mode)."""
        if not (self.depth_combo.isEnabled() and self.depth_combo.currentIndex() == 1):
            self._schedule()

    def _schedule(self, *_: Any) -> None:
        """Decode again after a short pause when live updates are on and a region exists."""
        try:
            if not self.live_check.isChecked() or not self._armed:
                return
            self._timer.start()
        except RuntimeError:  # pragma: no cover - widget already deleted
            pass

    # ------------------------------------------------------------------ actions
    def add_rectangle_layer(self) -> Any:
        """Add (or select) a Shapes layer "sciz region" in rectangle mode (frame of the source)."""
        from napari.layers import Shapes

        layer = None
        for candidate in self.viewer.layers:
            if isinstance(candidate, Shapes) and candidate.name == "sciz region":
                layer = candidate
        if layer is None:
            # same world frame as the compressed layer: rectangles snap to its slices
            src = self.source_layer()
            frame: dict[str, Any] = {}
            if src is not None:
                frame = {"scale": src.scale, "translate": src.translate}
                units = getattr(src, "units", None)
                if units is not None:
                    frame["units"] = tuple(units)
            layer = self.viewer.add_shapes(
                ndim=src.ndim if src is not None else max(self.viewer.dims.ndim, 2),
                name="sciz region",
                edge_color="yellow",
                face_color="transparent",
                edge_width=1,
                **frame,
            )
        self.viewer.layers.selection.active = layer
        layer.mode = "add_rectangle"
        index = self.region_combo.findData(id(layer))
        if index >= 0:
            self.region_combo.setCurrentIndex(index)
        self._armed = True
        return layer

    def region_request(self) -> RegionRequest:
        """Work out the region (one slice per axis of the compressed array) from the UI state.

        Raises
        ------
        InvalidInputError
            Without a compressed layer or rectangle, in the 3D view, or for an empty region.
        """
        src = self.source_layer()
        if src is None:
            raise InvalidInputError("No compressed layer: compress an image first.")
        shape = _compressed_shape(src)
        k = len(shape)
        m = src.ndim - k
        viewer = self.viewer
        if viewer.dims.ndisplay != 2:
            raise InvalidInputError("Switch to the 2D view to decode a region.")
        world_ndim = viewer.dims.ndim
        displayed = [w - (world_ndim - src.ndim) - m for w in viewer.dims.displayed]
        if any(a < 0 or a >= k for a in displayed):
            raise InvalidInputError(
                f"The displayed axes are not axes of the compressed layer {src.name!r}."
            )

        shapes = self.shapes_layer()
        if shapes is None:
            corners = field_of_view_corners(self.viewer)
        else:
            if len(shapes.data) == 0:
                raise InvalidInputError(
                    f"Draw a rectangle in the Shapes layer {shapes.name!r} first."
                )
            selected = sorted(getattr(shapes, "selected_data", ()) or ())
            vertices = np.asarray(shapes.data[selected[-1] if selected else -1], dtype=float)
            corners = to_world(viewer, shapes, vertices)
        data = world_to_layer(src, corners)[:, m:]
        current = current_data_index(viewer, src)[m:]
        z_axis = k - 3 if k >= 3 else None
        roi: list[slice] = []
        for axis in range(k):
            if axis in displayed:
                sl = bounds_to_slice(data[:, axis].min(), data[:, axis].max(), shape[axis])
            elif axis == z_axis and self.z0_spin.isEnabled():
                z0, z1 = sorted((self.z0_spin.value(), self.z1_spin.value()))
                sl = slice(min(z0, shape[axis] - 1), min(z1 + 1, shape[axis]))
            else:
                i = int(current[axis])
                sl = slice(i, i + 1)
            if sl.stop <= sl.start:
                raise InvalidInputError("The region lies outside the compressed image.")
            roi.append(sl)
        samples = _samples(src)
        if samples:
            roi.append(slice(0, samples))
        scale = int(self.sampling_combo.currentData() or 1)
        return RegionRequest(tuple(roi), scale, m, samples)

    def decode(self) -> Any:
        """Decode the region in a worker thread (queued when a decode is already running).

        Returns
        -------
        napari.qt.threading.FunctionWorker or None
            The worker (None when queued or when the region is invalid: a notification says why).
        """
        from napari.qt.threading import create_worker
        from napari.utils.notifications import show_error

        if self.worker is not None:
            self._pending = True
            return None
        try:
            request = self.region_request()
        except SciZError as exc:
            self.status_label.setText(str(exc))
            if not self._timer_triggered():
                show_error(str(exc))
            return None
        src = self.source_layer()
        source = compressed_source(src)
        assert source is not None
        self.last_request = request
        self._armed = True
        self.status_label.setText(f"Decoding {request.roi_string} at {request.scale}x ...")
        worker = create_worker(
            _decode_job, source, request.roi, request.scale, request.samples, _start_thread=False
        )
        worker.returned.connect(
            lambda outcome, src=src, request=request: self._on_decoded(outcome, src, request)
        )
        worker.finished.connect(self._on_finished)
        self.worker = worker
        worker.start()
        return worker

    def _timer_triggered(self) -> bool:
        return self.sender() is self._timer

    def _on_finished(self) -> None:
        self.worker = None
        if self._pending:
            self._pending = False
            self._timer.start()

    def _on_decoded(self, outcome: tuple[str, Any], src: Any, request: RegionRequest) -> None:
        from napari.utils.notifications import show_error

        status, payload = outcome
        if status != "ok":
            message = f"Region decode failed: {payload}"
            self.status_label.setText(message)
            show_error(message)
            return
        if src not in self.viewer.layers:
            return
        out, seconds = payload
        rgb = bool(request.samples)
        spatial = request.roi[: len(request.roi) - rgb]  # (the colour samples are not placed)
        starts = [s.start for s in spatial]
        lengths = [s.stop - s.start for s in spatial]
        if out.ndim - rgb != len(lengths):
            show_error(f"Region decode returned {out.ndim} axes, expected {len(request.roi)}")
            return
        factors = [o / n for o, n in zip(out.shape, lengths, strict=False)]
        data = out.reshape((1,) * request.n_leading + out.shape)
        kwargs = placement_kwargs(
            src, leading=[0] * request.n_leading, start=starts, factors=factors
        )
        meta = {
            "role": "region",
            "source_layer": src.name,
            "roi": request.roi_string,
            "scale": request.scale,
            "decode_seconds": seconds,
        }
        layer = self._region_layers.get(id(src))
        if layer is not None and layer in self.viewer.layers:
            layer.data = data
            layer.scale = kwargs["scale"]
            layer.translate = kwargs["translate"]
            layer.metadata["sciz"] = meta
        else:
            colour = {"rgb": True} if rgb else {"colormap": src.colormap}
            layer = self.viewer.add_image(
                data,
                name=f"{src.name} region",
                contrast_limits=src.contrast_limits,
                blending="translucent",
                metadata={"sciz": meta},
                **colour,
                **kwargs,
            )
            try:
                from napari.experimental import link_layers

                link_layers([src, layer], ("contrast_limits",))
            except (ImportError, ValueError):  # pragma: no cover
                pass
            self._region_layers[id(src)] = layer
        self.status_label.setText(
            f"Decoded {request.roi_string} at {request.scale}x: "
            f"{'x'.join(map(str, out.shape))} samples in {seconds:.2f} s"
        )
