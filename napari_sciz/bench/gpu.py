"""GPU checks in one run (issue 12): CUDA correctness, mixed precision, a 64x512x512 volume.

Run it as ``scripts/gpu_check.sh`` (or ``python -m napari_sciz.bench.gpu``) on a machine with a
CUDA GPU; it takes under 8 minutes with the default budgets:

1. **Correctness**: a file fitted on the GPU is decoded block by block on the CPU and on the
   GPU (the same dequantized field evaluated on both); the largest difference in original
   units, and whether the decoded arrays (rounded to the dtype, as a reader returns them) are
   identical. ``decompress()`` always decodes on the CPU, so GPU decoding only matters for
   previews; files must not depend on where they were fitted.
2. **Mixed precision**: the same block fitted with a fixed number of steps in float32, with
   TF32 matrix products, and under ``torch.autocast`` bfloat16: time and PSNR of each.
3. **Scale**: a 64x512x512 uint16 volume (the nbsd confocal sample mirrored to that size, so
   its statistics are real) compressed at 64x in the default mode and as a pure neural field,
   with encode time, ratio, PSNR and decode time.

Without a GPU, ``--device cpu --quick`` runs the same steps small (a smoke test of the script).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .report import add_output_options, new_record, write_results

__all__ = ["main", "render"]

PROG = "python -m napari_sciz.bench.gpu"
SECTION = "gpu"


def _volume(shape: tuple[int, int, int]) -> np.ndarray:
    """The nbsd sample (bundled crop) mirrored or cropped to ``shape``."""
    from napari_sciz._sample_data import load_sample

    base = load_sample("cells3d_nuclei")
    pad = [(0, max(0, n - m)) for n, m in zip(shape, base.shape, strict=True)]
    big = np.pad(base, pad, mode="symmetric")
    return np.ascontiguousarray(big[tuple(slice(0, n) for n in shape)])


def check_correctness(device: str, shape: tuple[int, int, int], steps: int) -> dict[str, Any]:
    """Fit on ``device``; decode every block on the CPU and on ``device``."""
    from napari_sciz.core.api import compress, decompress, open_sciz
    from napari_sciz.core.blocks import finalize
    from napari_sciz.core.lossy.code import dense_eval

    vol = _volume(shape)
    res = compress(vol, 32, mode="lossy", device=device, steps=steps)
    reader = open_sciz(res.data)
    worst = 0.0
    identical = True
    for index in range(reader.grid.n_blocks):
        field, vmin, vmax = reader._block_field(index)
        outs = []
        for dev in ("cpu", device):
            f = field.to(dev)
            norm = dense_eval(f, list(f.latents)).double().cpu().numpy()
            outs.append(norm * (vmax - vmin) + vmin)
        worst = max(worst, float(np.abs(outs[0] - outs[1]).max()))
        fin = [finalize(o, vol.dtype, (vmin, vmax)) for o in outs]
        identical = identical and bool(np.array_equal(fin[0], fin[1]))
    cpu = decompress(res.data)
    return {
        "shape": list(shape),
        "ratio": res.ratio,
        "psnr": res.psnr,
        "max_abs_diff": worst,
        "identical_after_rounding": identical,
        "decompress_matches_cpu_path": bool(np.array_equal(cpu, np.asarray(reader.decode()))),
    }


@contextlib.contextmanager
def _precision(kind: str, device: str) -> Iterator[None]:
    import torch

    if kind == "tf32":
        old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    elif kind == "bf16":
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
            yield
    else:
        yield


def check_precision(device: str, shape: tuple[int, int, int], steps: int) -> list[dict]:
    """The same fit in float32, TF32 and bfloat16 autocast."""
    from napari_sciz.core.api import compress

    vol = _volume(shape)
    rows = []
    for kind in ("fp32", "tf32", "bf16"):
        row: dict[str, Any] = {"precision": kind}
        try:
            with _precision(kind, device):
                t0 = time.perf_counter()
                res = compress(vol, 64, mode="lossy", device=device, steps=steps)
                row.update(seconds=time.perf_counter() - t0, psnr=res.psnr, ratio=res.ratio)
        except Exception as exc:  # noqa: BLE001 - reported: a precision the fit cannot use
            row["error"] = f"{type(exc).__name__}: {exc}"[:200]
        rows.append(row)
    return rows


def check_scale(device: str, shape: tuple[int, int, int], budget: float) -> list[dict]:
    """A large volume at 64x: default mode and the neural field, timed both ways."""
    from napari_sciz.core.api import compress, decompress

    vol = _volume(shape)
    rows = []
    for mode in ("auto", "lossy"):
        t0 = time.perf_counter()
        res = compress(vol, 64, mode=mode, device=device, budget=budget)
        enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        decompress(res.data)
        dec = time.perf_counter() - t0
        rows.append(
            {
                "mode": mode,
                "coded": res.header.get("mode"),
                "encode_s": enc,
                "decode_s": dec,
                "ratio": res.ratio,
                "psnr": res.psnr,
                "ssim": res.ssim,
            }
        )
    return rows


def render(record: dict[str, Any]) -> str:
    """The markdown section."""
    env = record["environment"]
    c = record["correctness"]
    lines = [
        f"## GPU checks (`{record['command']}`)",
        "",
        f"{record['date']}; device `{record['device']}` ({env.get('device') or env.get('cpu')});"
        f" torch {env.get('torch')}." + (f" {record['note']}" if record.get("note") else ""),
        "",
        f"**Correctness** ({'x'.join(map(str, c['shape']))} fitted on `{record['device']}`, "
        f"{c['ratio']:.1f}x, {c['psnr']:.2f} dB): largest CPU-GPU difference of the decoded field "
        f"{c['max_abs_diff']:.3g} (original units); identical after rounding to the dtype: "
        f"{'yes' if c['identical_after_rounding'] else 'no'}; `decompress()` equals the reader: "
        f"{'yes' if c['decompress_matches_cpu_path'] else 'no'}.",
        "",
        "| precision | fit s | PSNR dB | ratio |",
        "|---|---|---|---|",
    ]
    for r in record["precision"]:
        if "error" in r:
            lines.append(f"| {r['precision']} | failed: {r['error']} | | |")
        else:
            lines.append(
                f"| {r['precision']} | {r['seconds']:.1f} | {r['psnr']:.2f} | {r['ratio']:.1f}x |"
            )
    shape = "x".join(map(str, record["scale_shape"]))
    lines += [
        "",
        f"**{shape} uint16 at 64x** (budget {record['budget']:g} s):",
        "",
        "| mode | coded as | encode s | decode s (CPU) | ratio | PSNR dB | SSIM |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in record["scale"]:
        lines.append(
            f"| {r['mode']} | {r['coded']} | {r['encode_s']:.1f} | {r['decode_s']:.1f} | "
            f"{r['ratio']:.1f}x | {r['psnr']:.2f} | {r['ssim']:.4f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget", type=float, default=100.0, help="seconds per scale fit")
    p.add_argument("--steps", type=int, default=400, help="steps of the fixed-step fits")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    add_output_options(p)
    args = p.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.exit(2, f"{PROG}: no CUDA device here (use --device cpu --quick for a smoke test)\n")
    small = (8, 64, 64) if args.quick else (32, 256, 256)
    scale = (16, 128, 128) if args.quick else (64, 512, 512)
    steps = min(args.steps, 20) if args.quick else args.steps
    budget = min(args.budget, 5.0) if args.quick else args.budget
    t0 = time.perf_counter()
    record = new_record(
        PROG,
        argv,
        args.device,
        args.note,
        correctness=check_correctness(args.device, small, steps),
        precision=check_precision(args.device, small, steps),
        budget=budget,
        scale_shape=list(scale),
        scale=check_scale(args.device, scale, budget),
    )
    record["seconds"] = time.perf_counter() - t0
    write_results(record, render(record), args, SECTION)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
