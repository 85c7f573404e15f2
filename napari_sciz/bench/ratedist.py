"""Rate-distortion benchmark: our modes against SPERR and HEVC, with BD-rate per volume.

Run it as ``python -m napari_sciz.bench.ratedist``::

    python -m napari_sciz.bench.ratedist --ratios 16,64,256,1024 --budget 30 \\
        --modes hybrid --out docs/benchmarks.md --json bench_out/ratedist.json

For every volume and target ratio it compresses with each of our ``--modes`` (the whole
``.sciz`` file counts) and bisects SPERR and HEVC to the same ratio (``GUIDE.md`` section 2,
:mod:`napari_sciz.bench.classical`), then reports PSNR / SSIM / achieved ratio / encode and
decode seconds, and the **BD-rate** of each of our modes against each classical codec
(:func:`bd_rate`; negative = fewer bytes for the same PSNR). Volumes named with
``--held-out`` are reported in their own table: they were not looked at while the codec was
designed, so they show how it generalises.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .classical import get_codec, psnr, ssim
from .report import add_output_options, comma_list, new_record, require_data_dir, write_results
from .volumes import list_volumes

__all__ = ["anchors_from_markdown", "bd_rate", "main", "merge_records"]

PROG = "python -m napari_sciz.bench.ratedist"
SECTION = "ratedist"
#: the classical anchors; HEVCSLOWER (x265 at preset slower, as the hybrid's HEVC base may
#: run it) is measured here when the markdown tables read with --anchors-from lack it
ANCHORS = ("sperr", "hevc", "hevcslower")


def bd_rate(
    ours: Sequence[tuple[float, float]], ref: Sequence[tuple[float, float]]
) -> float | None:
    """Bjøntegaard delta rate of ``ours`` against ``ref``, in percent.

    Each curve is a list of ``(bits, psnr)`` points. The logarithm of the rate is interpolated
    piecewise-linearly in PSNR (more robust than the classic cubic fit with the 2-4 points a
    codec reaches here) and averaged over the PSNR interval both curves cover.

    Returns
    -------
    float or None
        ``100 * (exp(mean log-rate difference) - 1)``; ``None`` when the curves have fewer
        than two points each or do not overlap in PSNR.
    """
    a = sorted((p, np.log(r)) for r, p in ours if r > 0 and np.isfinite(p))
    b = sorted((p, np.log(r)) for r, p in ref if r > 0 and np.isfinite(p))
    if len(a) < 2 or len(b) < 2:
        return None
    lo, hi = max(a[0][0], b[0][0]), min(a[-1][0], b[-1][0])
    if hi <= lo:
        return None
    grid = np.linspace(lo, hi, 200)
    la = np.interp(grid, [p for p, _ in a], [r for _, r in a])
    lb = np.interp(grid, [p for p, _ in b], [r for _, r in b])
    return float(100.0 * (np.exp(np.mean(la - lb)) - 1.0))


def _ours(
    volume: np.ndarray,
    ratio: float,
    mode: str,
    budget: float | None,
    effort: str | None = None,
) -> dict[str, Any] | None:
    """Our file at ``ratio`` in ``mode`` (a time ``budget`` or an ``effort`` preset): size,
    PSNR, SSIM, times, and the hybrid blocks' layers."""
    from ..core.api import compress, decompress
    from ..errors import RatioUnreachableError

    try:
        res = compress(volume, ratio, mode=mode, budget=budget, effort=effort, device="cpu", seed=0)
    except RatioUnreachableError:
        return None
    data = bytes(res.data)
    t0 = time.perf_counter()
    decoded = np.asarray(decompress(data)).reshape(volume.shape)
    out: dict[str, Any] = {
        "nbytes": len(data),
        "ratio": volume.nbytes / len(data),
        "psnr": psnr(volume, decoded),
        "ssim": ssim(volume, decoded),
        "encode_seconds": float(res.encode_seconds),
        "decode_seconds": time.perf_counter() - t0,
    }
    if mode == "hybrid" or (mode == "auto" and res.header.get("mode") == "hybrid"):
        from ..core.api import open_sciz
        from ..core.hybrid.codec import describe

        reader = open_sciz(data)
        out["layers"] = [describe(reader._file.payload(i)) for i in range(reader.grid.n_blocks)]
    return out


