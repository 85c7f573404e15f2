"""Decode benchmark: what a user browsing a file feels, against TIFF, JPEG XL and SPERR.

Run it as ``python -m napari_sciz.bench.decode``::

    python -m napari_sciz.bench.decode --volumes nbsd_cells3d_nuclei --ratio 64 \\
        --modes auto,lossy --out docs/benchmarks.md --json bench_out/decode.json

For each volume it writes a ``.sciz`` file per mode at ``--ratio`` (``--budget`` seconds of
encoding) and measures, on files on disk:

* **first plane (cold)**: open a new reader and read the middle plane;
* **next plane (warm)**: the plane after it, same reader;
* **region**: a new reader, a ``32 x 256 x 256`` region (or the whole volume if smaller);
* **full decode**: the whole volume, as raw MB/s.

The same four reads are timed on an uncompressed TIFF (``tifffile``, one page per plane), on
JPEG XL files of each slice at the same total size (``imagecodecs``, distance bisected) and on
a SPERR stream of the volume at the same size (decoded whole: SPERR has no random access).
Lossless: our ``mode="lossless"`` against JPEG XL lossless per slice (effort 7): ratio and
MB/s both ways. Times are the best of ``--repeat`` runs; the process is warm (imports done,
compiled kernels cached), as in a napari session after its first file.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .report import (
    add_output_options,
    comma_list,
    header_lines,
    new_record,
    require_data_dir,
    write_results,
)
from .volumes import list_volumes

__all__ = ["main", "measure_volume"]

PROG = "python -m napari_sciz.bench.decode"
SECTION = "decode"
REGION = (32, 256, 256)


def _best(fn: Callable[[], Any], repeat: int) -> float:
    """Shortest wall time of ``repeat`` calls of ``fn`` (seconds)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _region_box(shape: Sequence[int]) -> tuple[slice, ...]:
    """A ``REGION``-sized box centred in the volume (clipped to it)."""
    box = []
    for n, m in zip(shape[-3:], REGION, strict=True):
        size = min(n, m)
        start = (n - size) // 2
        box.append(slice(start, start + size))
    return tuple(box)


def _reads(
    open_reader: Callable[[], Any], plane: Callable[[Any, int], Any], full: Callable[[], Any]
) -> Callable[[Sequence[int], int], dict[str, float]]:
    """The four timed reads, given how to open a reader, read a plane and decode everything."""

    def run(shape: Sequence[int], repeat: int) -> dict[str, float]:
        z = shape[0] // 2
        box = _region_box(shape)

        def cold() -> None:
            plane(open_reader(), z)

        reader = open_reader()
        plane(reader, z)
        nexts = iter([z + k if z + k < shape[0] else z - k for k in range(1, repeat + 1)])

        def warm() -> None:  # a plane not read before, from the same reader
            plane(reader, next(nexts))

        def region() -> None:
            r = open_reader()
            for k in range(box[0].start, box[0].stop):
                plane(r, k)[box[1], box[2]]

        return {
            "cold_ms": 1e3 * _best(cold, repeat),
            "warm_ms": 1e3 * _best(warm, repeat),
            "region_ms": 1e3 * _best(region, repeat),
            "full_s": _best(full, repeat),
        }

    return run


def _ours(path: Path, shape: Sequence[int], repeat: int) -> dict[str, float]:
    from ..core.api import decompress, open_sciz

    def region_read() -> None:
        box = _region_box(shape)
        open_sciz(path).decode([(b.start, b.stop) for b in box])

    run = _reads(lambda: open_sciz(path), lambda r, z: r[z], lambda: decompress(path))
    out = run(shape, repeat)
    out["region_ms"] = 1e3 * _best(region_read, repeat)  # one region request, not plane by plane
    return out


