"""The "Compress" dock widget: fit an INR to an image layer in a worker thread, show the result.

torch is never imported by this module: the codec (and torch with it) is imported inside the
worker thread when a compression starts, and the device list imports torch the first time it is
opened.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ..core.colour import default_axes
from ..core.guidance import DEFAULT_WEIGHTS
from ..core.plan import EFFORT_PRESETS as _CORE_PRESETS
from ..core.plan import effort_budget
from ..errors import InvalidInputError, SciZError
from ._controls import (
    _GUIDANCE_TIP,
    _LABELS_MODE_TIP,
    _LABELS_TIP,
    _MODE_TIP,
    _NOT_YET,
    _WEIGHT_TIPS,
    AVAILABLE_GUIDANCE,
    CODING_MODES,
    GUIDANCE_MODES,
    DeviceCombo,
)
from ._geometry import (
    EFFORT_PRESETS,
    RATIO_STOPS,
    format_bytes,
    format_duration,
    nearest_ratio_index,
)
from ._job import CompressJob
from ._region import BYTES_KEY, DecodeRegionWidget
from ._results import (
    ResultPanel,
    add_result_layer,
    ask_save_path,
    is_sciz_layer,
    remove_sciz_layers,
    result_info,
    source_files,
)
from ._viewer import (
    current_data_index,
    delta_colormap,
    delta_limit,
    show_side_by_side,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["AVAILABLE_GUIDANCE", "CompressWidget"]

_DEFAULT_RATIO = 64


def _is_close(event: QEvent) -> bool:
    try:
        return event.type() == QEvent.Type.Close
    except RuntimeError:  # pragma: no cover - event already deleted
        return False


class CompressWidget(QWidget):
    """Compress an image layer with an implicit neural representation and inspect the result.

    Pick an image layer, a target ratio (4x-2048x, the predicted file size is shown), an effort
    (time budget) and a device, then Start. The fit runs in a worker thread with a progress bar
    (ETA and PSNR) and a live preview; Cancel stops it within about a second. The result is shown
    side by side: the original layer, the reconstruction and the difference (original minus
    reconstruction), with the metrics in the widget and in the new layers' ``metadata["sciz"]``.
    Save writes the ``.sciz`` file; the "Decode region" section decodes a region from the
    compressed bytes, optionally at a finer sampling.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer this widget works on.
    parent : QWidget, optional
        Parent widget.

    Attributes
    ----------
    result : CompressResult or None
        The last successful compression (its ``.data`` are the ``.sciz`` bytes).
    result_layers : tuple
        ``(source, reconstruction, delta)`` layers of the last result.
    region : DecodeRegionWidget
        The "Decode region" section.
    """

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.result: Any = None
        self.result_layers: tuple[Any, ...] = ()
        self.worker: Any = None
        self._job: CompressJob | None = None
        self._run: dict[str, Any] = {}
        self._mode_before_labels = "auto"  # (restored when an image is picked after labels)
        self._preview_layer: Any = None
        self._closing = False
        self._qt_window: Any = None

        self._build_ui()
        self._connect()
        self._refresh_layers()

    # ================================================================== UI
    def _build_ui(self) -> None:
        self._build_target()
        self._build_guidance()
        self._build_effort()
        self._build_run()
        self._lay_out()

    def _build_target(self) -> None:
        """The image, the ratio and the coding mode."""
        # --- input
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("The image layer to compress")
        self.current_only_check = QCheckBox("Current plane only")
        self.current_only_check.setToolTip(
            "Compress only what is shown at the current position of the leading axes "
            "(time point / channel; for a 3D stack: the current plane)"
        )

        # --- ratio: a log-scale slider over RATIO_STOPS
        self.ratio_slider = QSlider(Qt.Orientation.Horizontal)
        self.ratio_slider.setRange(0, len(RATIO_STOPS) - 1)
        self.ratio_slider.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.ratio_slider.setTickInterval(4)  # one tick per octave
        self.ratio_slider.setToolTip("Target compression ratio (logarithmic: 4x to 2048x)")
        self.ratio_label = QLabel()
        self.ratio_label.setMinimumWidth(48)
        self.size_label = QLabel()
        self.size_label.setToolTip("Raw size of the data / target ratio")

        # --- coding mode
        self.mode_combo = QComboBox()
        for mode, label in CODING_MODES:
            self.mode_combo.addItem(label, mode)
        self.mode_combo.setToolTip(_MODE_TIP)
        self.max_error_spin = QDoubleSpinBox()
        self.max_error_spin.setRange(0.0, 1e9)
        self.max_error_spin.setDecimals(4)
        self.max_error_spin.setValue(1.0)
        self.max_error_spin.setToolTip(
            "Largest absolute error of every decoded value (integers: rounded down; 0 = lossless)"
        )

    def _build_guidance(self) -> None:
        """Guidance and its labels (a mode not available would be shown disabled)."""
        self.guidance_combo = QComboBox()
        for mode in GUIDANCE_MODES:
            self.guidance_combo.addItem(mode, mode)
        model = self.guidance_combo.model()
        for i, mode in enumerate(GUIDANCE_MODES):
            if mode not in AVAILABLE_GUIDANCE:
                item = model.item(i)  # type: ignore[attr-defined]
                item.setEnabled(False)
                item.setToolTip(_NOT_YET)
                item.setText(f"{mode} (not available yet)")
        self.guidance_combo.setToolTip(_GUIDANCE_TIP)
        unavailable = [m for m in GUIDANCE_MODES if m not in AVAILABLE_GUIDANCE]
        self.guidance_hint = QLabel(
            f"<small><i>{' / '.join(unavailable)} guidance: not available yet</i></small>"
            if unavailable
            else ""
        )
        self.guidance_hint.setToolTip(_NOT_YET)
        self.guidance_hint.setEnabled(False)
        self.guidance_hint.setVisible(bool(unavailable))
        self.labels_combo = QComboBox()
        self.labels_combo.addItem("automatic (Otsu threshold)", None)
        self.labels_combo.setEnabled(False)
        self.labels_combo.setToolTip(_LABELS_TIP)
        self.guidance_combo.currentIndexChanged.connect(self._on_guidance_changed)

    def _build_effort(self) -> None:
        """Device, effort (time budget) and the advanced settings: steps, seed, weights."""
        self.device_combo = DeviceCombo()
        self.effort_combo = QComboBox()
        for key, seconds in EFFORT_PRESETS.items():
            per_mib = int(_CORE_PRESETS[key][1])
            self.effort_combo.addItem(f"{key} ({seconds} s, {per_mib} s/MiB)", seconds)
        self.effort_combo.addItem("custom time budget", 0)
        self.effort_combo.setCurrentIndex(1)
        self.effort_combo.setToolTip("How long the fit may run (a time budget)")
        self.budget_spin = QSpinBox()
        self.budget_spin.setRange(1, 24 * 3600)
        self.budget_spin.setSuffix(" s")
        self.budget_spin.setValue(EFFORT_PRESETS["balanced"])
        self.budget_spin.setEnabled(False)
        self.budget_spin.setToolTip("Time budget of the fit in seconds")

        # --- advanced
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(0, 10_000_000)
        self.steps_spin.setSpecialValueText("use the time budget")
        self.steps_spin.setToolTip("A fixed number of optimisation steps (overrides the budget)")
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setToolTip("Random seed of the fit (same seed, same input: same file)")
        # guidance weights: one group per mode, shown for the chosen guidance only
        self.weight_spins: dict[str, dict[str, QDoubleSpinBox]] = {}
        self.weight_groups: dict[str, QWidget] = {}
        for gmode, defaults in DEFAULT_WEIGHTS.items():
            if not defaults:
                continue
            group = QWidget()
            group_form = QFormLayout(group)
            group_form.setContentsMargins(0, 0, 0, 0)
            spins: dict[str, QDoubleSpinBox] = {}
            for key, value in defaults.items():
                spin = QDoubleSpinBox()
                spin.setDecimals(3)
                spin.setRange(0.0, 1000.0)
                spin.setSingleStep(0.05 if key != "band_radius" else 1.0)
                spin.setValue(float(value))
                spin.setToolTip(_WEIGHT_TIPS.get(key, key))
                group_form.addRow(f"{gmode} {key}", spin)
                spins[key] = spin
            group.setVisible(False)
            self.weight_spins[gmode] = spins
            self.weight_groups[gmode] = group

    def _build_run(self) -> None:
        """Start / Cancel, progress, status and the result box."""
        self.start_button = QPushButton("Start")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setFormat("idle")
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)

        # --- result
        self.results_panel = ResultPanel()
        self.metric_labels = self.results_panel.labels
        self.save_button = self.results_panel.save_button

    def _lay_out(self) -> None:
        ratio_row = QHBoxLayout()
        ratio_row.addWidget(self.ratio_slider, 1)
        ratio_row.addWidget(self.ratio_label)
        effort_row = QHBoxLayout()
        effort_row.addWidget(self.effort_combo, 1)
        effort_row.addWidget(self.budget_spin)

        form = QFormLayout()
        form.addRow("Image", self.layer_combo)
        form.addRow("", self.current_only_check)
        form.addRow("Mode", self.mode_combo)
        form.addRow("Max error", self.max_error_spin)
        form.addRow("Ratio", ratio_row)
        form.addRow("", self.size_label)
        self._form = form
        form.addRow("Guidance", self.guidance_combo)
        form.addRow("", self.guidance_hint)
        form.addRow("Labels", self.labels_combo)
        form.addRow("Device", self.device_combo)
        form.addRow("Effort", effort_row)

        self.advanced = QCollapsible("Advanced")
        advanced_body = QWidget()
        advanced_form = QFormLayout(advanced_body)
        advanced_form.setContentsMargins(0, 0, 0, 0)
        advanced_form.addRow("Steps", self.steps_spin)
        advanced_form.addRow("Seed", self.seed_spin)
        for group in self.weight_groups.values():
            advanced_form.addRow(group)
        self.advanced.addWidget(advanced_body)

        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)

        self.region = DecodeRegionWidget(self.viewer, parent=self)
        self.region_section = QCollapsible("Decode region")
        self.region_section.addWidget(self.region)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.advanced)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(self.results_panel)
        layout.addWidget(self.region_section)
        layout.addStretch(1)

        self.ratio_slider.setValue(nearest_ratio_index(_DEFAULT_RATIO))
        self._update_ratio_label()

    def _connect(self) -> None:
        self.ratio_slider.valueChanged.connect(self._update_ratio_label)
        self.layer_combo.currentIndexChanged.connect(self._on_layer_changed)
        self.current_only_check.toggled.connect(self._update_ratio_label)
        self.effort_combo.currentIndexChanged.connect(self._on_effort_changed)
        self.mode_combo.currentIndexChanged.connect(self._on_mode_changed)
        self._on_mode_changed()
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button.clicked.connect(lambda: self.save())
        events = self.viewer.layers.events
        events.inserted.connect(self._refresh_layers)
        events.removed.connect(self._refresh_layers)
        events.moved.connect(self._refresh_layers)
        self.viewer.layers.selection.events.active.connect(self._on_active_layer)

        qt_window = getattr(getattr(self.viewer, "window", None), "_qt_window", None)
        if isinstance(qt_window, QObject):
            self._qt_window = qt_window
            qt_window.installEventFilter(self)

    # ================================================================== state helpers
    @property
    def ratio(self) -> int:
        """The target ratio selected on the slider."""
        return RATIO_STOPS[self.ratio_slider.value()]

    def set_ratio(self, ratio: float) -> None:
        """Move the slider to the stop closest to ``ratio``."""
        self.ratio_slider.setValue(nearest_ratio_index(ratio))

    @property
    def budget(self) -> float:
        """The time budget in seconds (preset or custom)."""
        seconds = int(self.effort_combo.currentData() or 0)
        if seconds <= 0:
            return float(self.budget_spin.value())
        key = list(EFFORT_PRESETS)[self.effort_combo.currentIndex()]
        layer = self.selected_layer()
        nbytes = 0
        if layer is not None:  # (shape and dtype only: the data may be lazy)
            data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
            nbytes = math.prod(data.shape) * np.dtype(data.dtype).itemsize
        return effort_budget(key, nbytes)

    def set_effort(self, effort: str | float) -> None:
        """Select a preset (``"fast"``, ``"balanced"``, ``"best"``) or a budget in seconds."""
        if isinstance(effort, str):
            keys = list(EFFORT_PRESETS)
            if effort not in keys:
                raise ValueError(f"unknown effort {effort!r}; choose one of {keys}")
            self.effort_combo.setCurrentIndex(keys.index(effort))
        else:
            self.effort_combo.setCurrentIndex(self.effort_combo.count() - 1)
            self.budget_spin.setValue(max(1, int(round(effort))))

    def selected_layer(self) -> Any:
        """The image layer chosen in the picker (or None)."""
        key = self.layer_combo.currentData()
        for layer in self.viewer.layers:
            if id(layer) == key:
                return layer
        return None

    @property
    def running(self) -> bool:
        """True while a compression job runs."""
        return self._job is not None

    def _refresh_layers(self, event: Any = None) -> None:
        from napari.layers import Image, Labels

        try:
            current = self.selected_layer()
        except RuntimeError:  # pragma: no cover - widget deleted
            return
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        candidates = []
        for layer in self.viewer.layers:
            if not isinstance(layer, (Image, Labels)) or is_sciz_layer(layer):
                continue
            candidates.append(layer)
            text = f"{layer.name} (labels)" if isinstance(layer, Labels) else layer.name
            self.layer_combo.addItem(text, id(layer))
        index = self.layer_combo.findData(id(current)) if current is not None else -1
        # an image follows the active layer; a labels layer (often painted to guide the
        # segmentation of an image) is compressed only when picked here
        images = [layer for layer in candidates if not isinstance(layer, Labels)]
        if index < 0:
            active = self.viewer.layers.selection.active
            index = self.layer_combo.findData(id(active)) if active in images else -1
        if index < 0 and candidates:
            index = self.layer_combo.findData(id((images or candidates)[0]))
        self.layer_combo.setCurrentIndex(index)
        self.layer_combo.blockSignals(False)

        chosen = self.labels_combo.currentData()
        self.labels_combo.clear()
        self.labels_combo.addItem("automatic (Otsu threshold)", None)
        for layer in self.viewer.layers:
            if isinstance(layer, Labels):
                self.labels_combo.addItem(layer.name, id(layer))
        self.labels_combo.setCurrentIndex(max(self.labels_combo.findData(chosen), 0))
        self._on_layer_changed()

    @property
    def mode(self) -> str:
        """The coding mode chosen (``"auto"``, ``"lossy"``, ``"hybrid"``, ``"lossless"``,
        ``"bounded"``)."""
        return str(self.mode_combo.currentData() or "auto")

    def _on_mode_changed(self, *_: Any) -> None:
        """Show what the chosen mode uses: a ratio, guidance, an error bound."""
        mode = self.mode
        fitted = mode in ("auto", "lossy", "hybrid")
        self.ratio_slider.setEnabled(fitted)
        self.size_label.setEnabled(fitted)
        guided = mode in ("auto", "lossy", "hybrid")
        self.guidance_combo.setEnabled(guided)
        if not guided:
            self.guidance_combo.setCurrentIndex(0)
        self.max_error_spin.setEnabled(mode == "bounded")
        row_visible = getattr(self._form, "setRowVisible", None)
        if callable(row_visible):  # Qt >= 6.4
            row_visible(self.max_error_spin, mode == "bounded")
        else:
            self.max_error_spin.setVisible(mode == "bounded")
            label = self._form.labelForField(self.max_error_spin)
            if label is not None:
                label.setVisible(mode == "bounded")

    def _on_guidance_changed(self, *_: Any) -> None:
        """The Labels picker is used by segmentation guidance only; show that mode's weights."""
        guidance = self.guidance_combo.currentData()
        self.labels_combo.setEnabled(guidance == "segmentation")
        for gmode, group in self.weight_groups.items():
            group.setVisible(gmode == guidance)

    def guidance_weights(self, guidance: str) -> dict[str, float]:
        """The weights of ``guidance`` set in the Advanced section that differ from the defaults."""
        spins = self.weight_spins.get(guidance, {})
        defaults = DEFAULT_WEIGHTS.get(guidance, {})
        return {
            k: float(spin.value())
            for k, spin in spins.items()
            if abs(float(spin.value()) - float(defaults[k])) > 1e-9
        }

    def _labels_for(self, data: np.ndarray, leading: tuple[int, ...]) -> np.ndarray | None:
        """The chosen Labels layer's data matching ``data`` (None: automatic)."""
        wanted = self.labels_combo.currentData()
        if wanted is None:
            return None
        layer = next((la for la in self.viewer.layers if id(la) == wanted), None)
        if layer is None:
            raise InvalidInputError("The chosen Labels layer no longer exists; choose another.")
        labels = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        if leading and tuple(labels.shape) != tuple(data.shape):
            labels = labels[leading]
        labels = np.asarray(labels)
        if labels.shape != data.shape:
            raise InvalidInputError(
                f"Labels layer {layer.name!r} has shape {labels.shape}, but the image to "
                f"compress has shape {data.shape}: segmentation guidance needs labels of the "
                "same shape."
            )
        return labels

    def _on_active_layer(self, event: Any = None) -> None:
        layer = self.viewer.layers.selection.active
        if _is_labels(layer):  # (see _refresh_layers)
            return
        index = self.layer_combo.findData(id(layer)) if layer is not None else -1
        if index >= 0 and not self.running:
            self.layer_combo.setCurrentIndex(index)

    def _on_layer_changed(self, *_: Any) -> None:
        layer = self.selected_layer()
        ndim = self._layer_ndim(layer) if layer is not None else 0
        labels = _is_labels(layer)
        if labels and self.mode_combo.isEnabled():  # labels are coded exactly: a lossy label
            self._mode_before_labels = self.mode  # map is no longer the same segmentation
            self.mode_combo.setCurrentIndex(self.mode_combo.findData("lossless"))
        elif not labels and not self.mode_combo.isEnabled():  # the image's mode again
            self.mode_combo.setCurrentIndex(self.mode_combo.findData(self._mode_before_labels))
        self.mode_combo.setEnabled(not labels)
        self.mode_combo.setToolTip(_LABELS_MODE_TIP if labels else _MODE_TIP)
        if ndim >= 4:
            text, enabled = "Current time point / channel only", True
        elif ndim == 3:
            text, enabled = "Current plane only", True
        else:
            text, enabled = "Current plane only", False
        self.current_only_check.setText(text)
        self.current_only_check.setEnabled(enabled)
        if not enabled:
            self.current_only_check.setChecked(False)
        self.start_button.setEnabled(layer is not None and not self.running)
        self._update_ratio_label()

    def _on_effort_changed(self, *_: Any) -> None:
        seconds = int(self.effort_combo.currentData() or 0)
        self.budget_spin.setEnabled(seconds == 0)
        if seconds > 0:
            self.budget_spin.setValue(seconds)

    @staticmethod
    def _layer_ndim(layer: Any) -> int:
        """The layer's axes, an RGB(A) layer's colour samples not counted."""
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        return int(len(data.shape)) - bool(getattr(layer, "rgb", False))

    def _n_leading(self, layer: Any) -> int:
        """Number of leading axes fixed at the current position ("current ... only")."""
        if not self.current_only_check.isChecked():
            return 0
        ndim = self._layer_ndim(layer)
        return ndim - 3 if ndim >= 4 else (1 if ndim == 3 else 0)

    def _input_shape_dtype(self, layer: Any) -> tuple[tuple[int, ...], np.dtype]:
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        return tuple(int(n) for n in data.shape)[self._n_leading(layer) :], np.dtype(data.dtype)

    def _update_ratio_label(self, *_: Any) -> None:
        ratio = self.ratio
        self.ratio_label.setText(f"{ratio}x")
        layer = self.selected_layer()
        if layer is None:
            self.size_label.setText(f"file size = raw size / {ratio}")
            return
        shape, dtype = self._input_shape_dtype(layer)
        raw = float(np.prod(shape, dtype=float)) * dtype.itemsize
        self.size_label.setText(f"≈ {format_bytes(raw / ratio)}  (raw {format_bytes(raw)})")

    # ================================================================== running
    def _prepare_input(self, layer: Any) -> tuple[np.ndarray, tuple[int, ...]]:
        """The array to compress and the fixed leading indices; raises InvalidInputError."""
        if layer is None:
            raise InvalidInputError("Choose an image layer to compress.")
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        n_lead = self._n_leading(layer)
        leading: tuple[int, ...] = ()
        if n_lead:
            leading = tuple(int(i) for i in current_data_index(self.viewer, layer)[:n_lead])
            data = data[leading]
        array = np.asarray(data)
        if array.ndim < 2:
            raise InvalidInputError(
                f"Layer {layer.name!r} has {array.ndim} dimension(s): at least 2 (Y, X) are needed."
            )
        if min(array.shape[-2:]) < 2:
            raise InvalidInputError(
                f"Layer {layer.name!r} has shape {array.shape}: its last two axes (Y, X) must be "
                "at least 2 pixels. Is the axis order wrong (e.g. a 3D stack read as 2D, or a "
                "channel axis last)?"
            )
        if array.dtype.kind not in "biuf":
            raise InvalidInputError(f"Layer {layer.name!r} has unsupported dtype {array.dtype}.")
        if _is_labels(layer):
            from .._writer import narrow_labels

            array = narrow_labels(array)  # napari's int64 labels in the smallest type
        return array, leading

    def _compress_options(self, layer: Any, ndim: int) -> dict[str, Any]:
        steps = int(self.steps_spin.value())
        options: dict[str, Any] = {
            "device": str(self.device_combo.currentData() or "auto"),
            "steps": steps if steps > 0 else None,
            "budget": None if steps > 0 else self.budget,
            "seed": int(self.seed_spin.value()),
            "name": str(layer.name),
        }
        mode = "lossless" if _is_labels(layer) else self.mode
        options["mode"] = mode
        if mode == "bounded":
            options["max_error"] = float(self.max_error_spin.value())
        guidance = str(self.guidance_combo.currentData() or "none")
        if guidance not in AVAILABLE_GUIDANCE:  # pragma: no cover - every mode is available
            raise InvalidInputError(f"{guidance} guidance is not available yet.")
        if guidance != "none" and mode in ("auto", "lossy", "hybrid"):
            options["guidance"] = guidance
            weights = self.guidance_weights(guidance) if mode != "hybrid" else {}
            if weights:
                options["guidance_weights"] = weights
        # an RGB(A) layer's scale covers the axes before its colour samples, which the codec
        # takes as channels (its last axis)
        rgb = bool(getattr(layer, "rgb", False))
        scale = [float(s) for s in np.asarray(layer.scale)[-(ndim - rgb) :]] + [1.0] * rgb
        if any(s != 1.0 for s in scale):
            options["voxel_size"] = tuple(scale)
        if rgb:
            options["axes"] = default_axes(ndim)
        return options

    def start(self) -> Any:
        """Start compressing the selected layer in a worker thread.

        Returns
        -------
        napari.qt.threading.GeneratorWorker or None
            The worker, or None when the input was refused (a notification says why).
        """
        from napari.qt.threading import create_worker
        from napari.utils.notifications import show_error

        if self.running:
            return None
        layer = self.selected_layer()
        try:
            data, leading = self._prepare_input(layer)
            options = self._compress_options(layer, data.ndim)
            if options.get("guidance") == "segmentation":
                labels = self._labels_for(data, leading)
                if labels is not None:
                    options["labels"] = labels
        except SciZError as exc:
            show_error(str(exc))
            self.status_label.setText(str(exc))
            return None

        ratio = self.ratio
        self._remember_default_ratio(ratio)
        job = CompressJob(data, ratio, options)
        self._job = job
        self._run = {
            "layer": layer,
            "leading": leading,
            "ratio": ratio,
            "data": data,
            "labels": _is_labels(layer),
        }
        self._preview_layer = None

        worker = create_worker(job.run, _start_thread=False)
        job.worker = worker
        self.worker = worker
        worker.yielded.connect(self._on_yielded)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self.destroyed.connect(job.cancel_event.set)

        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.save_button.setEnabled(False)
        # "busy" until the first training step (loading torch, initialising the field)
        self.progress_bar.setRange(0, 0)
        self.progress_bar.setFormat("starting ...")
        steps = options["steps"]
        budget = f"{steps} steps" if steps else f"{options['budget']:.0f} s"
        mode = options.get("mode", "lossy")
        if mode in ("lossless", "bounded"):
            what = "losslessly" if mode == "lossless" else f"to |error| <= {options['max_error']:g}"
            self.status_label.setText(f"Compressing {layer.name!r} {what} ...")
        else:
            self.status_label.setText(f"Compressing {layer.name!r} to {ratio}x ({budget}) ...")
        worker.start()
        return worker

    @staticmethod
    def _remember_default_ratio(ratio: float) -> None:
        try:
            from .. import _settings  # type: ignore[attr-defined]
        except ImportError:
            return
        setter = getattr(_settings, "set_default_ratio", None)
        if callable(setter):
            try:
                setter(ratio)
            except Exception:  # noqa: BLE001 - a settings problem must not stop compression
                pass

    def cancel(self) -> None:
        """Ask the running compression to stop (within about a second; nothing is saved)."""
        job = self._job
        if job is None:
            return
        job.cancel_event.set()
        self.cancel_button.setEnabled(False)
        self.status_label.setText("Cancelling ...")
        self.progress_bar.setFormat("cancelling ...")

    def _shutdown(self) -> None:
        """The viewer is closing: cancel the job and ask the worker to quit."""
        self._closing = True
        job = self._job
        if job is not None:
            job.cancel_event.set()
            if job.worker is not None:
                job.worker.quit()

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        """Cancel a running fit when the napari window closes (avoids hanging on exit)."""
        window = getattr(self, "_qt_window", None)
        job = getattr(self, "_job", None)
        if window is not None and obj is window and job is not None and _is_close(event):
            if event.spontaneous():
                # the user may still refuse in napari's confirmation dialog: check afterwards
                QTimer.singleShot(0, self._check_window_closed)
            else:
                self._shutdown()
        return False

    def _check_window_closed(self) -> None:
        try:
            if self._qt_window is not None and not self._qt_window.isVisible():
                self._shutdown()
        except RuntimeError:  # pragma: no cover - window already deleted
            self._shutdown()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        """Cancel a running fit when the widget itself is closed."""
        self._shutdown()
        super().closeEvent(event)

    # ================================================================== worker callbacks
    def _on_yielded(self, message: tuple[str, Any]) -> None:
        if self._job is None or self._closing:
            return
        kind, payload = message
        if kind == "status":
            self.progress_bar.setFormat(str(payload))
            self.status_label.setText(str(payload))
        elif kind == "progress":
            self._show_progress(payload)
        elif kind == "preview":
            self._show_preview(payload)

    def _show_progress(self, info: Any) -> None:
        if self.progress_bar.maximum() == 0:  # first step: leave the "busy" state
            self.progress_bar.setRange(0, 1000)
        fraction = float(getattr(info, "fraction", 0.0) or 0.0)
        self.progress_bar.setValue(int(round(1000 * min(max(fraction, 0.0), 1.0))))
        parts = [f"{100 * fraction:.0f}%"]
        eta = getattr(info, "eta_seconds", None)
        if eta is not None:
            parts.append(f"ETA {format_duration(eta)}")
        psnr = getattr(info, "psnr", None)
        if psnr is not None and np.isfinite(psnr):
            parts.append(f"PSNR {psnr:.1f} dB")
        self.progress_bar.setFormat(" · ".join(parts))
        details = []
        step, total = getattr(info, "step", None), getattr(info, "total_steps", None)
        if step is not None:
            details.append(f"step {step}" + (f"/{total}" if total else ""))
        n_blocks = getattr(info, "n_blocks", None)
        if n_blocks and n_blocks > 1:
            details.append(f"block {int(getattr(info, 'block', 0)) + 1}/{n_blocks}")
        message = str(getattr(info, "message", "") or "")
        if message:
            details.append(message)
        if details and not (self._job and self._job.cancel_event.is_set()):
            self.status_label.setText("Fitting: " + ", ".join(details))

    def _show_preview(self, array: np.ndarray) -> None:
        src = self._run.get("layer")
        if src is None or src not in self.viewer.layers:
            return
        leading = self._run["leading"]
        data = array.reshape((1,) * len(leading) + array.shape)
        layer = self._preview_layer
        if layer is not None and layer in self.viewer.layers:
            layer.data = data
            return
        name = f"{src.name} sciz {self._run['ratio']}x (fitting)"
        self._preview_layer = add_result_layer(
            self.viewer, data, name, src, leading, {"sciz": {"role": "preview"}}, **_rgb(src)
        )
        if not self.result_layers:
            show_side_by_side(self.viewer, [src, self._preview_layer])

    def _on_returned(self, outcome: tuple[str, Any]) -> None:
        from napari.utils.notifications import show_error, show_info

        if self._closing:
            return
        status, payload, *extra = outcome
        self._run["status"] = status
        self._run["task"] = extra[0] if extra else None
        if status == "ok":
            try:
                self._show_result(payload)
            except Exception as exc:  # noqa: BLE001 - show, don't crash the event loop
                self._drop_preview()
                show_error(f"Could not display the result: {type(exc).__name__}: {exc}")
            return
        self._drop_preview()
        if status == "cancelled":
            self.status_label.setText("Cancelled: nothing was written.")
            show_info("Compression cancelled: nothing was written.")
        else:
            self.status_label.setText(str(payload))
            show_error(str(payload))

    def _drop_preview(self) -> None:
        layer = self._preview_layer
        self._preview_layer = None
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)

    def _on_finished(self) -> None:
        status = self._run.get("status")
        self._job = None
        self.worker = None
        self._run.pop("data", None)
        if self._closing:
            return
        try:
            self.cancel_button.setEnabled(False)
            self.progress_bar.setRange(0, 1000)
            self.start_button.setEnabled(self.selected_layer() is not None)
            self.save_button.setEnabled(self.result is not None)
            if status != "ok":
                self.progress_bar.setValue(0)
                self.progress_bar.setFormat(
                    {"cancelled": "cancelled", "error": "failed"}.get(str(status), "idle")
                )
        except RuntimeError:  # pragma: no cover - widget deleted
            pass

    # ================================================================== result
    def _show_result(self, result: Any) -> None:
        src = self._run["layer"]
        leading: tuple[int, ...] = self._run["leading"]
        if src not in self.viewer.layers:
            raise SciZError(f"the layer {src.name!r} was removed during the compression")
        if self._run.get("labels"):  # the saved file opens as a labels layer
            from .._writer import LABELS_KEY
            from ..core.result import with_header_keys

            result = with_header_keys(result, {LABELS_KEY: "labels"})
        info = result_info(result, src, leading, self._run["ratio"], self._run.get("task"))
        recon_layer, delta_layer = self._place_result(result, info, src, leading)
        self.result = result
        self.result_layers = (src, recon_layer, delta_layer)
        show_side_by_side(self.viewer, [src, recon_layer, delta_layer], reset_view=True)
        self.viewer.layers.selection.active = src

        self.results_panel.show_metrics(info)
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(1000)
        self.progress_bar.setFormat(f"done · PSNR {info['psnr']:.1f} dB")
        self.status_label.setText(
            f"Compressed {src.name!r}: {info['ratio']:.1f}x, {format_bytes(info['nbytes'])}."
        )
        self.save_button.setEnabled(True)
        self.region.refresh_sources(select=recon_layer)
        from napari.utils.notifications import show_info

        for note in getattr(result, "messages", None) or ():
            show_info(str(note))

    def _place_result(
        self, result: Any, info: dict[str, Any], src: Any, leading: tuple[int, ...]
    ) -> tuple[Any, Any]:
        """The reconstruction (the live preview's layer, when there is one) and the delta
        (original minus reconstruction) layers, placed after ``src``."""
        recon = np.asarray(result.reconstruction)
        delta = self._run["data"].astype(np.float32) - recon.astype(np.float32)
        if _rgb(src):
            delta = delta.mean(axis=-1)  # one signed map: the mean over the colour samples
        dmax = delta_limit(delta)
        expand = (1,) * len(leading)
        mode = str(info.get("mode", "lossy"))
        tag = f"{info['target_ratio']}x" if mode in ("lossy", "hybrid") else mode
        name = f"{src.name} sciz {tag}"
        recon_layer = self._preview_layer
        self._preview_layer = None
        remove_sciz_layers(self.viewer, name, keep=recon_layer)
        if recon_layer is not None and recon_layer in self.viewer.layers:
            recon_layer.name = name
            recon_layer.data = recon.reshape(expand + recon.shape)
            recon_layer.metadata["sciz"] = info
            recon_layer.metadata[BYTES_KEY] = result.data
        else:
            recon_layer = add_result_layer(
                self.viewer,
                recon.reshape(expand + recon.shape),
                name,
                src,
                leading,
                {"sciz": info, BYTES_KEY: result.data},
                labels=bool(self._run.get("labels")),
                **_rgb(src),
            )
        delta_layer = add_result_layer(
            self.viewer,
            delta.reshape(expand + delta.shape),
            f"{src.name} delta {tag}",
            src,
            leading,
            {"sciz": {**info, "role": "delta"}},
            link=False,
            colormap=delta_colormap(),
            contrast_limits=(-dmax, dmax),
            gamma=1.0,
            blending="translucent",
        )
        if not self._run.get("labels"):
            recon_layer.contrast_limits = src.contrast_limits
        return recon_layer, delta_layer

    # ================================================================== save
    def save(self, path: str | Path | None = None) -> Path | None:
        """Write the last result as a ``.sciz`` file (asks before overwriting an existing file).

        Parameters
        ----------
        path : str or Path, optional
            Output file; a file dialog asks for it when omitted.

        Returns
        -------
        Path or None
            The written file, or None when nothing was written.
        """
        from napari.utils.notifications import show_error, show_info

        if self.result is None:
            show_error("Nothing to save yet: compress a layer first.")
            return None
        if path is None:
            path = ask_save_path(self, self.result_layers[0] if self.result_layers else None)
            if path is None:
                return None
        target = Path(path)
        force = False
        if target.exists():
            answer = QMessageBox.question(
                self,
                "Replace file?",
                f"{target} already exists. Replace it?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                QMessageBox.StandardButton.No,
            )
            if answer != QMessageBox.StandardButton.Yes:
                return None
            force = True
        try:
            written = self.result.save(
                target,
                force=force,
                inputs=source_files(self.result_layers[0] if self.result_layers else None),
            )
        except (SciZError, OSError) as exc:
            show_error(f"Could not save {target.name}: {exc}")
            return None
        written = Path(written) if written is not None else target
        for layer in self.result_layers[1:]:
            info = layer.metadata.get("sciz")
            if isinstance(info, dict):
                info["path"] = str(written)
        show_info(f"Saved {written} ({format_bytes(written.stat().st_size)})")
        self.status_label.setText(f"Saved {written}")
        return written


def _is_labels(layer: Any) -> bool:
    """Whether ``layer`` is a napari Labels layer (coded losslessly, shown as labels)."""
    if layer is None:
        return False
    from napari.layers import Labels

    return isinstance(layer, Labels)


def _rgb(layer: Any) -> dict[str, Any]:
    """Keyword arguments that make a result layer of an RGB(A) ``layer`` one as well."""
    return {"rgb": True} if getattr(layer, "rgb", False) else {}
