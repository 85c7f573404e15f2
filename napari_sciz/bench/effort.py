"""Effort presets: encode time against quality, per volume (``python -m napari_sciz.bench.effort``).

For each volume and ratio the default codec (``mode="auto"``: hybrid) is run at every effort
preset (:data:`napari_sciz.core.plan.EFFORT_PRESETS`, a time budget that grows with the data)
and the result's PSNR, SSIM, achieved ratio, encode and decode seconds and layers are written as
a markdown table::

    python -m napari_sciz.bench.effort --volumes spam_snow_xct,philips_ct_phantom_crop \\
        --ratios 64 --out docs/benchmarks.md --json bench_out/effort.json
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.plan import EFFORT_PRESETS, effort_budget
from .ratedist import _bases, _ours
from .report import (
    add_output_options,
    comma_list,
    header_lines,
    new_record,
    require_data_dir,
    write_results,
)
from .volumes import list_volumes

__all__ = ["main", "render"]

PROG = "python -m napari_sciz.bench.effort"
SECTION = "effort"


def measure(
    name: str, volume: np.ndarray, ratios: Sequence[float], efforts: Sequence[str]
) -> dict[str, Any]:
    """Every ratio at every effort of one volume."""
    rows = []
    for ratio in ratios:
        for effort in efforts:
            rec = _ours(volume, ratio, "auto", None, effort=effort)
            budget = effort_budget(effort, volume.nbytes)
            rows.append({"ratio": ratio, "effort": effort, "budget": budget, "result": rec})
            print(f"{name} {ratio:g}x {effort}: {rec and round(rec['psnr'], 2)} dB", flush=True)
    shape = [int(n) for n in volume.shape]
    return {"name": name, "shape": shape, "dtype": str(volume.dtype), "rows": rows}


def render(record: dict[str, Any]) -> str:
    """The markdown section."""
    lines = header_lines("Effort presets: encode time against quality", record)
    presets = ", ".join(f"{k} {v[0]:g} s or {v[1]:g} s/MiB" for k, v in EFFORT_PRESETS.items())
    lines += [
        "",
        f"Presets (the larger of a floor and seconds per MiB of raw data): {presets}. Default "
        "mode (hybrid). Cells: PSNR dB / SSIM / achieved ratio; encode s (budget); decode s.",
        "",
    ]
    for vol in record["volumes"]:
        shape = "x".join(str(n) for n in vol["shape"])
        lines += [f"### {vol['name']} — {shape} {vol['dtype']}", ""]
        lines += ["| ratio | effort | quality | encode s (budget) | decode s | layers |"]
        lines += ["|---|---|---|---|---|---|"]
        for row in vol["rows"]:
            rec = row["result"]
            if rec is None:
                quality, enc, dec = "ratio unreachable", "—", "—"
            else:
                quality = f"{rec['psnr']:.2f} / {rec['ssim']:.3f} / {rec['ratio']:.1f}x"
                enc = f"{rec['encode_seconds']:.1f} ({row['budget']:.0f})"
                dec = f"{rec['decode_seconds']:.2f}"
            lines.append(
                f"| {row['ratio']:g}x | {row['effort']} | {quality} | {enc} | {dec} | "
                f"{_bases(rec)} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--volumes", default="spam_snow_xct", help="comma-separated names")
    p.add_argument("--ratios", default="64", help="comma-separated ratios")
    p.add_argument("--efforts", default=",".join(EFFORT_PRESETS), help="presets to run")
    add_output_options(p)
    args = p.parse_args(argv)
    data = require_data_dir(p)
    names = comma_list(args.volumes)
    ratios = [float(r) for r in comma_list(args.ratios)]
    efforts = comma_list(args.efforts)
    for e in efforts:
        if e not in EFFORT_PRESETS:
            p.error(f"unknown effort {e!r}")
    record = new_record(PROG, argv, "cpu", args.note, ratios=ratios, volumes=[])
    for name, volume in list_volumes(data, names, include_2d=True):
        record["volumes"].append(measure(name, volume, ratios, efforts))
        write_results(record, render(record), args, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
