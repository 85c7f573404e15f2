"""What the lossless encoder chose for a block: predictors, map, contexts, lanes (for ``sciz
info`` and the benchmarks' "which predictor won")."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from ...errors import FormatError
from .interpblock import interp_index_contexts, is_interp_block
from .labelblock import is_label_block
from .layout import _HEAD2, _MAGIC, _RAW_MAGIC
from .predict import _SUB_NAMES, _SUB_XLS
from .resampled import is_resampled_block, refined_axes
from .sperrblock import is_sperr_block
from .szblock import is_sz3_block

__all__ = ["describe_block", "predictor_text", "summarize"]

#: sub-predictor names, version 6's wide least squares included
_NAMES = (*_SUB_NAMES, "wide LS")

_AXES = ("slabs", "bands")


def describe_block(payload: bytes) -> dict[str, Any]:
    """The encoder's choices recorded in a lossless block payload.

    Returns
    -------
    dict
        ``coding`` ("stored"; "labels": a label block; "resampled": a 2x interpolation
        coded as its coarse grid, with ``axes`` refined and ``coarse``, the coarse grid's
        description; "sperr", "sz3" or "interpolation": a bounded block coded by SPERR, SZ3
        or interpolation; or "coded"), and for
        coded blocks ``version``, ``predictors``
        (names of the blended sub-predictors), ``map`` (gradient level -> the sub-predictor
        used alone there, levels using the blend omitted), ``contexts``, ``lanes`` and
        ``lane_axis`` (versions 4-7), ``negated`` (versions 5-7), ``wide_ls_classes``
        ("gradient" or "intensity", when the block has the wide least squares' weights) and
        ``sparse_contexts`` (version 7: how many contexts are coded as gaps).

    Raises
    ------
    FormatError
        Not a lossless block payload.
    """
    if payload[:3] == _RAW_MAGIC:
        return {"coding": "stored"}
    if is_label_block(payload):
        return {"coding": "labels"}
    if is_resampled_block(payload):
        axes, coarse = refined_axes(payload)
        return {"coding": "resampled", "axes": axes, "coarse": describe_block(coarse)}
    if is_sperr_block(payload):
        return {"coding": "sperr"}
    if is_sz3_block(payload):
        return {"coding": "sz3"}
    if is_interp_block(payload):
        return {"coding": "interpolation", "index_contexts": interp_index_contexts(payload)}
    if payload[:3] != _MAGIC or len(payload) < 4:
        raise FormatError("not a lossless block payload")
    version = payload[3]
    out: dict[str, Any] = {"coding": "coded", "version": version}
    if version < 2:
        out["predictors"] = ["row-wise (version 1)"]
        return out
    if len(payload) < _HEAD2.size:
        raise FormatError("truncated lossless block")
    head = _HEAD2.unpack_from(payload)
    d, h, w, n_ctx, mask = head[4], head[5], head[6], head[13], head[14]
    out["predictors"] = [n for i, n in enumerate(_NAMES) if mask >> i & 1]
    out["contexts"] = n_ctx
    if version >= 4:
        from .lanes import read_lane_ext

        ext, _pos = read_lane_ext(payload, _HEAD2.size, (d, h, w), version)
        out["map"] = {g: _NAMES[int(m) - 1] for g, m in enumerate(ext.pmap) if m}
        out["lanes"], out["lane_axis"] = ext.lanes, _AXES[ext.axis]
        if version >= 5:
            out["negated"] = ext.flip
        if ext.xls is not None:
            out["wide_ls_classes"] = "gradient" if ext.xls.thr is None else "intensity"
        if version >= 7:
            from .sparse import SparseTable

            table = SparseTable.from_bytes(ext.sparse, n_ctx, ext.lanes)
            out["sparse_contexts"] = int(table.ctx.size)
    return out


def predictor_text(d: dict[str, Any]) -> str:
    """One line for a block: ``"wide LS (intensity)"``, ``"W+N-NW + MED; levels 5-7: MED"``."""
    if d["coding"] == "stored":
        return "stored (incompressible)"
    if d["coding"] == "labels":
        return "labels (neighbour copies)"
    if d["coding"] == "resampled":
        axes = ", ".join("zyx"[a] for a in d["axes"])
        return f"2x interpolated ({axes}) over {predictor_text(d['coarse'])}"
    if d["coding"] == "sperr":
        return "SPERR (point-wise error)"
    if d["coding"] == "sz3":
        return "SZ3 (absolute error)"
    if d["coding"] == "interpolation":
        extra = ", index contexts" if d.get("index_contexts") else ""
        return f"interpolation, in-loop quantization{extra}"
    names = []
    for n in d["predictors"]:
        if n == _NAMES[_SUB_XLS] and "wide_ls_classes" in d:
            n = f"{n} ({d['wide_ls_classes']})"
        names.append(n)
    text = " + ".join(names)
    levels = d.get("map") or {}
    for name in dict.fromkeys(levels.values()):
        where = [g for g, n in levels.items() if n == name]
        contiguous = where == list(range(where[0], where[-1] + 1))
        span = (
            f"{where[0]}-{where[-1]}"
            if contiguous and len(where) > 1
            else ", ".join(str(g) for g in where)
        )
        if name == _NAMES[_SUB_XLS] and "wide_ls_classes" in d:
            name = f"{name} ({d['wide_ls_classes']})"
        text += f"; gradient level{'s' if len(where) > 1 else ''} {span}: {name}"
    return text


def summarize(descriptions: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many blocks chose each predictor line (most common first)."""
    return dict(Counter(predictor_text(d) for d in descriptions).most_common())
