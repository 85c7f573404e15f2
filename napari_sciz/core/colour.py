"""Colour images with their samples last (``YXC``, ``ZYXC``): coded channels first, read as given.

The codec takes the last two axes of an array as Y and X. A colour image as numpy, tifffile,
napari and most imaging libraries hold it, ``(Y, X, 3)`` or ``(Z, Y, X, 4)``, would be coded as
a stack of 3- or 4-pixel-wide columns: 8 dB below its channels-first coding at 64x on an RGB
photograph. :func:`compress <napari_sciz.core.api.compress>` therefore moves such a last axis
first before coding (the samples become a leading axis, or the Z axis of a one-image volume, so
the codec also uses how alike the channels are), records ``"channels_last": true`` in the
header, and every reader presents the decoded array in the layout it was given: ``shape``,
``axes``, regions and calibration are those of the original array.

A last axis is taken as colour samples when ``axes`` ends in ``C`` or, without ``axes``, when
it holds 3 or 4 samples and the axis before it at least 16 (the guess napari makes for RGB(A)
layers); ``axes`` ending in ``X`` says it is not.

An 8- or 16-bit RGB(A) image coded in hybrid mode (without segmentation labels) is coded as
decorrelated planes of its samples (:mod:`.colourtransform`, header ``colour_transform``);
under segmentation guidance its channels are locked through the transform
(:mod:`.task.colourlock`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..errors import RatioUnreachableError
from .result import CompressResult, with_header_keys

if TYPE_CHECKING:  # pragma: no cover
    from .colourtransform import ColourTransform

__all__ = [
    "HEADER_KEY",
    "HEADER_KEY_BYTES",
    "PERCEPTUAL_NOTE",
    "SAMPLES_NOTE",
    "coded_first",
    "coded_ratio",
    "decorrelates",
    "decorrelation",
    "default_axes",
    "first_last",
    "is_channels_last",
    "last_first",
    "moved",
    "moved_labels",
    "restore_result",
    "restore_transformed",
    "transformed_keys",
]

#: header key of a file whose decoded array puts its first (coded) axis last
HEADER_KEY = "channels_last"

#: colour samples a guessed channel axis holds (RGB, RGBA)
_SAMPLES = (3, 4)
#: the axis before a guessed channel axis holds at least this many pixels
_MIN_SIDE = 16

T = TypeVar("T")


def is_channels_last(shape: Sequence[int], axes: str | None) -> bool:
    """Whether an array of ``shape`` holds colour samples on its last axis.

    Parameters
    ----------
    shape : sequence of int
        The array's shape.
    axes : str, optional
        Its axis letters as the caller gave them (``"YXC"``...), or None.

    Returns
    -------
    bool
        True when ``axes`` ends in ``C`` (3 or more axes), or, without ``axes``, when the last
        axis holds 3 or 4 samples and the one before it at least 16 pixels.
    """
    if len(shape) < 3:
        return False
    if axes:
        return str(axes)[-1].upper() == "C"
    return shape[-1] in _SAMPLES and shape[-2] >= _MIN_SIDE


def default_axes(ndim: int) -> str:
    """Axis letters of a channels-last array of ``ndim`` dimensions given without ``axes``."""
    return {3: "YXC", 4: "ZYXC", 5: "TZYXC", 6: "QTZYXC"}.get(ndim, "")


def last_first(values: Sequence[T] | str) -> Any:
    """``values`` (a per-axis sequence or an axes string) with the last entry moved first."""
    if isinstance(values, str):
        return values[-1] + values[:-1]
    items = list(values)
    return [items[-1], *items[:-1]]


def first_last(values: Sequence[T] | str) -> Any:
    """The inverse of :func:`last_first`: the first entry moved last."""
    if isinstance(values, str):
        return values[1:] + values[0]
    items = list(values)
    return [*items[1:], items[0]]


def moved(values: Any) -> Any:
    """Per-axis ``values`` (or an axes string) of a channels-last array, in coding order."""
    return None if values is None or len(values) == 0 else last_first(values)


def moved_labels(labels: Any, shape: tuple[int, ...]) -> Any:
    """Segmentation labels of a channels-last image in coding order: labels of the image's
    shape are moved like it; labels of one channel's shape (``Y, X``) apply to every channel."""
    if labels is None:
        return None
    arr = np.asarray(labels)
    if arr.shape == shape:
        return coded_first(arr)
    if arr.shape == shape[:-1]:
        return np.ascontiguousarray(np.broadcast_to(arr, (shape[-1], *arr.shape)))
    return arr  # the check says what is wrong with it


