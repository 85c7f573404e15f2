"""``sciz demo``: open napari with a sample stack, the Compress widget docked and a fit running.

``sciz demo --screenshot side_by_side.png`` runs the demonstration to the end without a display
of its own (it re-executes itself under ``xvfb-run -a`` when ``DISPLAY`` is unset), saves a PNG of
the finished side-by-side view and exits. ``--widget-screenshot`` saves the widget alone and
``--region-screenshot`` additionally decodes a region at 2x finer sampling and saves that view.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["build_parser", "main"]

#: the shared stack the bundled sample was cut from, used when the sample cannot be opened
_FALLBACK_SAMPLE = "nbsd_cells3d_nuclei.tif"
_XVFB_FLAG = "NAPARI_SCIZ_DEMO_XVFB"


def build_parser() -> argparse.ArgumentParser:
    """The ``sciz demo`` argument parser.

    Returns
    -------
    argparse.ArgumentParser
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="sciz demo",
        description="Open napari with a sample stack and compress it with the Compress widget.",
    )
    parser.add_argument("--sample", default="cells3d_nuclei", help="bundled sample key")
    parser.add_argument("--ratio", type=float, default=64.0, help="target ratio (default 64)")
    parser.add_argument(
        "--budget", type=float, default=30.0, help="time budget in seconds (default 30)"
    )
    parser.add_argument("--steps", type=int, default=0, help="fixed number of steps (0: budget)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--screenshot",
        metavar="PATH",
        type=Path,
        help="run to the end, save a PNG of the side-by-side view and exit",
    )
    parser.add_argument(
        "--widget-screenshot", metavar="PATH", type=Path, help="also save the widget alone"
    )
    parser.add_argument(
        "--region-screenshot",
        metavar="PATH",
        type=Path,
        help="also decode a region at 2x sampling and save that view",
    )
    parser.add_argument(
        "--size",
        default=None,
        help="window size WIDTHxHEIGHT (default: napari's; 1900x860 for screenshots)",
    )
    return parser


