"""The "Compress" widget's form: the image, ratio, mode, guidance, effort and advanced controls.

:class:`CompressForm` builds and lays out the controls and reads them (the target ratio, the
time budget, the coding mode, the guidance weights, the options :func:`napari_sciz.compress`
is called with). :class:`~._compress.CompressWidget` adds the job that runs on them and the
result it shows. No torch here; the device list imports it the first time it is opened.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
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
from ..errors import InvalidInputError
from ..io.formats import axes_from_labels
from ._controls import (
    _GUIDANCE_TIP,
    _LABELS_TIP,
    _MODE_TIP,
    _NOT_YET,
    _WEIGHT_TIPS,
    AVAILABLE_GUIDANCE,
    CODING_MODES,
    GUIDANCE_MODES,
    DeviceCombo,
)
from ._geometry import EFFORT_PRESETS, RATIO_STOPS, format_bytes, nearest_ratio_index
from ._layer_input import input_shape_dtype, is_labels, leading_count
from ._region import DecodeRegionWidget
from ._results import ResultPanel

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["CompressForm"]

_DEFAULT_RATIO = 64


class CompressForm(QWidget):
    """The controls of the "Compress" widget and what they are set to.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose layers the image picker lists.
    parent : QWidget, optional
        Parent widget.
    """

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self._build_ui()

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

    # ================================================================== reading the form
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

    def _on_effort_changed(self, *_: Any) -> None:
        seconds = int(self.effort_combo.currentData() or 0)
        self.budget_spin.setEnabled(seconds == 0)
        if seconds > 0:
            self.budget_spin.setValue(seconds)

    def _n_leading(self, layer: Any) -> int:
        """Number of leading axes fixed at the current position ("current ... only")."""
        return leading_count(layer, self.current_only_check.isChecked())

    def _update_ratio_label(self, *_: Any) -> None:
        ratio = self.ratio
        self.ratio_label.setText(f"{ratio}x")
        layer = self.selected_layer()
        if layer is None:
            self.size_label.setText(f"file size = raw size / {ratio}")
            return
        shape, dtype = input_shape_dtype(layer, self._n_leading(layer))
        raw = float(np.prod(shape, dtype=float)) * dtype.itemsize
        self.size_label.setText(f"≈ {format_bytes(raw / ratio)}  (raw {format_bytes(raw)})")

    def _compress_options(self, layer: Any, ndim: int) -> dict[str, Any]:
        """The keyword arguments of :func:`napari_sciz.compress` the form is set to."""
        steps = int(self.steps_spin.value())
        options: dict[str, Any] = {
            "device": str(self.device_combo.currentData() or "auto"),
            "steps": steps if steps > 0 else None,
            "budget": None if steps > 0 else self.budget,
            "seed": int(self.seed_spin.value()),
            "name": str(layer.name),
        }
        mode = "lossless" if is_labels(layer) else self.mode
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
        else:  # (the axes napari knows: a time-lapse is segmented frame by frame)
            labels = getattr(layer, "axis_labels", None)
            axes = None if labels is None else axes_from_labels(tuple(labels)[-ndim:], ndim)
            if axes is not None:
                options["axes"] = axes
        return options
