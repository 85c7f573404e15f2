"""Classical-codec anchors at a target compression ratio.

Every codec is measured the way ``../shared/GUIDE.md`` section 2 says:

* **ratio** = raw bytes of the original array (``numel * itemsize`` of its dtype) / bytes of the
  complete compressed output.  Where a codec's own stream cannot restore the original on its own
  (the value range of a range-scaled input, the slice layout of a mosaic) the few bytes a minimal
  wrapper would need are counted too (:data:`RANGE_SIDE_INFO_BYTES`,
  :data:`MOSAIC_SIDE_INFO_BYTES`).
* A codec counts at ratio ``R`` only if it reaches at least ``R``; its quality parameter is bisected
  (:func:`bisect_quality`) to the best quality that still fits.
* 2D codecs (JPEG XL, JPEG 2000) encode all slices tiled into **one** mosaic image (one header).
  HEVC gets the slices as the frames of one 12-bit gray video (range-scaled), coded by
  ffmpeg/libx265 into a raw Annex-B ``.hevc`` elementary stream (the lightest container: none).
* SZ3, SPERR and ZFP get the 3D array as float32.
* **PSNR** uses the original's ``max - min`` as the peak, over the whole array; **SSIM** is the
  mean of scikit-image's ``structural_similarity`` over the 2D slices with
  ``data_range = max - min`` (both from :mod:`napari_sciz.core.metrics`, re-exported here).

The codecs are :class:`Codec` objects in :data:`CODECS`; :meth:`Codec.encode_at_ratio` returns a
:class:`CodecResult` (or ``None`` when the codec cannot reach the ratio).  :func:`lossless_sizes`
measures the lossless codecs (ratio and times only).

Examples
--------
>>> import numpy as np
>>> from napari_sciz.bench.classical import CODECS
>>> vol = (np.random.default_rng(0).random((8, 32, 32)) * 1000).astype(np.uint16)
>>> res = CODECS["sperr"].encode_at_ratio(vol, 4.0)  # doctest: +SKIP
>>> res.ratio >= 4.0  # doctest: +SKIP
True
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..core.hybrid.mosaic import mosaic_layout, tile_mosaic, untile_mosaic
from ..core.metrics import max_abs_error, psnr, ssim

__all__ = [
    "MOSAIC_SIDE_INFO_BYTES",
    "RANGE_SIDE_INFO_BYTES",
    "CODECS",
    "BisectionResult",
    "Codec",
    "CodecResult",
    "Encoded",
    "LosslessResult",
    "Trial",
    "available_codecs",
    "bisect_quality",
    "ffmpeg_path",
    "get_codec",
    "lossless_sizes",
    "max_abs_error",
    "mosaic_layout",
    "psnr",
    "ssim",
    "tile_mosaic",
    "untile_mosaic",
]

#: Bytes a minimal wrapper needs to undo a range scaling (value minimum and maximum as float64).
RANGE_SIDE_INFO_BYTES = 16
#: Bytes a minimal wrapper needs to cut a mosaic back into slices (slice count, tile height, width).
MOSAIC_SIDE_INFO_BYTES = 12


def _peak(original: np.ndarray) -> float:
    return float(np.max(original)) - float(np.min(original))


# --------------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodecResult:
    """One classical codec measured at one target ratio.

    Attributes
    ----------
    codec : str
        Registry name of the codec (``"sperr"``, ``"jpegxl"`` ...).
    target_ratio : float
        The ratio asked for.
    ratio : float
        The ratio reached (``>= target_ratio``): raw bytes / ``nbytes``.
    nbytes : int
        Bytes of the complete compressed output.
    psnr, ssim, max_error : float
        Quality of the decoded array in the original dtype (GUIDE.md definitions).
    encode_seconds, decode_seconds : float
        Wall-clock time of the final encode and of its decode.
    param : float
        The codec's quality parameter that was chosen (see :attr:`Codec.param_name`).
    """

    codec: str
    target_ratio: float
    ratio: float
    nbytes: int
    psnr: float
    ssim: float
    max_error: float
    encode_seconds: float
    decode_seconds: float
    param: float

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-serialisable dict."""
        return asdict(self)