def _load_sample(key: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The bundled sample (``napari_sciz._sample_data``) or the shared nuclei stack."""
    try:
        from . import _sample_data

        layers = getattr(_sample_data, key)()
        data, kwargs = layers[0][0], dict(layers[0][1])
        return np.asarray(data), kwargs
    except (ImportError, AttributeError, FileNotFoundError, OSError):
        from .bench.volumes import find_data_dir

        data = find_data_dir()
        fallback = None if data is None else data / _FALLBACK_SAMPLE
        if fallback is None or not fallback.is_file():
            raise
        import tifffile

        return np.asarray(tifffile.imread(fallback)), {"name": "nuclei"}


def _needs_xvfb(args: argparse.Namespace) -> bool:
    headless = args.screenshot or args.widget_screenshot or args.region_screenshot
    return bool(
        headless
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
        and not os.environ.get(_XVFB_FLAG)
        and shutil.which("xvfb-run")
        and sys.platform.startswith("linux")
    )


def _rerun_under_xvfb(argv: Sequence[str]) -> int:
    env = dict(os.environ, **{_XVFB_FLAG: "1"})
    command = [
        "xvfb-run",
        "-a",
        "-s",
        "-screen 0 1920x1200x24",
        sys.executable,
        "-m",
        "napari_sciz._demo",
        *argv,
    ]
    return subprocess.call(command, env=env)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demonstration.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments after ``sciz demo`` (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 when the compression failed or napari is missing.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if _needs_xvfb(args):
        return _rerun_under_xvfb(argv)
    try:
        import napari
    except ImportError:
        print("sciz demo: napari is not installed (pip install 'napari-sciz[pyqt5]')")
        return 1
    return _Demo(napari, args).run()


class _Demo:
    """The demonstration's state machine: load, compress, (region), screenshots, quit."""

    def __init__(self, napari: Any, args: argparse.Namespace) -> None:
        self.napari = napari
        self.args = args
        self.status = 0
        self.headless = bool(args.screenshot or args.widget_screenshot or args.region_screenshot)

    def run(self) -> int:
        from qtpy.QtCore import QTimer

        from ._widgets import CompressWidget

        napari = self.napari
        if self.headless:
            from napari.settings import get_settings

            # no toasts over the canvas in the screenshots
            get_settings().application.gui_notification_level = "none"
        viewer = napari.Viewer(title="napari-sciz demo", show=True)
        self.viewer = viewer
        size = self.args.size or ("1900x860" if self.headless else None)
        if size:
            width, height = (int(v) for v in size.lower().split("x"))
            viewer.window.resize(width, height)
        data, kwargs = _load_sample(self.args.sample)
        viewer.add_image(data, **kwargs)

        widget = CompressWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Compress (INR)", area="right")
        widget.set_ratio(self.args.ratio)
        widget.set_effort(self.args.budget)
        widget.steps_spin.setValue(max(self.args.steps, 0))
        if self.args.device != "auto":
            widget.device_combo.populate()
            index = widget.device_combo.findData(self.args.device)
            if index < 0:
                print(f"sciz demo: device {self.args.device!r} is not available", file=sys.stderr)
                return 1
            widget.device_combo.setCurrentIndex(index)
        self.widget = widget

        def start() -> None:
            worker = widget.start()
            if worker is None:
                self.status = 1
                self._quit()
                return
            if self.headless:
                worker.finished.connect(lambda: QTimer.singleShot(1500, self._after_fit))

        QTimer.singleShot(300, start)
        napari.run()
        return self.status

    # ------------------------------------------------------------------ headless steps
    def _after_fit(self) -> None:
        from qtpy.QtCore import QTimer

        widget, viewer = self.widget, self.viewer
        if widget.result is None:
            print("sciz demo: the compression did not finish", file=sys.stderr)
            self.status = 1
            self._quit()
            return
        viewer.reset_view()
        if self.args.screenshot:
            self._save_view(self.args.screenshot)
        if self.args.widget_screenshot:
            self._save_widget(self.args.widget_screenshot)
        if self.args.region_screenshot:
            self._start_region()
            return
        QTimer.singleShot(200, self._quit)

    def _start_region(self) -> None:
        from qtpy.QtCore import QTimer

        widget, viewer = self.widget, self.viewer
        src, recon, delta = widget.result_layers
        delta.visible = False
        # a rectangle over the central part of the current slice (data coordinates of the
        # compressed layer, which the "sciz region" Shapes layer shares)
        ny, nx = recon.data.shape[-2:]
        y0, x0, y1, x1 = ny * 0.15, nx * 0.25, ny * 0.42, nx * 0.52
        here = np.asarray(recon.world_to_data(viewer.dims.point[-recon.ndim :]), dtype=float)
        here = np.floor(here + 0.5)
        corners = []
        for y, x in ((y0, x0), (y0, x1), (y1, x1), (y1, x0)):
            p = here.copy()
            p[-2:] = (y, x)
            corners.append(p)
        region = widget.region
        widget.region_section.expand(animate=False)
        region.live_check.setChecked(False)  # one decode of the final set-up
        shapes = region.add_rectangle_layer()
        shapes.add_rectangles(np.asarray(corners), edge_color="yellow", face_color="transparent")
        shapes.mode = "pan_zoom"
        region.sampling_combo.setCurrentIndex(1)  # 2x
        worker = region.decode()
        region.live_check.setChecked(True)
        if worker is None:
            self.status = 1
            self._quit()
            return
        worker.finished.connect(lambda: QTimer.singleShot(1000, self._after_region))

    def _after_region(self) -> None:
        from qtpy.QtCore import QTimer

        from ._widgets._viewer import camera, grid

        viewer = self.viewer
        # the decoded region over the original: one panel, zoomed on the region
        grid(viewer).enabled = False
        src, recon, _delta = self.widget.result_layers
        recon.visible = False
        region_layer = next(
            (
                layer
                for layer in viewer.layers
                if isinstance(layer.metadata.get("sciz"), dict)
                and layer.metadata["sciz"].get("role") == "region"
            ),
            None,
        )
        shapes = self.widget.region.shapes_layer()
        if shapes is not None:  # rectangle outline above the decoded region
            viewer.layers.move(viewer.layers.index(shapes), len(viewer.layers))
        if region_layer is not None:
            ext = np.asarray(region_layer.extent.world)[:, -2:]
            cam = camera(viewer)
            centre = ext.mean(axis=0)
            cam.center = (*tuple(cam.center)[:-2], *centre)
            cam.zoom = float(
                0.6 * min(np.asarray(viewer.canvas.size) / np.maximum(ext[1] - ext[0], 1e-9))
            )
        QTimer.singleShot(800, self._save_region)

    def _save_region(self) -> None:
        from qtpy.QtCore import QTimer

        self._save_view(self.args.region_screenshot)
        QTimer.singleShot(200, self._quit)

    def _hide_toasts(self) -> None:
        """Close napari's notification pop-ups so that they do not cover the screenshots."""
        try:
            from napari._qt.dialogs.qt_notification import NapariQtNotification
        except ImportError:  # pragma: no cover - other napari versions
            return
        window = getattr(self.viewer.window, "_qt_window", None)
        if window is None:
            return
        for toast in window.findChildren(NapariQtNotification):
            toast.hide()

    def _save_view(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._hide_toasts()
        self.viewer.screenshot(str(path), canvas_only=False)
        print(f"saved {path}")

    def _save_widget(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        widget = self.widget
        # down to the last section (not the empty stretch below it)
        bottom = widget.region_section.geometry().bottom() + 8
        rect = widget.rect()
        rect.setHeight(min(rect.height(), bottom))
        widget.grab(rect).save(str(path))
        print(f"saved {path}")

    def _quit(self) -> None:
        from qtpy.QtWidgets import QApplication

        try:
            self.viewer.close()
        finally:
            app = QApplication.instance()
            if app is not None:
                app.quit()


if __name__ == "__main__":  # pragma: no cover - used by the xvfb re-execution
    sys.exit(main())