def _classical(volume: np.ndarray, ratio: float, name: str) -> dict[str, Any] | None:
    codec = get_codec(name)
    if not codec.available():
        return None
    res = codec.encode_at_ratio(volume, ratio)
    if res is None:
        return None
    return {
        "nbytes": res.nbytes,
        "ratio": res.ratio,
        "psnr": res.psnr,
        "ssim": res.ssim,
        "encode_seconds": res.encode_seconds,
        "decode_seconds": res.decode_seconds,
    }


def anchors_from_markdown(path: str, names: Sequence[str]) -> dict[tuple[str, float, str], dict]:
    """SPERR and HEVC results read from the classical section of a benchmarks markdown file.

    The classical tables (``python -m napari_sciz.bench --skip-ours``) hold, per volume and
    ratio, ``PSNR / SSIM / achieved ratio / encode s / decode s`` of every codec, measured with
    the same definitions; re-reading them saves re-bisecting HEVC (minutes per volume).

    Returns
    -------
    dict
        ``{(volume, target ratio, codec): record}``.
    """
    import re

    out: dict[tuple[str, float, str], dict] = {}
    volume, columns = None, []
    text = open(path, encoding="utf-8").read()
    start = text.find("<!-- bench:classical:start -->")
    end = text.find("<!-- bench:classical:end -->")
    if start >= 0 and end > start:
        text = text[start:end]
    for line in text.splitlines():
        m = re.match(r"### (\S+) — .*\(([\d.]+) MiB\)", line)
        if m:
            volume, columns = m.group(1), []
            continue
        if volume is None or not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "ratio":
            columns = [c.lower().replace(" ", "") for c in cells]
            continue
        m = re.match(r"([\d.]+)x$", cells[0])
        if not m or not columns or volume not in names:
            continue
        target = float(m.group(1))
        for codec in ANCHORS:
            if codec not in columns:
                continue
            parts = cells[columns.index(codec)].replace("*", "").split(" / ")
            if len(parts) != 5:
                continue
            p, q, r, e, d = (float(x.rstrip("x")) for x in parts)
            out[(volume, target, codec)] = {
                "psnr": p,
                "ssim": q,
                "ratio": r,
                "encode_seconds": e,
                "decode_seconds": d,
            }
    return out


def _curve(vol: dict[str, Any], codec: str) -> list[tuple[float, float]]:
    voxels = vol["voxels"]
    return [
        (8.0 * r[codec]["nbytes"] / voxels, r[codec]["psnr"])
        for r in vol["points"]
        if r.get(codec) is not None
    ]


def measure(
    name: str,
    volume: np.ndarray,
    ratios: Sequence[float],
    modes: Sequence[str],
    budget: float,
    anchors: dict[tuple[str, float, str], dict] | None = None,
) -> dict[str, Any]:
    """All points and BD-rates of one volume (anchors re-measured unless given)."""
    points = []
    for ratio in ratios:
        row: dict[str, Any] = {"target": ratio}
        for mode in modes:
            print(f"{name} {ratio:g}x {mode} ...", flush=True)
            row[mode] = _ours(volume, ratio, mode, budget)
        for codec in ANCHORS:
            if anchors is None or (codec == "hevcslower" and (name, ratio, codec) not in anchors):
                row[codec] = _classical(volume, ratio, codec)
            elif (found := anchors.get((name, ratio, codec))) is not None:
                row[codec] = {**found, "nbytes": volume.nbytes / found["ratio"]}
            else:
                row[codec] = None
        points.append(row)
    vol = {"volume": name, "shape": list(volume.shape), "dtype": str(volume.dtype)}
    vol.update(voxels=int(volume.size), points=points)
    _add_bd_rates(vol, modes)
    return vol


def _add_bd_rates(vol: dict[str, Any], modes: Sequence[str]) -> None:
    vol["bd_rate"] = {
        f"{mode}_vs_{codec}": bd_rate(_curve(vol, mode), _curve(vol, codec))
        for mode in modes
        for codec in ANCHORS
    }


