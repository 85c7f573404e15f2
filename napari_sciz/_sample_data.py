"""npe2 sample-data contribution: real stacks bundled in ``napari_sciz/samples``.

* ``cells3d_nuclei``: confocal fluorescence, nuclei channel of scikit-image's ``cells3d``
  (Allen Institute for Cell Science, public domain), planes 14-53 and a 192x192 crop,
  voxel size 0.29 x 0.26 x 0.26 micrometer (Z, Y, X).
* ``ct_phantom``: clinical CT of a phantom (neurolabusc/dcm_qa_ct, BSD-2-Clause), 16 slices of
  256x256; the voxel size is not recorded in the source, so the scale is 1.

See ``napari_sciz/samples/ATTRIBUTION.md`` for origins and licences. Only numpy and tifffile are
needed (the TIFFs are deflate-compressed, which tifffile decodes without imagecodecs).
"""

from __future__ import annotations

from importlib.resources import as_file, files
from typing import Any

import numpy as np

__all__ = ["SAMPLES", "cells3d_nuclei", "ct_phantom", "load_sample"]

LayerData = tuple[np.ndarray, dict[str, Any], str]

#: key -> (file in napari_sciz/samples, layer name, voxel size (Z, Y, X), units or None)
SAMPLES: dict[str, tuple[str, str, tuple[float, float, float], str | None]] = {
    "cells3d_nuclei": ("cells3d_nuclei.tif", "cells3d nuclei", (0.29, 0.26, 0.26), "micrometer"),
    "ct_phantom": ("ct_phantom.tif", "CT phantom", (1.0, 1.0, 1.0), None),
}


def load_sample(key: str) -> np.ndarray:
    """Read a bundled sample stack.

    Parameters
    ----------
    key : str
        A key of :data:`SAMPLES` (``"cells3d_nuclei"`` or ``"ct_phantom"``).

    Returns
    -------
    numpy.ndarray
        The stack, uint16, axes ZYX.
    """
    import tifffile

    filename = SAMPLES[key][0]
    with as_file(files("napari_sciz").joinpath("samples", filename)) as path:
        return np.asarray(tifffile.imread(path))


def _layer(key: str) -> list[LayerData]:
    _, name, voxel_size, units = SAMPLES[key]
    kwargs: dict[str, Any] = {"name": name, "scale": list(voxel_size)}
    if units is not None:
        kwargs["units"] = units
    return [(load_sample(key), kwargs, "image")]


def cells3d_nuclei() -> list[LayerData]:
    """Confocal nuclei stack (40x192x192 uint16, 0.29/0.26/0.26 micrometer voxels).

    Returns
    -------
    list of (data, kwargs, "image")
        One image layer.
    """
    return _layer("cells3d_nuclei")


def ct_phantom() -> list[LayerData]:
    """Clinical CT phantom stack (16x256x256 uint16, 12-bit values).

    Returns
    -------
    list of (data, kwargs, "image")
        One image layer.
    """
    return _layer("ct_phantom")
