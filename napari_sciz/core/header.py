"""Checking a ``.sciz`` header before anything is decoded: every field, against the others.

The container's CRCs catch damage, not a crafted file whose CRCs were recomputed. A header
is therefore validated field by field (type, range, agreement with the other fields and with
the number of payloads) and refused with a :class:`~napari_sciz.errors.FormatError` that names
the field, never with an internal exception's text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FormatError
from .blocks import BlockGrid
from .colourtransform import HEADER_KEY as COLOUR_KEY
from .colourtransform import MODEL_VERSION as COLOUR_MODEL_VERSION
from .colourtransform import ColourTransform
from .stacking import is_time_lapse, stacked_axes
from .task.valuemap import ValueMap, parse_value_map
from .validate import SUPPORTED_DTYPES

__all__ = ["HeaderInfo", "validate_header"]

#: the largest image a header may describe (elements)
MAX_VOXELS = 2**42
#: the coding modes this version decodes
MODES = ("lossy", "hybrid", "lossless", "bounded")
DTYPES = SUPPORTED_DTYPES
#: the hybrid model version of files that end with a segmentation lock
LOCK_MODEL_VERSION = 5
#: the hybrid model version of files coded through a value map (:mod:`.valuemap`)
VALUE_MAP_MODEL_VERSION = 6
#: the hybrid model version of files that end with an outlier payload (:mod:`.outliers`)
OUTLIER_MODEL_VERSION = 7


@dataclass(frozen=True)
class HeaderInfo:
    """The validated fields of a header."""

    mode: str
    shape: tuple[int, ...]
    dtype: np.dtype
    value_range: tuple[float, float]
    grid: BlockGrid
    axes: str
    voxel_size: tuple[float, ...] | None
    units: tuple[str, ...] | None
    name: str | None
    locked: bool = False
    value_map: ValueMap | None = None
    #: voxels listed in the file's outlier payload (its last), 0 without one
    outliers: int = 0
    #: the decoded array puts its first (coded) axis last (:mod:`.colour`)
    channels_last: bool = False
    #: leading (coded) axes of a stack whose volumes are locked one by one (0: one volume)
    lock_lead: int = 0
    #: the colour samples were coded as decorrelated planes (:mod:`.colourtransform`)
    colour: ColourTransform | None = None


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"invalid .sciz header: {field} must be an integer, got {value!r}")
    return value


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FormatError(f"invalid .sciz header: {field} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise FormatError(f"invalid .sciz header: {field} must be finite, got {value!r}")
    return float(value)


def _list(value: Any, field: str, length: int | None = None) -> list:
    if not isinstance(value, list):
        raise FormatError(f"invalid .sciz header: {field} must be a list, got {value!r}")
    if length is not None and len(value) != length:
        raise FormatError(
            f"invalid .sciz header: {field} must have {length} entries, got {len(value)}"
        )
    return value


def _mode_and_model(h: dict, decodable: dict[str, dict[str, int]]) -> str:
    mode = h.get("mode")
    if mode not in MODES:
        raise FormatError(
            f"unsupported coding mode {mode!r} (this napari-sciz decodes "
            + ", ".join(repr(m) for m in MODES)
            + ")"
        )
    model = h.get("model")
    if not isinstance(model, dict):
        raise FormatError(f"invalid .sciz header: model must be an object, got {model!r}")
    kinds = decodable.get(mode, {"causal-predictor": 1})
    newest = kinds.get(str(model.get("type")))
    version = model.get("version", 0)
    if newest is None or not isinstance(version, int) or version > newest or version < 0:
        raise FormatError(f"unsupported model {model!r}; upgrade napari-sciz")
    return str(mode)


def _value_range(h: dict, dtype: np.dtype) -> tuple[float, float]:
    vr = _list(h.get("value_range"), "value_range", 2)
    lo, hi = _number(vr[0], "value_range[0]"), _number(vr[1], "value_range[1]")
    if lo > hi:
        raise FormatError(f"invalid .sciz header: value_range {vr} is inverted")
    if dtype.kind in "uib":
        low, high = (0, 1) if dtype.kind == "b" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
        if lo != int(lo) or hi != int(hi) or lo < low or hi > high:
            raise FormatError(f"invalid .sciz header: value_range {vr} does not fit {dtype}")
    elif dtype in (np.float16, np.float32) and max(abs(lo), abs(hi)) > float(np.finfo(dtype).max):
        raise FormatError(f"invalid .sciz header: value_range {vr} does not fit {dtype}")
    return lo, hi


def _calibration(h: dict, ndim: int) -> tuple[str, Any, Any, Any]:
    axes = h.get("axes") or ""
    if not isinstance(axes, str) or (
        axes and (len(axes) != ndim or len(set(axes.upper())) != ndim or not axes.isalpha())
    ):
        raise FormatError(f"invalid .sciz header: axes {axes!r} do not fit {ndim} dimensions")
    vs = h.get("voxel_size")
    if vs is not None:
        vs = tuple(_number(v, "voxel_size") for v in _list(vs, "voxel_size", ndim))
    units = h.get("units")
    if units is not None:
        units = _list(units, "units", ndim)
        if not all(isinstance(u, str) for u in units):
            raise FormatError(f"invalid .sciz header: units must be strings, got {units!r}")
        units = tuple(units)
    name = h.get("name")
    if name is not None and not isinstance(name, str):
        raise FormatError(f"invalid .sciz header: name must be a string, got {name!r}")
    return axes, vs, units, name


def validate_header(h: dict, n_payloads: int, decodable: dict[str, dict[str, int]]) -> HeaderInfo:
    """Check every field a decoder uses; return them parsed.

    Parameters
    ----------
    h : dict
        The decoded header JSON.
    n_payloads : int
        Number of payloads in the file.
    decodable : dict
        The models this version decodes, ``{mode: {type: newest version}}``.

    Raises
    ------
    FormatError
        A missing, mistyped or inconsistent field, naming it.
    """
    if h.get("format") != "sciz":
        raise FormatError("not a napari-sciz codec file (header has no 'format': 'sciz')")
    mode = _mode_and_model(h, decodable)
    shape = tuple(_int(n, "shape") for n in _list(h.get("shape"), "shape"))
    if not 2 <= len(shape) <= 6 or any(n < 1 for n in shape) or math.prod(shape) > MAX_VOXELS:
        raise FormatError(f"implausible shape {shape} in header")
    if h.get("dtype") not in DTYPES:
        raise FormatError(f"unsupported dtype {h.get('dtype')!r} in header")
    dtype = np.dtype(str(h["dtype"]))
    value_range = _value_range(h, dtype)
    blocks = h.get("blocks")
    if not isinstance(blocks, dict):
        raise FormatError(f"invalid .sciz header: blocks must be an object, got {blocks!r}")
    fields = {
        "spatial_ndim": _int(blocks.get("spatial_ndim"), "blocks.spatial_ndim"),
        "block_shape": [
            _int(n, "blocks.block_shape")
            for n in _list(blocks.get("block_shape"), "blocks.block_shape", 3)
        ],
        "counts": [
            _int(n, "blocks.counts") for n in _list(blocks.get("counts"), "blocks.counts", 3)
        ],
    }
    grid = BlockGrid.from_header(fields, shape)
    count = blocks.get("count", grid.n_blocks)
    if _int(count, "blocks.count") != grid.n_blocks:
        raise FormatError(
            f"invalid .sciz header: blocks.count is {count} but the grid has {grid.n_blocks}"
        )
    axes, vs, units, name = _calibration(h, len(shape))
    channels_last = _channels_last(h, len(shape))
    colour = _colour_transform(h, mode, shape, dtype, channels_last)
    locked, lock_lead = _segmentation_lock(h, mode, shape, grid, axes, colour is not None)
    outliers = _outliers(h, mode, math.prod(shape))
    if grid.n_blocks + locked + bool(outliers) != n_payloads:
        what = f"{grid.n_blocks} blocks" + (" and a segmentation lock" if locked else "")
        what += " and an outlier list" if outliers else ""
        raise FormatError(f"header describes {what} but the file holds {n_payloads} payloads")
    vmap = _value_map(h, mode, value_range)
    return HeaderInfo(
        mode, shape, dtype, value_range, grid, axes, vs, units, name, locked, vmap, outliers,
        channels_last, lock_lead, colour,
    )  # fmt: skip


def _colour_transform(
    h: dict, mode: str, shape: tuple[int, ...], dtype: np.dtype, channels_last: bool
) -> ColourTransform | None:
    """How the colour samples were decorrelated before coding (:mod:`.colourtransform`)."""
    entry = h.get(COLOUR_KEY)
    if entry is None:
        return None
    if not isinstance(entry, dict) or mode != "hybrid" or not channels_last:
        raise FormatError("colour_transform is only valid in a hybrid colour file")
    if h["model"].get("version", 0) < COLOUR_MODEL_VERSION:
        raise FormatError(f"colour_transform needs hybrid model version {COLOUR_MODEL_VERSION}")
    if dtype != np.uint16 or shape[0] not in (3, 4):
        raise FormatError("colour_transform: the planes must be 3 or 4 uint16 samples")
    return ColourTransform.parse(entry, shape[0])


def _channels_last(h: dict, ndim: int) -> bool:
    """Whether the decoded array puts its first axis last (colour samples, :mod:`.colour`)."""
    flag = h.get("channels_last", False)
    if not isinstance(flag, bool) or (flag and ndim < 3):
        raise FormatError(f"invalid .sciz header: channels_last {flag!r} for {ndim} axes")
    return flag


def _outliers(h: dict, mode: str, size: int) -> int:
    """How many voxels the file's outlier payload lists (:mod:`.outliers`), 0 without one."""
    entry = h.get("outliers")
    if entry is None:
        return 0
    if not isinstance(entry, dict) or _int(entry.get("version"), "outliers.version") != 1:
        raise FormatError("unsupported outliers in header (a newer napari-sciz wrote it?)")
    if mode != "hybrid":
        raise FormatError("outliers are only valid in a hybrid file")
    if h["model"].get("version", 0) < OUTLIER_MODEL_VERSION:
        raise FormatError(f"outliers need hybrid model version {OUTLIER_MODEL_VERSION}")
    count = _int(entry.get("count"), "outliers.count")
    if not 1 <= count <= size:
        raise FormatError(f"implausible outlier count {count} in header")
    return count


