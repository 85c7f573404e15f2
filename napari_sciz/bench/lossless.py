"""Benchmark of the lossless and error-bounded modes against classical codecs.

``python -m napari_sciz.bench.lossless [--data DIR] [--bounds 1,4,16] [--out docs/benchmarks.md]``

``--data skimage`` takes scikit-image's bundled images instead (:mod:`.unseen`: images nobody
tuned on), ``--data skimage-zoom`` the same zoomed 2x (corner- and centre-aligned linear
interpolation: data stored larger than acquired), with ``--section`` naming the markdown
section to write.

For each 3D volume (and, with ``--all``, each 2D image) of the data folder it measures

* our ``mode="lossless"`` (ratio of the complete ``.sciz`` file, encode/decode MB/s, exactness),
  beside the classical lossless codecs of :func:`napari_sciz.bench.classical.lossless_sizes`
  (JPEG XL per slice and mosaic, JPEG-LS, JPEG 2000, FFV1, zstd, blosc2);
* our ``mode="bounded"`` at each error bound ``E`` beside SZ3 (``abs`` mode) and SPERR
  (point-wise error mode) at the same bound, both fed the volume as float32.

The markdown goes into the ``lossless`` section of the output file
(``<!-- bench:lossless:start -->`` ... ``end``). Times are single-threaded wall-clock seconds
on the machine that runs it.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .codectools import DECODE_REPEAT, timed
from .losslessanchors import lossless_sizes
from .records import lossless_table, update_section
from .volumes import find_data_dir, list_volumes

__all__ = ["bounded_entries", "main", "ours_lossless"]

PROG = "python -m napari_sciz.bench.lossless"


def ours_lossless(volume: np.ndarray) -> dict[str, Any]:
    """Ratio, times and exactness of ``mode="lossless"`` on ``volume``.

    Parameters
    ----------
    volume : numpy.ndarray
        The array.

    Returns
    -------
    dict
        ``codec, nbytes, ratio, encode_seconds, decode_seconds, exact, predictors`` (how many
        blocks chose each predictor, :func:`~napari_sciz.core.lossless.describe.summarize`).
    """
    from ..core import api
    from ..core.lossless.describe import describe_block, summarize

    result, enc = timed(lambda: api.compress(volume, mode="lossless"))
    decoded, dec = timed(lambda: api.decompress(result.data), DECODE_REPEAT)
    exact = decoded.dtype == volume.dtype and decoded.tobytes() == volume.tobytes()
    with api.open_sciz(bytes(result.data)) as reader:
        n = reader._file.n_payloads
        predictors = summarize(describe_block(reader._file.payload(i)) for i in range(n))
    return {
        "codec": "napari-sciz lossless",
        "nbytes": result.nbytes,
        "ratio": result.ratio,
        "encode_seconds": enc,
        "decode_seconds": dec,
        "exact": bool(exact),
        "predictors": predictors,
    }


def bounded_entries(volume: np.ndarray, bound: float) -> list[dict[str, Any]]:
    """Our bounded mode, SZ3 and SPERR at the absolute error bound ``bound``.

    Parameters
    ----------
    volume : numpy.ndarray
        The array.
    bound : float
        Absolute error bound ``E``.

    Returns
    -------
    list of dict
        ``codec, ratio, max_error, encode_seconds, decode_seconds`` per codec (codecs that are
        not installed are left out).
    """
    from ..core import api

    raw = volume.nbytes
    ref = volume.astype(np.float64)
    out = []
    result, enc = timed(lambda: api.compress(volume, mode="bounded", max_error=bound))
    decoded, dec = timed(lambda: api.decompress(result.data), DECODE_REPEAT)
    out.append(
        {
            "codec": "napari-sciz bounded",
            "ratio": result.ratio,
            "max_error": float(np.abs(decoded.astype(np.float64) - ref).max()),
            "encode_seconds": enc,
            "decode_seconds": dec,
        }
    )
    try:
        import imagecodecs as ic
    except ImportError:  # pragma: no cover - optional
        return out
    data = np.ascontiguousarray(volume, dtype=np.float32)
    if data.ndim > 3:
        data = data.reshape((-1,) + data.shape[-2:])
    codecs: list[tuple[str, Callable[[], bytes], Callable[[bytes], np.ndarray]]] = []
    if getattr(ic, "SZ3", None) is not None and ic.SZ3.available:
        codecs.append(
            (
                "SZ3 (abs)",
                lambda: bytes(ic.sz3_encode(data, "abs", abs=float(bound))),
                lambda b: ic.sz3_decode(b, shape=data.shape, dtype=np.float32),
            )
        )
    if getattr(ic, "SPERR", None) is not None and ic.SPERR.available:
        codecs.append(
            (
                "SPERR (pwe)",
                lambda: bytes(ic.sperr_encode(data, float(bound), "pwe")),
                lambda b: ic.sperr_decode(b, shape=data.shape, dtype=np.float32),
            )
        )
    for name, encode, decode in codecs:
        try:
            payload, enc = timed(encode)
            values, dec = timed(lambda d=decode, p=payload: np.asarray(d(p)), DECODE_REPEAT)
        except Exception as exc:  # noqa: BLE001 - a codec refusing the input is skipped
            warnings.warn(f"{name} skipped: {exc}", stacklevel=2)
            continue
        err = float(np.abs(values.astype(np.float64).reshape(ref.shape) - ref).max())
        out.append(
            {
                "codec": name,
                "ratio": raw / len(payload),
                "max_error": err,
                "encode_seconds": enc,
                "decode_seconds": dec,
            }
        )
    return out


def _mbs(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e6:.1f}" if seconds > 0 else "—"


def render_markdown(record: dict[str, Any]) -> str:
    """Markdown of a benchmark record (see :func:`main`)."""
    lines = [
        "## Lossless and error-bounded modes",
        "",
        f"`{record['command']}` on {record['machine']} (single thread; {record['date']}).",
        "",
        "### Lossless",
        "",
        "Compression ratio (raw bytes / compressed bytes) and encode / decode speed in MB/s of "
        "raw data; **bold** = best exact ratio. Our ratio counts the complete `.sciz` file "
        "(header, index and checksums included).",
        "",
    ]

    def cell(vol: dict[str, Any], e: dict[str, Any], txt: str) -> str:
        raw = vol["raw_nbytes"]
        return f"{txt} ({_mbs(raw, e['encode_seconds'])} / {_mbs(raw, e['decode_seconds'])})"

    lines += lossless_table(
        record["volumes"],
        lambda vol: f"{vol['name']} ({vol['dtype']}, {'x'.join(map(str, vol['shape']))})",
        cell,
    )
    won = [
        (vol["name"], e["predictors"])
        for vol in record["volumes"]
        for e in vol["lossless"]
        if e.get("predictors")
    ]
    if won:
        lines += [
            "",
            "Which predictor won (per block: the blended sub-predictors, the wide least "
            "squares' classes, and the gradient levels that use one sub-predictor alone):",
            "",
            "| volume | predictors (blocks) |",
            "|---|---|",
        ]
        for name, preds in won:
            text = "; ".join(f"{p} ({n})" if len(preds) > 1 else p for p, n in preds.items())
            lines.append(f"| {name} | {text} |")
    if any(vol.get("bounded") for vol in record["volumes"]):
        lines += [
            "",
            "### Error-bounded",
            "",
            "Ratio and the measured largest absolute error at the same bound E "
            "(SZ3 and SPERR get the volume as float32); (encode / decode MB/s).",
            "",
            "| volume | E | codec | ratio | max error | MB/s |",
            "|---|---|---|---|---|---|",
        ]
        for vol in record["volumes"]:
            for bound, entries in vol.get("bounded", {}).items():
                for e in entries:
                    raw = vol["raw_nbytes"]
                    speed = f"{_mbs(raw, e['encode_seconds'])} / {_mbs(raw, e['decode_seconds'])}"
                    lines.append(
                        f"| {vol['name']} | {bound} | {e['codec']} | {e['ratio']:.2f} | "
                        f"{e['max_error']:.4g} | {speed} |"
                    )
    return "\n".join(lines) + "\n"


def _floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of this benchmark."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder of volumes, 'skimage' for scikit-image's bundled images, or "
        "'skimage-zoom' for them zoomed 2x (corner- and centre-aligned)",
    )
    p.add_argument("--volumes", default=None, metavar="NAME,...", help="only these file stems")
    p.add_argument("--all", action="store_true", help="include 2D images")
    p.add_argument(
        "--bounds",
        type=_floats,
        default=[1.0, 4.0, 16.0],
        metavar="E,...",
        help="error bounds of the bounded comparison ('' for none; default 1,4,16)",
    )
    p.add_argument("--out", default="docs/benchmarks.md", metavar="FILE.md", help="markdown file")
    p.add_argument("--section", default="lossless", help="markdown section (default lossless)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and merge its section into the markdown file.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 without data.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(args_list)
    names = None if args.volumes is None else [n.strip() for n in args.volumes.split(",")]
    if args.data == Path("skimage"):
        from .unseen import gray_images

        volumes = gray_images(names)
    elif args.data == Path("skimage-zoom"):
        from .unseen import zoomed_images

        volumes = zoomed_images(names)
    else:
        data_dir = args.data if args.data is not None else find_data_dir()
        if data_dir is None or not Path(data_dir).is_dir():
            print(f"{PROG}: no data folder", file=sys.stderr)
            return 1
        volumes = list_volumes(Path(data_dir), names=names, include_2d=args.all)
    record: dict[str, Any] = {
        "command": " ".join([PROG, *args_list]),
        "machine": f"{platform.processor() or platform.machine()} ({platform.system()})",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "volumes": [],
    }
    try:
        from .environment import _cpu_model

        record["machine"] = _cpu_model()
    except Exception:  # noqa: BLE001 - cosmetic
        pass
    from ..core import api

    api.decompress(api.compress(np.zeros((2, 8, 8), np.uint8), mode="lossless").data)  # warm up
    for name, vol in volumes:
        if not args.quiet:
            print(f"[{name}] {vol.dtype} {vol.shape}", file=sys.stderr, flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            classical = [e.to_dict() for e in lossless_sizes(vol)]
            entry: dict[str, Any] = {
                "name": name,
                "shape": list(vol.shape),
                "dtype": str(vol.dtype),
                "raw_nbytes": int(vol.nbytes),
                "lossless": [ours_lossless(vol), *classical],
                "bounded": {},
            }
            if vol.dtype.kind in "uif":  # (float64 has no lossless mode, but a bounded one)
                for bound in args.bounds:
                    entry["bounded"][f"{bound:g}"] = bounded_entries(vol, bound)
        record["volumes"].append(entry)
        if not args.quiet:
            for e in entry["lossless"]:
                print(f"    {e['codec']}: {e['ratio']:.3f}", file=sys.stderr, flush=True)
    markdown = render_markdown(record)
    if args.out:
        update_section(args.out, args.section, markdown)
    else:
        print(markdown)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