def _tiff(path: Path, shape: Sequence[int], repeat: int) -> dict[str, float]:
    import tifffile

    def plane(_r: Any, z: int) -> np.ndarray:
        return tifffile.imread(path, key=z)

    return _reads(lambda: None, plane, lambda: tifffile.imread(path))(shape, repeat)


def _jpegxl_slices(volume: np.ndarray, nbytes: int) -> list[bytes] | None:
    """Per-slice JPEG XL streams whose total is at most ``nbytes`` (distance bisected)."""
    import imagecodecs

    def encode(distance: float) -> list[bytes]:
        return [bytes(imagecodecs.jpegxl_encode(s, distance=distance, effort=7)) for s in volume]

    lo, hi = np.log(0.05), np.log(25.0)
    best = None
    for _ in range(12):
        mid = 0.5 * (lo + hi)
        streams = encode(float(np.exp(mid)))
        size = sum(len(s) for s in streams)
        if size <= nbytes:
            best, hi = streams, mid
            if size >= 0.99 * nbytes:
                break
        else:
            lo = mid
    return best


def _jpegxl(volume: np.ndarray, nbytes: int, repeat: int) -> dict[str, float] | None:
    import imagecodecs

    if volume.dtype not in (np.uint8, np.uint16):
        return None
    streams = _jpegxl_slices(volume, nbytes)
    if streams is None:
        return None
    run = _reads(
        lambda: None,
        lambda _r, z: imagecodecs.jpegxl_decode(streams[z]),
        lambda: [imagecodecs.jpegxl_decode(s) for s in streams],
    )
    out = run(volume.shape, repeat)
    out["nbytes"] = sum(len(s) for s in streams)
    return out


def _sperr(volume: np.ndarray, nbytes: int, repeat: int) -> dict[str, float] | None:
    import imagecodecs

    data = np.ascontiguousarray(volume, dtype=np.float64)
    bpp = 8.0 * nbytes / volume.size
    stream = bytes(imagecodecs.sperr_encode(data, bpp, "bpp"))

    def full() -> np.ndarray:
        return imagecodecs.sperr_decode(stream, shape=data.shape, dtype=np.float64)

    out = _reads(lambda: None, lambda _r, _z: full()[0], full)(volume.shape, repeat)
    out["nbytes"] = len(stream)
    return out


def _lossless(volume: np.ndarray, folder: Path, repeat: int) -> dict[str, Any]:
    import imagecodecs

    from ..core.api import compress, decompress

    t0 = time.perf_counter()
    result = compress(volume, mode="lossless")
    enc = time.perf_counter() - t0
    path = folder / "lossless.sciz"
    path.write_bytes(result.data)
    dec = _best(lambda: decompress(path), repeat)
    mb = volume.nbytes / 1e6
    ours = {"ratio": result.ratio, "enc_mbs": mb / enc, "dec_mbs": mb / dec}
    out: dict[str, Any] = {"sciz lossless": ours}
    if volume.dtype in (np.uint8, np.uint16):
        t0 = time.perf_counter()
        streams = [bytes(imagecodecs.jpegxl_encode(s, lossless=True, effort=7)) for s in volume]
        enc = time.perf_counter() - t0
        dec = _best(lambda: [imagecodecs.jpegxl_decode(s) for s in streams], repeat)
        size = sum(len(s) for s in streams)
        row = {"ratio": volume.nbytes / size, "enc_mbs": mb / enc, "dec_mbs": mb / dec}
        out["JPEG XL lossless per slice (effort 7)"] = row
    return out