def merge_records(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One record from the points of several runs (same modes and budget), BD-rates recomputed.

    A volume's points are the union over the runs by target ratio; where two runs measured
    the same target, the later record's point is kept. The merged record lists every run's
    date and command (``runs``), so the table says which points come from which run.
    """
    if not records:
        raise ValueError("nothing to merge")
    modes, budget = records[0]["modes"], records[0]["budget"]
    if any(r["modes"] != modes or r["budget"] != budget for r in records):
        raise ValueError("records of different modes or budgets do not make one table")
    merged = {k: v for k, v in records[-1].items() if k not in ("volumes", "note")}
    merged["note"] = None  # each run's note is listed with it
    # a record that is itself a merge brings its own runs
    merged["runs"] = [
        run
        for r in records
        for run in r.get("runs")
        or [{"date": r["date"], "command": r["command"], "note": r.get("note")}]
    ]
    volumes: dict[str, dict[str, Any]] = {}
    for rec in records:
        for vol in rec["volumes"]:
            into = volumes.setdefault(vol["volume"], {**vol, "points": [], "held_out": False})
            into["held_out"] = into["held_out"] or bool(vol.get("held_out"))
            kept = {p["target"]: p for p in into["points"]}
            kept.update({p["target"]: p for p in vol["points"]})
            into["points"] = [kept[t] for t in sorted(kept)]
    for vol in volumes.values():
        _add_bd_rates(vol, modes)
    merged["volumes"] = list(volumes.values())
    return merged


def _cell(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "—"
    return (
        f"{rec['psnr']:.2f} / {rec['ssim']:.3f} / {rec['ratio']:.1f}x / "
        f"{rec['encode_seconds']:.1f} / {rec['decode_seconds']:.2f}"
    )


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:+.1f} %"


def _bases(rec: dict[str, Any] | None) -> str:
    if rec is None or "layers" not in rec:
        return ""
    names = sorted({d["base"] for d in rec["layers"]})
    classes = max(d["filter_classes"] for d in rec["layers"])
    wide = " wide" if any(d.get("filter_wide") for d in rec["layers"]) else ""
    field = sum(d["field_bytes"] for d in rec["layers"])
    net = sum(d.get("network_bytes", 0) for d in rec["layers"])
    hidden = max(d.get("network_hidden", 0) for d in rec["layers"])
    return (
        f"{'+'.join(n.upper() for n in names)}, filter {classes} cl.{wide}"
        + (f", net {hidden}h {net} B" if net else "")
        + (f", field {field} B" if field else "")
    )


def _run_lines(record: dict[str, Any]) -> list[str]:
    runs = record.get("runs")
    if not runs:
        return [f"- **date**: {record['date']}", f"- **command**: `{record['command']}`"]
    lines = [f"- **runs merged** ({len(runs)}; a later run's point replaces an earlier one's):"]
    for run in runs:
        note = f" ({run['note']})" if run.get("note") else ""
        lines.append(f"  - {run['date']}: `{run['command']}`{note}")
    return lines


def render(record: dict[str, Any]) -> str:
    """Markdown of the record."""
    env = record["environment"]
    modes = record["modes"]
    lines = [
        "## Rate-distortion: hybrid against SPERR and HEVC, BD-rate per volume",
        "",
        f"- **machine**: {env.get('cpu')}; torch {env.get('torch')}; "
        f"imagecodecs {env.get('imagecodecs')}; ffmpeg {env.get('ffmpeg')}",
        *_run_lines(record),
        f"- **time budget (ours)**: {record['budget']:g} s per volume and ratio, CPU, seed 0",
    ]
    if record.get("anchors_from"):
        lines.append(
            f"- **anchors**: SPERR and HEVC read from the classical tables of "
            f"`{record['anchors_from']}` (same definitions and code, measured earlier); "
            "HEVCSLOWER (x265 preset slower) measured in this run"
        )
    if record.get("note"):
        lines.append(f"- **note**: {record['note']}")
    lines += [
        "",
        "Cells: PSNR dB / SSIM / achieved ratio / encode s / decode s. BD-rate: bytes ours "
        "needs for the same PSNR, relative to the anchor (negative = smaller files), log-rate "
        "interpolated piecewise-linearly in PSNR over the range both curves cover.",
        "",
    ]
    for title, held in (("Volumes the codec was designed on", False), ("Held-out volumes", True)):
        vols = [v for v in record["volumes"] if bool(v.get("held_out")) == held]
        if not vols:
            continue
        lines += [f"### {title}", ""]
        head = "| volume | " + " | ".join(f"{m} vs {c.upper()}" for m in modes for c in ANCHORS)
        lines += [head + " |", "|---" * (1 + len(modes) * len(ANCHORS)) + "|"]
        for v in vols:
            cells = [_pct(v["bd_rate"].get(f"{m}_vs_{c}")) for m in modes for c in ANCHORS]
            lines.append(f"| {v['volume']} | " + " | ".join(cells) + " |")
        means = []
        for m in modes:
            for c in ANCHORS:
                xs = [v["bd_rate"].get(f"{m}_vs_{c}") for v in vols]
                xs = [x for x in xs if x is not None]
                means.append(_pct(float(np.mean(xs)) if xs else None))
        lines += ["| **mean** | " + " | ".join(means) + " |", ""]
        for v in vols:
            shape = "x".join(str(n) for n in v["shape"])
            lines += [f"#### {v['volume']} — {shape} {v['dtype']}", ""]
            cols = [*modes, *(c.upper() for c in ANCHORS)]
            lines += ["| ratio | " + " | ".join(cols) + " | ours − best (dB) | layers |"]
            lines += ["|---" * (len(cols) + 3) + "|"]
            for row in v["points"]:
                anchors = [row[c]["psnr"] for c in ANCHORS if row.get(c)]
                mine = [row[m]["psnr"] for m in modes if row.get(m)]
                gap = f"{max(mine) - max(anchors):+.2f}" if mine and anchors else "—"
                cells = [_cell(row.get(m)) for m in modes] + [_cell(row.get(c)) for c in ANCHORS]
                lines.append(
                    f"| {row['target']:g}x | " + " | ".join(cells) + f" | {gap} | "
                    f"{_bases(row.get('hybrid'))} |"
                )
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--volumes", default=None, help="comma-separated names (default: all 3D)")
    p.add_argument("--held-out", default="", help="comma-separated names reported apart")
    p.add_argument("--ratios", default="16,64,256,1024")
    p.add_argument("--modes", default="hybrid", help="our modes (hybrid, lossy)")
    p.add_argument("--budget", type=float, default=30.0, help="seconds per volume and ratio")
    p.add_argument(
        "--anchors-from",
        default=None,
        help="read SPERR/HEVC from this markdown's classical tables instead of re-measuring",
    )
    p.add_argument("--section", default=SECTION, help="marked section of --out to replace")
    p.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        metavar="JSON",
        help="measure nothing: render one table from these --json records (later ones win)",
    )
    add_output_options(p)
    args = p.parse_args(argv)
    if args.merge:
        record = merge_records([json.loads(path.read_text()) for path in args.merge])
        record["note"] = args.note
        write_results(record, render(record), args, args.section)
        return 0
    data = require_data_dir(p)
    names = comma_list(args.volumes) or None
    held = set(comma_list(args.held_out))
    ratios = [float(r) for r in args.ratios.split(",")]
    modes = comma_list(args.modes)
    record = new_record(PROG, argv, "cpu", args.note, budget=args.budget, modes=modes, volumes=[])
    volumes = list_volumes(data, names)
    anchors = None
    if args.anchors_from:
        anchors = anchors_from_markdown(args.anchors_from, [n for n, _ in volumes])
        record["anchors_from"] = args.anchors_from
    for name, volume in volumes:
        vol = measure(name, volume, ratios, modes, args.budget, anchors)
        vol["held_out"] = name in held
        record["volumes"].append(vol)
        write_results(record, render(record), args, args.section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
