"""The lossy codec: a latent-grid neural field per block, fitted under a byte budget.

* :mod:`~napari_sciz.core.lossy.model`: the field (multi-resolution latent grids and a small
  MLP), its configuration and the Laplace rate model of the latents;
* :mod:`~napari_sciz.core.lossy.entropy`: the block payload (architecture, quantized latents
  and weights, range-coded);
* :mod:`~napari_sciz.core.lossy.start`: the transform-coded start (a closed-loop Laplacian
  pyramid quantized at the block's bytes) the fit begins from;
* :mod:`~napari_sciz.core.lossy.ratecontrol`: the quantization step that lands the payload
  in the block's byte window;
* :mod:`~napari_sciz.core.lossy.arm`: the autoregressive entropy model of the latents;
* :mod:`~napari_sciz.core.lossy.training`: the training loop (rate-distortion steps on crops);
* :mod:`~napari_sciz.core.lossy.guided`: the task-guided refinement after a plain fit;
* :mod:`~napari_sciz.core.lossy.fit`: the steps that tie them together
  (:func:`~napari_sciz.core.lossy.fit.fit_block`).

Nothing here imports the planning (:mod:`napari_sciz.core.plan`) or the hybrid codec, which
both use this package.
"""
