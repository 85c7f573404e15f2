"""Bytes between blocks: probed rate-distortion against detail alone (``python -m
napari_sciz.bench.alloc``).

Real stacks are larger than one block (``DEFAULT_BLOCK_VOXELS``, 4 Mi voxels): a 60x512x512
stack has four, a beamline volume thousands. The shared stacks are one block each, so this
benchmark cuts each into about ``--blocks`` blocks (a smaller ``block_voxels``) and codes it
in the default hybrid mode twice with the same seed and budget: with the blocks' bytes split
by their probed rate-distortion (:mod:`napari_sciz.core.ratealloc`, the default) and by
their mean neighbour difference alone (the allocation before it). Cells: PSNR of the whole
volume / achieved ratio::

    python -m napari_sciz.bench.alloc --volumes philips_ct_phantom_crop --ratios 64,256 \\
        --budget 30 --out docs/benchmarks.md --json bench_out/alloc.json
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any
from unittest import mock

import numpy as np

from ..core import api, encode
from .report import (
    add_output_options,
    comma_list,
    header_lines,
    new_record,
    require_data_dir,
    write_results,
)
from .volumes import list_volumes

__all__ = ["block_voxels_for", "main", "render"]

PROG = "python -m napari_sciz.bench.alloc"
SECTION = "alloc"


def block_voxels_for(shape: Sequence[int], blocks: int) -> int:
    """A power of two of voxels that cuts a volume of ``shape`` into about ``blocks``."""
    n = math.prod(int(s) for s in shape)
    return max(1 << 12, 1 << max(0, round(math.log2(max(n / max(blocks, 1), 1)))))


def _run(
    volume: np.ndarray, ratio: float, budget: float, block_voxels: int, probed: bool
) -> dict[str, Any]:
    from ..core.metrics import psnr

    patch = nullcontext() if probed else mock.patch.object(encode, "probe_bits", return_value=None)
    with patch:
        res = api.compress(
            volume, ratio, mode="hybrid", budget=budget, device="cpu", seed=0,
            block_voxels=block_voxels,
        )  # fmt: skip
    decoded = np.asarray(api.decompress(bytes(res.data))).reshape(volume.shape)
    n_blocks = api.open_sciz(bytes(res.data)).grid.n_blocks
    return {
        "psnr": psnr(volume, decoded),
        "ratio": volume.nbytes / len(res.data),
        "encode_seconds": float(res.encode_seconds),
        "blocks": n_blocks,
    }


def measure(
    name: str, volume: np.ndarray, ratios: Sequence[float], budget: float, blocks: int
) -> dict[str, Any]:
    """Both allocations at every ratio of one volume."""
    bv = block_voxels_for(volume.shape, blocks)
    rows = []
    for ratio in ratios:
        row: dict[str, Any] = {"ratio": ratio}
        for key, probed in (("probed", True), ("detail", False)):
            row[key] = _run(volume, ratio, budget, bv, probed)
        gain = row["probed"]["psnr"] - row["detail"]["psnr"]
        print(f"{name} {ratio:g}x, {row['probed']['blocks']} blocks: {gain:+.2f} dB", flush=True)
        rows.append(row)
    shape = [int(n) for n in volume.shape]
    return {"name": name, "shape": shape, "dtype": str(volume.dtype), "block_voxels": bv,
            "rows": rows}  # fmt: skip


def render(record: dict[str, Any]) -> str:
    """The markdown section."""
    lines = header_lines("Bytes between blocks: probed rate-distortion against detail", record)
    lines += [
        "",
        f"Hybrid mode, {record['budget']:g} s per file, seed 0, each volume cut into about "
        f"{record['blocks']} blocks. Cells: PSNR dB of the whole volume / achieved ratio.",
        "",
        "| volume | blocks | ratio | probed (default) | detail only | probed − detail (dB) |",
        "|---|---|---|---|---|---|",
    ]
    gains = []
    for vol in record["volumes"]:
        for row in vol["rows"]:
            p, d = row["probed"], row["detail"]
            gain = p["psnr"] - d["psnr"]
            gains.append(gain)
            lines.append(
                f"| {vol['name']} | {p['blocks']} | {row['ratio']:g}x | {p['psnr']:.2f} / "
                f"{p['ratio']:.1f}x | {d['psnr']:.2f} / {d['ratio']:.1f}x | {gain:+.2f} |"
            )
    if gains:
        lines += ["", f"Mean {np.mean(gains):+.3f} dB over {len(gains)} points."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--volumes", default="philips_ct_phantom_crop", help="comma-separated names")
    p.add_argument("--ratios", default="64", help="comma-separated ratios")
    p.add_argument("--budget", type=float, default=30.0, help="seconds per file")
    p.add_argument("--blocks", type=int, default=8, help="about this many blocks per volume")
    add_output_options(p)
    args = p.parse_args(argv)
    data = require_data_dir(p)
    names = comma_list(args.volumes)
    ratios = [float(r) for r in comma_list(args.ratios)]
    record = new_record(
        PROG, argv, "cpu", args.note, ratios=ratios, budget=args.budget, blocks=args.blocks,
        volumes=[],
    )  # fmt: skip
    for name, volume in list_volumes(data, names, include_2d=True):
        record["volumes"].append(measure(name, volume, ratios, args.budget, args.blocks))
        write_results(record, render(record), args, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