def coded_first(arr: np.ndarray) -> np.ndarray:
    """The array with its last axis first, as the codec codes it (C-contiguous)."""
    return np.ascontiguousarray(np.moveaxis(arr, -1, 0))


#: the message of a colour image coded under perceptual guidance (:func:`decorrelates`)
PERCEPTUAL_NOTE = (
    "perceptual guidance: a colour image is coded as decorrelated planes of its samples "
    "(the intensity maps perceptual guidance chooses between are for one-channel images; "
    "coded through them, colour images measured a lower MS-SSIM)"
)

#: note of a colour image too small for its decorrelated planes at the ratio asked
SAMPLES_NOTE = (
    "a colour image too small to be coded as decorrelated planes at {ratio:g}x (the colour "
    "transform's header entry takes too many of its bytes): coded as its samples"
)

#: task guidance a file coded as decorrelated planes records in its header
_GUIDED = ("perceptual", "segmentation")

#: bytes the header key takes in a file (measured 17-20 on files of every mode), reserved
#: out of a ratio's bytes when the channels-first array is coded
HEADER_KEY_BYTES = 24


def coded_ratio(
    ratio: float | None,
    raw_nbytes: int,
    transform: ColourTransform | None = None,
    coded_nbytes: int | None = None,
    guidance: str | None = None,
) -> float | None:
    """The ratio to code the channels-first array (or the ``coded_nbytes`` of its
    decorrelated planes, ``transform``) at, so that the file, with the header keys added
    afterwards (a task ``guidance`` recorded in place of ``none``), still meets ``ratio``
    (None, or a ratio too high to leave room: as given).

    Raises
    ------
    RatioUnreachableError
        With a ``transform``, where its header entry leaves the planes no room (the
        caller may code the samples instead, :func:`compress`).
    """
    if ratio is None:
        return None
    reserved = HEADER_KEY_BYTES
    if transform is not None:  # (its entry as JSON: deflate hardly ever makes it longer)
        reserved += len(json.dumps(transform.to_header(), separators=(",", ":"))) + 8
        reserved += len(guidance) if guidance in _GUIDED else 0
    try:
        target = raw_nbytes / float(ratio) - reserved
    except (TypeError, ValueError, ZeroDivisionError):
        return ratio  # (the codec says what is wrong with it)
    if target <= reserved:
        if transform is not None:
            raise RatioUnreachableError(
                f"a ratio of {float(ratio):g}x is not reachable for this {raw_nbytes}-byte "
                "colour image coded as decorrelated planes: the colour transform's header "
                f"entry alone takes about {reserved} bytes"
            )
        return ratio
    return (coded_nbytes or raw_nbytes) / target


def decorrelates(
    shape: Sequence[int],
    dtype: Any,
    ratio: float | None,
    mode: str,
    guidance: str | None,
    guidance_weights: Any,
    labels: Any,
) -> bool:
    """Whether a channels-last image of ``shape`` and ``dtype`` coded so is coded through a
    colour transform (:mod:`.colourtransform`): an 8- or 16-bit RGB(A) image in hybrid mode
    (``auto`` without guidance weights), under any task guidance but without labels.

    Perceptual guidance codes such an image as the decorrelated planes alone
    (:data:`PERCEPTUAL_NOTE`): the intensity maps it otherwise chooses between are made for one
    channel's intensities, and the image's samples coded through them measured a lower
    MS-SSIM than its planes (docs/guidance.md, "Colour images"). Segmentation guidance locks
    each channel decoded through the transform (:mod:`.task.colourlock`)."""
    hybrid = mode == "hybrid" or (mode == "auto" and not guidance_weights)
    plain = labels is None and str(guidance).lower() in ("none", "perceptual", "segmentation")
    if ratio is None or not hybrid or not plain or np.dtype(dtype) not in (np.uint8, np.uint16):
        return False
    return shape[-1] in _SAMPLES and math.prod(shape) >= 2 * shape[-1]


