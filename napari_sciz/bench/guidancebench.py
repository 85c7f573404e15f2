"""``sciz bench --guidance``: Otsu-segmentation agreement and SSIM of guided files.

The first guidance benchmark (issue 4): none / segmentation / perceptual guidance of our codec at
each ratio on the microscopy stacks, scored by the Dice of each decode's own Otsu mask against the
original's. The task benchmark (:mod:`napari_sciz.bench.task`) measures what a biologist's
pipeline sees instead.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..core.guidance import GUIDANCE_MODES
from ..core.metrics import psnr, ssim
from .environment import environment_info
from .records import _fmt_ratio, update_section, write_json
from .volumes import find_data_dir, list_volumes

__all__ = ["GUIDANCE_RATIOS", "GUIDANCE_VOLUMES", "guidance_main", "segmentation_scores"]

#: Ratios and microscopy volumes of the guidance benchmark (``--guidance``).
GUIDANCE_RATIOS = (64.0, 256.0)
GUIDANCE_VOLUMES = (
    "nbsd_cells3d_nuclei",
    "stardist_img3d",
    "flowdec_bead_25pct",
    "bbbc034_AICS_12_134_C0",
)


def segmentation_scores(original: np.ndarray, decoded: np.ndarray) -> dict[str, float | None]:
    """Agreement of the Otsu segmentations of ``original`` and ``decoded``.

    Each image is thresholded at its own Otsu threshold (what a user would do with the decoded
    data). Returns the Dice coefficient of the two masks and the ratio of their numbers of
    connected components (face connectivity; ``None`` without scipy).
    """
    from ..core.refmask import otsu_threshold

    a = np.asarray(original, np.float64)
    b = np.asarray(decoded, np.float64)
    ma = a > otsu_threshold(a)
    mb = b > otsu_threshold(b)
    denom = int(ma.sum()) + int(mb.sum())
    dice = 1.0 if denom == 0 else 2.0 * float((ma & mb).sum()) / denom
    cc_ratio: float | None = None
    try:
        from scipy import ndimage
    except ImportError:  # pragma: no cover - scipy comes with scikit-image (bench extra)
        pass
    else:
        n_a = int(ndimage.label(ma)[1])
        n_b = int(ndimage.label(mb)[1])
        cc_ratio = float(n_b / n_a) if n_a else None
    return {"dice": dice, "cc_ratio": cc_ratio}


def _guided(
    volume: np.ndarray, ratio: float, mode: str, *, device: str, budget: float | None
) -> dict[str, Any]:
    """One guided run of our codec; the metrics of its decoded output."""
    from ..core.api import compress, decompress

    record: dict[str, Any] = {"guidance": mode, "target_ratio": float(ratio)}
    try:
        res = compress(volume, ratio, device=device, budget=budget, seed=0, guidance=mode)
    except Exception as exc:  # noqa: BLE001 - one failure must not end a long benchmark
        record.update(status="error", message=f"{type(exc).__name__}: {exc}")
        return record
    data = bytes(res.data)
    decoded = np.asarray(decompress(data)).reshape(volume.shape)
    record.update(
        status="ok",
        ratio=volume.size * volume.dtype.itemsize / len(data),
        psnr=psnr(volume, decoded),
        ssim=ssim(volume, decoded),
        encode_seconds=float(res.encode_seconds),
        **segmentation_scores(volume, decoded),
    )
    return record


def _guidance_summary(record: dict[str, Any], ratio_key: str) -> dict[str, Any]:
    """Mean gains over ``none`` at one ratio, and whether the issue's bar is met."""
    d_dice, d_ssim, d_psnr_seg, d_psnr_per = [], [], [], []
    for vol in record["volumes"]:
        res = vol["results"].get(ratio_key, {})
        base, seg, per = (res.get(m, {}) for m in GUIDANCE_MODES)
        if base.get("status") != "ok":
            continue
        if seg.get("status") == "ok":
            d_dice.append(seg["dice"] - base["dice"])
            d_psnr_seg.append(seg["psnr"] - base["psnr"])
        if per.get("status") == "ok":
            d_ssim.append(per["ssim"] - base["ssim"])
            d_psnr_per.append(per["psnr"] - base["psnr"])

    def mean(x: list[float]) -> float | None:
        return float(statistics.fmean(x)) if x else None

    out = {
        "ratio": ratio_key,
        "dice_gain": mean(d_dice),
        "ssim_gain": mean(d_ssim),
        "psnr_cost_segmentation": mean(d_psnr_seg),
        "psnr_cost_perceptual": mean(d_psnr_per),
        "worst_psnr_change": min(d_psnr_seg + d_psnr_per) if d_psnr_seg + d_psnr_per else None,
    }
    out["bar_segmentation"] = (
        None
        if out["dice_gain"] is None
        else bool(out["dice_gain"] >= 0.02 and min(d_psnr_seg) >= -1.5)
    )
    out["bar_perceptual"] = (
        None
        if out["ssim_gain"] is None
        else bool(out["ssim_gain"] >= 0.01 and min(d_psnr_per) >= -1.5)
    )
    return out


