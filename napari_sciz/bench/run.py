"""The benchmark: napari-sciz next to classical codecs at the same target ratios.

Run it as ``sciz bench ...`` or ``python -m napari_sciz.bench ...``::

    python -m napari_sciz.bench --ratios 16,64,256,1024 --budget 120 --device auto \\
        --out docs/benchmarks.md --json bench_out/results.json

For every volume of the data folder (3D ones unless ``--all``) and every ratio it runs our codec
(:func:`napari_sciz.core.api.compress`, unless ``--skip-ours``) and every available classical codec
of :mod:`napari_sciz.bench.classical`, measured the same way (``GUIDE.md`` section 2): achieved
ratio of the complete output, PSNR, SSIM, encode and decode seconds.  The markdown tables are merged
into ``--out`` between the markers ``<!-- bench:KEY:start -->`` and ``<!-- bench:KEY:end -->``
(``KEY`` = ``lossy`` with our codec, ``classical`` with ``--skip-ours``), leaving everything else in
the file untouched (:func:`update_section`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import shlex
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .classical import CODECS, Codec, get_codec, lossless_sizes, max_abs_error, psnr, ssim
from .environment import environment_info
from .guidancebench import GUIDANCE_RATIOS, guidance_main
from .records import _fmt_ratio, update_section, write_json
from .runtables import _cell, render_markdown
from .volumes import find_data_dir, list_volumes

__all__ = [
    "build_parser",
    "environment_info",
    "find_data_dir",
    "list_volumes",
    "main",
    "render_markdown",
    "update_section",
]

PROG = "python -m napari_sciz.bench"
DEFAULT_RATIOS = (16.0, 64.0, 256.0, 1024.0)


# --------------------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------------------


def _finite(x: float | None) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return float(x)


def _decode_kwargs(device: str | None) -> tuple[dict[str, Any], str]:
    """Keyword arguments for :func:`decompress` on ``device`` (if it takes one), and the device."""
    import inspect

    from ..core.api import decompress

    if device and "device" in inspect.signature(decompress).parameters:
        return {"device": device}, device
    return {}, "cpu"


def _ours(
    volume: np.ndarray,
    ratio: float,
    *,
    device: str,
    budget: float | None,
    decode_device: str | None,
) -> tuple[dict[str, Any], bytes | None]:
    """Run our codec once; return its record and its ``.sciz`` bytes (``None`` on failure)."""
    from ..core.api import compress, decompress
    from ..errors import RatioUnreachableError

    record: dict[str, Any] = {"codec": "ours", "target_ratio": float(ratio)}
    try:
        res = compress(volume, ratio, device=device, budget=budget, seed=0)
    except RatioUnreachableError as exc:
        record.update(status="unreachable", message=str(exc))
        return record, None
    except Exception as exc:  # noqa: BLE001 - one failure must not end a long benchmark
        traceback.print_exc()
        record.update(status="error", message=f"{type(exc).__name__}: {exc}")
        return record, None
    data = bytes(res.data)
    kwargs, dec_device = _decode_kwargs(decode_device or str(getattr(res, "device", "cpu")))
    t0 = time.perf_counter()
    decoded = np.asarray(decompress(data, **kwargs))
    decode_seconds = time.perf_counter() - t0
    raw = volume.size * volume.dtype.itemsize
    decoded = decoded.reshape(volume.shape)
    record.update(
        status="ok",
        ratio=raw / len(data),
        nbytes=len(data),
        psnr=psnr(volume, decoded),
        ssim=ssim(volume, decoded),
        max_error=max_abs_error(volume, decoded),
        encode_seconds=float(res.encode_seconds),
        decode_seconds=decode_seconds,
        decode_device=dec_device,
        device=str(getattr(res, "device", device)),
        reported={
            "ratio": _finite(getattr(res, "ratio", None)),
            "psnr": _finite(getattr(res, "psnr", None)),
            "ssim": _finite(getattr(res, "ssim", None)),
            "max_error": _finite(getattr(res, "max_error", None)),
        },
    )
    if record["ratio"] < ratio:
        record["status"] = "below_target"
    return record, data


def _roi_decode(
    data: bytes, shape: tuple[int, ...], device: str | None, repeats: int = 3
) -> dict[str, Any]:
    """Time the decode of one (up to) 256x256 plane from the middle of a compressed volume."""
    from ..core.api import decompress

    z = shape[0] // 2
    h, w = min(256, shape[-2]), min(256, shape[-1])
    roi = (slice(z, z + 1), slice(0, h), slice(0, w))
    kwargs, device = _decode_kwargs(device)
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = decompress(data, roi=roi, **kwargs)
        times.append(time.perf_counter() - t0)
    return {
        "plane": z,
        "roi": f"{z}:{z + 1},0:{h},0:{w}",
        "shape": list(np.shape(out)),
        "seconds": statistics.median(times),
        "repeats": repeats,
        "device": device,
    }


def _classical(codec: Codec, volume: np.ndarray, ratio: float, iterations: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        res = codec.encode_at_ratio(volume, ratio, iterations=iterations)
    except Exception as exc:  # noqa: BLE001 - one failing codec must not end the benchmark
        traceback.print_exc()
        return {
            "codec": codec.name,
            "target_ratio": float(ratio),
            "status": "error",
            "message": f"{type(exc).__name__}: {exc}",
        }
    search = time.perf_counter() - t0
    if res is None:
        return {
            "codec": codec.name,
            "target_ratio": float(ratio),
            "status": "unreachable",
            "search_seconds": search,
        }
    return {**res.to_dict(), "status": "ok", "search_seconds": search}


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------


def _ratios(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"ratios must be numbers: {text!r}") from exc
    if not values or any(not math.isfinite(v) or v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"ratios must be >= 1: {text!r}")
    return values


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The argument parser of the benchmark."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark napari-sciz against classical codecs at the same compression "
        "ratios and merge the tables into a markdown file.",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder of volumes (default: the shared/data folder beside the repository)",
    )
    p.add_argument(
        "--volumes",
        type=_names,
        default=None,
        metavar="NAME,...",
        help="only these volumes (file stems)",
    )
    p.add_argument("--all", action="store_true", help="include 2D images")
    p.add_argument(
        "--ratios",
        type=_ratios,
        default=None,
        metavar="R,...",
        help="target ratios (default 16,64,256,1024; 64,256 with --guidance)",
    )
    p.add_argument(
        "--guidance",
        action="store_true",
        help="benchmark guided fitting instead: none/segmentation/perceptual guidance of our "
        "codec on microscopy stacks (PSNR, SSIM, Dice and connected components of an Otsu "
        "segmentation, encode time); section 'guidance'",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="time budget of our codec per volume and ratio (default 120)",
    )
    p.add_argument("--device", default="auto", help="device of our codec (default auto)")
    p.add_argument(
        "--decode-device",
        default=None,
        help="device for our decode timings, where decompress() takes one (default: the "
        "encode device; the current decompress() always decodes on the CPU)",
    )
    p.add_argument(
        "--codecs",
        type=_names,
        default=None,
        metavar="NAME,...",
        help=f"classical codecs (default: all available of {', '.join(CODECS)}; 'none' for none)",
    )
    p.add_argument("--skip-ours", action="store_true", help="classical codecs only")
    p.add_argument(
        "--lossless", action="store_true", help="also measure the classical lossless codecs"
    )
    p.add_argument(
        "--iterations",
        type=int,
        default=16,
        help="bisection steps per classical codec and ratio (default 16)",
    )
    p.add_argument("--threads", type=int, default=1, help="threads per classical codec (default 1)")
    p.add_argument(
        "--out",
        default="docs/benchmarks.md",
        metavar="FILE.md",
        help="markdown file to merge the section into ('' for none)",
    )
    p.add_argument(
        "--section",
        default=None,
        help="section key (default 'lossy', or 'classical' with --skip-ours)",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="FILE.json",
        help="also write all measurements as JSON (rewritten after each volume)",
    )
    p.add_argument("--note", default=None, help="a remark printed in the section header")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return p


class _UsageError(Exception):
    """A benchmark that cannot start (its message is printed after the program's name)."""


def _codecs_to_run(args: argparse.Namespace) -> tuple[list[Codec], list[str]]:
    """The classical codecs asked for that can run here, and the labels of those that cannot."""
    if args.codecs and [c.lower() for c in args.codecs] == ["none"]:
        requested: list[Codec] = []
    else:
        try:
            requested = (
                [get_codec(c) for c in args.codecs] if args.codecs else list(CODECS.values())
            )
        except KeyError as exc:
            raise _UsageError(exc.args[0]) from None
    for c in requested:
        c.numthreads = args.threads
    codecs = [c for c in requested if c.available()]
    unavailable = [
        c.label + (" (ffmpeg with libx265 not found)" if c.name == "hevc" else "")
        for c in requested
        if c not in codecs
    ]
    return codecs, unavailable


def _volume_entry(
    name: str,
    vol: np.ndarray,
    args: argparse.Namespace,
    device: str | None,
    codecs: Sequence[Codec],
    say: Callable[[str], None],
) -> tuple[dict[str, Any], dict[float, bytes]]:
    """Every measurement of one volume, and our ``.sciz`` files by ratio (for the ROI decode)."""
    entry: dict[str, Any] = {
        "name": name,
        "shape": list(vol.shape),
        "dtype": str(vol.dtype),
        "raw_nbytes": vol.size * vol.dtype.itemsize,
        "ratios": args.ratios,
        "results": {},
    }
    files: dict[float, bytes] = {}
    for ratio in args.ratios:
        results: dict[str, Any] = {}
        if not args.skip_ours:
            assert device is not None
            say(f"[{name} {_fmt_ratio(ratio)}] ours on {device} (budget {args.budget:g} s)")
            rec, data = _ours(
                vol, ratio, device=device, budget=args.budget, decode_device=args.decode_device
            )
            results["ours"] = rec
            say(f"    {_cell(rec)}")
            if data is not None:
                files[ratio] = data
        for codec in codecs:
            say(f"[{name} {_fmt_ratio(ratio)}] {codec.label}")
            rec = _classical(codec, vol, ratio, args.iterations)
            results[codec.name] = rec
            say(f"    {_cell(rec)}")
        entry["results"][_fmt_ratio(ratio)] = results
    if args.lossless:
        say(f"[{name}] lossless")
        from .lossless import ours_lossless  # our lossless mode beside the classical ones

        entry["lossless"] = [
            ours_lossless(vol),
            *[e.to_dict() for e in lossless_sizes(vol, numthreads=args.threads)],
        ]
    return entry, files


def _roi_record(
    data: bytes | None,
    full_decode_seconds: float | None,
    shape: tuple[int, ...],
    device: str | None,
    volume: str,
    ratio: float,
) -> dict[str, Any]:
    """The ``roi_decode`` record: a region of our file of ``volume`` at ``ratio`` decoded."""
    if data is None:
        return {"message": f"not measured (no result for {volume} at {_fmt_ratio(ratio)})"}
    record: dict[str, Any] = {"full_decode_seconds": full_decode_seconds}
    try:
        record.update(_roi_decode(data, shape, device), volume=volume, ratio=ratio)
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        return {"message": f"failed: {type(exc).__name__}: {exc}"}
    return record


def _meta(
    args: argparse.Namespace,
    args_list: list[str],
    prog: str,
    data_dir: Path,
    device: str | None,
    codecs: Sequence[Codec],
    unavailable: list[str],
    section: str,
) -> dict[str, Any]:
    """The record's ``meta``: the command, the date, the machine and what was asked."""
    return {
        "command": " ".join([prog, shlex.join(args_list)]).strip(),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "environment": environment_info(device),
        "data": str(data_dir),
        "ratios": args.ratios,
        "budget": None if args.skip_ours else args.budget,
        "device": device,
        "skip_ours": bool(args.skip_ours),
        "codecs": [c.name for c in codecs],
        "unavailable": unavailable,
        "iterations": args.iterations,
        "threads": args.threads,
        "section": section,
        "note": args.note,
    }


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run the benchmark.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).
    prog : str
        Program name shown in usage and in the recorded command line.

    Returns
    -------
    int
        0 on success, 1 when there is nothing to run (no data, no codec).
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(args_list)
    if args.ratios is None:
        args.ratios = list(GUIDANCE_RATIOS if args.guidance else DEFAULT_RATIOS)

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    if args.guidance:
        return guidance_main(args, args_list, prog, say)

    data_dir = args.data if args.data is not None else find_data_dir()
    try:
        if data_dir is None or not Path(data_dir).is_dir():
            raise _UsageError(f"data folder not found ({data_dir or 'use --data DIR'})")
        try:
            volumes = list_volumes(Path(data_dir), args.volumes, include_2d=args.all)
        except FileNotFoundError as exc:
            raise _UsageError(str(exc)) from None
        codecs, unavailable = _codecs_to_run(args)
        if not volumes or (args.skip_ours and not codecs):
            raise _UsageError(f"nothing to run (volumes: {len(volumes)}, codecs: {len(codecs)})")
    except _UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1

    device: str | None = None
    if not args.skip_ours:
        from ..core.device import resolve_device

        device = resolve_device(args.device)
    section = args.section or ("classical" if args.skip_ours else "lossy")
    record: dict[str, Any] = {
        "meta": _meta(args, args_list, prog, Path(data_dir), device, codecs, unavailable, section),
        "volumes": [],
    }
    largest = max(volumes, key=lambda nv: nv[1].size)[0]
    roi_ratio = next((r for r in args.ratios if r >= 64), args.ratios[len(args.ratios) // 2])
    for name, vol in volumes:
        entry, files = _volume_entry(name, vol, args, device, codecs, say)
        record["volumes"].append(entry)
        if name == largest and not args.skip_ours:
            ours = entry["results"][_fmt_ratio(roi_ratio)]["ours"]
            record["roi_decode"] = _roi_record(
                files.get(roi_ratio), ours.get("decode_seconds"), vol.shape,
                args.decode_device or device, largest, roi_ratio,
            )  # fmt: skip
        if args.json is not None:
            write_json(args.json, record)

    if args.json is not None:
        write_json(args.json, record)
        say(f"wrote {args.json}")
    markdown = render_markdown(record)
    if args.out:
        update_section(args.out, section, markdown)
        say(f"updated section '{section}' of {args.out}")
    else:
        print(markdown)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
