"""The ``sciz`` command line: compress, decompress and inspect ``.sciz`` files.

::

    sciz compress IN -o OUT.sciz --ratio R [--mode auto|lossy|hybrid] [--device auto|cpu|cuda|mps]
                     [--steps N | --budget SECONDS | --effort PRESET] [--seed S] [--force] [--json]
                     [--guidance none|segmentation|perceptual] [--labels LABELS.tif]
    sciz compress IN -o OUT.sciz --mode lossless|bounded [--max-error E] [--force] [--json]
    sciz decompress IN.sciz -o OUT.tif [--roi "z0:z1,y0:y1,x0:x1"] [--scale S] [--force]
    sciz info IN.sciz [--json]
    sciz bench ...        (napari_sciz.bench.run)
    sciz demo ...         (napari_sciz._demo)

Every user error (:class:`~napari_sciz.errors.SciZError`, :class:`OSError`, :class:`MemoryError`)
prints one line ``sciz: error: <message>`` to stderr and exits with status 1; usage errors exit
with 2 (argparse); Ctrl-C exits with 130 ("cancelled; no output written"). ``--debug`` shows the
traceback instead.

This module never imports Qt, napari or magicgui, and imports torch only through the codec
(:mod:`napari_sciz.core.api`), lazily, when a command needs it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from . import __version__
from .core.colour import is_channels_last
from .errors import CancelledError, InvalidInputError, SciZError
from .io import SUPPORTED_EXTENSIONS, check_output, read_image, write_image
from .io.image import default_axes, write_image_planes
from .io.ome_zarr import check_zarr_output, is_zarr_path, write_ome_zarr

__all__ = ["build_parser", "main"]

PROG = "sciz"
_DEVICES = ("auto", "cpu", "cuda", "mps")
_CANCELLED = "cancelled; no output written"


# ----------------------------------------------------------------------------------------------
# argument types
# ----------------------------------------------------------------------------------------------


def _number(text: str, kind: Callable[[str], float], what: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{what}, got {text!r}")
    return value


def _ratio(text: str) -> float:
    value = _number(text, float, "must be a number >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a number >= 1, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(_number(text, int, "must be a positive integer"))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text, float, "must be a positive number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _weight(text: str) -> tuple[str, float]:
    """``NAME=VALUE`` of ``--guidance-weight`` (names and ranges are checked by the codec)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), _number(value.strip(), float, "must be NAME=NUMBER")


