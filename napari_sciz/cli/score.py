"""``sciz score``: how a ``.sciz`` file reproduces its original, every score at once."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..io import read_image
from ..io.image import default_axes
from .common import _codec
from .text import _dumps, _fmt_shape, _human_bytes, _print_table


def _cmd_score(args: argparse.Namespace) -> int:
    """Decode ``args.file`` and score it against ``args.original``."""
    from ..core.task.report import decode_report

    original, sciz = Path(args.original), Path(args.file)
    for path in (original, sciz):
        if not path.exists():
            raise InvalidInputError(f"no such file: {path}")
    if sciz.suffix.lower() != ".sciz":
        raise InvalidInputError(f"the second file must be a .sciz file, got {sciz.name}")
    image = read_image(original, series=args.series)
    truth = None if args.ground_truth is None else read_image(args.ground_truth).data
    api = _codec()
    with api.open_sciz(sciz) as reader:
        decoded = reader[...]
        file_bytes, ratio = reader.file_size, reader.ratio
        # (the original's own axes and calibration where it has them, else the file's)
        voxel = image.voxel_size or getattr(reader, "voxel_size", None)
        axes = image.axes
        if axes == default_axes(len(image.data.shape)):
            axes = getattr(reader, "axes", None) or axes
    report = decode_report(
        image.data, decoded, voxel_size=voxel, axes=axes, ground_truth=truth
    )  # fmt: skip
    report.update(
        original=str(original), file=str(sciz), nbytes=file_bytes, ratio=ratio,
        shape=list(decoded.shape), dtype=str(decoded.dtype),
    )  # fmt: skip
    if args.json:
        print(_dumps(report))
        return 0
    print(f"{sciz} against {original}")
    _print_table(_rows(report), sys.stdout)
    return 0


def _rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The lines ``sciz score`` prints."""
    rows = [
        ("file", f"{_human_bytes(report['nbytes'])}, {report['ratio']:.2f}x"),
        ("shape", f"{_fmt_shape(report['shape'])} {report['dtype']}"),
        ("PSNR", "inf (identical)" if report["psnr"] == math.inf else f"{report['psnr']:.2f} dB"),
    ]
    if math.isfinite(report["ssim"]):
        rows.append(("SSIM", f"{report['ssim']:.4f}"))
    rows.append(("max error", f"{report['max_error']:.6g}"))
    seg = report.get("segmentation")
    if seg is not None:
        rows.append(("object F1", f"{seg['object_f1']:.4f}" + _where(seg)))
        rows.append(("Dice", f"{seg['dice']:.4f}"))
        rows.append(
            ("objects", f"{seg['found']:.0f} decoded / {seg['objects']:.0f} original "
             f"(count error {seg['count_error']:+.0f})")
        )  # fmt: skip
    perc = report.get("perceptual")
    if perc is not None:
        rows.append(("MS-SSIM", f"{perc['ms_ssim']:.4f}" + _where(perc)))
        rows.append(("gradient similarity", f"{perc['gradient_similarity']:.4f}"))
    truth = report.get("ground_truth")
    if truth is not None:
        for key in ("original", "decoded"):
            got = truth[key]
            rows.append(
                (f"ground truth: {key}", f"object F1 {got['f1']:.4f}, Dice {got['dice']:.4f}, "
                 f"{got['n_test']} of {got['n_reference']} objects")
            )  # fmt: skip
    elif "ground_truth_note" in report:
        rows.append(("ground truth", report["ground_truth_note"]))
    return rows


def _where(score: dict[str, float]) -> str:
    """Where a task score was measured, in brackets, when not on the whole array."""
    from ..core.task.report import scored_where

    where = scored_where(score).lstrip(" ,;")
    return f" ({where})" if where else ""