@dataclass(frozen=True)
class LosslessResult:
    """One lossless codec measured on one volume (ratio and times only).

    Attributes
    ----------
    codec : str
        Human-readable codec name, with its arrangement (``"JPEG XL (per slice)"`` ...).
    nbytes : int
        Bytes of the complete output (sum over files for per-slice arrangements).
    ratio : float
        Raw bytes / ``nbytes``.
    encode_seconds, decode_seconds : float
        Wall-clock times.
    exact : bool
        Whether the decoded array equals the original bit for bit.
    """

    codec: str
    nbytes: int
    ratio: float
    encode_seconds: float
    decode_seconds: float
    exact: bool

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-serialisable dict."""
        return asdict(self)


@dataclass
class Encoded:
    """A codec's output for one parameter value.

    Attributes
    ----------
    payload : bytes
        The codec's stream.
    nbytes : int
        ``len(payload)`` plus the side information a minimal wrapper needs.
    state : dict
        What the codec's ``decode`` needs besides the payload (shape, layout, range...).
    encode_seconds : float
        Wall-clock time of the encode.
    """

    payload: bytes
    nbytes: int
    state: dict[str, Any] = field(default_factory=dict)
    encode_seconds: float = 0.0


# --------------------------------------------------------------------------------------------------
# bisection
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """One evaluated parameter value: ``param`` gave ``nbytes`` (``fits``: ``nbytes <= budget``)."""

    param: float
    nbytes: int
    fits: bool


@dataclass
class BisectionResult:
    """Outcome of :func:`bisect_quality`.

    Attributes
    ----------
    param : float or None
        Best-quality parameter that fits the byte budget (``None``: even the lowest quality
        does not).
    nbytes : int or None
        Its size.
    violating_param : float or None
        Closest evaluated parameter on the higher-quality side of ``param`` that does not fit
        (``None`` when the highest quality fits).
    trials : list of Trial
        Every evaluation, in order.
    feasible : list of float
        The fitting parameters, best quality first.
    """

    param: float | None
    nbytes: int | None
    violating_param: float | None
    trials: list[Trial]
    feasible: list[float]


def bisect_quality(
    size_of: Callable[[float], int],
    budget: int,
    lo: float,
    hi: float,
    *,
    increasing: bool,
    log: bool = False,
    integer: bool = False,
    iterations: int = 16,
    rtol: float = 0.002,
    scan: int = 0,
    window: float = 0.05,
) -> BisectionResult:
    """Bisect a quality parameter to the best quality whose output fits ``budget`` bytes.

    The output size is assumed to grow with quality; the parameter grows with quality when
    ``increasing`` (bits per value, a PSNR target) and falls with it otherwise (a distance, an error
    bound, a CRF).  Non-monotone spots are tolerated: every evaluation is kept and the answer is the
    best-quality evaluated parameter that fits, whatever path the bisection took.

    Parameters
    ----------
    size_of : callable
        ``size_of(param) -> nbytes``; may raise ``ValueError`` / ``RuntimeError`` for an unusable
        parameter, counted as "does not fit".
    budget : int
        The largest allowed size in bytes.
    lo, hi : float
        Parameter range (``lo < hi``).
    increasing : bool
        Whether quality (and size) grows with the parameter.
    log : bool
        Bisect ``log(param)`` (for parameters spanning decades; needs ``lo > 0``).
    integer : bool
        The parameter is an integer; the bisection stops at adjacent integers.
    iterations : int
        Maximum number of evaluations inside the bracket.
    rtol : float
        Stop early once a fitting size is within ``rtol`` of the budget.
    scan : int
        After the bisection, evaluate this many extra parameters evenly spread over the normalised
        quality interval ``[q_fit - window, q_violating + window]`` around the boundary it found
        (for codecs whose size jumps around, e.g. SZ3 switching predictors).
    window : float
        Half-width of that scan, as a fraction of the parameter range (on the log scale if ``log``).

    Returns
    -------
    BisectionResult
    """
    if not lo < hi:
        raise ValueError(f"need lo < hi, got {lo} and {hi}")
    if log and lo <= 0:
        raise ValueError("log bisection needs lo > 0")
    trials: list[Trial] = []

    def evaluate(p: float) -> Trial:
        try:
            n = int(size_of(p))
        except (ValueError, RuntimeError):
            n = 2**62
        t = Trial(p, n, n <= budget)
        trials.append(t)
        return t

    # q: 0 = lowest quality, 1 = highest quality
    def param_at(q: float) -> float:
        u = q if increasing else 1.0 - q
        p = (
            math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
            if log
            else lo + u * (hi - lo)
        )
        return float(round(p)) if integer else p

    def quality_key(p: float) -> float:
        return p if increasing else -p

    best_q = evaluate(param_at(1.0))
    if not best_q.fits:
        worst_q = evaluate(param_at(0.0))
        if worst_q.fits:
            q_fit, q_bad = 0.0, 1.0
            for _ in range(iterations):
                mid = 0.5 * (q_fit + q_bad)
                p_mid = param_at(mid)
                if integer and p_mid in (param_at(q_fit), param_at(q_bad)):
                    break
                t = evaluate(p_mid)
                if t.fits:
                    q_fit = mid
                    if t.nbytes >= budget * (1.0 - rtol):
                        break
                else:
                    q_bad = mid
            if scan > 0:
                done = {t.param for t in trials}
                a, b = max(q_fit - window, 0.0), min(q_bad + window, 1.0)
                for q in np.linspace(a, b, scan):
                    p = param_at(float(q))
                    if p not in done:
                        done.add(p)
                        evaluate(p)

    fitting = sorted({t.param for t in trials if t.fits}, key=quality_key, reverse=True)
    if not fitting:
        return BisectionResult(None, None, None, trials, [])
    best = fitting[0]
    nbytes = min(t.nbytes for t in trials if t.param == best)
    better_bad = [
        t.param for t in trials if not t.fits and quality_key(t.param) > quality_key(best)
    ]
    violating = min(better_bad, key=quality_key) if better_bad else None
    return BisectionResult(best, nbytes, violating, trials, fitting)


# --------------------------------------------------------------------------------------------------
# helpers: dtype restoration, range scaling, mosaics
# --------------------------------------------------------------------------------------------------


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast decoded values back to ``dtype`` (rounded and clipped for integer types)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return np.asarray(values).astype(dtype)


def _as_3d(volume: np.ndarray) -> np.ndarray:
    """View an array as a stack of 2D slices (ZYX)."""
    arr = np.asarray(volume)
    if arr.ndim < 2:
        raise ValueError(f"need at least a 2D array, got shape {arr.shape}")
    return arr.reshape(-1, *arr.shape[-2:])


def _range_scale(volume: np.ndarray, maxcode: int) -> tuple[np.ndarray, float, float]:
    """Map ``[min, max]`` linearly onto the integers ``[0, maxcode]`` (uint16 result)."""
    vmin = float(np.min(volume))
    vmax = float(np.max(volume))
    span = vmax - vmin if vmax > vmin else 1.0
    scaled = np.rint((volume.astype(np.float64) - vmin) * (maxcode / span))
    return np.clip(scaled, 0, maxcode).astype(np.uint16), vmin, vmax


def _range_unscale(codes: np.ndarray, vmin: float, vmax: float, maxcode: int) -> np.ndarray:
    span = vmax - vmin if vmax > vmin else 1.0
    return codes.astype(np.float64) * (span / maxcode) + vmin


#: decodes are timed as the best of this many runs (the first one loads compiled kernels)
DECODE_REPEAT = 5


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[Any, float]:
    """``fn()`` and its best wall time over ``repeat`` runs."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return value, best


