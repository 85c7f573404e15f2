"""Task guidance of hybrid mode, and the task scores it is measured by.

A biologist judges a decode by what it does to the analysis: does it segment like the
original (:mod:`.score`, frame by frame for a 2D time-lapse: :mod:`.frames`), does it look
like it (:mod:`.perceptual`)? Guidance chooses, on SPERR proxy decodes, what the codec codes
(:mod:`.prefilter`: the task band :mod:`.band`, a smoothing, the power map :mod:`.valuemap`,
or a segmentation lock, :mod:`napari_sciz.core.seglock`; the candidates and the choice:
:mod:`.choice`), makes it block by block for large volumes and stacks (:mod:`.blockwise`),
and codes and keeps the file that serves the task (:mod:`.guided`).

The lossy mode's guided fit (task terms in the field's loss) is
:mod:`napari_sciz.core.guidance`.
"""
