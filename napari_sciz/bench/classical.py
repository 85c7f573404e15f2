"""Classical-codec anchors at a target compression ratio.

Every codec is measured the way ``../shared/GUIDE.md`` section 2 says:

* **ratio** = raw bytes of the original array (``numel * itemsize`` of its dtype) / bytes of the
  complete compressed output.  Where a codec's own stream cannot restore the original on its own
  (the value range of a range-scaled input, the slice layout of a mosaic) the few bytes a minimal
  wrapper would need are counted too (:data:`RANGE_SIDE_INFO_BYTES`,
  :data:`MOSAIC_SIDE_INFO_BYTES`).
* A codec counts at ratio ``R`` only if it reaches at least ``R``; its quality parameter is bisected
  (:func:`bisect_quality`) to the best quality that still fits.
* 2D codecs (JPEG XL, JPEG 2000) encode all slices tiled into **one** mosaic image (one header);
  an 8- or 16-bit RGB(A) image (``Y, X, 3|4``) is coded as the colour image it is.
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

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.hybrid.mosaic import mosaic_layout, tile_mosaic, untile_mosaic
from ..core.metrics import max_abs_error, psnr, ssim
from .bisection import BisectionResult, Trial, bisect_quality
from .codecbase import Codec, CodecResult
from .codectools import (
    MOSAIC_SIDE_INFO_BYTES,
    RANGE_SIDE_INFO_BYTES,
    Encoded,
    _ffmpeg_has_encoder,
    _imagecodecs,
    _peak,
    _range_scale,
    _range_unscale,
    _run_ffmpeg,
    _to_dtype,
    ffmpeg_path,
)
from .losslessanchors import LosslessResult, lossless_sizes

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


def _is_colour(volume: np.ndarray) -> bool:
    """An 8- or 16-bit RGB(A) image with its samples last (``Y, X, 3|4``), as the codec
    itself takes one (:func:`napari_sciz.core.colour.is_channels_last`)."""
    from ..core.colour import is_channels_last

    unsigned = volume.dtype in (np.uint8, np.uint16)
    return volume.ndim == 3 and unsigned and is_channels_last(volume.shape, None)


class _MosaicCodec(Codec):
    """2D image codecs fed with all slices tiled into one mosaic.

    Unsigned integer volumes of up to 16 bits are coded as they are; other dtypes (float, signed,
    32-bit) are range-scaled onto uint16 first.
    """

    def _prepare(self, volume: np.ndarray) -> tuple[np.ndarray, dict[str, Any], int]:
        state: dict[str, Any] = {"shape": volume.shape, "dtype": volume.dtype}
        if _is_colour(volume):  # (an RGB(A) image: coded as one, with the codec's colour
            state["colour"] = True  # transform, not as hundreds of 3-pixel-wide slices)
            return np.ascontiguousarray(volume), state, 0
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
        if enc.state.get("colour"):
            return _to_dtype(np.asarray(mosaic).reshape(enc.state["shape"]), enc.state["dtype"])
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