def render_guidance_markdown(record: dict[str, Any]) -> str:
    """The markdown of the guidance benchmark (section ``guidance``)."""
    meta = record["meta"]
    env = meta["environment"]
    lines = [
        f"Guided fitting, measured {meta['date']} with `{meta['command']}`.",
        "",
        f"Device: **{meta['device']}** ({env.get('cpu', '?')}, {env.get('torch', '?')}); "
        f"budget **{meta['budget']:g} s** per volume, ratio and mode; seed 0."
        + (f" {meta['note']}" if meta.get("note") else ""),
        "",
        "Dice: Otsu segmentation of the decoded stack vs that of the original (each at its own "
        "threshold); CC: connected components of the decoded segmentation / of the original's "
        "(1 is best).",
        "",
        "| volume | ratio | guidance | achieved | PSNR dB | SSIM | Dice | CC ratio | encode s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for vol in record["volumes"]:
        for ratio_key, res in vol["results"].items():
            for mode in GUIDANCE_MODES:
                r = res.get(mode)
                if r is None:
                    continue
                if r.get("status") != "ok":
                    lines.append(
                        f"| {vol['name']} | {ratio_key} | {mode} | {r.get('status')} | | | | | |"
                    )
                    continue
                cc = "–" if r.get("cc_ratio") is None else f"{r['cc_ratio']:.2f}"
                lines.append(
                    f"| {vol['name']} | {ratio_key} | {mode} | {r['ratio']:.1f}x "
                    f"| {r['psnr']:.2f} | {r['ssim']:.4f} | {r['dice']:.4f} | {cc} "
                    f"| {r['encode_seconds']:.1f} |"
                )
    lines += [
        "",
        "Mean change over `none` (issue 4 bar: Dice +0.02 with segmentation guidance, SSIM "
        "+0.01 with perceptual guidance, neither more than 1.5 dB PSNR lower on any volume):",
        "",
        "| ratio | Dice gain (seg.) | SSIM gain (perc.) | PSNR change seg. / perc. | worst "
        "PSNR change | bar seg. | bar perc. |",
        "|---|---|---|---|---|---|---|",
    ]

    def f(x: float | None, spec: str) -> str:
        return "–" if x is None else format(x, spec)

    def yn(x: bool | None) -> str:
        return "–" if x is None else ("met" if x else "**not met**")

    for s in record["summary"]:
        lines.append(
            f"| {s['ratio']} | {f(s['dice_gain'], '+.4f')} | {f(s['ssim_gain'], '+.4f')} "
            f"| {f(s['psnr_cost_segmentation'], '+.2f')} / {f(s['psnr_cost_perceptual'], '+.2f')}"
            f" | {f(s['worst_psnr_change'], '+.2f')} | {yn(s['bar_segmentation'])} "
            f"| {yn(s['bar_perceptual'])} |"
        )
    return "\n".join(lines) + "\n"


def guidance_main(args: argparse.Namespace, args_list: list[str], prog: str, say: Any) -> int:
    """``--guidance``: none/segmentation/perceptual at each ratio on the microscopy stacks."""
    from ..core.device import resolve_device

    data_dir = args.data if args.data is not None else find_data_dir()
    if data_dir is None or not Path(data_dir).is_dir():
        print(f"{prog}: error: data folder not found", file=sys.stderr)
        return 1
    names = args.volumes or [n for n in GUIDANCE_VOLUMES if any(Path(data_dir).glob(n + ".*"))]
    try:
        volumes = list_volumes(Path(data_dir), names, include_2d=True)
    except FileNotFoundError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    device = resolve_device(args.device)
    record: dict[str, Any] = {
        "meta": {
            "command": " ".join([prog, shlex.join(args_list)]).strip(),
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "environment": environment_info(device),
            "data": str(data_dir),
            "ratios": args.ratios,
            "budget": args.budget,
            "device": device,
            "note": args.note,
        },
        "volumes": [],
        "summary": [],
    }
    for name, vol in volumes:
        entry: dict[str, Any] = {"name": name, "shape": list(vol.shape), "results": {}}
        for ratio in args.ratios:
            res: dict[str, Any] = {}
            for mode in GUIDANCE_MODES:
                say(f"[{name} {_fmt_ratio(ratio)}] {mode} (budget {args.budget:g} s)")
                rec = _guided(vol, ratio, mode, device=device, budget=args.budget)
                res[mode] = rec
                say(f"    {json.dumps({k: v for k, v in rec.items() if k != 'message'})}")
            entry["results"][_fmt_ratio(ratio)] = res
        record["volumes"].append(entry)
        if args.json is not None:
            write_json(args.json, record)
    record["summary"] = [_guidance_summary(record, _fmt_ratio(r)) for r in args.ratios]
    if args.json is not None:
        write_json(args.json, record)
    markdown = render_guidance_markdown(record)
    if args.out:
        update_section(args.out, args.section or "guidance", markdown)
        say(f"updated section '{args.section or 'guidance'}' of {args.out}")
    else:
        print(markdown)
    return 0