def _max_error(text: str) -> float:
    value = _number(text, float, "must be a number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def _scale(text: str) -> float | int:
    value = _positive_float(text)
    return int(value) if float(value).is_integer() else value


# ----------------------------------------------------------------------------------------------
# parser
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Build the ``sciz`` argument parser.

    Returns
    -------
    argparse.ArgumentParser
        The parser, with one sub-parser per command (``compress``, ``decompress``, ``info``,
        ``bench``, ``demo``).
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Compress microscopy and X-ray CT stacks with implicit neural "
        "representations (.sciz files).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks instead of one-line errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "compress",
        help="compress a TIFF/OME-TIFF/.npy stack to .sciz",
        description="Fit a neural representation of IN and write it to OUT.sciz at the "
        "requested compression ratio (raw bytes / file bytes).",
    )
    p.add_argument(
        "input", metavar="IN", help="input image (.tif, .tiff, .ome.tif, .npy, .zarr, .ome.zarr)"
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT.sciz", help="output file")
    p.add_argument(
        "--ratio",
        type=_ratio,
        metavar="R",
        help="target compression ratio (>= 1); required in lossy mode",
    )
    p.add_argument(
        "--mode",
        choices=("auto", "lossy", "hybrid", "lossless", "bounded"),
        default="auto",
        help="auto (default): hybrid (lossy when --guidance-weight is given or a guided job is "
        "distributed); lossy: neural representation "
        "at --ratio; hybrid: the best of SPERR, "
        "HEVC and JPEG XL as a base layer + a fitted loop filter (+ a neural filter where it "
        "pays) "
        "at --ratio; lossless: bit-identical; "
        "bounded: every value within --max-error of the original",
    )
    p.add_argument(
        "--max-error",
        type=_max_error,
        metavar="E",
        help="largest absolute error of --mode bounded",
    )
    p.add_argument("--device", choices=_DEVICES, default="auto", help="compute device")
    effort = p.add_mutually_exclusive_group()
    effort.add_argument("--steps", type=_positive_int, metavar="N", help="training steps")
    effort.add_argument(
        "--budget", type=_positive_float, metavar="SECONDS", help="time budget for fitting"
    )
    effort.add_argument(
        "--effort",
        choices=("fast", "balanced", "best"),
        help="a time budget that grows with the data: fast (at least 15 s, 2 s per MiB), "
        "balanced (60 s, 8 s per MiB), best (180 s, 24 s per MiB); in lossless and bounded "
        "modes best codes the closest predictor sets to keep the smallest (about 2x slower)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument(
        "--guidance",
        choices=("none", "segmentation", "perceptual"),
        default="none",
        help="what the file is for: segmentation (keeps a smoothed-threshold segmentation of the "
        "decode like the original's) or perceptual (MS-SSIM and gradient structure); hybrid "
        "mode codes a pre-filtered volume chosen by that score, lossy mode adds it to the "
        "fit's loss; default none",
    )
    p.add_argument(
        "--labels",
        metavar="LABELS.tif",
        help="labels image of IN's shape (> 0 is foreground) for --guidance segmentation; "
        "without it an Otsu threshold of the image is the reference",
    )
    p.add_argument(
        "--guidance-weight",
        type=_weight,
        action="append",
        metavar="NAME=VALUE",
        help="advanced: relative weight of one guidance term, repeatable (segmentation: side, "
        "boundary, dice, sharpness, band_radius; perceptual: ssim, gradient; defaults and "
        "meaning in docs/guidance.md)",
    )
    scale_out = p.add_mutually_exclusive_group()
    scale_out.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="code the blocks in parallel on a local Dask cluster of N worker processes "
        "(each reads its own blocks of IN)",
    )
    scale_out.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="code the blocks on an existing Dask cluster, e.g. tcp://10.0.0.5:8786 (IN must "
        "be readable under the same path on every worker)",
    )
    p.add_argument(
        "--block-voxels",
        type=_positive_int,
        metavar="N",
        help="largest block in voxels (default 4194304); smaller blocks spread over more workers",
    )
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument(
        "--json",
        action="store_true",
        help="print the summary as one JSON object on stdout (non-finite numbers as null)",
    )
    p.set_defaults(handler=_cmd_compress)

    p = sub.add_parser(
        "decompress",
        help="decode a .sciz file (or a region of it) to TIFF/OME-TIFF/.npy",
        description="Decode IN.sciz, optionally a region and at another resolution.",
    )
    p.add_argument("input", metavar="IN.sciz", help="compressed file")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output image (.tif, .tiff, .ome.tif, .ome.tiff, .npy, or an .ome.zarr store); "
        "without --scale it is written slab by slab, so it may be larger than memory",
    )
    p.add_argument(
        "--roi",
        metavar='"z0:z1,y0:y1,x0:x1"',
        help="region to decode, one start:stop per axis (empty bounds allowed)",
    )
    p.add_argument(
        "--scale",
        type=_scale,
        default=1,
        metavar="S",
        help="resolution factor (2: twice as many samples per axis); voxel size is divided by it",
    )
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.set_defaults(handler=_cmd_decompress)

    p = sub.add_parser(
        "info",
        help="show the header of a .sciz file",
        description="Print shape, dtype, axes, voxel size, ratio and every header field.",
    )
    p.add_argument("input", metavar="IN.sciz", help="compressed file")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=_cmd_info)

    for name, text in _DELEGATES_HELP.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


# ----------------------------------------------------------------------------------------------
# output helpers
# ----------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, paths, tuples and non-finite floats for ``json.dumps``."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str | int | bool) or value is None:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, np.dtype):
        return str(value)
    return str(value)


