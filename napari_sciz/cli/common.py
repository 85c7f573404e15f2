"""What the ``sciz`` commands share: the lazily imported codec and output checks."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, SciZError
from ..io import SUPPORTED_EXTENSIONS


def _codec() -> Any:
    """Import the codec API (and with it torch) lazily, with a clear message if impossible."""
    try:
        return importlib.import_module("napari_sciz.core.api")
    except ModuleNotFoundError as exc:
        if exc.name == "torch":
            raise SciZError("PyTorch is not installed; install it to use the codec") from exc
        raise


def _check_sciz_output(path: Path) -> None:
    if path.suffix.lower() != ".sciz":
        raise InvalidInputError(f"output must be a .sciz file, got {path.name}")


def _check_image_output(path: Path) -> None:
    if not path.name.lower().endswith(SUPPORTED_EXTENSIONS):
        raise InvalidInputError(
            f"unsupported output type for {path.name} "
            "(expected .tif, .tiff, .ome.tif, .ome.tiff, .npy or an .ome.zarr store)"
        )
