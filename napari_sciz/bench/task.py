"""Rate-task curves (issue 14): does guidance buy task fidelity per byte?

Run it as ``python -m napari_sciz.bench.task``::

    python -m napari_sciz.bench.task --volumes nbsd_cells3d_nuclei,stardist_img3d \\
        --ratios 32,64,128,256,512 --budget 120 --out docs/benchmarks.md --json task.json

For each volume, ratio and guidance (``none``, ``segmentation``, ``perceptual``) the volume is
compressed in ``--mode`` (default ``auto``: none and segmentation guidance run hybrid, the
default codec, where segmentation guidance codes a task-banded volume; perceptual runs
``lossy``, where the neural field's fit takes it) and decoded, and
scored with :mod:`napari_sciz.core.task.score`: object F1 at IoU 0.5 and Dice of the decoded
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
from pathlib import Path
from typing import Any

import numpy as np

from .ratedist import bd_rate
from .report import add_output_options, new_record, write_results
from .volumes import find_data_dir, list_volumes

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
    frames: tuple[np.ndarray, list[int]] | None = None,
) -> dict[str, Any] | None:
    from ..core.api import compress, decompress
    from ..core.metrics import psnr
    from ..core.plan import resolve_mode
    from ..core.task import score as taskscore
    from ..errors import RatioUnreachableError

    mode = resolve_mode(mode, guidance)
    t0 = time.perf_counter()
    try:
        axes = None if frames is None else "TYX"  # (a time-lapse is told so)
        res = compress(
            volume, ratio, mode=mode, guidance=guidance, budget=budget, seed=0, axes=axes
        )
    except RatioUnreachableError:
        return None
    seconds = time.perf_counter() - t0
    decoded = np.asarray(decompress(bytes(res.data))).reshape(volume.shape)
    seg = taskscore.segmentation_fidelity(
        ref_labels, taskscore.segment(decoded, min_distance=seeds)
    )
    point = {
        "mode": mode,
        "target": float(ratio),
        "ratio": volume.nbytes / len(res.data),
        "nbytes": len(res.data),
        "psnr": psnr(volume, decoded),
        "object_f1": seg.f1,
        "dice": seg.dice,
        "objects": seg.n_test,
        "ms_ssim": taskscore.ms_ssim(volume, decoded),
        "gradient_similarity": taskscore.gradient_similarity(volume, decoded),
        "encode_s": seconds,
        "coded": coded_variant(res.header),
    }
    if frames is not None:  # (a 2D time-lapse also segmented frame by frame)
        from ..core.task.frames import segment_frames

        by_frame = segment_frames(decoded, min_distances=frames[1])
        seg = taskscore.segmentation_fidelity(frames[0], by_frame)
        point.update(object_f1_frames=seg.f1, dice_frames=seg.dice)
    return point


def coded_variant(header: dict[str, Any]) -> str:
    """What a hybrid file under task guidance coded, as the proxy names its candidates:
    ``"none"`` (the plain volume), ``"3"`` (a band or a smoothing), ``"power 0.5"``,
    ``"0.5 + curve"``, ``"lock 0.35"``, ``"half"``, ``"curve, half"``."""
    if "task_lock_share" in header:
        return f"lock {float(header['task_lock_share']):g}"
    from ..core.task.choice import halved_label

    name = _coded_name(header)
    return halved_label(name) if header.get("task_halved") is True else name


def _coded_name(header: dict[str, Any]) -> str:
    setting = header.get("task_band", header.get("task_smooth"))
    vmap = header.get("value_map")
    if vmap is None:
        return "none" if setting is None else f"{float(setting):g}"
    curve = "curve" in vmap or "slopes" in vmap
    mapped = "curve" if curve else f"power {float(vmap['power']):g}"
    return mapped if setting is None else f"{float(setting):g} + {mapped}"


def measure_volume(
    name: str,
    volume: np.ndarray,
    ratios: Sequence[float],
    budget: float,
    mode: str = "auto",
    guidances: Sequence[str] = GUIDANCES,
    frames: bool = False,
) -> dict[str, Any]:
    """Every guidance at every ratio for one volume, and the savings at equal score.

    ``frames``: a 2D time-lapse (``T, Y, X``): coded with axes ``TYX`` (segmentation
    guidance then segments it frame by frame) and also scored frame by frame
    (:mod:`napari_sciz.core.task.frames`): object F1 pooled over its frames.
    """
    from ..core.task import score as taskscore

    ref_labels, seeds = taskscore.segment_original(volume)  # (seeds: for both segmentations)
    by_frame = None
    if frames:
        from ..core.task.frames import segment_original_frames

        by_frame = segment_original_frames(volume)
    curves: dict[str, list[dict[str, Any]]] = {}
    for guidance in guidances:
        points = []
        for ratio in ratios:
            point = _point(volume, ref_labels, seeds, ratio, guidance, budget, mode, by_frame)
            if point is not None:
                points.append(point)
        curves[guidance] = points
    record = {
        "name": name,
        "shape": list(volume.shape),
        "objects": int(ref_labels.max()),
        **({} if by_frame is None else {"objects_frames": int(by_frame[0].max())}),
        "seed_distance": seeds,
        "curves": curves,
    }
    return score_curves(record)


def score_curves(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` (one volume's curves) with its savings at equal score (re)computed.

    ``saving``: BD-rates against no guidance (None where the curves do not overlap in the
    score); ``bound``: where the guided curve scores above every unguided point, the bytes
    it needs to score at least as high as each unguided point (its cheapest such point),
    relative to the bytes the unguided curve needs for that score (its cheapest point that
    scores as high: a cheaper unguided point may score higher, F1 being noisy), averaged in
    the log domain: an upper bound on the (negative) saving at equal score (0 where both
    curves reach the same top score at the same bytes); ``gain``: the score gained at equal
    target ratio.
    """
    curves = record["curves"]

    def curve(guidance: str, key: str) -> list[tuple[float, float]]:
        return [(8.0 * p["nbytes"], p[key]) for p in curves.get(guidance, []) if key in p]

    def same_mode(guidance: str) -> bool:
        return len({p["mode"] for g in (guidance, "none") for p in curves.get(g, [])}) == 1

    def saving(guidance: str, key: str) -> float | None:
        # (different codecs: not a saving of the guidance)
        return bd_rate(curve(guidance, key), curve("none", key)) if same_mode(guidance) else None

    def bound(guidance: str, key: str) -> float | None:
        ours, ref = curve(guidance, key), curve("none", key)
        if not (ours and ref and same_mode(guidance)):
            return None
        logs = []
        for _bits, score in ref:
            enough = [b for b, s in ours if s >= score]
            if not enough:
                return None
            needed = min(b for b, s in ref if s >= score)  # (the unguided curve's cheapest)
            logs.append(np.log(min(enough) / needed))
        return (
            float(100.0 * (np.exp(np.mean(logs)) - 1.0)) if logs and same_mode(guidance) else None
        )

    def gain(guidance: str, key: str) -> float | None:
        ref = {_target(p): p[key] for p in curves.get("none", []) if key in p}
        ours = {_target(p): p[key] for p in curves.get(guidance, []) if key in p}
        both = sorted(set(ref) & set(ours))
        return float(np.mean([ours[r] - ref[r] for r in both])) if both else None

    record["saving"] = {
        "segmentation_f1": saving("segmentation", "object_f1"),
        "segmentation_f1_frames": saving("segmentation", "object_f1_frames"),
        "perceptual_ms_ssim": saving("perceptual", "ms_ssim"),
        "segmentation_psnr": saving("segmentation", "psnr"),
    }
    record["bound"] = {
        "segmentation_f1": bound("segmentation", "object_f1"),
        "segmentation_f1_frames": bound("segmentation", "object_f1_frames"),
        "perceptual_ms_ssim": bound("perceptual", "ms_ssim"),
    }
    record["gain"] = {
        "segmentation_f1": gain("segmentation", "object_f1"),
        "segmentation_f1_frames": gain("segmentation", "object_f1_frames"),
        "perceptual_ms_ssim": gain("perceptual", "ms_ssim"),
        "segmentation_psnr": gain("segmentation", "psnr"),
        "perceptual_psnr": gain("perceptual", "psnr"),
    }
    return record


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f} %"