def decorrelation(
    arr: np.ndarray,
    ratio: float | None,
    mode: str,
    guidance: str | None,
    guidance_weights: Any,
    labels: Any,
) -> ColourTransform | None:
    """The colour transform a channels-last ``arr`` is coded through where it
    :func:`decorrelates` (None otherwise, or where its planes would not fit)."""
    from .colourtransform import ColourTransform

    if not decorrelates(arr.shape, arr.dtype, ratio, mode, guidance, guidance_weights, labels):
        return None
    return ColourTransform.fit(coded_first(arr))


def transformed_keys(
    header: dict[str, Any], transform: ColourTransform, ratio: float, guidance: str | None
) -> dict[str, Any]:
    """The header keys that make the ``header`` of a decorrelated planes' coding that of
    the colour image: ``channels_last``, ``colour_transform``, the image's ``target_ratio``,
    the model version the transform needs, and a task ``guidance``."""
    from .colourtransform import HEADER_KEY as TRANSFORM_KEY
    from .colourtransform import MODEL_VERSION

    model = dict(header["model"])
    model["version"] = max(int(model.get("version", 0)), MODEL_VERSION)
    keys: dict[str, Any] = {
        HEADER_KEY: True,
        TRANSFORM_KEY: transform.to_header(),
        "target_ratio": float(ratio),
        "model": model,
    }
    if guidance in _GUIDED:
        keys["guidance"] = guidance
    return keys


def restore_transformed(
    result: CompressResult,
    transform: ColourTransform,
    original: np.ndarray | None,
    ratio: float,
    raw_nbytes: int | None = None,
    guidance: str | None = None,
) -> CompressResult:
    """The coding of decorrelated planes as that of the channels-last ``original``: the
    header says how to decode them (``colour_transform``, hybrid model version 8), the
    reconstruction is the image's, and the quality is measured against it (samples first,
    as the codec measures a colour image: SSIM over the samples' ``Y, X`` planes).

    A distributed coding has no reconstruction (its quality was measured on the image by
    the workers) and gives the image's ``raw_nbytes`` instead of the ``original``. A task
    ``guidance`` is recorded in the header; under perceptual guidance the result says how it
    was served.
    """
    keys = transformed_keys(result.header, transform, ratio, guidance)
    if guidance == "perceptual":
        result = replace(result, messages=[*result.messages, PERCEPTUAL_NOTE])
    coded = with_header_keys(result, keys)
    if result.reconstruction is None or original is None:
        raw = original.nbytes if original is not None else int(raw_nbytes or 0)
        return replace(coded, raw_nbytes=raw, ratio=raw / coded.nbytes)
    image = transform.inverse(result.reconstruction)
    measured = CompressResult.measured(
        coded_first(original), coded.data, coded.header, image, raw_nbytes=original.nbytes,
        encode_seconds=result.encode_seconds, device=result.device, messages=result.messages,
    )  # fmt: skip
    return replace(measured, reconstruction=np.moveaxis(image, 0, -1))


def restore_result(result: CompressResult, ratio: float | None = None) -> CompressResult:
    """The coding of a channels-first array as that of the channels-last original.

    The header gains ``"channels_last": true`` (the container is re-packed with it; the
    payloads are unchanged), and the target ``ratio`` the caller asked for where it was
    coded at :func:`coded_ratio`'s; the reconstruction has the original layout again.
    """
    keys: dict[str, Any] = {HEADER_KEY: True}
    if ratio is not None and "target_ratio" in result.header:
        keys["target_ratio"] = float(ratio)
    result = with_header_keys(result, keys)
    recon = result.reconstruction
    return replace(result, reconstruction=None if recon is None else np.moveaxis(recon, 0, -1))
