"""``sciz info``: the header and layers of a ``.sciz`` file."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, SciZError
from .common import _codec
from .text import _dumps, _flatten, _fmt_shape, _human_bytes, _print_table, file_error


def _hybrid_layers(reader: Any) -> dict[str, Any]:
    """Base codecs and the bytes of each layer (base, loop filter, neural filter, field) of a
    hybrid file."""
    from ..core.hybrid.codec import describe

    layers = ("base_bytes", "filter_bytes", "network_bytes", "field_bytes")
    totals = {key: 0 for key in layers}
    totals.update(blocks_with_field=0, blocks_with_network=0, lock_bytes=0)
    bases: dict[str, int] = {}
    n = reader.grid.n_blocks  # (a segmentation lock is the payload after the blocks)
    if reader.locked:
        lock = reader._file.payload(n)
        totals["lock_bytes"] = len(lock)
        version = reader.header["segmentation_lock"].get("version")
        if version in (2, 3, 5):  # (a lock per volume, frame of a time-lapse or channel)
            from ..core.seglock.stacked import parse_stacked

            per_volume = parse_stacked(lock, reader._locked_view.volumes)
            totals["locked_volumes"] = sum(v is not None for v in per_volume)
            totals["volumes"] = len(per_volume)
            totals["lock_unit"] = {3: "frames", 5: "channels"}.get(version, "volumes")
        elif version == 4:  # (one lock for the frames of a time-lapse)
            totals["lock_frames"] = reader.shape[0]
    for i in range(n):
        d = describe(reader._file.payload(i))
        for key in layers:
            totals[key] += d[key]
        totals["blocks_with_field"] += d["field_bytes"] > 0
        totals["blocks_with_network"] += d["network_bytes"] > 0
        bases[d["base"]] = bases.get(d["base"], 0) + 1
    return {**totals, "blocks": n, "bases": bases}


def _lossless_predictors(reader: Any) -> dict[str, int]:
    """How many blocks of a lossless or bounded file chose each predictor."""
    from ..core.lossless.describe import describe_block, summarize

    n = reader._file.n_payloads
    return summarize(describe_block(reader._file.payload(i)) for i in range(n))


def _cmd_info(args: argparse.Namespace) -> int:
    if len(args.input) > 1:
        return _listing([Path(p) for p in args.input], args.json)
    src = Path(args.input[0])
    if not src.exists():
        raise InvalidInputError(f"no such file: {src}")
    info = _file_info(src)
    if args.json:
        print(_dumps(info))
        return 0
    print(f"{src}")
    _print_table(_info_rows(info), sys.stdout)
    print("header:")
    _print_table(_flatten(info["header"]), sys.stdout)
    return 0


def _listing(paths: list[Path], as_json: bool) -> int:
    """One line per file (``--json``: one object per line) and the totals of the files that
    could be read; a file that cannot is reported and the others go on (exit status 1)."""
    rows: list[tuple[str, ...]] = []
    raw = packed = 0
    failed = 0
    for path in paths:
        try:
            if not path.exists():
                raise InvalidInputError(f"no such file: {path}")
            info = _file_info(path)
        except (SciZError, OSError) as exc:
            print(file_error(path.name, exc), file=sys.stderr)
            failed += 1
            continue
        if as_json:
            print(_dumps(info))
            continue
        header = info["header"]
        mode = str(header.get("mode", "lossy"))
        guidance = header.get("guidance", "none")
        if isinstance(guidance, str) and guidance != "none":
            mode += f", {guidance}"
        shape = f"{_fmt_shape(info['shape'])} {info['dtype']}"
        ratio = "" if info["ratio"] is None else f"{info['ratio']:.1f}x"
        rows.append((str(path), _human_bytes(info["file_size"]), shape, mode, ratio))
        raw, packed = raw + info["raw_nbytes"], packed + info["file_size"]
    if rows:
        rows.insert(0, ("file", "size", "shape", "mode", "ratio"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        overall = f", {raw / packed:.1f}x overall" if packed else ""
        print(
            f"{len(rows) - 1} files: {_human_bytes(packed)} for {_human_bytes(raw)} of "
            f"data{overall}"
        )
    return 1 if failed else 0


def _file_info(src: Path) -> dict[str, Any]:
    """What ``sciz info --json`` prints: the file's size, shape, dtype, axes, voxel size,
    ratio and header (with the hybrid layers' or lossless predictors' summary)."""
    api = _codec()
    with api.open_sciz(src) as reader:
        header = dict(reader.header)
        shape = tuple(int(n) for n in reader.shape)
        dtype = np.dtype(reader.dtype)
        axes = getattr(reader, "axes", None)
        voxel = getattr(reader, "voxel_size", None)
        units = getattr(reader, "units", None)
        layers = _hybrid_layers(reader) if header.get("mode") == "hybrid" else None
        exact = header.get("mode") in ("lossless", "bounded")
        predictors = _lossless_predictors(reader) if exact else None
    file_size = src.stat().st_size
    raw = math.prod(shape) * dtype.itemsize
    info: dict[str, Any] = {
        "file": str(src),
        "file_size": file_size,
        "shape": list(shape),
        "dtype": str(dtype),
        "axes": axes,
        "voxel_size": voxel,
        "units": units,
        "raw_nbytes": raw,
        "ratio": raw / file_size if file_size else None,
        "header": header,
    }
    if layers is not None:
        info["hybrid_layers"] = layers
    if predictors is not None:
        info["lossless_predictors"] = predictors
    return info


def _info_rows(info: dict[str, Any]) -> list[tuple[str, Any]]:
    """The summary lines ``sciz info`` prints above the header."""
    header = info["header"]
    file_size = info["file_size"]
    rows: list[tuple[str, Any]] = [
        ("file", info["file"]),
        ("file size", f"{_human_bytes(file_size)} ({file_size} bytes)"),
        ("shape", _fmt_shape(info["shape"])),
        ("dtype", info["dtype"]),
        ("axes", info["axes"]),
        ("mode", header.get("mode", "lossy")),
    ]
    if header.get("mode") == "bounded":
        rows.append(("max error", header.get("max_error")))
    guidance = header.get("guidance", "none")
    if isinstance(guidance, str) and guidance != "none":
        rows.append(
            (
                "guidance",
                _guidance_text(guidance, header.get("guidance_weights"), header.get("library"))
                if header.get("mode") != "hybrid"
                else _prefilter_text(guidance, header),
            )
        )
    if isinstance(header.get("colour_transform"), dict):
        samples = len(header["colour_transform"].get("mean", []))
        rows.append(("colour", f"its {samples} samples coded as decorrelated planes"))
    if "hybrid_layers" in info:
        rows.append(("layers", _layers_text(info["hybrid_layers"])))
    for k, (text, count) in enumerate(info.get("lossless_predictors", {}).items()):
        rows.append(("predictors" if k == 0 else "", f"{text} ({count} block(s))"))
    if info["voxel_size"] is not None:
        units = info["units"] or ("",) * len(info["voxel_size"])
        sizes = (
            f"{float(v):g}{(' ' + u) if u else ''}"
            for v, u in zip(info["voxel_size"], units, strict=False)
        )
        rows.append(("voxel size", " x ".join(sizes)))
    if info["ratio"] is not None:
        rows.append(("ratio", f"{info['ratio']:.2f}x (raw {_human_bytes(info['raw_nbytes'])})"))
    return rows


def _layers_text(layers: dict[str, Any]) -> str:
    """``base 30.9 KiB (SPERR x2), loop filter 415 B, ...``: a hybrid file's layers."""
    bases = ", ".join(f"{_base_name(k)} x{v}" for k, v in layers["bases"].items())
    text = (
        f"base {_human_bytes(layers['base_bytes'])} ({bases}), "
        f"loop filter {_human_bytes(layers['filter_bytes'])}, neural filter "
        f"{_human_bytes(layers['network_bytes'])} in {layers['blocks_with_network']} of "
        f"{layers['blocks']} blocks, fitted residual "
        f"{_human_bytes(layers['field_bytes'])} in {layers['blocks_with_field']} of "
        f"{layers['blocks']} blocks"
    )
    if layers["lock_bytes"]:
        text += f", segmentation lock {_human_bytes(layers['lock_bytes'])}"
        if "volumes" in layers:
            unit = layers.get("lock_unit", "volumes")
            text += f" ({layers['locked_volumes']} of {layers['volumes']} {unit})"
        elif "lock_frames" in layers:
            text += f" (one for its {layers['lock_frames']} frames)"
    return text


