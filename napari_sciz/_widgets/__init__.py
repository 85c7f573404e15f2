"""napari widgets of napari-sciz (Qt via qtpy; torch is imported only when a job needs it).

* :class:`CompressWidget` - compress an image layer, compare side by side, save the ``.sciz``.
* :class:`DecodeRegionWidget` - decode a region of a compressed layer from its ``.sciz`` bytes
  (also embedded in :class:`CompressWidget` as its "Decode region" section).
"""

from __future__ import annotations

from ._compress import CompressWidget
from ._region import DecodeRegionWidget

__all__ = ["CompressWidget", "DecodeRegionWidget"]
