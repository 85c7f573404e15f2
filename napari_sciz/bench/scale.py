"""Benchmarks of speed and scale (GitHub issue 6): hybrid vs pure INR, throughput vs workers.

``python -m napari_sciz.bench.scale --out docs/benchmarks.md`` measures, on the volumes of
``shared/data``:

* **hybrid vs pure INR vs SPERR** at the same target ratios: PSNR, SSIM, achieved ratio and
  encode seconds of ``mode="hybrid"`` and ``mode="lossy"`` under the same time budget, beside
  SPERR alone (bisected to the ratio like every classical anchor);
* **throughput vs Dask workers**: raw MB/s of :func:`napari_sciz.core.distributed.
  compress_distributed` on a local cluster of 1, 2, ... worker processes, beside the
  single-process :func:`napari_sciz.compress`, with a fixed number of training steps (so every
  run does the same work and writes the same bytes).

The results replace the ``scale`` section of the markdown file (see
:func:`napari_sciz.bench.records.update_section`).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .report import add_output_options, new_record, write_results
from .volumes import _read_volume, find_data_dir

__all__ = ["main", "measure_hybrid", "measure_workers", "render"]

PROG = "python -m napari_sciz.bench.scale"
HYBRID_VOLUMES = (
    "nbsd_cells3d_nuclei",
    "spam_snow_xct",
    "neuroproof_fib25_crop128",
    "philips_ct_phantom_crop",
)


def _quality(volume: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    from ..core.metrics import psnr, ssim

    return psnr(volume, decoded), ssim(volume, decoded)


def measure_hybrid(
    volume: np.ndarray, ratio: float, budget: float, device: str
) -> dict[str, dict[str, Any]]:
    """Hybrid, pure INR and SPERR alone at ``ratio`` (ours with ``budget`` seconds each)."""
    from ..core.api import compress, decompress
    from .classical import CODECS

    out: dict[str, dict[str, Any]] = {}
    for mode in ("hybrid", "lossy"):
        t0 = time.perf_counter()
        res = compress(volume, ratio, mode=mode, budget=budget, device=device, seed=0)
        seconds = time.perf_counter() - t0
        p, s = _quality(volume, np.asarray(decompress(res.data)))
        out[mode] = {"psnr": p, "ssim": s, "ratio": res.ratio, "seconds": seconds}
    t0 = time.perf_counter()
    sperr = CODECS["sperr"].encode_at_ratio(volume, ratio)
    if sperr is not None:
        d = sperr.to_dict()
        out["sperr"] = {
            "psnr": d["psnr"],
            "ssim": d["ssim"],
            "ratio": d["ratio"],
            "seconds": d.get("encode_seconds", time.perf_counter() - t0),
        }
    return out


def measure_workers(
    path: Path, ratio: float, steps: int, workers: Sequence[int], block_voxels: int
) -> list[dict[str, Any]]:
    """Raw MB/s of one process and of local Dask clusters of ``workers`` processes."""
    from ..core.api import compress
    from ..core.distributed import compress_distributed
    from ..io import read_image

    volume = np.asarray(read_image(path).data)
    mb = volume.nbytes / 2**20
    rows = []
    t0 = time.perf_counter()
    local = compress(volume, ratio, steps=steps, device="cpu", block_voxels=block_voxels)
    seconds = time.perf_counter() - t0
    rows.append({"workers": 0, "seconds": seconds, "mb_s": mb / seconds, "same": True})
    for n in workers:
        t0 = time.perf_counter()
        res = compress_distributed(
            path, ratio, workers=n, steps=steps, device="cpu", block_voxels=block_voxels
        )
        seconds = time.perf_counter() - t0  # includes starting the cluster
        rows.append(
            {"workers": n, "seconds": seconds, "mb_s": mb / seconds, "same": res.data == local.data}
        )
    return rows


def _f(x: float | None, digits: int = 2) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def render(record: dict[str, Any]) -> str:
    """Markdown of a :func:`main` record."""
    env = record["environment"]
    lines = [
        "## Speed and scale: hybrid mode, distributed encoding",
        "",
        f"- **machine**: {env.get('cpu', '?')}; torch {env.get('torch', '?')}; "
        f"imagecodecs {env.get('imagecodecs', '?')}",
        f"- **date**: {record['date']}",
        f"- **command**: `{record['command']}`",
    ]
    if record.get("note"):
        lines.append(f"- **note**: {record['note']}")
    lines += [
        "",
        f"### Hybrid (SPERR base + fitted residual) vs pure INR at the same time budget "
        f"({record['budget']:g} s per volume and ratio, device {record['device']})",
        "",
        "Cells: PSNR dB / SSIM / achieved ratio / encode s. SPERR alone: bisected to the "
        "ratio, as in the classical tables.",
        "",
        "| volume | ratio | hybrid | pure INR | SPERR alone | hybrid − pure INR (dB) |",
        "|---|---|---|---|---|---|",
    ]
    for row in record["hybrid"]:

        def cell(key: str, _row: dict = row) -> str:
            r = _row["results"].get(key)
            if r is None:
                return "—"
            return (
                f"{_f(r['psnr'])} / {_f(r['ssim'], 3)} / {_f(r['ratio'], 1)}x / "
                f"{_f(r['seconds'], 1)}"
            )

        res = row["results"]
        gain = res["hybrid"]["psnr"] - res["lossy"]["psnr"]
        lines.append(
            f"| {row['volume']} | {row['ratio']:g}x | {cell('hybrid')} | {cell('lossy')} | "
            f"{cell('sperr')} | {gain:+.2f} |"
        )
    w = record["workers"]
    lines += [
        "",
        f"### Throughput vs Dask workers ({w['volume']}, {w['ratio']:g}x, {w['steps']} "
        f"steps per block, blocks of at most {w['block_voxels']} voxels, CPU)",
        "",
        "Raw MB/s of the whole job (a new local cluster is started for each run and its "
        "start-up is counted); *same bytes*: the file equals the single-process one.",
        "",
        "| workers | seconds | MB/s | speed-up | same bytes |",
        "|---|---|---|---|---|",
    ]
    base = w["rows"][0]["seconds"]
    for r in w["rows"]:
        name = "1 process (no Dask)" if r["workers"] == 0 else str(r["workers"])
        lines.append(
            f"| {name} | {r['seconds']:.1f} | {r['mb_s']:.3f} | {base / r['seconds']:.2f}x | "
            f"{'yes' if r['same'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (see the module docstring); returns the exit status."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None, help="data folder (default shared/data)")
    p.add_argument("--ratios", default="64,256", help="target ratios of the hybrid comparison")
    p.add_argument("--budget", type=float, default=30.0, help="seconds per volume and ratio")
    p.add_argument("--device", default="cpu")
    p.add_argument("--volumes", default=",".join(HYBRID_VOLUMES))
    p.add_argument("--workers", default="1,2", help="cluster sizes of the throughput table")
    p.add_argument("--workers-volume", default="stardist_img3d")
    p.add_argument("--workers-steps", type=int, default=30)
    p.add_argument("--block-voxels", type=int, default=2**14)
    add_output_options(p)
    args = p.parse_args(argv)
    data = args.data or find_data_dir()
    if data is None:
        p.error("no data folder found (give --data)")
    ratios = [float(r) for r in args.ratios.split(",") if r]
    record = new_record(PROG, argv, args.device, args.note, budget=args.budget, hybrid=[])
    try:
        import imagecodecs

        record["environment"]["imagecodecs"] = imagecodecs.__version__
    except ImportError:  # pragma: no cover - a dependency
        pass
    for name in [v for v in args.volumes.split(",") if v]:
        volume = _read_volume(data / f"{name}.tif")
        for ratio in ratios:
            print(f"hybrid: {name} {ratio:g}x ...", flush=True)
            res = measure_hybrid(volume, ratio, args.budget, args.device)
            record["hybrid"].append({"volume": name, "ratio": ratio, "results": res})
    workers = [int(w) for w in args.workers.split(",") if w]
    print("throughput vs workers ...", flush=True)
    rows = measure_workers(
        data / f"{args.workers_volume}.tif", 16.0, args.workers_steps, workers, args.block_voxels
    )
    record["workers"] = {
        "volume": args.workers_volume,
        "ratio": 16.0,
        "steps": args.workers_steps,
        "block_voxels": args.block_voxels,
        "rows": rows,
    }
    write_results(record, render(record), args, "scale")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
