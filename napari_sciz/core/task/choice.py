"""What hybrid task guidance measured and chose: the candidates (:class:`Candidate`) and
the choice (:class:`TaskChoice`: its scores, how they compare, its header entries, its line
for the user). The measuring is :mod:`.prefilter`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .valuemap import CurveMap, ValueMap

__all__ = ["CODED_PSNR_LOSS", "MAX_PSNR_LOSS", "Candidate", "TaskChoice", "halved_label"]

#: the most PSNR (dB, against the original) a band may cost against the plain volume
MAX_PSNR_LOSS = 1.0

#: the most PSNR a *coded* guided file may cost against the plain file coded in its own run:
#: :data:`MAX_PSNR_LOSS` less a margin for the spread between runs, so that the kept file is
#: also within :data:`MAX_PSNR_LOSS` of the file an unguided run codes (which has all the
#: time: 0.01-0.04 dB apart on the shared stacks; bia_membrane's 256x guided file was kept
#: 0.96 dB below its own run's plain file and 1.04 dB below the unguided one)
CODED_PSNR_LOSS = MAX_PSNR_LOSS - 0.1


def halved_label(name: str) -> str:
    """The label of candidate ``name`` coded at half resolution (``"half"``, ``"curve,
    half"``)."""
    return "half" if name == "none" else f"{name}, half"


@dataclass(frozen=True)
class Candidate:
    """A pre-filter, power map or lock measured on the proxy.

    Attributes
    ----------
    kind : {"none", "band", "smooth", "power", "curve", "lock"}
        What is coded (``"curve"``: through a sensitivity curve, :mod:`.valuemap`).
    setting : float or None
        Band half-width, smoothing sigma (before the map, for ``"power"`` and ``"curve"``)
        or lock share.
    exponent : float or None
        The power map's exponent (``"power"``).
    lock_bytes : int
        The lock's bytes on the proxy (``"lock"``).
    lock_seconds : float
        Seconds the lock took to build on the proxy (``"lock"``).
    halved : bool
        Whether the codec codes it at half the in-plane resolution
        (:mod:`napari_sciz.core.hybrid.halved`; perceptual guidance).
    """

    kind: str
    setting: float | None = None
    exponent: float | None = None
    lock_bytes: int = 0
    lock_seconds: float = 0.0
    halved: bool = False

    @property
    def label(self) -> str:
        """Its name in :attr:`TaskChoice.scores` (``"3"``: a band or a sigma; ``"power
        0.5"``, ``"0.5 + power 0.5"``: a power map, after a smoothing; ``"curve"``, ``"0.5 +
        curve"``: a sensitivity curve; ``"lock 0.2"``; ``"half"``, ``"curve, half"``: coded
        at half resolution)."""
        return halved_label(self._name) if self.halved else self._name

    @property
    def _name(self) -> str:
        if self.kind == "none":
            return "none"
        if self.kind == "lock":
            return f"lock {self.setting:g}"
        if self.kind in ("power", "curve"):
            mapped = "curve" if self.kind == "curve" else f"power {self.exponent:g}"
            return mapped if self.setting is None else f"{self.setting:g} + {mapped}"
        return f"{self.setting:g}"


@dataclass
class TaskChoice:
    """What :func:`.prefilter.choose_prefilter` measured and chose.

    Attributes
    ----------
    guidance : {"segmentation", "perceptual"}
        The task.
    setting : float or None
        The band half-width (noise standard deviations) or the smoothing sigma (voxels) chosen;
        None: the volume as it is.
    scores : dict
        Per candidate (``"none"``, ``"2"``, ...): the task's scores and PSNR of the proxy
        decode.
    seconds : float
        Time the choice took.
    score_seconds : float
        The longest a proxy decode took to score (a coded file's scoring takes about as
        long: the guided coding keeps that time for each of the first two).
    reference : numpy.ndarray or None
        The reference segmentation (segmentation guidance).
    spacing : int
        Watershed seed spacing of the segmentations (segmentation guidance).
    spacings : list of int or None
        A 2D time-lapse's seed spacing per frame, where it is segmented frame by frame
        (:mod:`.frames`; ``reference`` is then its frames' labels); None otherwise.
    lock_share : float or None
        Share of the bytes given to a segmentation lock (:mod:`napari_sciz.core.seglock`),
        when one was chosen (``setting`` is then None).
    lock_bytes : int
        The lock's bytes on the proxy.
    lock_seconds : float
        Seconds the lock took to build on the proxy.
    value_map : PowerMap or CurveMap or None
        The intensity map the volume is coded through (perceptual guidance), when one was
        chosen (``setting`` is then the smoothing before it, or None).
    halved : bool
        Whether the codec codes the chosen candidate at half the in-plane resolution
        (perceptual guidance; header ``task_halved``).
    ranked : list of Candidate
        Every candidate but the plain volume at most :data:`MAX_PSNR_LOSS` dB below it on the
        proxy, best first (the first is the choice when it scored better than the plain
        volume): what the encoder may code with the codec itself when time allows.
    """

    guidance: str
    setting: float | None = None
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    score_seconds: float = 0.0
    reference: np.ndarray | None = field(default=None, repr=False)
    spacing: int = 3
    spacings: list[int] | None = field(default=None, repr=False)
    lock_share: float | None = None
    lock_bytes: int = 0
    lock_seconds: float = 0.0
    value_map: ValueMap | None = None
    halved: bool = False
    ranked: list[Candidate] = field(default_factory=list, repr=False)

    @property
    def chosen(self) -> bool:
        """Whether a candidate scored better than the plain volume on the proxy."""
        return (
            self.setting is not None
            or self.lock_share is not None
            or self.value_map is not None
            or self.halved
        )

    def score(
        self, original: np.ndarray, decoded: np.ndarray, voxel_size: Sequence[float] | None
    ) -> dict[str, float]:
        """The task's scores and the PSNR of ``decoded`` against ``original``."""
        from .score import gradient_similarity, ms_ssim, segmentation_fidelity

        out = {"psnr": _psnr(original, decoded)}
        if self.guidance == "segmentation":
            assert self.reference is not None
            seg = segmentation_fidelity(self.reference, self.segment(decoded, voxel_size))
            out.update(f1=seg.f1, dice=seg.dice)
        else:
            out.update(
                ms_ssim=ms_ssim(original, decoded),
                gmsm=gradient_similarity(original, decoded),
            )
        return out

    def segment(self, decoded: np.ndarray, voxel_size: Sequence[float] | None) -> np.ndarray:
        """``decoded`` segmented as the reference was: as one volume with the original's
        seed spacing, or frame by frame with each frame's."""
        from .score import segment

        if self.spacings is None:
            return segment(decoded, voxel_size, min_distance=self.spacing)
        from .frames import frame_voxel_size, segment_frames

        return segment_frames(decoded, frame_voxel_size(voxel_size), min_distances=self.spacings)

    def key(self, score: dict[str, float]) -> tuple[float, float]:
        """What is compared: (object F1, Dice) or (MS-SSIM, gradient similarity)."""
        if self.guidance == "segmentation":
            return score["f1"], score["dice"]
        return score["ms_ssim"], score["gmsm"]

    def better(self, candidate: dict[str, float], plain: dict[str, float]) -> bool:
        """Whether coded file ``candidate`` scores better than the plain file ``plain`` at a
        PSNR at most :data:`CODED_PSNR_LOSS` dB below it."""
        if candidate["psnr"] < plain["psnr"] - CODED_PSNR_LOSS:
            return False
        return self.key(candidate) > self.key(plain)

    def to_header(self) -> dict:
        """The header entries of a file coded with this choice."""
        out: dict = {"guidance": self.guidance}
        if self.setting is not None:  # (absent: the volume as it is; header bytes count)
            out["task_band" if self.guidance == "segmentation" else "task_smooth"] = self.setting
        if self.lock_share is not None:
            out["task_lock_share"] = self.lock_share
        if self.value_map is not None:
            out["value_map"] = self.value_map.to_header()
        if self.halved:
            out["task_halved"] = True
        return out

    def describe(self) -> str:
        """One line for the user: the pre-filter chosen and the scores that chose it."""
        x = self.setting
        if self.guidance == "segmentation":
            what = "no band" if x is None else f"band {x:g} noise s.d."
            if self.lock_share is not None:
                what = f"a segmentation lock in {self.lock_share:.0%} of the bytes"
            name, key = "F1", "f1"
        else:
            what = "no smoothing" if x is None else f"smoothing sigma {x:g} voxel"
            if self.value_map is not None:
                mapped = describe_map(self.value_map)
                what = mapped if x is None else f"{what} and {mapped}"
            if self.halved:
                what += ", coded at half resolution,"
            name, key = "MS-SSIM", "ms_ssim"
        parts = ", ".join(f"{k}: {name} {v[key]:.4f}" for k, v in self.scores.items())
        return (
            f"{self.guidance} guidance: {what} chosen on a SPERR proxy "
            f"({parts}; {self.seconds:.1f} s)"
        )


def describe_map(value_map: ValueMap) -> str:
    """``a power map (exponent 0.5)`` or ``a sensitivity curve (16 pieces)``."""
    if isinstance(value_map, CurveMap):
        return f"a sensitivity curve ({len(value_map.steps)} pieces)"
    return f"a power map (exponent {value_map.exponent:g})"


def _psnr(original: np.ndarray, decoded: np.ndarray) -> float:
    a = np.asarray(original, np.float64)
    span = float(a.max() - a.min()) or 1.0
    mse = float(np.mean((np.asarray(decoded, np.float64) - a) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(span * span / mse))
