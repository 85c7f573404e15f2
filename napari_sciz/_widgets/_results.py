"""What the "Compress" widget shows of a result: its layers, its metrics, where to save it.

* :func:`add_result_layer`, :func:`remove_sciz_layers`, :func:`is_sciz_layer`: the layers this
  plugin adds next to the source layer (reconstruction, delta, preview, region), which a new
  run replaces.
* :class:`ResultPanel`: the "Result" box (ratio, size, PSNR, SSIM, max error, task score,
  time, device) with its Save button.
* :func:`ask_save_path`, :func:`source_files`: the save dialog, and the files a save must
  never overwrite.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog, QFormLayout, QGroupBox, QLabel, QPushButton, QVBoxLayout

from ._geometry import format_bytes, format_duration
from ._viewer import placement_kwargs

__all__ = [
    "SCIZ_ROLES",
    "ResultPanel",
    "add_result_layer",
    "ask_save_path",
    "is_sciz_layer",
    "remove_sciz_layers",
    "result_info",
    "source_files",
    "task_text",
]

#: ``metadata["sciz"]["role"]`` of the layers this plugin adds
SCIZ_ROLES = ("reconstruction", "delta", "region", "preview")

_METRICS = (
    ("ratio", "Ratio"),
    ("size", "File size"),
    ("psnr", "PSNR"),
    ("ssim", "SSIM"),
    ("max_error", "Max error"),
    ("task", "Task score"),
    ("time", "Time"),
    ("device", "Device"),
)
_TASK_TIP = (
    "Segmentation: the decoded volume segmented as a biologist would (Gaussian, Otsu, "
    "watershed) against the original's segmentation. Perceptual: MS-SSIM and gradient "
    "similarity. Shown after a guided fit."
)


def is_sciz_layer(layer: Any) -> bool:
    """Whether ``layer`` was added by this plugin (a reconstruction, delta, preview or region)."""
    info = layer.metadata.get("sciz") if isinstance(layer.metadata, dict) else None
    return isinstance(info, dict) and info.get("role") in SCIZ_ROLES


def remove_sciz_layers(viewer: Any, name: str, keep: Any = None) -> None:
    """Remove the layers this plugin added that are called ``name`` (a re-run replaces them)."""
    for old in list(viewer.layers):
        if old is not keep and old.name == name and is_sciz_layer(old):
            viewer.layers.remove(old)


def add_result_layer(
    viewer: Any,
    data: np.ndarray,
    name: str,
    src: Any,
    leading: tuple[int, ...],
    metadata: dict[str, Any],
    *,
    link: bool = True,
    labels: bool = False,
    **kwargs: Any,
) -> Any:
    """Insert an image (or labels) layer right after ``src`` (and the plugin's layers already
    there).

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    data : numpy.ndarray
        The layer's data, with a length-1 axis for each of ``leading``.
    name : str
        The layer's name; a layer of this plugin with the same name is replaced.
    src : napari.layers.Image
        The source layer: its display settings and world frame are copied.
    leading : tuple of int
        Index of the compressed part of ``src`` along its leading axes.
    metadata : dict
        The layer's metadata.
    link : bool
        Link the contrast limits to the source layer's (image layers).
    labels : bool
        Make a labels layer (the source is one): its colours are napari's for the same labels.
    **kwargs
        Display settings that replace the source layer's.

    Returns
    -------
    napari.layers.Image or napari.layers.Labels
        The new layer.
    """
    from napari.layers import Image, Labels

    remove_sciz_layers(viewer, name)
    place = placement_kwargs(src, leading)
    if labels:
        layer: Any = Labels(data, name=name, metadata=metadata, **place, **kwargs)
        link = False
    else:
        options: dict[str, Any] = {"blending": src.blending}
        if isinstance(src, Image):  # (a labels layer's delta has no source display settings)
            options.update(
                colormap=src.colormap, contrast_limits=src.contrast_limits, gamma=src.gamma
            )
        options.update(kwargs)
        layer = Image(data, name=name, metadata=metadata, **place, **options)
        link = link and isinstance(src, Image)
    index = viewer.layers.index(src) + 1
    while index < len(viewer.layers) and is_sciz_layer(viewer.layers[index]):
        index += 1
    viewer.layers.insert(index, layer)
    if link:
        try:
            from napari.experimental import link_layers

            link_layers([src, layer], ("contrast_limits",))
        except (ImportError, ValueError):  # pragma: no cover - older napari
            pass
    return layer


def result_info(
    result: Any,
    src: Any,
    leading: tuple[int, ...],
    target_ratio: float,
    task: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The ``metadata["sciz"]`` record of a result's reconstruction layer.

    Parameters
    ----------
    result : CompressResult
        The compression.
    src : napari.layers.Image
        The layer that was compressed.
    leading : tuple of int
        Index of the compressed part of ``src`` along its leading axes.
    target_ratio : float
        The ratio asked for.
    task : dict, optional
        The guided task's scores (:func:`napari_sciz.core.task.score.guidance_score`).

    Returns
    -------
    dict
        The result's summary with the layer, ratios, sizes, metrics, time and device.
    """
    summary = dict(result.summary()) if callable(getattr(result, "summary", None)) else {}
    info: dict[str, Any] = {
        **summary,
        "role": "reconstruction",
        "source_layer": src.name,
        "leading_index": list(leading),
        "compressed_shape": [int(n) for n in np.shape(result.reconstruction)],
        "target_ratio": target_ratio,
        "ratio": float(result.ratio),
        "nbytes": int(result.nbytes),
        "raw_nbytes": int(result.raw_nbytes),
        "psnr": float(result.psnr),
        "ssim": float(result.ssim),
        "max_error": float(result.max_error),
        "encode_seconds": float(result.encode_seconds),
        "device": str(result.device),
    }
    if task:
        info["task"] = dict(task)
    return info


