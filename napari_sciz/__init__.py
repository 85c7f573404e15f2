"""napari-sciz: compress microscopy and X-ray CT stacks with implicit neural representations.

The public API is imported lazily so that ``import napari_sciz`` (which napari does at start-up)
does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

try:
    from ._version import __version__
except ImportError:  # pragma: no cover - only in a source tree without metadata
    __version__ = "0.1.0"

from .errors import (
    CancelledError,
    FormatError,
    InvalidInputError,
    OutputExistsError,
    OutputFolderError,
    RatioUnreachableError,
    SciZError,
)

_LAZY = {
    "compress": "napari_sciz.core.api",
    "decompress": "napari_sciz.core.api",
    "open_sciz": "napari_sciz.core.api",
    "CompressResult": "napari_sciz.core.api",
    "ProgressInfo": "napari_sciz.core.api",
    "SciZReader": "napari_sciz.core.api",
    "psnr": "napari_sciz.core.metrics",
    "ssim": "napari_sciz.core.metrics",
    "max_abs_error": "napari_sciz.core.metrics",
}

__all__ = [
    "__version__",
    "SciZError",
    "InvalidInputError",
    "FormatError",
    "RatioUnreachableError",
    "CancelledError",
    "OutputExistsError",
    "OutputFolderError",
    *_LAZY,
]

if TYPE_CHECKING:  # pragma: no cover
    from .core.api import CompressResult, ProgressInfo, SciZReader, compress, decompress, open_sciz
    from .core.metrics import max_abs_error, psnr, ssim


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_sciz' has no attribute {name!r}")
    return getattr(import_module(module), name)
