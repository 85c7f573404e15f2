"""Images nobody tuned on: scikit-image's bundled images, as benchmark volumes.

No design choice of napari-sciz was measured on these; benchmarks report them beside the
shared stacks (``python -m napari_sciz.bench.lossless --data skimage``). RGB images are taken
as their luma (ITU-R BT.601 weights), rounded to uint8.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["IMAGES", "gray_images"]

#: the images (file stems in scikit-image's data folder), microscopy and astronomy first
IMAGES = ("cell", "retina", "ihc", "hubble_deep_field", "moon", "coins", "camera", "brick")


def gray_images(names: Sequence[str] | None = None) -> list[tuple[str, np.ndarray]]:
    """The images as 2D uint8 arrays, in :data:`IMAGES` order.

    Parameters
    ----------
    names : sequence of str, optional
        Only these (default: all of :data:`IMAGES`).

    Raises
    ------
    FileNotFoundError
        scikit-image is missing, or has no image of a name.
    """
    try:
        import skimage.data
        import skimage.io
    except ImportError as exc:
        raise FileNotFoundError("the unseen images need scikit-image") from exc
    folder = Path(skimage.data.__file__).parent
    files = {p.name.split(".")[0]: p for p in folder.iterdir() if p.suffix in (".png", ".jpg")}
    out = []
    for name in names or IMAGES:
        if name not in files:
            raise FileNotFoundError(f"scikit-image has no bundled image {name!r}")
        image = np.asarray(skimage.io.imread(files[name]))
        if image.ndim == 3:
            luma = image[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
            image = np.clip(np.rint(luma), 0, 255).astype(np.uint8)
        out.append((name, np.ascontiguousarray(image)))
    return out