def _value_map(h: dict, mode: str, value_range: tuple[float, float]) -> ValueMap | None:
    """The map the blocks were coded through (:mod:`.valuemap`), if any."""
    entry = h.get("value_map")
    if entry is None:
        return None
    if mode != "hybrid":
        raise FormatError("value_map is only valid in a hybrid file")
    if h["model"].get("version", 0) < VALUE_MAP_MODEL_VERSION:
        raise FormatError(f"value_map needs hybrid model version {VALUE_MAP_MODEL_VERSION}")
    return parse_value_map(entry, value_range)


#: what each version of ``segmentation_lock`` locks (the error when the file is not that)
_LOCKED = {
    1: "a single 2D/3D volume",
    2: "a stack of 2D/3D volumes",
    3: "a 2D time-lapse (axes TYX)",
    4: "a 2D time-lapse (axes TYX)",
    5: "a colour image coded through its colour_transform",
}


def _segmentation_lock(
    h: dict, mode: str, shape: tuple[int, ...], grid: BlockGrid, axes: str, colour: bool
) -> tuple[bool, int]:
    """Whether the file ends with a segmentation lock payload (:mod:`.seglock`), and the
    leading axes its volumes are locked under: version 1 locks a single 2D/3D volume (0),
    version 2 each volume or channel of a stack (:func:`.stacking.stacked_axes`,
    :mod:`.seglock.stacked`), version 3 each frame of a 2D time-lapse (1,
    :func:`.stacking.is_time_lapse`; the payload is a stack's), version 4 the frames of a 2D
    time-lapse with one lock (0: locked whole, :mod:`.seglock.frames`), version 5 each
    channel of a ``colour`` image decoded through its colour transform (1, a stack's
    payload; :mod:`.task.colourlock`). Versions 1-4 are not valid in a ``colour`` file."""
    lock = h.get("segmentation_lock")
    if lock is None:
        return False, 0
    version = 0 if not isinstance(lock, dict) else lock.get("version")
    version = _int(version, "segmentation_lock.version")
    if version not in _LOCKED:
        raise FormatError("unsupported segmentation_lock in header (a newer napari-sciz wrote it?)")
    if version == 5:
        fits, lead = colour, 1
    elif version in (3, 4):
        fits = is_time_lapse(len(shape), axes) and not colour
        lead = 1 if fits and version == 3 else 0
    else:
        lead = stacked_axes(len(shape), axes) if version == 2 else 0
        fits = not colour and (lead > 0 if version == 2 else len(shape) == grid.spatial_ndim)
    if mode != "hybrid" or not fits:
        raise FormatError(
            f"segmentation_lock version {version} needs {_LOCKED[version]} in a hybrid file"
        )
    if h["model"].get("version", 0) < LOCK_MODEL_VERSION:
        raise FormatError(f"segmentation_lock needs hybrid model version {LOCK_MODEL_VERSION}")
    return True, lead