def _base_name(name: str) -> str:
    """``SPERR``, ``HEVC at half resolution``: a base codec's name in ``sciz info``."""
    inner, _, halved = name.partition("/")
    return inner.upper() + (" at half resolution" if halved else "")


def _prefilter_text(mode: str, header: dict) -> str:
    """``segmentation (task band 3 noise s.d. ...)``: what hybrid task guidance coded."""
    text = _what_prefilter(mode, header)
    if header.get("task_halved") is not True:
        return text
    if text.endswith("the volume as it is)"):
        return f"{mode} (the volume coded at half the in-plane resolution, interpolated back)"
    return text[:-1] + "; at half the in-plane resolution, interpolated back)"


def _curve_pieces(vmap: dict) -> int | str:
    """The pieces of a header's sensitivity curve (either form: docs/format.md)."""
    if isinstance(vmap.get("curve"), list):
        return len(vmap["curve"])
    slopes = vmap.get("slopes")
    return len(slopes) + 1 if isinstance(slopes, str) else "?"


def _what_prefilter(mode: str, header: dict) -> str:
    band, sigma = header.get("task_band"), header.get("task_smooth")
    if "segmentation_lock" in header:
        each = " of each volume" if header["segmentation_lock"].get("version") == 2 else ""
        return (
            f"{mode} (segmentation lock: the threshold surface{each} corrected where the "
            "objects needed it)"
        )
    if isinstance(band, int | float):
        return f"{mode} (task band {float(band):g} noise s.d.; outside it, smoothed)"
    vmap = header.get("value_map")
    if isinstance(header.get("colour_transform"), dict) and vmap is None:
        return f"{mode} (a colour image: its samples coded as decorrelated planes)"
    if isinstance(vmap, dict):
        smoothing = f"pre-smoothed, sigma {float(sigma):g} voxel, then " if sigma else ""
        mapped = f"a power map of the intensities, exponent {vmap.get('power')}"
        if "curve" in vmap or "slopes" in vmap:
            mapped = f"a sensitivity curve of the intensities in {_curve_pieces(vmap)} pieces"
        return f"{mode} ({smoothing}coded through {mapped}, inverted on decoding)"
    if isinstance(sigma, int | float):
        return f"{mode} (pre-smoothed, sigma {float(sigma):g} voxel)"
    return f"{mode} (no pre-filter measured better: the volume as it is)"


def _guidance_text(mode: str, overrides: Any, library: Any = None) -> str:
    """``segmentation (side=0.5, boundary=0.1, ...)``: the weights the fit used.

    Headers record only the weights that differ from the defaults of the writing version
    (named by the header's ``library`` entry), whose defaults fill in the rest.
    """
    from ..core.guidance import DEFAULT_WEIGHTS, defaults_of

    if mode not in DEFAULT_WEIGHTS:
        return mode
    given = overrides if isinstance(overrides, dict) else {}
    weights = {**defaults_of(library, mode), **given}
    text = ", ".join(f"{k}={float(v):g}" for k, v in weights.items() if isinstance(v, int | float))
    return f"{mode} ({text}{'' if given else '; defaults'})"
