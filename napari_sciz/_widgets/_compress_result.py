"""A finished compression in the viewer: its reconstruction and delta layers, and its save.

* :func:`place_result`: the reconstruction (the live preview's layer renamed, when there is
  one) and the delta (original minus reconstruction) layers after the source layer;
* :func:`save_result`: writes the ``.sciz`` file, asking before it replaces a file and never
  over the source's own files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import QMessageBox, QWidget

from ..errors import SciZError
from ._geometry import format_bytes
from ._layer_input import rgb_kwargs
from ._region_source import BYTES_KEY
from ._results import add_result_layer, ask_save_path, remove_sciz_layers, source_files
from ._viewer import delta_colormap, delta_limit

__all__ = ["place_result", "save_result"]


def place_result(
    viewer: Any,
    result: Any,
    info: dict[str, Any],
    src: Any,
    leading: tuple[int, ...],
    *,
    original: np.ndarray,
    preview: Any = None,
    labels: bool = False,
) -> tuple[Any, Any]:
    """Add (or update) the reconstruction and delta layers of ``result`` after ``src``.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    result : CompressResult
        The compression (its reconstruction and ``.sciz`` bytes).
    info : dict
        The metrics shown and stored in the layers' ``metadata["sciz"]``.
    src : napari layer
        The compressed layer.
    leading : tuple of int
        The leading indices fixed when only the current plane was coded.
    original : numpy.ndarray
        The array that was coded (the delta is ``original - reconstruction``).
    preview : napari layer, optional
        The live preview's layer, which becomes the reconstruction layer.
    labels : bool
        The source is a Labels layer: the reconstruction is one too.

    Returns
    -------
    tuple
        ``(reconstruction_layer, delta_layer)``.
    """
    recon = np.asarray(result.reconstruction)
    delta = original.astype(np.float32) - recon.astype(np.float32)
    if rgb_kwargs(src):
        delta = delta.mean(axis=-1)  # one signed map: the mean over the colour samples
    dmax = delta_limit(delta)
    expand = (1,) * len(leading)
    mode = str(info.get("mode", "lossy"))
    tag = f"{info['target_ratio']}x" if mode in ("lossy", "hybrid") else mode
    name = f"{src.name} sciz {tag}"
    remove_sciz_layers(viewer, name, keep=preview)
    if preview is not None and preview in viewer.layers:
        recon_layer = preview
        recon_layer.name = name
        recon_layer.data = recon.reshape(expand + recon.shape)
        recon_layer.metadata["sciz"] = info
        recon_layer.metadata[BYTES_KEY] = result.data
    else:
        recon_layer = add_result_layer(
            viewer,
            recon.reshape(expand + recon.shape),
            name,
            src,
            leading,
            {"sciz": info, BYTES_KEY: result.data},
            labels=labels,
            **rgb_kwargs(src),
        )
    delta_layer = add_result_layer(
        viewer,
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
    if not labels:
        recon_layer.contrast_limits = src.contrast_limits
    return recon_layer, delta_layer


def _confirm_replace(parent: QWidget, target: Path) -> bool:
    answer = QMessageBox.question(
        parent,
        "Replace file?",
        f"{target} already exists. Replace it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


def save_result(
    parent: QWidget, result: Any, layers: tuple[Any, ...], path: str | Path | None = None
) -> Path | None:
    """Write ``result`` as a ``.sciz`` file; the user is told what happened.

    Parameters
    ----------
    parent : QWidget
        The dialogs' parent.
    result : CompressResult or None
        The compression to save (None: there is nothing to save, the user is told so).
    layers : tuple
        ``(source, reconstruction, delta)`` layers of the result (may be empty): the source's
        files are never overwritten, and the others' ``metadata["sciz"]["path"]`` is set.
    path : str or Path, optional
        Output file; a file dialog asks for it when omitted.

    Returns
    -------
    Path or None
        The written file, or None when nothing was written.
    """
    from napari.utils.notifications import show_error, show_info

    if result is None:
        show_error("Nothing to save yet: compress a layer first.")
        return None
    source = layers[0] if layers else None
    if path is None:
        path = ask_save_path(parent, source)
        if path is None:
            return None
    target = Path(path)
    force = target.exists()
    if force and not _confirm_replace(parent, target):
        return None
    try:
        written = result.save(target, force=force, inputs=source_files(source))
    except (SciZError, OSError) as exc:
        show_error(f"Could not save {target.name}: {exc}")
        return None
    written = Path(written) if written is not None else target
    for layer in layers[1:]:
        info = layer.metadata.get("sciz")
        if isinstance(info, dict):
            info["path"] = str(written)
    show_info(f"Saved {written} ({format_bytes(written.stat().st_size)})")
    return written
