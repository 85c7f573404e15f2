"""Images nobody tuned on: scikit-image's bundled images, as benchmark volumes.

No design choice of napari-sciz was measured on these; benchmarks report them beside the
shared stacks (``python -m napari_sciz.bench.lossless --data skimage``). RGB images are taken
as their luma (ITU-R BT.601 weights), rounded to uint8.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["IMAGES", "ZOOMS", "gray_images", "zoomed_images"]

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


#: how :func:`zoomed_images` enlarges: corner-aligned (``scipy.ndimage.zoom`` to ``2n - 1``,
#: ``grid_mode=False``: every other voxel an original one) and centre-aligned (to ``2n``,
#: ``grid_mode=True``, as PIL, OpenCV and scikit-image's ``rescale`` do); linear, rounded
#: with numpy (halves to even)
ZOOMS = ("corner", "centre")


def zoomed_images(names: Sequence[str] | None = None) -> list[tuple[str, np.ndarray]]:
    """The images of :func:`gray_images` (their first 384x384 pixels) zoomed 2x in both axes
    by linear interpolation, each in both :data:`ZOOMS` (``"cell@corner"``, ...): data stored
    larger than acquired, which the resampled lossless blocks are for.

    Raises
    ------
    FileNotFoundError
        scikit-image or scipy is missing, or an image.
    """
    try:
        from scipy import ndimage
    except ImportError as exc:
        raise FileNotFoundError("the zoomed images need scipy") from exc
    out = []
    for name, image in gray_images(names):
        crop = image[:384, :384].astype(np.float64)
        n = np.array(crop.shape)
        for how in ZOOMS:
            if how == "corner":
                big = ndimage.zoom(crop, (2 * n - 1) / n, order=1, grid_mode=False)
            else:
                big = ndimage.zoom(crop, 2, order=1, grid_mode=True, mode="nearest")
            out.append((f"{name}@{how}", np.clip(np.rint(big), 0, 255).astype(np.uint8)))
    return out
