"""``sciz compress``: a stack to a ``.sciz`` file."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

from ..core.colour import is_channels_last
from ..errors import InvalidInputError
from ..io import check_output, read_image
from ..io.image import default_axes
from .batch import is_batch, run_batch
from .common import _check_sciz_output, _codec
from .text import PROG, _dumps, _fmt_shape, _human_bytes, _Progress


def _given_axes(image: Any) -> str | None:
    """The input's axes, or None when they are only the default for its dimensions and the
    array looks like a colour image with its samples last (``.npy``, Zarr): compress then
    codes the samples as channels (a TIFF's RGB pixels are read as ``YXC``, which says so)."""
    shape = tuple(image.data.shape)
    if image.axes == default_axes(len(shape)) and is_channels_last(shape, None):
        return None
    return image.axes


def _cmd_compress(args: argparse.Namespace) -> int:
    if is_batch(args):  # several inputs, or -o a folder
        return run_batch(args, _compress_one, ".sciz")
    args.input = args.input[0]
    return _compress_one(args)


def _compress_one(args: argparse.Namespace) -> int:
    """Compress the one input ``args.input`` to ``args.output``."""
    out = Path(args.output)
    _check_sciz_output(out)
    if args.skip_existing and out.exists():
        print(f"{PROG}: {out} exists, skipped (--skip-existing)", file=sys.stderr)
        return 0
    distributed = args.workers is not None or args.scheduler is not None
    image, labels, weights = _read_inputs(args, distributed)
    check_output(out, force=args.force, inputs=[args.input])  # before minutes of fitting
    narrowed = None if distributed else _narrowed(image)
    if narrowed is not None:
        image = narrowed[0]
    t0 = time.monotonic()
    result = _run(args, image, labels, weights, distributed)
    if narrowed is not None:
        result.messages.insert(0, narrowed[1])
    if image.series_count > 1:
        result.messages.insert(0, _series_note(args, image))
    wall = time.monotonic() - t0
    saved = result.save(out, force=args.force, inputs=[args.input])
    out = Path(saved) if saved is not None else out
    summary = _summary(args, result, out)
    if args.json:
        print(_dumps(summary))
        return 0
    for message in summary["messages"]:
        print(f"{PROG}: note: {message}", file=sys.stderr)
    print(f"wrote {out}")
    rows = _summary_rows(args, result, summary, wall, image, labels is not None)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    return 0


def _series_note(args: argparse.Namespace, image: Any) -> str:
    """What a multi-series TIFF's file holds: which of its image series was coded."""
    shape = "x".join(str(n) for n in image.data.shape)
    return (
        f"{Path(args.input).name} holds {image.series_count} image series; this file codes "
        f"series {args.series} ({shape} {image.data.dtype}), --series N codes another"
    )


def _narrowed(image: Any) -> tuple[Any, str] | None:
    """A 64-bit integer image (numpy's default integer) in the smallest integer type that
    holds its values, and a note saying so; None for other images."""
    from dataclasses import replace

    from ..core.validate import narrowed_integers

    data = narrowed_integers(image.data)
    if data is image.data:
        return None
    note = f"the input holds 64-bit integers: coded as {data.dtype.name}, which keeps every value"
    return replace(image, data=data), note


def _read_inputs(args: argparse.Namespace, distributed: bool) -> tuple[Any, Any, dict[str, float]]:
    """The image (its metadata only when ``distributed``: the workers read the blocks), the
    labels and the guidance weights, after checking the options against each other (this
    also resolves ``args.mode``)."""
    from ..core.plan import resolve_mode

    field_loss = distributed or bool(args.guidance_weight)
    requested = args.mode
    args.mode = resolve_mode(args.mode, args.guidance, field_loss=field_loss)
    image = read_image(args.input, lazy=distributed, series=args.series)
    if image.data.dtype.kind == "b" and requested == "auto":
        args.mode = "auto"  # a boolean mask: the codec codes it losslessly (and says so)
    labels = None
    if args.labels is not None:
        if args.guidance != "segmentation":
            raise InvalidInputError("--labels needs --guidance segmentation")
        labels = args.labels if distributed else read_image(args.labels).data
    weights = dict(args.guidance_weight or [])
    if weights and args.guidance == "none":
        raise InvalidInputError("--guidance-weight needs --guidance segmentation or perceptual")
    if args.mode in ("lossy", "hybrid") and args.ratio is None:
        raise InvalidInputError(
            f"--ratio is required in {args.mode} mode (or give --mode lossless)"
        )
    if args.mode == "bounded" and args.max_error is None:
        raise InvalidInputError("--mode bounded needs --max-error E")
    if args.mode != "bounded" and args.max_error is not None:
        raise InvalidInputError("--max-error is for --mode bounded only")
    return image, labels, weights


def _run(
    args: argparse.Namespace, image: Any, labels: Any, weights: dict[str, float], distributed: bool
) -> Any:
    """Compress ``image`` as the options say (here or on a Dask cluster), with progress."""
    api = _codec()
    progress = _Progress(sys.stderr, enabled=not args.json)
    common: dict[str, Any] = {
        "device": args.device,
        "steps": args.steps,
        "budget": args.budget,
        "effort": args.effort,
        "seed": args.seed,
        "axes": _given_axes(image),
        "voxel_size": image.voxel_size,
        "units": image.units,
        "name": image.name,
        "progress": progress,
        "guidance": args.guidance,
        "labels": labels,
        "mode": args.mode,
    }
    if weights:
        common["guidance_weights"] = weights
    if args.block_voxels is not None:
        common["block_voxels"] = args.block_voxels
    try:
        if distributed:
            from ..core.cluster import BlockSource
            from ..core.distributed import compress_distributed

            return compress_distributed(
                BlockSource.from_path(args.input, args.series) if args.series else args.input,
                args.ratio,
                client=getattr(args, "client", None),
                scheduler=args.scheduler,
                workers=args.workers,
                max_error=args.max_error,
                **common,
            )
        return api.compress(image.data, args.ratio, max_error=args.max_error, **common)
    finally:
        progress.close()


def _summary(args: argparse.Namespace, result: Any, out: Path) -> dict[str, Any]:
    """What ``--json`` prints: the result's summary with the output, sizes and messages."""
    summary = dict(result.summary())
    for key in ("ratio", "psnr", "ssim", "max_error", "encode_seconds", "device", "shape"):
        if key not in summary and hasattr(result, key):
            summary[key] = getattr(result, key)
    if "dtype" not in summary and hasattr(result, "dtype"):
        summary["dtype"] = str(result.dtype)
    summary["output"] = str(out)
    summary["nbytes"] = int(getattr(result, "nbytes", out.stat().st_size))
    summary.setdefault("target_ratio", args.ratio)
    summary["mode"] = getattr(result, "header", {}).get("mode", args.mode)
    summary.setdefault("input", str(args.input))
    summary.setdefault("messages", [str(m) for m in getattr(result, "messages", None) or []])
    return summary


def _summary_rows(
    args: argparse.Namespace,
    result: Any,
    summary: dict[str, Any],
    wall: float,
    image: Any,
    with_labels: bool,
) -> list[tuple[str, str]]:
    """The lines printed after a compression (without ``--json``)."""
    target = (
        f" (target {args.ratio:g}x)"
        if summary["mode"] in ("lossy", "hybrid")
        else f" ({summary['mode']})"
    )
    rows: list[tuple[str, str]] = [
        ("ratio", f"{float(summary['ratio']):.2f}x" + target),
        ("output size", f"{_human_bytes(summary['nbytes'])} ({summary['nbytes']} bytes)"),
    ]
    raw = getattr(result, "raw_nbytes", None)
    if raw is not None:
        rows.append(("input size", _human_bytes(raw)))
    psnr = summary.get("psnr")
    if psnr is not None:
        rows.append(("PSNR", "inf (lossless)" if psnr == math.inf else f"{psnr:.2f} dB"))
    if summary.get("ssim") is not None:
        value = float(summary["ssim"])
        shown = "not measured (blocks split the slices)" if math.isnan(value) else f"{value:.4f}"
        rows.append(("SSIM", shown))
    if summary.get("max_error") is not None:
        rows.append(("max error", f"{float(summary['max_error']):.6g}"))
    secs = summary.get("encode_seconds", wall)
    rows.append(("time", f"{float(secs):.1f} s"))
    rows.append(("device", str(summary.get("device", args.device))))
    if args.guidance != "none":
        rows.append(("guidance", args.guidance + (" (labels)" if with_labels else "")))
    shape = summary.get("shape", image.data.shape)
    axes = str(result.header.get("axes") or image.axes)
    if result.header.get("channels_last"):
        axes = axes[1:] + axes[:1]  # (the header's axes are the coded layout's)
    rows.append(("shape", f"{_fmt_shape(shape)} {summary.get('dtype', '')} ({axes})"))
    return rows
