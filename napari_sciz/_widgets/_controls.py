"""The "Compress" widget's choices and what they mean: coding and guidance modes, tooltips, and
the device picker (which lists the real devices, importing torch, only when first opened)."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QWidget

from ..core.guidance import GUIDANCE_MODES

__all__ = [
    "AVAILABLE_GUIDANCE",
    "CODING_MODES",
    "GUIDANCE_MODES",
    "DeviceCombo",
]

#: Coding modes offered by the widget: (mode, label).
CODING_MODES: tuple[tuple[str, str], ...] = (
    ("auto", "auto (hybrid; neural field with guidance weights)"),
    ("lossy", "lossy (neural field)"),
    ("hybrid", "hybrid (best classical base + fitted filter)"),
    ("lossless", "lossless (bit-exact)"),
    ("bounded", "error-bounded"),
)
_MODE_TIP = (
    "auto: hybrid, the most accurate at a given size in our benchmarks (with a guidance it "
    "codes a pre-filtered volume, chosen by measuring the task on trial decodes), or the "
    "neural field when guidance weights are set (only the field's fit takes those). "
    "lossy: a neural field fitted at the target ratio. hybrid: the best of SPERR, HEVC and "
    "JPEG XL as a base layer, a fitted 3D loop filter and, when time allows, a neural fit of "
    "the residual, at the target ratio. lossless: "
    "bit-identical decoding (the ratio is what the data allow). "
    "error-bounded: every decoded value within Max error of the original."
)
_LABELS_MODE_TIP = (
    "A Labels layer is coded losslessly (a label map changed by a lossy code is no longer the "
    "same segmentation); the .sciz file opens as a labels layer again."
)
#: Guidance modes the codec implements now; the others would be shown disabled.
AVAILABLE_GUIDANCE: frozenset[str] = frozenset(GUIDANCE_MODES)
_NOT_YET = "Not available yet: guided losses arrive in a later release of napari-sciz."
_GUIDANCE_TIP = (
    "What the compression should preserve best. none: every voxel alike (MSE). "
    "segmentation: the objects of a smoothed-threshold segmentation (Gaussian, Otsu, "
    "watershed; or the chosen Labels layer), scored by object F1. perceptual: structure, "
    "scored by MS-SSIM and gradient similarity. In hybrid mode (auto) the encoder codes the "
    "pre-filtered volume that scores best on trial decodes, or the plain one; in lossy mode "
    "the task is added to the fit's loss (Weights: Advanced). Either gives up at most 1 dB "
    "of PSNR for its task (lossy mode: the 'max psnr loss' weight). Decoding is unchanged."
)
#: Tooltips of the guidance weights (relative weights: see docs/guidance.md).
_WEIGHT_TIPS = {
    "side": "Relative weight of the voxels on the wrong side of the reference threshold",
    "dice": "Relative weight of 1 - soft Dice of the soft-thresholded reconstruction",
    "boundary": "Relative weight of the squared error on the band around object boundaries",
    "sharpness": "Temperature of the soft threshold (normalised intensity) of the Dice term",
    "band_radius": "Half-width of the boundary band in voxels",
    "ssim": "Relative weight of 1 - SSIM (per 2D slice, as the result's SSIM is measured)",
    "gradient": "Relative weight of the L1 distance of the intensity gradients",
    "max_psnr_loss": "Most PSNR (dB) the guided fit may give up against a plain fit for its task",
}
_LABELS_TIP = (
    "Labels layer (same shape as the image; > 0 is foreground) that segmentation guidance "
    "should preserve. Automatic: an Otsu threshold of the image."
)


class DeviceCombo(QComboBox):
    """A device picker that lists the real devices the first time it is opened (imports torch)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.addItem("auto (best available)", "auto")
        self.setToolTip("Where to fit: a CUDA GPU, Apple MPS or the CPU")
        self.populated = False

    def populate(self) -> None:
        """Add the available devices (CUDA with name and free memory, MPS, CPU)."""
        if self.populated:
            return
        self.populated = True
        try:
            from ..core.device import available_devices

            devices = available_devices()
        except Exception as exc:  # noqa: BLE001 - keep "auto" usable
            self.setToolTip(f"Could not list devices: {exc}")
            devices = []
        for info in devices:
            self.addItem(info.label, info.name)

    def showPopup(self) -> None:  # noqa: N802 - Qt override
        """Populate lazily, then open."""
        self.populate()
        super().showPopup()
