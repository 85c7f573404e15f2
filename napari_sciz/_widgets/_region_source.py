"""What a region decode starts from (no Qt): a layer's ``.sciz`` source, the request, the job.

Used by the Decode region widget (:mod:`._region`) and the Compress widget's result layers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BYTES_KEY", "RegionRequest", "compressed_source", "sampling_scale"]

#: Key of the layer metadata holding the complete ``.sciz`` bytes of a compressed layer.
BYTES_KEY = "sciz_bytes"


def compressed_source(layer: Any) -> bytes | str | None:
    """The ``.sciz`` bytes or path behind a layer, or None if it is not a compressed layer.

    Parameters
    ----------
    layer : napari.layers.Layer
        Any layer.

    Returns
    -------
    bytes, str or None
        ``layer.metadata["sciz_bytes"]`` when present, else a ``path`` recorded in
        ``layer.metadata["sciz"]`` (or ``metadata["sciz_path"]``) that exists on disk.
    """
    meta = getattr(layer, "metadata", None)
    if not isinstance(meta, dict):
        return None
    data = meta.get(BYTES_KEY)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    info = meta.get("sciz")
    path = meta.get("sciz_path") or (info.get("path") if isinstance(info, dict) else None)
    if isinstance(path, (str, Path)) and Path(path).is_file():
        return str(path)
    return None


def _compressed_shape(layer: Any) -> tuple[int, ...]:
    """Shape of the compressed array behind ``layer`` without the colour samples of an RGB(A)
    layer (the axes napari shows it with)."""
    info = layer.metadata.get("sciz") if isinstance(layer.metadata, dict) else None
    if isinstance(info, dict) and info.get("compressed_shape"):
        shape = tuple(int(n) for n in info["compressed_shape"])
    else:
        shape = tuple(int(n) for n in layer.data.shape)
    return shape[:-1] if _samples(layer) else shape


def _samples(layer: Any) -> int:
    """The colour samples of an RGB(A) layer (its data's last axis), 0 for other layers."""
    return int(layer.data.shape[-1]) if getattr(layer, "rgb", False) else 0


@dataclass(frozen=True)
class RegionRequest:
    """A region to decode from a compressed layer.

    Attributes
    ----------
    roi : tuple of slice
        One slice per axis of the compressed array.
    scale : int
        Sampling factor along the displayed (Y, X) axes.
    n_leading : int
        Number of singleton leading axes of the source layer (not part of the compressed array).
    samples : int
        Colour samples of an RGB(A) source (the last axis of ``roi``, decoded whole), else 0.
    """

    roi: tuple[slice, ...]
    scale: int
    n_leading: int
    samples: int = 0

    @property
    def roi_string(self) -> str:
        """The region as ``"z0:z1,y0:y1,x0:x1"``."""
        return ",".join(f"{s.start}:{s.stop}" for s in self.roi)


def sampling_scale(ndim: int, factor: int) -> tuple[int, ...]:
    """The ``scale=`` argument of ``decompress`` for finer sampling along Y and X only.

    The codec takes one factor per spatial axis: (Y, X) for a 2D array, (Z, Y, X) otherwise.
    """
    return (factor, factor) if ndim == 2 else (1, factor, factor)


def _decode_job(
    source: bytes | str, roi: tuple[slice, ...], scale: int, samples: int = 0
) -> tuple[str, Any]:
    """Worker body: decode a region (all errors are returned, not raised); the colour samples
    of an RGB(A) file (``samples``, the last axis) are not sampled."""
    try:
        from ..core.api import decompress

        t0 = time.perf_counter()
        out = decompress(source, roi=roi, scale=sampling_scale(len(roi) - bool(samples), scale))
        return "ok", (np.asarray(out), time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - every error is shown to the user
        return "error", exc
