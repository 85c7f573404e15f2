"""Rate-task curves (issue 14): does guidance buy task fidelity per byte?

Run it as ``python -m napari_sciz.bench.task``::

    python -m napari_sciz.bench.task --volumes nbsd_cells3d_nuclei,stardist_img3d \\
        --ratios 32,64,128,256,512 --budget 120 --out docs/benchmarks.md --json task.json

For each volume, ratio and guidance (``none``, ``segmentation``, ``perceptual``) the volume is
compressed in ``--mode`` (default ``auto``: none and segmentation guidance run hybrid, the
default codec, where segmentation guidance codes a task-banded volume; perceptual runs
``lossy``, where the neural field's fit takes it) and decoded, and
scored with :mod:`napari_sciz.core.taskscore`: object F1 at IoU 0.5 and Dice of the decoded
volume's segmentation against the original's (the biologist's pipeline, same parameters for
both), MS-SSIM, gradient similarity and PSNR. The **byte saving at equal task score** is a
BD-rate with the task score in place of PSNR (:func:`napari_sciz.bench.ratedist.bd_rate`):
segmentation guidance against none on object F1, perceptual against none on MS-SSIM
(negative = fewer bytes for the same score); a saving is reported only between curves coded
in the same mode (``--mode lossy`` measures perceptual guidance against unguided lossy).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .ratedist import bd_rate
from .report import add_output_options, new_record, write_results
from .run import find_data_dir, list_volumes

__all__ = ["GUIDANCES", "main", "measure_volume", "render"]

PROG = "python -m napari_sciz.bench.task"
SECTION = "task"
GUIDANCES = ("none", "segmentation", "perceptual")


def _point(
    volume: np.ndarray,
    ref_labels: np.ndarray,
    seeds: int,
    ratio: float,
    guidance: str,
    budget: float,
    mode: str = "auto",
) -> dict[str, Any] | None:
    from ..core import taskscore
    from ..core.api import compress, decompress
    from ..core.metrics import psnr
    from ..core.plan import resolve_mode
    from ..errors import RatioUnreachableError

    mode = resolve_mode(mode, guidance)
    t0 = time.perf_counter()
    try:
        res = compress(volume, ratio, mode=mode, guidance=guidance, budget=budget, seed=0)
    except RatioUnreachableError:
        return None
    seconds = time.perf_counter() - t0
    decoded = np.asarray(decompress(bytes(res.data))).reshape(volume.shape)
    seg = taskscore.segmentation_fidelity(
        ref_labels, taskscore.segment(decoded, min_distance=seeds)
    )
    return {
        "mode": mode,
        "ratio": volume.nbytes / len(res.data),
        "nbytes": len(res.data),
        "psnr": psnr(volume, decoded),
        "object_f1": seg.f1,
        "dice": seg.dice,
        "objects": seg.n_test,
        "ms_ssim": taskscore.ms_ssim(volume, decoded),
        "gradient_similarity": taskscore.gradient_similarity(volume, decoded),
        "encode_s": seconds,
    }


def measure_volume(
    name: str,
    volume: np.ndarray,
    ratios: Sequence[float],
    budget: float,
    mode: str = "auto",
    guidances: Sequence[str] = GUIDANCES,
) -> dict[str, Any]:
    """Every guidance at every ratio for one volume, and the savings at equal score."""
    from ..core import taskscore

    seeds = taskscore.seed_distance(volume)  # the original's, for both segmentations
    ref_labels = taskscore.segment(volume, min_distance=seeds)
    curves: dict[str, list[dict[str, Any]]] = {}
    for guidance in guidances:
        points = []
        for ratio in ratios:
            point = _point(volume, ref_labels, seeds, ratio, guidance, budget, mode)
            if point is not None:
                points.append(point)
        curves[guidance] = points

    def curve(guidance: str, key: str) -> list[tuple[float, float]]:
        return [(8.0 * p["nbytes"], p[key]) for p in curves.get(guidance, [])]

    def saving(guidance: str, key: str) -> float | None:
        modes = {p["mode"] for g in (guidance, "none") for p in curves.get(g, [])}
        if len(modes) != 1:
            return None  # (different codecs: not a saving of the guidance)
        return bd_rate(curve(guidance, key), curve("none", key))

    return {
        "name": name,
        "shape": list(volume.shape),
        "objects": int(ref_labels.max()),
        "seed_distance": seeds,
        "curves": curves,
        "saving": {
            "segmentation_f1": saving("segmentation", "object_f1"),
            "perceptual_ms_ssim": saving("perceptual", "ms_ssim"),
            "segmentation_psnr": saving("segmentation", "psnr"),
        },
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f} %"


def render(record: dict[str, Any]) -> str:
    """The markdown section."""
    lines = [
        f"## Rate-task curves (`{record['command']}`)",
        "",
        f"{record['date']}, {record['environment'].get('cpu', '?')}; mode "
        f"`{record.get('mode', 'lossy')}`, {record['budget']:g} s per fit."
        + (f" {record['note']}" if record.get("note") else ""),
        "",
        "Object F1 (IoU >= 0.5) and Dice: the decoded volume's segmentation (Gaussian, Otsu, "
        "components, distance watershed) against the original's. Saving at equal score: "
        "BD-rate with the score in place of PSNR against no guidance (negative = fewer bytes).",
        "",
        "| volume | seg. saving at equal F1 | perc. saving at equal MS-SSIM | seg. at equal PSNR |",
        "|---|---|---|---|",
    ]
    for v in record["volumes"]:
        s = v["saving"]
        lines.append(
            f"| {v['name']} ({v['objects']} objects, seeds {v.get('seed_distance', '?')} vx) | "
            f"{_pct(s['segmentation_f1'])} | "
            f"{_pct(s['perceptual_ms_ssim'])} | {_pct(s['segmentation_psnr'])} |"
        )
    for v in record["volumes"]:
        lines += [
            "",
            f"### {v['name']} — {'x'.join(map(str, v['shape']))}",
            "",
            "| guidance | mode | ratio | PSNR dB | object F1 | Dice | MS-SSIM | GMSM | objects "
            "| s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for guidance, points in v["curves"].items():
            for p in points:
                lines.append(
                    f"| {guidance} | {p.get('mode', 'lossy')} | {p['ratio']:.1f}x | "
                    f"{p['psnr']:.2f} | {p['object_f1']:.3f} | "
                    f"{p['dice']:.3f} | {p['ms_ssim']:.4f} | {p['gradient_similarity']:.4f} | "
                    f"{p['objects']} | {p['encode_s']:.0f} |"
                )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--volumes", default="nbsd_cells3d_nuclei,stardist_img3d")
    p.add_argument("--ratios", default="32,64,128,256,512")
    p.add_argument("--budget", type=float, default=120.0, help="seconds per fit")
    p.add_argument("--mode", default="auto", choices=("auto", "lossy", "hybrid"))
    p.add_argument("--guidances", default=",".join(GUIDANCES), help="comma-separated")
    add_output_options(p)
    args = p.parse_args(argv)
    data = find_data_dir()
    if data is None:
        p.error("no data folder (../shared/data) found")
    ratios = [float(r) for r in args.ratios.split(",") if r]
    guidances = [g for g in args.guidances.split(",") if g]
    if any(g not in GUIDANCES for g in guidances):
        p.error(f"--guidances takes {', '.join(GUIDANCES)}")
    record = new_record(
        PROG, argv, "cpu", args.note, budget=args.budget, volumes=[], mode=args.mode
    )
    for name, volume in list_volumes(data, [n for n in args.volumes.split(",") if n]):
        vol = measure_volume(name, volume, ratios, args.budget, args.mode, guidances)
        record["volumes"].append(vol)
        write_results(record, render(record), args, SECTION)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
