"""Image file input/output: TIFF, OME-TIFF and ``.npy`` with axes and voxel size.

:func:`read_image` and :func:`write_image` are used by the CLI and the napari contributions;
:mod:`napari_sciz.io.atomic` holds the one atomic-write implementation of the package.
"""

from __future__ import annotations

from .atomic import atomic_write, check_output, write_bytes_atomic
from .image import SUPPORTED_EXTENSIONS, ImageData, default_axes, read_image, write_image

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "ImageData",
    "atomic_write",
    "check_output",
    "default_axes",
    "read_image",
    "write_bytes_atomic",
    "write_image",
]