def _dumps(obj: Any) -> str:
    return json.dumps(_jsonable(obj), allow_nan=False, ensure_ascii=False)


def _human_bytes(n: int | float) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _given_axes(image: Any) -> str | None:
    """The input's axes, or None when they are only the default for its dimensions and the
    array looks like a colour image with its samples last (``.npy``, Zarr): compress then
    codes the samples as channels (a TIFF's RGB samples are moved first when it is read)."""
    shape = tuple(image.data.shape)
    if image.axes == default_axes(len(shape)) and is_channels_last(shape, None):
        return None
    return image.axes


def _fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(n)) for n in shape)


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        if len(value) > 8:
            return f"[{len(value)} items]"
        return "(" + ", ".join(_fmt_value(v) for v in value) + ")"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, np.generic):
        return _fmt_value(value.item())
    return str(value)


def _flatten(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.extend(_flatten(value, name + "."))
        else:
            rows.append((name, value))
    return rows


def _print_table(rows: Sequence[tuple[str, Any]], out: IO[str]) -> None:
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        print(f"  {key:<{width}}  {_fmt_value(value)}", file=out)


class _Progress:
    """Progress reporting on stderr: a redrawn bar on a TTY, occasional lines otherwise."""

    def __init__(self, stream: IO[str], *, enabled: bool, line_interval: float = 15.0) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = enabled and bool(getattr(stream, "isatty", lambda: False)())
        self.line_interval = line_interval
        self._last = 0.0
        self._drawn = False
        self._start = time.monotonic()

    def __call__(self, info: Any) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        fraction = float(getattr(info, "fraction", 0.0) or 0.0)
        done = fraction >= 1.0
        interval = 0.1 if self.tty else self.line_interval
        if now - self._last < interval and not (done and self.tty):
            return
        self._last = now
        fraction = min(max(fraction, 0.0), 1.0)
        parts = []
        step, total = getattr(info, "step", None), getattr(info, "total_steps", None)
        if step is not None and total:
            parts.append(f"step {step}/{total}")
        block, n_blocks = getattr(info, "block", None), getattr(info, "n_blocks", None)
        if n_blocks and n_blocks > 1 and block is not None:
            parts.append(f"block {int(block) + 1}/{n_blocks}")
        psnr = getattr(info, "psnr", None)
        if psnr is not None and math.isfinite(psnr):
            parts.append(f"PSNR {psnr:.2f} dB")
        eta = getattr(info, "eta_seconds", None)
        parts.append(f"ETA {_fmt_seconds(eta)}")
        message = getattr(info, "message", "")
        if message:
            parts.append(str(message))
        detail = "  ".join(parts)
        if self.tty:
            cols = shutil.get_terminal_size((80, 24)).columns
            text = f" {fraction:4.0%}  {detail}"
            bar_width = max(10, min(40, cols - len(text) - 12))
            filled = int(round(fraction * bar_width))
            line = f"fitting [{'#' * filled}{'.' * (bar_width - filled)}]{text}"
            self.stream.write("\r" + line[: cols - 1].ljust(cols - 1))
            self._drawn = True
        else:
            self.stream.write(f"fitting: {fraction:.0%}  {detail}\n")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


# ----------------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------------


def _codec() -> Any:
    """Import the codec API (and with it torch) lazily, with a clear message if impossible."""
    try:
        return importlib.import_module("napari_sciz.core.api")
    except ModuleNotFoundError as exc:
        if exc.name == "torch":
            raise SciZError("PyTorch is not installed; install it to use the codec") from exc
        raise


def _check_sciz_output(path: Path) -> None:
    if path.suffix.lower() != ".sciz":
        raise InvalidInputError(f"output must be a .sciz file, got {path.name}")


def _check_image_output(path: Path) -> None:
    if not path.name.lower().endswith(SUPPORTED_EXTENSIONS):
        raise InvalidInputError(
            f"unsupported output type for {path.name} "
            "(expected .tif, .tiff, .ome.tif, .ome.tiff or .npy)"
        )


def _cmd_compress(args: argparse.Namespace) -> int:
    out = Path(args.output)
    _check_sciz_output(out)
    distributed = args.workers is not None or args.scheduler is not None
    from .core.plan import resolve_mode

    field_loss = distributed or bool(args.guidance_weight)
    requested = args.mode
    args.mode = resolve_mode(args.mode, args.guidance, field_loss=field_loss)
    # distributed: the workers read the blocks, here only the metadata are read
    image = read_image(args.input, lazy=True) if distributed else read_image(args.input)
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
    check_output(out, force=args.force, inputs=[args.input])  # before minutes of fitting
    api = _codec()
    progress = _Progress(sys.stderr, enabled=not args.json)
    t0 = time.monotonic()
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
            from .core.distributed import compress_distributed

            result = compress_distributed(
                args.input,
                args.ratio,
                scheduler=args.scheduler,
                workers=args.workers,
                max_error=args.max_error,
                **common,
            )
        else:
            result = api.compress(image.data, args.ratio, max_error=args.max_error, **common)
    finally:
        progress.close()
    wall = time.monotonic() - t0
    saved = result.save(out, force=args.force, inputs=[args.input])
    out = Path(saved) if saved is not None else out

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
    messages = [str(m) for m in getattr(result, "messages", None) or []]
    summary.setdefault("messages", messages)

    if args.json:
        print(_dumps(summary))
        return 0
    rows: list[tuple[str, str]] = [
        (
            "ratio",
            f"{float(summary['ratio']):.2f}x"
            + (
                f" (target {args.ratio:g}x)"
                if summary["mode"] in ("lossy", "hybrid")
                else f" ({summary['mode']})"
            ),
        ),
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
        rows.append(("guidance", args.guidance + (" (labels)" if labels is not None else "")))
    shape = summary.get("shape", image.data.shape)
    axes = str(result.header.get("axes") or image.axes)
    if result.header.get("channels_last"):
        axes = axes[1:] + axes[:1]  # (the header's axes are the coded layout's)
    rows.append(("shape", f"{_fmt_shape(shape)} {summary.get('dtype', '')} ({axes})"))
    for message in messages:
        print(f"{PROG}: note: {message}", file=sys.stderr)
    print(f"wrote {out}")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    return 0


def _roi_extent(roi: str | None, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Extent of the region ``roi`` inside ``shape`` (the codec's own parser validates it)."""
    if not roi:
        return shape
    from .core.validate import parse_roi

    return tuple(stop - start for start, stop in parse_roi(roi, shape))


def _region_slabs(reader: Any, box: Sequence[tuple[int, int]]) -> Any:
    """``(index into the region, decoded values)`` for consecutive slabs of ``box``.

    Slabs follow the block grid along Z (one block layer at a time, each leading index on
    its own), so only one slab of the region is in memory at once.
    """
    ndim = len(box)
    if ndim == 2:
        yield (slice(None), slice(None)), reader.decode(tuple(box))
        return
    zax = ndim - 3
    step = int(reader.grid.block_shape[0])
    lead = list(box[:zax])
    z0, z1 = box[zax]
    for li in np.ndindex(*[b - a for a, b in lead]):
        z = z0
        while z < z1:
            ze = min(z1, (z // step + 1) * step)
            sub = [(a + i, a + i + 1) for i, (a, _b) in zip(li, lead, strict=True)]
            sub += [(z, ze), *box[zax + 1 :]]
            values = reader.decode(tuple(sub))
            index = (*li, slice(z - z0, ze - z0), slice(None), slice(None))
            yield index, values.reshape(values.shape[zax:])
            z = ze


def _cmd_decompress(args: argparse.Namespace) -> int:
    src = Path(args.input)
    out = Path(args.output)
    zarr_out = is_zarr_path(out)
    if not zarr_out:
        _check_image_output(out)
    if not src.exists():
        raise InvalidInputError(f"no such file: {src}")
    if zarr_out:
        check_zarr_output(out, force=args.force)
    else:
        check_output(out, force=args.force, inputs=[src])
    api = _codec()
    from .core.validate import parse_roi

    with api.open_sciz(src) as reader:
        shape = tuple(int(n) for n in reader.shape)
        axes = getattr(reader, "axes", None) or None
        voxel = getattr(reader, "voxel_size", None)
        units = getattr(reader, "units", None)
        if args.scale == 1:
            # streamed: one slab of blocks at a time, whatever the size of the volume
            box = parse_roi(args.roi, shape)
            out_shape = tuple(b - a for a, b in box)
            if axes is None or len(axes) != len(out_shape):
                axes, voxel, units = default_axes(len(out_shape)), None, None
            if zarr_out:
                write_ome_zarr(
                    out,
                    out_shape,
                    reader.dtype,
                    _region_slabs(reader, box),
                    axes=axes,
                    voxel_size=voxel,
                    units=units,
                    force=args.force,
                )
            else:
                planes = (
                    plane
                    for _index, values in _region_slabs(reader, box)
                    for plane in values.reshape(-1, *out_shape[-2:])
                )
                write_image_planes(
                    out,
                    out_shape,
                    reader.dtype,
                    planes,
                    axes=axes,
                    voxel_size=voxel,
                    units=units,
                    force=args.force,
                    inputs=[src],
                )
            print(f"wrote {out} ({_fmt_shape(out_shape)} {reader.dtype}, {_human_size(out)})")
            return 0
        extent = _roi_extent(args.roi, shape)
        data = np.asarray(api.decompress(reader, roi=args.roi, scale=args.scale))
    if axes is not None and len(axes) != data.ndim:
        axes, voxel, units = None, None, None
    if voxel is not None and (len(voxel) != data.ndim or (units and len(units) != data.ndim)):
        voxel, units = None, None
    if voxel is not None:
        # per axis: original step * (samples in the region / samples decoded)
        voxel = tuple(
            float(v) * e / n if n else float(v)
            for v, e, n in zip(voxel, extent, data.shape, strict=True)
        )
    if zarr_out:
        write_ome_zarr(
            out,
            data.shape,
            data.dtype,
            [((slice(None),) * data.ndim, data)],
            axes=axes or default_axes(data.ndim),
            voxel_size=voxel,
            units=units,
            force=args.force,
        )
    else:
        write_image(
            out, data, axes=axes, voxel_size=voxel, units=units, force=args.force, inputs=[src]
        )
    print(f"wrote {out} ({_fmt_shape(data.shape)} {data.dtype}, {_human_size(out)})")
    return 0


def _human_size(path: Path) -> str:
    """Size of a file, or of all files under a directory (a Zarr store)."""
    if path.is_dir():
        return _human_bytes(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()))
    return _human_bytes(path.stat().st_size)


def _hybrid_layers(reader: Any) -> dict[str, Any]:
    """Base codecs and the bytes of each layer (base, loop filter, neural filter, field) of a
    hybrid file."""
    from .core.hybrid.codec import describe

    layers = ("base_bytes", "filter_bytes", "network_bytes", "field_bytes")
    totals = {key: 0 for key in layers}
    totals.update(blocks_with_field=0, blocks_with_network=0, lock_bytes=0)
    bases: dict[str, int] = {}
    n = reader.grid.n_blocks  # (a segmentation lock is the payload after the blocks)
    if reader.locked:
        totals["lock_bytes"] = len(reader._file.payload(n))
    for i in range(n):
        d = describe(reader._file.payload(i))
        for key in layers:
            totals[key] += d[key]
        totals["blocks_with_field"] += d["field_bytes"] > 0
        totals["blocks_with_network"] += d["network_bytes"] > 0
        bases[d["base"]] = bases.get(d["base"], 0) + 1
    return {**totals, "blocks": n, "bases": bases}


def _lossless_predictors(reader: Any) -> dict[str, int]:
    """How many blocks of a lossless or bounded file chose each predictor."""
    from .core.lossless.describe import describe_block, summarize

    n = reader._file.n_payloads
    return summarize(describe_block(reader._file.payload(i)) for i in range(n))


def _cmd_info(args: argparse.Namespace) -> int:
    src = Path(args.input)
    if not src.exists():
        raise InvalidInputError(f"no such file: {src}")
    api = _codec()
    with api.open_sciz(src) as reader:
        header = dict(reader.header)
        shape = tuple(int(n) for n in reader.shape)
        dtype = np.dtype(reader.dtype)
        axes = getattr(reader, "axes", None)
        voxel = getattr(reader, "voxel_size", None)
        units = getattr(reader, "units", None)
        layers = _hybrid_layers(reader) if header.get("mode") == "hybrid" else None
        exact = header.get("mode") in ("lossless", "bounded")
        predictors = _lossless_predictors(reader) if exact else None
    file_size = src.stat().st_size
    raw = math.prod(shape) * dtype.itemsize
    info: dict[str, Any] = {
        "file": str(src),
        "file_size": file_size,
        "shape": list(shape),
        "dtype": str(dtype),
        "axes": axes,
        "voxel_size": voxel,
        "units": units,
        "raw_nbytes": raw,
        "ratio": raw / file_size if file_size else None,
        "header": header,
    }
    if layers is not None:
        info["hybrid_layers"] = layers
    if predictors is not None:
        info["lossless_predictors"] = predictors
    if args.json:
        print(_dumps(info))
        return 0
    rows: list[tuple[str, Any]] = [
        ("file", src),
        ("file size", f"{_human_bytes(file_size)} ({file_size} bytes)"),
        ("shape", _fmt_shape(shape)),
        ("dtype", dtype),
        ("axes", info["axes"]),
        ("mode", header.get("mode", "lossy")),
    ]
    if header.get("mode") == "bounded":
        rows.append(("max error", header.get("max_error")))
    guidance = header.get("guidance", "none")
    if isinstance(guidance, str) and guidance != "none":
        rows.append(
            (
                "guidance",
                _guidance_text(guidance, header.get("guidance_weights"), header.get("library"))
                if header.get("mode") != "hybrid"
                else _prefilter_text(guidance, header),
            )
        )
    if layers is not None:
        rows.append(
            (
                "layers",
                f"base {_human_bytes(layers['base_bytes'])} "
                f"({', '.join(f'{k.upper()} x{v}' for k, v in layers['bases'].items())}), "
                f"loop filter {_human_bytes(layers['filter_bytes'])}, neural filter "
                f"{_human_bytes(layers['network_bytes'])} in {layers['blocks_with_network']} of "
                f"{layers['blocks']} blocks, fitted residual "
                f"{_human_bytes(layers['field_bytes'])} in {layers['blocks_with_field']} of "
                f"{layers['blocks']} blocks"
                + (
                    f", segmentation lock {_human_bytes(layers['lock_bytes'])}"
                    if layers["lock_bytes"]
                    else ""
                ),
            )
        )
    if predictors is not None:
        for k, (text, count) in enumerate(predictors.items()):
            rows.append(("predictors" if k == 0 else "", f"{text} ({count} block(s))"))
    if info["voxel_size"] is not None:
        units = info["units"] or ("",) * len(info["voxel_size"])
        rows.append(
            (
                "voxel size",
                " x ".join(
                    f"{float(v):g}{(' ' + u) if u else ''}"
                    for v, u in zip(info["voxel_size"], units, strict=False)
                ),
            )
        )
    if info["ratio"] is not None:
        rows.append(("ratio", f"{info['ratio']:.2f}x (raw {_human_bytes(raw)})"))
    print(f"{src}")
    _print_table(rows, sys.stdout)
    print("header:")
    _print_table(_flatten(header), sys.stdout)
    return 0


def _prefilter_text(mode: str, header: dict) -> str:
    """``segmentation (task band 3 noise s.d. ...)``: what hybrid task guidance coded."""
    band, sigma = header.get("task_band"), header.get("task_smooth")
    if "segmentation_lock" in header:
        return (
            f"{mode} (segmentation lock: the threshold surface corrected where the objects "
            "needed it)"
        )
    if isinstance(band, int | float):
        return f"{mode} (task band {float(band):g} noise s.d.; outside it, smoothed)"
    vmap = header.get("value_map")
    if isinstance(vmap, dict):
        smoothing = f"pre-smoothed, sigma {float(sigma):g} voxel, then " if sigma else ""
        return (
            f"{mode} ({smoothing}coded through a power map of the intensities, exponent "
            f"{vmap.get('power')}, inverted on decoding)"
        )
    if isinstance(sigma, int | float):
        return f"{mode} (pre-smoothed, sigma {float(sigma):g} voxel)"
    return f"{mode} (no pre-filter measured better: the volume as it is)"


def _guidance_text(mode: str, overrides: Any, library: Any = None) -> str:
    """``segmentation (side=0.5, boundary=0.1, ...)``: the weights the fit used.

    Headers record only the weights that differ from the defaults of the writing version
    (named by the header's ``library`` entry), whose defaults fill in the rest.
    """
    from .core.guidance import DEFAULT_WEIGHTS, defaults_of

    if mode not in DEFAULT_WEIGHTS:
        return mode
    given = overrides if isinstance(overrides, dict) else {}
    weights = {**defaults_of(library, mode), **given}
    text = ", ".join(f"{k}={float(v):g}" for k, v in weights.items() if isinstance(v, int | float))
    return f"{mode} ({text}{'' if given else '; defaults'})"


_DELEGATES = {"bench": "napari_sciz.bench.run", "demo": "napari_sciz._demo"}
_DELEGATES_HELP = {
    "bench": "run the benchmark against classical codecs (napari_sciz.bench.run)",
    "demo": "run the demonstration (napari_sciz._demo)",
}


def _delegate(command: str, argv: list[str]) -> int:
    module_name = _DELEGATES[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise SciZError(
                f"the '{command}' command is not available in this installation "
                f"({module_name} is missing)"
            ) from exc
        raise SciZError(
            f"the '{command}' command needs the package '{missing}', which is not installed"
        ) from exc
    entry = getattr(module, "main", None)
    if not callable(entry):
        raise SciZError(f"the '{command}' command is not available ({module_name} has no main)")
    code = entry(argv)
    return int(code) if code is not None else 0


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------


def _error(message: str) -> None:
    lines = str(message).strip().splitlines()
    print(f"{PROG}: error: {lines[0] if lines else 'unknown error'}", file=sys.stderr)


def _os_error_message(exc: OSError) -> str:
    if exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename is not None else exc.strerror
    return str(exc) or type(exc).__name__


def _split_delegate(argv: list[str]) -> tuple[list[str], str, list[str]] | None:
    """Return (global options, command, rest) when the command is ``bench`` or ``demo``."""
    for i, token in enumerate(argv):
        if not token.startswith("-"):
            if token in _DELEGATES:
                return argv[:i], token, argv[i + 1 :]
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sciz`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 1 for errors, 2 for usage errors, 130 when cancelled.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    delegate = _split_delegate(args_list)
    if delegate is not None:
        global_args, command, rest = delegate
        args = parser.parse_args([*global_args, command])
    else:
        args = parser.parse_args(args_list)
    debug = bool(args.debug)
    try:
        if delegate is not None:
            return _delegate(delegate[1], delegate[2])
        return int(args.handler(args))
    except KeyboardInterrupt:
        if debug:
            raise
        _error(_CANCELLED)
        return 130
    except CancelledError as exc:
        if debug:
            raise
        _error(str(exc) or _CANCELLED)
        return 130
    except MemoryError as exc:
        if debug:
            raise
        _error(f"out of memory{': ' + str(exc) if str(exc) else ''}")
        return 1
    except SciZError as exc:
        if debug:
            raise
        _error(str(exc) or type(exc).__name__)
        return 1
    except OSError as exc:
        if debug:
            raise
        _error(_os_error_message(exc))
        return 1
    except RuntimeError as exc:
        # torch.OutOfMemoryError (a RuntimeError) without importing torch here
        if debug or type(exc).__name__ != "OutOfMemoryError":
            raise
        _error("out of GPU memory; try a smaller input or --device cpu")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