def task_text(task: dict[str, float] | None) -> str:
    """One line for the task score row."""
    from ..core.task.report import scored_where

    if not task:
        return "- (no guidance)"
    where = scored_where(task)
    if "object_f1" in task:
        return (
            f"object F1 {task['object_f1']:.3f}, Dice {task['dice']:.3f} "
            f"({int(task['found'])} of {int(task['objects'])} objects{where})"
        )
    text = f"MS-SSIM {task['ms_ssim']:.4f}, gradient {task['gradient_similarity']:.4f}"
    return text + (f" ({where.strip()})" if where else "")


def _error_text(value: float) -> str:
    """The largest error as a reader reads it: whole numbers in full (an integer stack's
    ``11410``, not ``1.141e+04``), others to four significant digits."""
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value)}"
    return f"{value:.4g}"


class ResultPanel(QGroupBox):
    """The "Result" box: the metrics of the last compression and the Save button.

    Attributes
    ----------
    labels : dict of str to QLabel
        One label per metric (``ratio``, ``size``, ``psnr``, ``ssim``, ``max_error``,
        ``task``, ``time``, ``device``).
    save_button : QPushButton
        Writes the ``.sciz`` file (enabled once there is a result).
    """

    def __init__(self) -> None:
        super().__init__("Result")
        self.labels: dict[str, QLabel] = {}
        form = QFormLayout()
        for key, title in _METRICS:
            label = QLabel("-")
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.labels[key] = label
            form.addRow(title, label)
        self.labels["task"].setToolTip(_TASK_TIP)
        self.save_button = QPushButton("Save .sciz ...")
        self.save_button.setEnabled(False)
        self.save_button.setToolTip("Write the compressed file")
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.save_button)

    def show_metrics(self, info: dict[str, Any]) -> None:
        """Fill the labels from a result's ``metadata["sciz"]`` record."""
        m = self.labels
        mode = str(info.get("mode", "lossy"))
        target = f"target {info['target_ratio']}x" if mode in ("lossy", "hybrid") else mode
        m["ratio"].setText(f"{info['ratio']:.1f}x  ({target})")
        m["size"].setText(
            f"{format_bytes(info['nbytes'])}  (raw {format_bytes(info['raw_nbytes'])})"
        )
        psnr = float(info["psnr"])
        m["psnr"].setText("inf (exact)" if math.isinf(psnr) else f"{psnr:.2f} dB")
        m["ssim"].setText(f"{info['ssim']:.4f}")
        m["max_error"].setText(_error_text(float(info["max_error"])))
        m["time"].setText(format_duration(info["encode_seconds"]))
        m["device"].setText(info["device"])
        m["task"].setText(task_text(info.get("task")))


def source_files(src: Any) -> list[str]:
    """Files the layer ``src`` came from: a save never overwrites them."""
    from .._writer import layer_sources

    if src is None:
        return []
    found = layer_sources(getattr(src, "metadata", None))
    source_path = getattr(getattr(src, "source", None), "path", None)
    if source_path:
        found.append(str(source_path))
    return found


def ask_save_path(parent: Any, src: Any) -> Path | None:
    """Ask where to save (beside the source file, named after the layer); None if cancelled.

    The dialog does not ask before replacing a file: the caller does.
    """
    folder = Path.cwd()
    source_path = getattr(getattr(src, "source", None), "path", None)
    if source_path:
        folder = Path(source_path).parent
    default = folder / f"{getattr(src, 'name', 'compressed')}.sciz"
    path, _ = QFileDialog.getSaveFileName(
        parent,
        "Save compressed stack",
        str(default),
        "SciZ files (*.sciz);;All files (*)",
        options=QFileDialog.Option.DontConfirmOverwrite,
    )
    if not path:
        return None
    target = Path(path)
    if target.suffix.lower() != ".sciz":
        target = target.with_name(target.name + ".sciz")
    return target