def measure_volume(
    name: str,
    volume: np.ndarray,
    ratio: float,
    modes: Sequence[str],
    budget: float,
    repeat: int,
) -> dict[str, Any]:
    """Every timing of one volume (see the module docstring)."""
    import tifffile

    from ..core.api import compress

    vol = np.asarray(volume)
    vol = vol.reshape((-1,) + vol.shape[-2:]) if vol.ndim != 3 else vol
    mb = vol.nbytes / 1e6
    rec: dict[str, Any] = {"name": name, "shape": list(vol.shape), "dtype": str(vol.dtype)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows: dict[str, Any] = {}
        for mode in modes:
            result = compress(vol, ratio, mode=mode, budget=budget, device="cpu")
            path = folder / f"{mode}.sciz"
            path.write_bytes(result.data)
            row = _ours(path, vol.shape, repeat)
            row.update(
                nbytes=len(result.data), psnr=float(result.psnr), coded=result.header["mode"]
            )
            rows[f"sciz {mode}"] = row
        tif = folder / "raw.tif"
        tifffile.imwrite(tif, vol)
        rows["TIFF (uncompressed)"] = _tiff(tif, vol.shape, repeat)
        target = int(vol.nbytes / ratio)
        for label, fn in (("JPEG XL per slice", _jpegxl), ("SPERR", _sperr)):
            row = fn(vol, target, repeat)
            if row is not None:
                rows[label] = row
        for row in rows.values():
            row["full_mbs"] = mb / row["full_s"]
        rec["reads"] = rows
        rec["lossless"] = _lossless(vol, folder, repeat) if vol.dtype.kind in "ui" else None
    return rec


def render(record: dict[str, Any]) -> str:
    """The markdown section."""
    lines = header_lines(
        "Decoding: first plane, next plane, region, full volume",
        record,
        f"- **encoding**: ratio {record['ratio']:g}, {record['budget']:g} s budget per mode",
    )
    lines += [
        "",
        "Cold: a new reader and the middle plane. Warm: a plane next to it not read before, same "
        "reader. Region: a "
        f"new reader and a {REGION[0]}x{REGION[1]}x{REGION[2]} region (plane by plane for the "
        "others). Full: raw MB/s of decoding everything. Best of the repeats, warm process.",
        "",
    ]
    for vol in record["volumes"]:
        shape = "x".join(str(n) for n in vol["shape"])
        lines += [f"### {vol['name']} — {shape} {vol['dtype']}", ""]
        lines += [
            "| reader | bytes | cold plane (ms) | warm plane (ms) | region (ms) | full (MB/s) |",
            "|---|---|---|---|---|---|",
        ]
        for label, row in vol["reads"].items():
            what = label
            if "coded" in row:
                what = f"{label} ({row['coded']}, {row['psnr']:.2f} dB)"
            nbytes = row.get("nbytes", "—")
            lines.append(
                f"| {what} | {nbytes} | {row['cold_ms']:.1f} | {row['warm_ms']:.2f} | "
                f"{row['region_ms']:.1f} | {row['full_mbs']:.1f} |"
            )
        lossless = vol.get("lossless")
        if lossless:
            lines += ["", "| lossless | ratio | encode MB/s | decode MB/s |", "|---|---|---|---|"]
            for label, row in lossless.items():
                cells = f"{row['ratio']:.3f} | {row['enc_mbs']:.1f} | {row['dec_mbs']:.1f}"
                lines.append(f"| {label} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--volumes", default="nbsd_cells3d_nuclei", help="comma-separated names")
    p.add_argument("--ratio", type=float, default=64.0)
    p.add_argument("--modes", default="auto,lossy", help="our modes")
    p.add_argument("--budget", type=float, default=30.0, help="encoding seconds per mode")
    p.add_argument("--repeat", type=int, default=3, help="runs per timing (the best is kept)")
    add_output_options(p)
    args = p.parse_args(argv)
    data = require_data_dir(p)
    names = comma_list(args.volumes)
    modes = comma_list(args.modes)
    record = new_record(
        PROG, argv, "cpu", args.note, ratio=args.ratio, budget=args.budget, volumes=[]
    )
    for name, volume in list_volumes(data, names, include_2d=True):
        vol = measure_volume(name, volume, args.ratio, modes, args.budget, args.repeat)
        record["volumes"].append(vol)
        write_results(record, render(record), args, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
