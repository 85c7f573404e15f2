"""The ``sciz`` argument parser and its argument types."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from .. import __version__
from .compress import _cmd_compress
from .decompress import _cmd_decompress
from .info import _cmd_info
from .score import _cmd_score
from .text import PROG

_DEVICES = ("auto", "cpu", "cuda", "mps")
_DELEGATES_HELP = {
    "bench": "run the benchmark against classical codecs (napari_sciz.bench.run)",
    "demo": "run the demonstration (napari_sciz._demo)",
}


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


def _series(text: str) -> int:
    value = int(_number(text, int, "must be an integer >= 0"))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
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


def build_parser() -> argparse.ArgumentParser:
    """Build the ``sciz`` argument parser.

    Returns
    -------
    argparse.ArgumentParser
        The parser, with one sub-parser per command (``compress``, ``decompress``, ``info``,
        ``score``, ``bench``, ``demo``).
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
    _add_compress(sub)
    _add_decompress(sub)
    _add_info(sub)
    _add_score(sub)
    for name, text in _DELEGATES_HELP.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def _add_compress(sub: Any) -> None:
    """The ``compress`` command's options, in groups (``sciz compress --help``)."""
    p = sub.add_parser(
        "compress",
        help="compress a TIFF/OME-TIFF/.npy stack to .sciz",
        description="Fit a neural representation of IN and write it to OUT.sciz at the "
        "requested compression ratio (raw bytes / file bytes).",
    )
    _compress_files(p)
    _compress_coding(p)
    _compress_guidance(p)
    _compress_scale_out(p)
    p.set_defaults(handler=_cmd_compress)


def _compress_files(p: argparse.ArgumentParser) -> None:
    """What is read and what is written."""
    p.add_argument(
        "input",
        metavar="IN",
        nargs="+",
        help="input image (.tif, .tiff, .ome.tif, .npy, .zarr, .ome.zarr); several inputs "
        "are compressed one after the other into the folder OUT",
    )
    files = p.add_argument_group("input and output")
    files.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT.sciz",
        help="output file, or an existing folder: each input is written there as "
        "<name>.sciz (needed for several inputs)",
    )
    files.add_argument(
        "--series",
        type=_series,
        default=0,
        metavar="N",
        help="image series of a multi-series TIFF to compress (a multi-position file holds "
        "several; default 0, the first)",
    )
    files.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    files.add_argument(
        "--skip-existing",
        action="store_true",
        help="with a folder OUT: leave inputs whose .sciz file is already there (resume a "
        "stopped run)",
    )
    files.add_argument(
        "--json",
        action="store_true",
        help="print the summary as one JSON object on stdout (non-finite numbers as null; "
        "one line per file for several inputs)",
    )


def _compress_coding(p: argparse.ArgumentParser) -> None:
    """How the file is coded, and how long the fit may take."""
    coding = p.add_argument_group("coding")
    coding.add_argument(
        "--ratio",
        type=_ratio,
        metavar="R",
        help="target compression ratio (>= 1); required in lossy mode",
    )
    coding.add_argument(
        "--mode",
        choices=("auto", "lossy", "hybrid", "lossless", "bounded"),
        default="auto",
        help="auto (default): hybrid (lossy when --guidance-weight is given or a guided job is "
        "distributed); lossy: neural representation at --ratio; hybrid: the best of SPERR, "
        "HEVC and JPEG XL as a base layer + a fitted loop filter (+ a neural filter where it "
        "pays) at --ratio; lossless: bit-identical; bounded: every value within --max-error "
        "of the original",
    )
    coding.add_argument(
        "--max-error",
        type=_max_error,
        metavar="E",
        help="largest absolute error of --mode bounded",
    )
    coding.add_argument("--device", choices=_DEVICES, default="auto", help="compute device")
    effort = coding.add_mutually_exclusive_group()
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
    coding.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")


