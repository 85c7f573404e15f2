"""Encoder speed (GitHub issue 6): cost of a training step against its floor, time to quality.

``python -m napari_sciz.bench.speed --out docs/benchmarks.md`` measures on this machine:

* **the training step**: the FLOPs of one step of the fit (forward and backward of the latent
  interpolation, the synthesis MLP and the rate term, counted by
  :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the matrix products; the
  interpolation's gathers and element-wise work are estimated and listed apart), its measured
  time, and the floor ``FLOPs / device rate``. The CPU's rate is measured (a large float32
  matrix product, the best this device does); GPU floors use the vendor's peak float32 rate
  and are marked as computed, not measured;
* **time to quality**: decoded PSNR of one volume compressed at one ratio with growing time
  budgets, with the training steps each budget bought.

The results replace the ``speed`` section of the markdown file (see
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

__all__ = ["main", "matmul_rate", "render", "step_cost", "time_to_quality"]

PROG = "python -m napari_sciz.bench.speed"

#: Vendor peak float32 rates (non-tensor-core FMA, dense) used for computed GPU floors.
PEAK_FP32_TFLOPS = {"NVIDIA H100 SXM": 67.0, "NVIDIA H200": 67.0, "NVIDIA A100": 19.5}


def matmul_rate(device: str = "cpu", n: int = 2048, repeats: int = 5) -> float:
    """Best float32 rate of ``device`` in FLOP/s: the fastest of ``repeats`` n x n products."""
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = math.inf
    for _ in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def _interpolation_flops(n_levels: int, voxels: int) -> float:
    """Estimated FLOPs of the trilinear interpolation of ``n_levels`` grids at ``voxels``.

    Per level and voxel: 8 corner weights (products of three factors, 2 FLOPs each) and a
    weighted sum of 8 values (16 FLOPs); the backward pass costs about twice the forward.
    """
    return 3.0 * n_levels * voxels * (8 * 2 + 16)


def step_cost(
    shape: Sequence[int], bits_per_voxel: float, batch: int, device: str, repeats: int = 10
) -> dict[str, Any]:
    """FLOPs and measured seconds of one training step of a ``shape`` block.

    The step is the fit's: latents with straight-through rounding, features of a random crop
    of about ``batch`` voxels, the synthesis MLP, MSE plus the rate term, backward, Adam.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..core.lossy.fit import LR_LATENT, LR_MLP
    from ..core.lossy.model import FieldConfig, LatentField, laplace_bits
    from ..core.lossy.training import crop_shape

    shape3 = tuple(int(n) for n in shape)
    voxels = math.prod(shape3)
    config = FieldConfig.choose(shape3, bits_per_voxel * voxels)
    field = LatentField(config).to(device)
    with torch.no_grad():
        for g in field.latents:
            g.copy_(torch.randn_like(g) * 4)
    optimizer = torch.optim.Adam(
        [
            {"params": list(field.latents), "lr": LR_LATENT},
            {"params": list(field.linears.parameters()), "lr": LR_MLP},
        ]
    )
    crop = crop_shape(shape3, batch)
    target = torch.rand(crop, device=device).reshape(-1)
    scales = [torch.tensor(1.0, device=device) for _ in field.latents]

    def step() -> None:
        lat = [g + (torch.round(g) - g).detach() for g in field.latents]
        start = [(n - c) // 2 for n, c in zip(shape3, crop, strict=True)]
        pred = field.mlp(field.crop_features(lat, start, crop))
        bits = sum(laplace_bits(g, b) for g, b in zip(lat, scales, strict=True))
        loss = torch.mean((pred - target) ** 2) + 1e-6 * bits / voxels
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    matmul = float(counter.get_total_flops())
    crop_voxels = math.prod(crop)
    interp = _interpolation_flops(config.n_levels, crop_voxels)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(2):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    sync()
    seconds = (time.perf_counter() - t0) / repeats
    return {
        "shape": list(shape3),
        "crop_voxels": crop_voxels,
        "levels": config.n_levels,
        "first_level": config.first_level,
        "hidden": config.hidden,
        "latents": config.n_latents(),
        "matmul_flops": matmul,
        "interp_flops": interp,
        "seconds": seconds,
    }


def time_to_quality(
    volume: np.ndarray, ratio: float, budgets: Sequence[float], device: str
) -> list[dict[str, Any]]:
    """Decoded PSNR/SSIM of ``volume`` at ``ratio`` for each time budget."""
    from ..core.api import compress, decompress
    from ..core.metrics import psnr, ssim

    rows = []
    for budget in budgets:
        t0 = time.perf_counter()
        res = compress(volume, ratio, budget=budget, device=device, seed=0)
        seconds = time.perf_counter() - t0
        decoded = np.asarray(decompress(res.data)).reshape(volume.shape)
        rows.append(
            {
                "budget": float(budget),
                "seconds": seconds,
                "steps": int(res.header.get("encoder", {}).get("steps") or 0),
                "ratio": float(res.ratio),
                "psnr": psnr(volume, decoded),
                "ssim": ssim(volume, decoded),
                "mb_s": volume.nbytes / 2**20 / seconds,
            }
        )
    return rows


def render(record: dict[str, Any]) -> str:
    """Markdown of a :func:`main` record."""
    env = record["environment"]
    rate = record["device_rate"]
    lines = [
        "## Encoder speed: the training step against its floor, time to quality",
        "",
        f"- **machine**: {env.get('cpu', '?')}; torch {env.get('torch', '?')}; device "
        f"{record['device']}",
        f"- **date**: {record['date']}",
        f"- **command**: `{record['command']}`",
    ]
    if record.get("note"):
        lines.append(f"- **note**: {record['note']}")
    lines += [
        "",
        f"### One training step ({record['batch']} voxels per step, "
        f"{record['bits_per_voxel']:g} bits per voxel)",
        "",
        f"Measured float32 rate of this device (best 2048² matrix product): "
        f"**{rate / 1e9:.1f} GFLOP/s**. Matrix FLOPs are counted by torch's "
        "`FlopCounterMode` (MLP forward and backward); the interpolation's FLOPs are an "
        "estimate (8 corner weights and an 8-term sum per level and voxel, backward twice the "
        "forward). Floor = all FLOPs / rate. GPU floors use the vendor's peak float32 rate "
        "and are computed, not measured.",
        "",
        "| block | levels / hidden | matmul MFLOP | interp. MFLOP | measured ms | floor ms "
        "(this device) | measured / floor | floor ms (H100, 67 TFLOP/s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in record["steps"]:
        flops = r["matmul_flops"] + r["interp_flops"]
        floor = flops / rate
        h100 = flops / (PEAK_FP32_TFLOPS["NVIDIA H100 SXM"] * 1e12)
        lines.append(
            f"| {'x'.join(map(str, r['shape']))} | {r['levels']} / {r['hidden']} | "
            f"{r['matmul_flops'] / 1e6:.1f} | {r['interp_flops'] / 1e6:.1f} | "
            f"{r['seconds'] * 1e3:.1f} | {floor * 1e3:.2f} | {r['seconds'] / floor:.0f}x | "
            f"{h100 * 1e3:.4f} |"
        )
    t = record.get("time_to_quality")
    if t:
        lines += [
            "",
            f"### Time to quality ({t['volume']}, {t['ratio']:g}x, device {record['device']})",
            "",
            "| budget s | encode s | training steps | achieved ratio | PSNR dB | SSIM | MB/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in t["rows"]:
            lines.append(
                f"| {r['budget']:g} | {r['seconds']:.1f} | {r['steps']} | {r['ratio']:.1f}x | "
                f"{r['psnr']:.2f} | {r['ssim']:.4f} | {r['mb_s']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (see the module docstring); returns the exit status."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None, help="data folder (default shared/data)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--blocks",
        default="64x256x256,16x128x128",
        help="block shapes of the step table (DxHxW, comma-separated)",
    )
    p.add_argument("--batch", type=int, default=2**18, help="voxels per training step")
    p.add_argument("--bits-per-voxel", type=float, default=0.25, help="sets the architecture")
    p.add_argument("--volume", default="stardist_img3d", help="volume of the time-to-quality run")
    p.add_argument("--ratio", type=float, default=64.0)
    p.add_argument("--budgets", default="5,15,30,60,120", help="seconds (comma-separated)")
    add_output_options(p)
    args = p.parse_args(argv)
    record = new_record(
        PROG, argv, args.device, args.note, batch=args.batch, bits_per_voxel=args.bits_per_voxel
    )
    print("device rate ...", flush=True)
    record["device_rate"] = matmul_rate(args.device)
    record["steps"] = []
    for text in [b for b in args.blocks.split(",") if b]:
        shape = [int(n) for n in text.lower().split("x")]
        print(f"training step {text} ...", flush=True)
        record["steps"].append(step_cost(shape, args.bits_per_voxel, args.batch, args.device))
    budgets = [float(b) for b in args.budgets.split(",") if b]
    if budgets:
        data = args.data or find_data_dir()
        if data is None:
            p.error("no data folder found (give --data, or --budgets '')")
        volume = _read_volume(data / f"{args.volume}.tif")
        print(f"time to quality {args.volume} ...", flush=True)
        record["time_to_quality"] = {
            "volume": args.volume,
            "ratio": args.ratio,
            "rows": time_to_quality(volume, args.ratio, budgets, args.device),
        }
    write_results(record, render(record), args, "speed")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
