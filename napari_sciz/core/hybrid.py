"""Hybrid coding of a block: a classical base layer (SPERR) plus an INR fit of its residual.

INIF's *codec prior* (``shared/papers/003_*``): a classical codec gives a strong, very fast
starting reconstruction and the neural field spends its bytes only on what the codec missed.
Here the base layer is SPERR (3D wavelets + SPECK, the strongest classical codec on most of our
volumes), coded per block in its bits-per-value mode; the residual ``block - base`` is fitted
by the usual latent-grid field (:func:`napari_sciz.core.fit.fit_block`).

The encoder chooses the split of each block's byte budget between the two layers: it tries the
base alone (all bytes to SPERR) and base shares of :data:`BASE_SHARES` with the field fitted in
the rest, and keeps the most accurate within the block's byte window. With a time budget, each
field fit gets an equal part of the block's time.

Payload (after the container's framing)::

    b"SZH" | u8 version (1) | u8 base codec (1 = SPERR) | u8 flags (bit 0: 2D base)
    | u32 base length | base stream | INR payload (latent-grid block payload; absent when the
    base takes the whole budget)

Decoding needs ``imagecodecs`` (SPERR); the region decoder decodes whole blocks (base + dense
field) and crops them.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FormatError, SciZError

__all__ = [
    "BASE_SHARES",
    "HybridFit",
    "decode_hybrid_block",
    "fit_hybrid_block",
    "layer_sizes",
]

_MAGIC = b"SZH"
_VERSION = 1
_SPERR = 1
_HEAD = struct.Struct("<3sBBBI")
#: shares of a block's budget given to the base layer when a field fits the residual
BASE_SHARES = (0.8, 0.6)
#: the smallest INR payload worth fitting (architecture, ranges and a tiny MLP)
_MIN_INR_BYTES = 160


def _imagecodecs() -> Any:
    try:
        import imagecodecs
    except ModuleNotFoundError as exc:  # pragma: no cover - a dependency of napari-sciz
        raise SciZError("hybrid mode needs imagecodecs (SPERR): pip install imagecodecs") from exc
    if not getattr(imagecodecs, "SPERR", None) or not imagecodecs.SPERR.available:
        raise SciZError("this imagecodecs build has no SPERR codec; hybrid mode is unavailable")
    return imagecodecs


def _base_input(block: np.ndarray) -> np.ndarray:
    """The block as SPERR takes it: float64, 2D when the block is one plane."""
    data = np.ascontiguousarray(block, dtype=np.float64)
    return data[0] if data.shape[0] == 1 else data


def _sperr_encode(block: np.ndarray, nbytes: int) -> bytes:
    """SPERR stream of ``block`` of at most ``nbytes`` bytes (bits-per-value mode)."""
    ic = _imagecodecs()
    data = _base_input(block)
    if float(data.max()) == float(data.min()):
        return bytes(ic.sperr_encode(data, 1e-3, "bpp"))  # constant: a few header bytes
    bpp = max(8.0 * (nbytes - 40) / data.size, 1e-4)  # ~40 bytes of SPERR header
    best = b""
    for _ in range(8):
        stream = bytes(ic.sperr_encode(data, bpp, "bpp"))
        if len(stream) <= nbytes and len(stream) > len(best):
            best = stream
        if len(best) >= 0.995 * nbytes:
            break
        # the stream grows linearly with bpp past its header
        scale = (nbytes - 40) / max(len(stream) - 40, 1)
        bpp = max(bpp * (scale if len(stream) <= nbytes else 0.995 * scale), 1e-4)
    return best or stream


def _sperr_decode(stream: bytes, shape3: tuple[int, int, int]) -> np.ndarray:
    ic = _imagecodecs()
    if shape3[0] == 1:
        values = ic.sperr_decode(stream, shape=shape3[1:], dtype=np.float64)
    else:
        values = ic.sperr_decode(stream, shape=shape3, dtype=np.float64)
    return np.asarray(values, dtype=np.float64).reshape(shape3)


def _pack(base: bytes, inr: bytes, flat: bool) -> bytes:
    return _HEAD.pack(_MAGIC, _VERSION, _SPERR, 1 if flat else 0, len(base)) + base + inr


@dataclass
class HybridFit:
    """Result of :func:`fit_hybrid_block`."""

    payload: bytes
    reconstruction: np.ndarray
    steps: int
    base_share: float


def fit_hybrid_block(
    block: np.ndarray,
    byte_window: tuple[int, int],
    *,
    steps: int | None = None,
    budget: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    cancel: Callable[[], bool] | None = None,
    on_step: Callable[[Any], None] | None = None,
    **fit_kwargs: Any,
) -> HybridFit:
    """Code one block as SPERR base + fitted residual, choosing the split of its budget.

    Parameters
    ----------
    block : numpy.ndarray
        ``(D, H, W)`` values in original units.
    byte_window : tuple of int
        ``(low, high)`` payload bytes.
    steps, budget, seed, device, cancel, on_step, **fit_kwargs
        As in :func:`napari_sciz.core.fit.fit_block` (a time ``budget`` is shared by the
        candidate splits).

    Returns
    -------
    HybridFit
        Payload, reconstruction (float64, original units, unclipped), training steps and the
        share of the payload taken by the base layer.
    """
    from .fit import fit_block

    t0 = time.perf_counter()
    low, high = byte_window
    shape3 = tuple(int(n) for n in block.shape)
    flat = shape3[0] == 1
    target = np.asarray(block, dtype=np.float64)
    head = _HEAD.size

    def error(values: np.ndarray) -> float:
        d = values - target
        return float(np.mean(d * d))

    base = _sperr_encode(target, high - head)
    base_values = _sperr_decode(base, shape3)  # type: ignore[arg-type]
    best = HybridFit(_pack(base, b"", flat), base_values, 0, 1.0)
    best_err = error(base_values)
    if best_err == 0.0:
        return best
    shares = [s for s in BASE_SHARES if (1 - s) * high >= _MIN_INR_BYTES]
    steps_done = 0
    for n, share in enumerate(shares):
        if cancel is not None and cancel():
            from ..errors import CancelledError

            raise CancelledError("compression cancelled; no output written")
        part = None
        if budget is not None:
            left = budget - (time.perf_counter() - t0)
            part = left / (len(shares) - n)
            if part < 0.5:
                break
        base_n = _sperr_encode(target, int(share * high) - head)
        base_v = _sperr_decode(base_n, shape3)  # type: ignore[arg-type]
        room_high = high - head - len(base_n)
        room_low = max(0, low - head - len(base_n))
        fit = fit_block(
            target - base_v,
            (room_low, room_high),
            steps=steps,
            budget=part,
            seed=seed,
            device=device,
            cancel=cancel,
            on_step=on_step,
            **fit_kwargs,
        )
        steps_done += fit.steps
        values = base_v + fit.reconstruction
        err = error(values)
        if err < best_err:
            best_err = err
            best = HybridFit(_pack(base_n, fit.payload, flat), values, 0, share)
    best.steps = steps_done
    return best


def layer_sizes(payload: bytes) -> tuple[int, int]:
    """Bytes of the base layer and of the fitted residual field in a hybrid payload."""
    if len(payload) < _HEAD.size or payload[:3] != _MAGIC:
        raise FormatError("not a hybrid block payload")
    base_len = _HEAD.unpack_from(payload)[4]
    return base_len, max(0, len(payload) - _HEAD.size - base_len)


def decode_hybrid_block(payload: bytes, shape3: tuple[int, int, int]) -> np.ndarray:
    """Decode a hybrid block payload to float64 values of shape ``shape3`` (unclipped).

    Raises
    ------
    FormatError
        Not a hybrid payload, an unknown version or base codec, or a truncated stream.
    """
    from .entropy import decode_block, read_architecture
    from .fit import evaluate_code
    from .model import FieldConfig

    if len(payload) < _HEAD.size:
        raise FormatError("hybrid block payload is truncated")
    magic, version, codec, flags, base_len = _HEAD.unpack_from(payload)
    if magic != _MAGIC:
        raise FormatError("not a hybrid block payload")
    if version > _VERSION:
        raise FormatError(f"hybrid payload version {version} is newer than this napari-sciz")
    if codec != _SPERR:
        raise FormatError(f"unknown base codec {codec} in a hybrid payload")
    if bool(flags & 1) != (shape3[0] == 1):
        raise FormatError("hybrid payload does not match the block's shape")
    start = _HEAD.size
    if start + base_len > len(payload):
        raise FormatError("hybrid block payload is truncated (base layer)")
    try:
        values = _sperr_decode(payload[start : start + base_len], shape3)
    except SciZError:
        raise
    except Exception as exc:  # noqa: BLE001 - any SPERR failure means a bad stream
        raise FormatError(f"hybrid base layer cannot be decoded: {exc}") from exc
    inr = payload[start + base_len :]
    if inr:
        first, n_levels, hidden, layers = read_architecture(inr)
        config = FieldConfig(shape3, first, n_levels, hidden, layers)
        code = decode_block(inr, config.grid_shapes(), config.mlp_shapes())
        values = values + evaluate_code(code, shape3, "cpu")
    if not np.all(np.isfinite(values)):
        raise FormatError("hybrid block decodes to non-finite values")
    return values