def _saving_text(v: dict[str, Any], key: str) -> str:
    """The BD saving, or the bound (``<= -x %``) where the curves do not overlap."""
    value = v["saving"][key]
    if value is not None:
        return _pct(value)
    bound = v.get("bound", {}).get(key)
    return "n/a" if bound is None else f"<= {bound:+.1f} % (bound)"


def _gain_text(v: dict[str, Any], key: str, digits: int = 3) -> str:
    value = v.get("gain", {}).get(key)
    return "n/a" if value is None else f"{value:+.{digits}f}"


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
        "BD-rate with the score in place of PSNR against no guidance (negative = fewer bytes); "
        "where the guided curve scores above every unguided point, a bound instead (the "
        "guided bytes that score at least as high as each unguided point, relative to its "
        "bytes). Gains: mean difference at the same target ratio.",
        "",
        "| volume | seg. saving at equal F1 | F1 gain at equal ratio | PSNR change (seg.) "
        "| perc. saving at equal MS-SSIM | MS-SSIM gain | PSNR change (perc.) "
        "| seg. at equal PSNR |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in record["volumes"]:
        lines.append(
            f"| {v['name']} ({v['objects']} objects, seeds {v.get('seed_distance', '?')} vx) | "
            f"{_saving_text(v, 'segmentation_f1')} | {_gain_text(v, 'segmentation_f1')} | "
            f"{_gain_text(v, 'segmentation_psnr', 2)} dB | "
            f"{_saving_text(v, 'perceptual_ms_ssim')} | {_gain_text(v, 'perceptual_ms_ssim', 4)} | "
            f"{_gain_text(v, 'perceptual_psnr', 2)} dB | {_pct(v['saving']['segmentation_psnr'])} |"
        )
    framed = [v for v in record["volumes"] if "objects_frames" in v]
    if framed:
        lines += [
            "",
            "Segmented frame by frame (2D time-lapses, `--frames`: coded with axes TYX, each "
            "frame smoothed, thresholded at its own Otsu level and split on its own; object "
            "F1 pooled over the frames):",
            "",
            "| volume | seg. saving at equal F1 (frames) | F1 gain at equal ratio (frames) |",
            "|---|---|---|",
        ]
        lines += [
            f"| {v['name']} ({v['objects_frames']} objects in its frames) | "
            f"{_saving_text(v, 'segmentation_f1_frames')} | "
            f"{_gain_text(v, 'segmentation_f1_frames')} |"
            for v in framed
        ]
    for v in record["volumes"]:
        lines += _volume_table(v)
    return "\n".join(lines)