def ffmpeg_path() -> str | None:
    """Path of the ``ffmpeg`` executable (``$SCIZ_FFMPEG`` or ``PATH``), or ``None``."""
    env = os.environ.get("SCIZ_FFMPEG")
    if env:
        return env if os.path.isfile(env) else None
    return shutil.which("ffmpeg")


def _ffmpeg_has_encoder(encoder: str) -> bool:
    exe = ffmpeg_path()
    if exe is None:
        return False
    try:
        proc = subprocess.run(
            [exe, "-hide_banner", "-h", f"encoder={encoder}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and "is not recognized" not in proc.stdout + proc.stderr


def _run_ffmpeg(args: Sequence[str], stdin: bytes | None = None) -> bytes:
    exe = ffmpeg_path()
    if exe is None:
        raise RuntimeError("ffmpeg is not available")
    proc = subprocess.run(
        [exe, "-hide_banner", "-nostdin", "-loglevel", "error", *args],
        input=stdin,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    return proc.stdout


def _imagecodecs() -> Any:
    import imagecodecs

    return imagecodecs


# --------------------------------------------------------------------------------------------------
# codecs
# --------------------------------------------------------------------------------------------------


class Codec(ABC):
    """A classical lossy codec with one quality parameter.

    Subclasses set the class attributes describing the parameter and implement :meth:`available`,
    :meth:`encode` and :meth:`decode`.

    Attributes
    ----------
    name : str
        Registry key.
    label : str
        Name for tables.
    param_name : str
        What the quality parameter is.
    increasing : bool
        Whether quality (and size) grows with the parameter.
    log : bool
        Whether the parameter is bisected on a log scale.
    integer : bool
        Whether the parameter is an integer.
    scan, window : int, float
        Extra evaluations around the boundary after the bisection (see :func:`bisect_quality`).
    numthreads : int
        Threads the codec may use (1 by default, for comparable timings on a shared machine).
    """

    name: str = ""
    label: str = ""
    param_name: str = ""
    increasing: bool = True
    log: bool = False
    integer: bool = False
    scan: int = 0
    window: float = 0.05

    def __init__(self, numthreads: int = 1) -> None:
        self.numthreads = numthreads

    @abstractmethod
    def available(self) -> bool:
        """Whether the codec can run here."""

    @abstractmethod
    def param_range(self, volume: np.ndarray, ratio: float) -> tuple[float, float]:
        """Range ``(lo, hi)`` of the quality parameter to bisect for ``volume`` at ``ratio``."""

    @abstractmethod
    def encode(self, volume: np.ndarray, param: float) -> Encoded:
        """Encode a ZYX ``volume`` with quality ``param``."""

    @abstractmethod
    def decode(self, encoded: Encoded) -> np.ndarray:
        """Decode to a ZYX array in the original dtype."""

    def _encode_timed(self, volume: np.ndarray, param: float) -> Encoded:
        enc, seconds = timed(lambda: self.encode(volume, param))
        enc.encode_seconds = seconds
        return enc

    def encode_at_ratio(
        self,
        volume: np.ndarray,
        ratio: float,
        *,
        iterations: int = 16,
        rtol: float = 0.002,
        candidates: int = 3,
        compute_ssim: bool = True,
    ) -> CodecResult | None:
        """Best quality of this codec at a compression ratio of at least ``ratio``.

        Parameters
        ----------
        volume : np.ndarray
            The original (2D or more; leading axes are stacked as slices).
        ratio : float
            Target ratio: raw bytes / compressed bytes must be ``>= ratio``.
        iterations : int
            Maximum bisection steps.
        rtol : float
            Early stop once a fitting size is within ``rtol`` of the budget.
        candidates : int
            The best-quality ``candidates`` fitting parameters (plus those of the codec's scan) are
            decoded and the one with the highest PSNR wins (robustness to non-monotone spots).
        compute_ssim : bool
            Compute SSIM (the slowest metric); ``nan`` otherwise.

        Returns
        -------
        CodecResult or None
            ``None`` when the codec cannot reach ``ratio`` on this volume.
        """
        original = np.asarray(volume)
        vol = _as_3d(original)
        raw = vol.size * vol.dtype.itemsize
        budget = int(math.floor(raw / ratio))
        cache: dict[float, Encoded] = {}

        def size_of(p: float) -> int:
            enc = self._encode_timed(vol, p)
            cache[p] = enc
            return enc.nbytes

        lo, hi = self.param_range(vol, ratio)
        res = bisect_quality(
            size_of,
            budget,
            lo,
            hi,
            increasing=self.increasing,
            log=self.log,
            integer=self.integer,
            iterations=iterations,
            rtol=rtol,
            scan=self.scan,
            window=self.window,
        )
        if res.param is None:
            return None
        best: tuple[float, float, Encoded, np.ndarray, float] | None = None
        for p in res.feasible[: max(1, candidates + self.scan)]:
            enc = cache[p]
            dec, dseconds = timed(lambda enc=enc: self.decode(enc))
            q = psnr(vol, dec)
            if best is None or q > best[0]:
                best = (q, p, enc, dec, dseconds)
        assert best is not None
        q, p, enc, dec, dseconds = best
        dec = dec.reshape(original.shape)
        return CodecResult(
            codec=self.name,
            target_ratio=float(ratio),
            ratio=raw / enc.nbytes,
            nbytes=enc.nbytes,
            psnr=q,
            ssim=ssim(original, dec) if compute_ssim else math.nan,
            max_error=max_abs_error(original, dec),
            encode_seconds=enc.encode_seconds,
            decode_seconds=dseconds,
            param=float(p),
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class _FloatCodec(Codec):
    """Codecs fed with the volume as float32 raw values (SPERR, SZ3, ZFP)."""

    def _state(self, volume: np.ndarray) -> dict[str, Any]:
        return {"shape": volume.shape, "dtype": volume.dtype}

    def _finish(self, values: np.ndarray, enc: Encoded) -> np.ndarray:
        return _to_dtype(np.asarray(values).reshape(enc.state["shape"]), enc.state["dtype"])


class SPERRCodec(_FloatCodec):
    """SPERR (3D wavelets + SPECK) in bits-per-value mode on the float32 volume."""

    name = "sperr"
    label = "SPERR"
    param_name = "bpp (bits per voxel of the float32 input)"
    increasing = True
    log = True

    def available(self) -> bool:  # noqa: D102
        try:
            return bool(_imagecodecs().SPERR.available)
        except (ImportError, AttributeError):
            return False

    def param_range(self, volume: np.ndarray, ratio: float) -> tuple[float, float]:  # noqa: D102
        target = 8.0 * volume.dtype.itemsize / ratio
        return max(target / 64.0, 1e-4), min(target * 4.0, 64.0)

    def encode(self, volume: np.ndarray, param: float) -> Encoded:  # noqa: D102
        ic = _imagecodecs()
        data = np.ascontiguousarray(volume, dtype=np.float32)
        if data.shape[0] == 1:
            data = data[0]
        payload = bytes(ic.sperr_encode(data, float(param), "bpp", numthreads=self.numthreads))
        return Encoded(payload, len(payload), self._state(volume))

    def decode(self, encoded: Encoded) -> np.ndarray:  # noqa: D102
        ic = _imagecodecs()
        shape = encoded.state["shape"]
        if shape[0] == 1:
            values = ic.sperr_decode(
                encoded.payload, shape=shape[1:], dtype=np.float32, numthreads=self.numthreads
            )
        else:
            values = ic.sperr_decode(encoded.payload, numthreads=self.numthreads)
        return self._finish(values, encoded)


class SZ3Codec(_FloatCodec):
    """SZ3 in absolute-error-bound mode on the float32 volume."""

    name = "sz3"
    label = "SZ3"
    param_name = "absolute error bound"
    increasing = False
    log = True
    # SZ3's size is not monotone in the bound (its auto-tuning switches predictors): scan around
    # the boundary, +-0.04 of log(1e7) is a factor of about 1.9 either way.
    scan = 24
    window = 0.04

    def available(self) -> bool:  # noqa: D102
        try:
            return bool(_imagecodecs().SZ3.available)
        except (ImportError, AttributeError):
            return False

    def param_range(self, volume: np.ndarray, ratio: float) -> tuple[float, float]:  # noqa: D102
        peak = _peak(volume)
        if peak == 0.0:
            peak = max(abs(float(np.max(volume))), 1.0)
        return peak * 1e-7, peak

    def encode(self, volume: np.ndarray, param: float) -> Encoded:  # noqa: D102
        data = np.ascontiguousarray(volume, dtype=np.float32)
        payload = bytes(_imagecodecs().sz3_encode(data, "abs", abs=float(param)))
        return Encoded(payload, len(payload), self._state(volume))

    def decode(self, encoded: Encoded) -> np.ndarray:  # noqa: D102
        values = _imagecodecs().sz3_decode(encoded.payload, encoded.state["shape"], np.float32)
        return self._finish(values, encoded)


class ZFPCodec(_FloatCodec):
    """ZFP in fixed-rate mode on the float32 volume (the stream has ZFP's full header)."""

    name = "zfp"
    label = "ZFP"
    param_name = "rate (bits per value)"
    increasing = True
    log = True

    def available(self) -> bool:  # noqa: D102
        try:
            return bool(_imagecodecs().ZFP.available)
        except (ImportError, AttributeError):
            return False

    def param_range(self, volume: np.ndarray, ratio: float) -> tuple[float, float]:  # noqa: D102
        target = 8.0 * volume.dtype.itemsize / ratio
        return max(target / 16.0, 1e-3), min(target * 4.0, 32.0)

    def encode(self, volume: np.ndarray, param: float) -> Encoded:  # noqa: D102
        data = np.ascontiguousarray(volume, dtype=np.float32)
        if data.shape[0] == 1:
            data = data[0]
        payload = bytes(
            _imagecodecs().zfp_encode(data, float(param), mode="rate", numthreads=self.numthreads)
        )
        return Encoded(payload, len(payload), self._state(volume))

    def decode(self, encoded: Encoded) -> np.ndarray:  # noqa: D102
        values = _imagecodecs().zfp_decode(encoded.payload, numthreads=self.numthreads)
        return self._finish(values, encoded)


class _MosaicCodec(Codec):
    """2D image codecs fed with all slices tiled into one mosaic.

    Unsigned integer volumes of up to 16 bits are coded as they are; other dtypes (float, signed,
    32-bit) are range-scaled onto uint16 first.
    """

    def _prepare(self, volume: np.ndarray) -> tuple[np.ndarray, dict[str, Any], int]:
        z, h, w = volume.shape
        state: dict[str, Any] = {"shape": volume.shape, "dtype": volume.dtype}
        side = MOSAIC_SIDE_INFO_BYTES
        if volume.dtype in (np.uint8, np.uint16):
            data = volume
        else:
            data, vmin, vmax = _range_scale(volume, 65535)
            state["range"] = (vmin, vmax)
            side += RANGE_SIDE_INFO_BYTES
        mosaic, (_, cols) = tile_mosaic(data)
        state["cols"] = cols
        return np.ascontiguousarray(mosaic), state, side

    def _finish(self, mosaic: np.ndarray, enc: Encoded) -> np.ndarray:
        z, h, w = enc.state["shape"]
        vol = untile_mosaic(np.asarray(mosaic), z, h, w, enc.state["cols"])
        if "range" in enc.state:
            vmin, vmax = enc.state["range"]
            return _to_dtype(_range_unscale(vol, vmin, vmax, 65535), enc.state["dtype"])
        return _to_dtype(vol, enc.state["dtype"])


class JPEGXLCodec(_MosaicCodec):
    """JPEG XL (libjxl, lossy VarDCT, effort 7) on the mosaic; parameter: Butteraugli distance."""

    name = "jpegxl"
    label = "JPEG XL"
    param_name = "distance"
    increasing = False
    log = True

    def __init__(self, numthreads: int = 1, effort: int = 7) -> None:
        super().__init__(numthreads)
        self.effort = effort

    def available(self) -> bool:  # noqa: D102
        try:
            return bool(_imagecodecs().JPEGXL.available)
        except (ImportError, AttributeError):
            return False

    def param_range(self, volume: np.ndarray, ratio: float) -> tuple[float, float]:  # noqa: D102
        return 0.01, 25.0

    def encode(self, volume: np.ndarray, param: float) -> Encoded:  # noqa: D102
        mosaic, state, side = self._prepare(volume)
        payload = bytes(
            _imagecodecs().jpegxl_encode(
                mosaic, distance=float(param), effort=self.effort, numthreads=self.numthreads
            )
        )
        return Encoded(payload, len(payload) + side, state)

    def decode(self, encoded: Encoded) -> np.ndarray:  # noqa: D102
        return self._finish(
            _imagecodecs().jpegxl_decode(encoded.payload, numthreads=self.numthreads), encoded
        )


class JPEG2000Codec(_MosaicCodec):
    """JPEG 2000 (OpenJPEG, irreversible 9/7) on the mosaic; parameter: OpenJPEG's PSNR target."""

    name = "jpeg2k"
    label = "JPEG 2000"
    param_name = "target PSNR (OpenJPEG fixed-quality layer)"
    increasing = True
    log = False

    def available(self) -> bool:  # noqa: D102
        try:
            return bool(_imagecodecs().JPEG2K.available)
        except (ImportError, AttributeError):
            return False

    def param_range(self, volume: np.ndarray, ratio: float) -> tuple[float, float]:  # noqa: D102
        return 5.0, 140.0

    def encode(self, volume: np.ndarray, param: float) -> Encoded:  # noqa: D102
        mosaic, state, side = self._prepare(volume)
        payload = bytes(
            _imagecodecs().jpeg2k_encode(mosaic, float(param), numthreads=self.numthreads)
        )
        return Encoded(payload, len(payload) + side, state)

    def decode(self, encoded: Encoded) -> np.ndarray:  # noqa: D102
        return self._finish(
            _imagecodecs().jpeg2k_decode(encoded.payload, numthreads=self.numthreads), encoded
        )


class HEVCCodec(Codec):
    """HEVC (ffmpeg + libx265) on the slices as frames of a 12-bit gray (4:0:0) video.

    The volume is range-scaled onto ``[0, 4095]``; frames are padded to even sizes by edge
    replication.  The output is a raw Annex-B ``.hevc`` elementary stream (no container: the
    lightest option); its bytes plus :data:`RANGE_SIDE_INFO_BYTES` are counted.  Parameter: x265's
    CRF (lower is better quality), with ``--tune psnr``.
    """

    name = "hevc"
    label = "HEVC"
    param_name = "crf (x265, 12-bit)"
    increasing = False
    log = False
    bits = 12
    # x265's size jumps between nearby CRFs (mode decisions flip): look around the boundary
    scan = 4
    window = 0.015

    def __init__(self, numthreads: int = 1, preset: str = "medium", tune: str | None = "psnr"):
        super().__init__(numthreads)
        self.preset = preset
        self.tune = tune

    def available(self) -> bool:  # noqa: D102
        return _ffmpeg_has_encoder("libx265")

    def param_range(self, volume: np.ndarray, ratio: float) -> tuple[float, float]:  # noqa: D102
        # x265 clamps lower CRFs (12-bit): -6 is its best quality in CRF mode
        return -6.0, 51.0

    def encode(self, volume: np.ndarray, param: float) -> Encoded:  # noqa: D102
        z, h, w = volume.shape
        maxcode = 2**self.bits - 1
        codes, vmin, vmax = _range_scale(volume, maxcode)
        ph, pw = h + h % 2, w + w % 2
        if (ph, pw) != (h, w):
            codes = np.pad(codes, ((0, 0), (0, ph - h), (0, pw - w)), mode="edge")
        x265 = [
            f"crf={param:.4f}",
            f"pools={self.numthreads}",
            "frame-threads=1",
            "info=0",  # no SEI with x265's version and settings string (~1.5 kB)
            "log-level=error",
        ]
        args = ["-f", "rawvideo", "-pix_fmt", "gray12le", "-s", f"{pw}x{ph}", "-r", "25"]
        args += ["-i", "pipe:0", "-c:v", "libx265", "-preset", self.preset]
        if self.tune:
            args += ["-tune", self.tune]
        args += ["-x265-params", ":".join(x265), "-pix_fmt", "gray12le", "-f", "hevc", "pipe:1"]
        payload = _run_ffmpeg(args, stdin=codes.astype("<u2").tobytes())
        state = {"shape": volume.shape, "dtype": volume.dtype, "range": (vmin, vmax)}
        state["padded"] = (ph, pw)
        return Encoded(payload, len(payload) + RANGE_SIDE_INFO_BYTES, state)

    def decode(self, encoded: Encoded) -> np.ndarray:  # noqa: D102
        z, h, w = encoded.state["shape"]
        ph, pw = encoded.state["padded"]
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "in.hevc")
            with open(src, "wb") as fh:
                fh.write(encoded.payload)
            args = ["-threads", str(self.numthreads), "-f", "hevc", "-i", src]
            args += ["-f", "rawvideo", "-pix_fmt", "gray12le", "pipe:1"]
            raw = _run_ffmpeg(args)
        frames = np.frombuffer(raw, dtype="<u2")
        if frames.size != z * ph * pw:
            raise RuntimeError(
                f"HEVC decode returned {frames.size} samples, expected {z * ph * pw}"
            )
        codes = frames.reshape(z, ph, pw)[:, :h, :w]
        vmin, vmax = encoded.state["range"]
        values = _range_unscale(codes, vmin, vmax, 2**self.bits - 1)
        return _to_dtype(values, encoded.state["dtype"])


#: The registry of lossy classical codecs, by name.
CODECS: dict[str, Codec] = {
    c.name: c
    for c in (SPERRCodec(), HEVCCodec(), JPEG2000Codec(), JPEGXLCodec(), SZ3Codec(), ZFPCodec())
}


class HEVCSlowerCodec(HEVCCodec):
    """:class:`HEVCCodec` at x265's ``slower`` preset (the hybrid base's slowest setting)."""

    name = "hevcslower"
    label = "HEVC (slower)"

    def __init__(self, numthreads: int = 1) -> None:
        super().__init__(numthreads, preset="slower")


#: Codecs found by name but not run by default (variants of the registered ones).
EXTRA_CODECS: dict[str, Codec] = {c.name: c for c in (HEVCSlowerCodec(),)}


def get_codec(name: str) -> Codec:
    """Return the registered codec ``name`` (case-insensitive; labels like ``"JPEG XL"`` work)."""
    key = name.lower().replace(" ", "").replace("-", "").replace("_", "")
    aliases = {
        "jxl": "jpegxl",
        "j2k": "jpeg2k",
        "jpeg2000": "jpeg2k",
        "x265": "hevc",
        "h265": "hevc",
    }
    key = aliases.get(key, key)
    if key in EXTRA_CODECS:
        return EXTRA_CODECS[key]
    if key not in CODECS:
        raise KeyError(f"unknown codec {name!r}; known: {', '.join(CODECS)}")
    return CODECS[key]


def available_codecs(names: Sequence[str] | None = None) -> list[Codec]:
    """The registered codecs (or the ``names`` given) that can run here."""
    codecs = [get_codec(n) for n in names] if names else list(CODECS.values())
    return [c for c in codecs if c.available()]


# --------------------------------------------------------------------------------------------------
# lossless
# --------------------------------------------------------------------------------------------------


def _lossless_entry(
    name: str,
    original: np.ndarray,
    encode: Callable[[], Sequence[bytes]],
    decode: Callable[[Sequence[bytes]], np.ndarray],
    side: int = 0,
) -> LosslessResult:
    payloads, enc_s = timed(encode)
    decoded, dec_s = timed(lambda: decode(payloads), DECODE_REPEAT)
    nbytes = sum(len(p) for p in payloads) + side
    raw = original.size * original.dtype.itemsize
    exact = decoded.shape == original.shape and bool(np.array_equal(decoded, original))
    return LosslessResult(name, nbytes, raw / nbytes, enc_s, dec_s, exact)


def _ffv1(volume: np.ndarray, numthreads: int) -> tuple[list[bytes], Callable[..., np.ndarray]]:
    z, h, w = volume.shape
    vmin = int(np.min(volume))
    vmax = int(np.max(volume))
    shift = vmin if vmin < 0 else 0
    top = vmax - shift
    pix, dtype = next(
        (p, d)
        for limit, p, d in (
            (255, "gray", np.uint8),
            (1023, "gray10le", np.dtype("<u2")),
            (4095, "gray12le", np.dtype("<u2")),
            (65535, "gray16le", np.dtype("<u2")),
        )
        if top <= limit
    )
    data = (volume.astype(np.int64) - shift).astype(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        dst = os.path.join(tmp, "out.nut")
        args = ["-f", "rawvideo", "-pix_fmt", pix, "-s", f"{w}x{h}", "-r", "25", "-i", "pipe:0"]
        args += ["-c:v", "ffv1", "-level", "3", "-coder", "1", "-context", "0", "-g", "1"]
        args += ["-threads", str(numthreads), "-f", "nut", "-y", dst]
        try:  # one slice codes best, but FFV1 refuses it for some frame sizes
            _run_ffmpeg([*args[:-4], "-slices", "1", *args[-4:]], stdin=data.tobytes())
        except RuntimeError:
            _run_ffmpeg(args, stdin=data.tobytes())
        with open(dst, "rb") as fh:
            payload = fh.read()

    def decode(payloads: Sequence[bytes]) -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "in.nut")
            with open(src, "wb") as fh:
                fh.write(payloads[0])
            raw = _run_ffmpeg(["-i", src, "-f", "rawvideo", "-pix_fmt", pix, "pipe:1"])
        frames = np.frombuffer(raw, dtype=dtype).reshape(z, h, w).astype(np.int64) + shift
        return frames.astype(volume.dtype)

    return [payload], decode


def lossless_sizes(
    volume: np.ndarray, *, numthreads: int = 1, jpegxl_effort: int = 7
) -> list[LosslessResult]:
    """Lossless ratios and times of the classical lossless codecs on ``volume``.

    Measured: JPEG XL lossless per slice (sum of the files) and as one mosaic, JPEG-LS and
    JPEG 2000 (reversible 5/3) on the mosaic, zstd (level 19) and blosc2 (zstd level 9, bit-shuffle)
    on the raw bytes, and FFV1 (level 3, range coder, small context model, one slice, intra only,
    ``.nut`` container) via ffmpeg when available.
    Codecs that are not installed or refuse the dtype are skipped.

    Parameters
    ----------
    volume : np.ndarray
        The array (2D or more; leading axes are stacked as slices).
    numthreads : int
        Threads per codec.
    jpegxl_effort : int
        libjxl effort (1-9; 7 is libjxl's default).

    Returns
    -------
    list of LosslessResult
        One entry per codec, in the order above.
    """
    original = np.asarray(volume)
    vol = _as_3d(original)
    z, h, w = vol.shape
    out: list[LosslessResult] = []
    ic = _imagecodecs()
    image_ok = vol.dtype in (np.uint8, np.uint16)

    def add(
        name: str, encode: Callable[[], Sequence[bytes]], decode: Callable, side: int = 0
    ) -> None:
        try:
            out.append(_lossless_entry(name, vol, encode, decode, side))
        except Exception as exc:  # noqa: BLE001 - a codec refusing this input is skipped
            warnings.warn(f"{name} skipped: {type(exc).__name__}: {exc}", stacklevel=3)

    mosaic, (_, cols) = tile_mosaic(vol) if image_ok else (None, (0, 0))

    def from_mosaic(decoder: Callable[[bytes], np.ndarray]) -> Callable:
        return lambda p: untile_mosaic(np.asarray(decoder(p[0])), z, h, w, cols)

    if image_ok and ic.JPEGXL.available:
        add(
            "JPEG XL (per slice)",
            lambda: [
                bytes(
                    ic.jpegxl_encode(s, lossless=True, effort=jpegxl_effort, numthreads=numthreads)
                )
                for s in vol
            ],
            lambda p: np.stack([ic.jpegxl_decode(b, numthreads=numthreads) for b in p]),
        )
        add(
            "JPEG XL (mosaic)",
            lambda: [
                bytes(
                    ic.jpegxl_encode(
                        mosaic, lossless=True, effort=jpegxl_effort, numthreads=numthreads
                    )
                )
            ],
            from_mosaic(lambda b: ic.jpegxl_decode(b, numthreads=numthreads)),
            MOSAIC_SIDE_INFO_BYTES,
        )
    if image_ok and ic.JPEGLS.available:
        add(
            "JPEG-LS (mosaic)",
            lambda: [bytes(ic.jpegls_encode(mosaic))],
            from_mosaic(ic.jpegls_decode),
            MOSAIC_SIDE_INFO_BYTES,
        )
    if image_ok and ic.JPEG2K.available:
        add(
            "JPEG 2000 (mosaic)",
            lambda: [bytes(ic.jpeg2k_encode(mosaic, reversible=True, numthreads=numthreads))],
            from_mosaic(lambda b: ic.jpeg2k_decode(b, numthreads=numthreads)),
            MOSAIC_SIDE_INFO_BYTES,
        )
    raw = np.ascontiguousarray(vol).tobytes()
    if ic.ZSTD.available:
        add(
            "zstd (level 19)",
            lambda: [bytes(ic.zstd_encode(raw, level=19))],
            lambda p: np.frombuffer(ic.zstd_decode(p[0]), dtype=vol.dtype).reshape(vol.shape),
        )
    if ic.BLOSC2.available:
        add(
            "blosc2 (zstd 9, bitshuffle)",
            lambda: [
                bytes(
                    ic.blosc2_encode(
                        raw,
                        level=9,
                        compressor="zstd",
                        shuffle="bitshuffle",
                        typesize=vol.dtype.itemsize,
                        numthreads=numthreads,
                    )
                )
            ],
            lambda p: np.frombuffer(ic.blosc2_decode(p[0]), dtype=vol.dtype).reshape(vol.shape),
        )
    if vol.dtype.kind in "ui" and vol.dtype.itemsize <= 2 and _ffmpeg_has_encoder("ffv1"):
        holder: dict[str, Any] = {}

        def ffv1_encode() -> list[bytes]:
            payloads, decode = _ffv1(vol, numthreads)
            holder["decode"] = decode
            return payloads

        add("FFV1 (level 3, .nut)", ffv1_encode, lambda p: holder["decode"](p))
    return out
