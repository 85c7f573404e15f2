"""The ``.sciz`` container: preamble, JSON header, block index and payloads with CRCs
(:mod:`~napari_sciz.core.bitstream.container`). The payloads themselves belong to each mode's
codec (:mod:`napari_sciz.core.lossy`, :mod:`napari_sciz.core.hybrid`,
:mod:`napari_sciz.core.lossless`)."""
