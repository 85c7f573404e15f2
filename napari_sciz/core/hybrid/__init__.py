"""Hybrid coding: a classical base layer, a fitted loop filter, a neural filter and a field.

* :mod:`~napari_sciz.core.hybrid.bases`: SPERR, HEVC and JPEG XL base layers at a byte target;
* :mod:`~napari_sciz.core.hybrid.loopfilter`: the adaptive 3D filter fitted on the base;
* :mod:`~napari_sciz.core.hybrid.nnfilter`: the small neural network trained after it;
* :mod:`~napari_sciz.core.hybrid.codec`: the block encoder that chooses among them;
* :mod:`~napari_sciz.core.hybrid.payload`: the payload's layers, packed and read;
* :mod:`~napari_sciz.core.hybrid.decoder`: whole blocks or a few planes at a time;
* :mod:`~napari_sciz.core.hybrid.mosaic`: slices tiled into one image for 2D codecs.
"""

from .codec import BASE_SHARES, HybridFit, fit_hybrid_block, layer_sizes
from .decoder import HybridBlock, decode_hybrid_block

__all__ = [
    "BASE_SHARES",
    "HybridBlock",
    "HybridFit",
    "decode_hybrid_block",
    "fit_hybrid_block",
    "layer_sizes",
]