def _volume_table(v: dict[str, Any]) -> list[str]:
    """One volume's points (with the frame-by-frame F1 where it was measured)."""
    frames = "objects_frames" in v
    lines = [
        "",
        f"### {v['name']} — {'x'.join(map(str, v['shape']))}",
        "",
        "| guidance | mode | ratio | PSNR dB | object F1 | Dice | MS-SSIM | GMSM | objects "
        + ("| F1 frames | Dice frames " if frames else "")
        + "| s | coded |",
        "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if frames else "") + "---|---|",
    ]
    for guidance, points in v["curves"].items():
        for p in points:
            by_frame = ""
            if frames:
                f1, dice = p.get("object_f1_frames"), p.get("dice_frames")
                by_frame = "| n/a | n/a " if f1 is None else f"| {f1:.3f} | {dice:.3f} "
            lines.append(
                f"| {guidance} | {p.get('mode', 'lossy')} | {p['ratio']:.1f}x | "
                f"{p['psnr']:.2f} | {p['object_f1']:.3f} | "
                f"{p['dice']:.3f} | {p['ms_ssim']:.4f} | {p['gradient_similarity']:.4f} | "
                f"{p['objects']} {by_frame}| {p['encode_s']:.0f} | {p.get('coded', 'n/a')} |"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--volumes", default="nbsd_cells3d_nuclei,stardist_img3d")
    p.add_argument(
        "--data",
        help="folder of the volumes (*.tif, *.tiff, *.npy; default: ../shared/data): e.g. "
        "stacks held out of every design choice",
    )
    p.add_argument("--ratios", default="32,64,128,256,512")
    p.add_argument("--budget", type=float, default=120.0, help="seconds per fit")
    p.add_argument("--mode", default="auto", choices=("auto", "lossy", "hybrid"))
    p.add_argument("--guidances", default=",".join(GUIDANCES), help="comma-separated")
    p.add_argument(
        "--frames",
        default="",
        help="comma-separated volumes that are 2D time-lapses (T, Y, X): coded with axes "
        "TYX (segmentation guidance segments them frame by frame) and also scored frame by "
        "frame, as a biologist segments one",
    )
    p.add_argument(
        "--extend",
        help="an earlier run's --json record: its points are kept and the new ones added "
        "(same volumes; the savings are computed over all points)",
    )
    add_output_options(p)
    args = p.parse_args(argv)
    data = Path(args.data) if args.data else find_data_dir()
    if data is None or not data.is_dir():
        p.error(f"no data folder ({args.data or '../shared/data'}) found")
    ratios = [float(r) for r in args.ratios.split(",") if r]
    guidances = [g for g in args.guidances.split(",") if g]
    if any(g not in GUIDANCES for g in guidances):
        p.error(f"--guidances takes {', '.join(GUIDANCES)}")
    record = new_record(
        PROG, argv, "cpu", args.note, budget=args.budget, volumes=[], mode=args.mode
    )
    earlier = _earlier_curves(args.extend)
    if args.extend:
        record["extends"] = args.extend
    framed = {n for n in args.frames.split(",") if n}
    for name, volume in list_volumes(data, [n for n in args.volumes.split(",") if n]):
        frames = name in framed
        if frames and volume.ndim != 3:
            p.error(f"--frames: {name} is not a 3D time-lapse ({volume.ndim}D)")
        vol = measure_volume(name, volume, ratios, args.budget, args.mode, guidances, frames)
        for guidance, points in earlier.get(name, {}).items():
            vol["curves"][guidance] = _merged(points, vol["curves"].get(guidance, []))
        record["volumes"].append(score_curves(vol))
        write_results(record, render(record), args, SECTION)
    return 0


def _target(p: dict[str, Any]) -> int:
    """A point's target ratio (records before 2026-12-04 have none: the nearest power of two
    of the ratio)."""
    return round(p["target"]) if "target" in p else 2 ** round(np.log2(p["ratio"]))


def _merged(earlier: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points of a curve: the new ones, and the earlier ones at other target ratios,
    by ratio."""
    remeasured = {_target(p) for p in new}
    kept = [p for p in earlier if _target(p) not in remeasured]
    return sorted(kept + new, key=lambda q: q["ratio"])


def _earlier_curves(path: str | None) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{volume: {guidance: points}}`` of an earlier ``--json`` record (empty without one)."""
    if not path:
        return {}
    import json
    from pathlib import Path

    record = json.loads(Path(path).read_text())
    return {v["name"]: v["curves"] for v in record.get("volumes", [])}


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
