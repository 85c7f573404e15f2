"""The "Compress" dock widget: fit an INR to an image layer in a worker thread, show the result.

The controls are :class:`~._compress_form.CompressForm`'s; this module runs the job on them
(:class:`~._job.CompressJob` in a napari worker thread), follows it (progress, live preview,
cancel, the viewer closing) and shows what it returns (:mod:`._compress_result`).

torch is never imported by this module: the codec (and torch with it) is imported inside the
worker thread when a compression starts, and the device list imports torch the first time it is
opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QWidget

from ..errors import SciZError
from ._compress_form import CompressForm
from ._compress_result import place_result, save_result
from ._controls import _LABELS_MODE_TIP, _MODE_TIP, AVAILABLE_GUIDANCE
from ._geometry import format_bytes, format_duration
from ._job import CompressJob
from ._layer_input import input_array, is_labels, labels_matching, layer_ndim, rgb_kwargs
from ._results import add_result_layer, is_sciz_layer, result_info
from ._viewer import show_side_by_side

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["AVAILABLE_GUIDANCE", "CompressWidget"]


def _is_close(event: QEvent) -> bool:
    try:
        return event.type() == QEvent.Type.Close
    except RuntimeError:  # pragma: no cover - event already deleted
        return False


class CompressWidget(CompressForm):
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
        super().__init__(napari_viewer, parent)
        self.result: Any = None
        self.result_layers: tuple[Any, ...] = ()
        self.worker: Any = None
        self._job: CompressJob | None = None
        self._run: dict[str, Any] = {}
        self._mode_before_labels = "auto"  # (restored when an image is picked after labels)
        self._preview_layer: Any = None
        self._closing = False
        self._qt_window: Any = None
        self._connect()
        self._refresh_layers()

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

    # ================================================================== the image picker

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

    def _on_active_layer(self, event: Any = None) -> None:
        layer = self.viewer.layers.selection.active
        if is_labels(layer):  # (see _refresh_layers)
            return
        index = self.layer_combo.findData(id(layer)) if layer is not None else -1
        if index >= 0 and not self.running:
            self.layer_combo.setCurrentIndex(index)

    def _on_layer_changed(self, *_: Any) -> None:
        layer = self.selected_layer()
        ndim = layer_ndim(layer) if layer is not None else 0
        labels = is_labels(layer)
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

    # ================================================================== running

    def _prepare_input(self, layer: Any) -> tuple[np.ndarray, tuple[int, ...]]:
        """The array to compress and the fixed leading indices; raises InvalidInputError."""
        return input_array(self.viewer, layer, self._n_leading(layer) if layer is not None else 0)

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
                wanted = self.labels_combo.currentData()
                labels = labels_matching(self.viewer, wanted, data, leading)
                if labels is not None:
                    options["labels"] = labels
        except SciZError as exc:
            show_error(str(exc))
            self.status_label.setText(str(exc))
            return None

        layer_dtype = np.dtype(getattr(layer, "dtype", data.dtype))
        if layer_dtype.itemsize == 8 and layer_dtype.kind in "iu" and not is_labels(layer):
            from napari.utils.notifications import show_info

            show_info(
                f"Layer {layer.name!r} holds 64-bit integers: coded as {data.dtype.name}, "
                "which keeps every value."
            )
        ratio = self.ratio
        self._remember_default_ratio(ratio)
        job = CompressJob(data, ratio, options)
        self._job = job
        self._run = {
            "layer": layer,
            "leading": leading,
            "ratio": ratio,
            "data": data,
            "labels": is_labels(layer),
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
            self.viewer, data, name, src, leading, {"sciz": {"role": "preview"}}, **rgb_kwargs(src)
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
        preview, self._preview_layer = self._preview_layer, None
        recon_layer, delta_layer = place_result(
            self.viewer,
            result,
            info,
            src,
            leading,
            original=self._run["data"],
            preview=preview,
            labels=bool(self._run.get("labels")),
        )
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
        written = save_result(self, self.result, self.result_layers, path)
        if written is not None:
            self.status_label.setText(f"Saved {written}")
        return written
