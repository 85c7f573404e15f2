"""Classical lossless anchors: ratios and times of the lossless codecs on a volume."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..core.hybrid.mosaic import tile_mosaic, untile_mosaic
from .codectools import (
    DECODE_REPEAT,
    MOSAIC_SIDE_INFO_BYTES,
    _as_3d,
    _ffmpeg_has_encoder,
    _imagecodecs,
    _run_ffmpeg,
    timed,
)

__all__ = ["LosslessResult", "lossless_sizes"]


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
