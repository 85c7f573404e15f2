"""What the classical-codec anchors share: dtype restoration, range scaling, ffmpeg, timing.

Used by the lossy anchors (:mod:`napari_sciz.bench.classical`) and the lossless ones
(:mod:`napari_sciz.bench.losslessanchors`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DECODE_REPEAT",
    "MOSAIC_SIDE_INFO_BYTES",
    "RANGE_SIDE_INFO_BYTES",
    "Encoded",
    "ffmpeg_path",
    "timed",
]

#: Bytes a minimal wrapper needs to undo a range scaling (value minimum and maximum as float64).
RANGE_SIDE_INFO_BYTES = 16
#: Bytes a minimal wrapper needs to cut a mosaic back into slices (slice count, tile height, width).
MOSAIC_SIDE_INFO_BYTES = 12


def _peak(original: np.ndarray) -> float:
    return float(np.max(original)) - float(np.min(original))


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