def _compress_guidance(p: argparse.ArgumentParser) -> None:
    """What the file is for."""
    guidance = p.add_argument_group("task guidance")
    guidance.add_argument(
        "--guidance",
        choices=("none", "segmentation", "perceptual"),
        default="none",
        help="what the file is for: segmentation (keeps a smoothed-threshold segmentation of the "
        "decode like the original's) or perceptual (MS-SSIM and gradient structure); hybrid "
        "mode codes a pre-filtered volume chosen by that score, lossy mode adds it to the "
        "fit's loss; default none",
    )
    guidance.add_argument(
        "--labels",
        metavar="LABELS.tif",
        help="labels image of IN's shape (> 0 is foreground) for --guidance segmentation; "
        "without it an Otsu threshold of the image is the reference",
    )
    guidance.add_argument(
        "--guidance-weight",
        type=_weight,
        action="append",
        metavar="NAME=VALUE",
        help="advanced: relative weight of one guidance term, repeatable (segmentation: side, "
        "boundary, dice, sharpness, band_radius; perceptual: ssim, gradient; defaults and "
        "meaning in docs/guidance.md)",
    )


def _compress_scale_out(p: argparse.ArgumentParser) -> None:
    """Coding the blocks on a Dask cluster."""
    cluster = p.add_argument_group("scale-out (Dask)")
    scale_out = cluster.add_mutually_exclusive_group()
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
    cluster.add_argument(
        "--block-voxels",
        type=_positive_int,
        metavar="N",
        help="largest block in voxels (default 4194304); smaller blocks spread over more workers",
    )


def _add_decompress(sub: Any) -> None:
    """The ``decompress`` command's options."""
    p = sub.add_parser(
        "decompress",
        help="decode a .sciz file (or a region of it) to TIFF/OME-TIFF/.npy",
        description="Decode IN.sciz, optionally a region and at another resolution.",
    )
    p.add_argument(
        "input",
        metavar="IN.sciz",
        nargs="+",
        help="compressed file; several are decoded one after the other into the folder OUT",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output image (.tif, .tiff, .ome.tif, .ome.tiff, .npy, or an .ome.zarr store), or "
        "an existing folder: each input is written there as <name>.<--format>; without "
        "--scale it is written slab by slab, so it may be larger than memory",
    )
    p.add_argument(
        "--format",
        choices=("tif", "ome.tif", "npy", "ome.zarr"),
        help="with a folder OUT: what the files are written as (default tif)",
    )
    p.add_argument(
        "--roi",
        metavar='"z0:z1,y0:y1,x0:x1"',
        help="region to decode, one start:stop (or one index) per axis, fewer for the last "
        "axes; empty bounds allowed, negative ones count from the end (write "
        "--roi=-3:,:,: when the region starts with a minus sign)",
    )
    p.add_argument(
        "--scale",
        type=_scale,
        default=1,
        metavar="S",
        help="resolution factor (2: twice as many samples per axis); voxel size is divided by it",
    )
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave inputs whose output is already there (resume a stopped run)",
    )
    p.set_defaults(handler=_cmd_decompress)


def _add_info(sub: Any) -> None:
    """The ``info`` command's options."""
    p = sub.add_parser(
        "info",
        help="show the header of a .sciz file",
        description="Print shape, dtype, axes, voxel size, ratio and every header field.",
    )
    p.add_argument(
        "input",
        metavar="IN.sciz",
        nargs="+",
        help="compressed file; several: one line each and their totals",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout (one line per file for several files)",
    )
    p.set_defaults(handler=_cmd_info)


def _add_score(sub: Any) -> None:
    """The ``score`` command's options."""
    p = sub.add_parser(
        "score",
        help="score a .sciz file against its original (PSNR, SSIM, segmentation, MS-SSIM)",
        description="Decode FILE.sciz and measure how it reproduces ORIGINAL: PSNR, SSIM and "
        "the largest error; the segmentation a biologist runs (smoothing of 1 voxel, Otsu, "
        "watershed) on both, object F1 at IoU 0.5, Dice and the count error; MS-SSIM and "
        "gradient similarity (docs/guidance.md, 'Task scores'). A stack is scored on its "
        "middle volume, a volume over 64 Mi voxels on its central box, as guided coding does.",
    )
    p.add_argument("original", metavar="ORIGINAL", help="the image the file was coded from")
    p.add_argument("file", metavar="FILE.sciz", help="the compressed file")
    p.add_argument(
        "--series",
        type=_series,
        default=0,
        metavar="N",
        help="image series of a multi-series TIFF ORIGINAL (default 0)",
    )
    p.add_argument(
        "--ground-truth",
        metavar="LABELS.tif",
        help="labels or mask of ORIGINAL's shape: the original's and the decode's "
        "segmentations are each scored against it too",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=_cmd_score)
