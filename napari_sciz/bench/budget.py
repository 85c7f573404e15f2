"""Do time budgets hold? ``sciz compress --budget S`` timed on every volume and mode, under load.

Run it as ``python -m napari_sciz.bench.budget``::

    python -m napari_sciz.bench.budget --budget 20 --ratio 64 --load 2 \\
        --out docs/benchmarks.md --json bench_out/budget.json

Each case is one ``sciz compress`` process, as a user runs it: ``--mode auto`` (hybrid),
``lossy`` (the neural field), ``lossy`` with segmentation guidance and ``auto`` (hybrid) with
segmentation guidance get ``--budget S`` and
``--ratio R``; ``lossless`` and ``bounded`` take no budget (they do not fit a model) and are timed
for the record. For each case the table gives the encoder's own time (``encode_seconds`` of
the result: the whole ``compress()`` call), the process's wall time (interpreter and library
start-up, reading the TIFF and writing the ``.sciz`` file included) and the overrun of the
encoder's time over the budget. ``--load N`` runs N busy processes (repeated float64 matrix
products, memory-hungry) under ``nice -n 19`` for the whole run, as a shared workstation would.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .report import add_output_options, new_record, write_results
from .volumes import _read_volume, find_data_dir

__all__ = ["BUDGETED_MODES", "main", "run_case"]

PROG = "python -m napari_sciz.bench.budget"
SECTION = "budget"
#: mode name in the table -> extra ``sciz compress`` arguments
BUDGETED_MODES = {
    "auto": ["--mode", "auto"],
    "lossy": ["--mode", "lossy"],
    "lossy+seg": ["--mode", "lossy", "--guidance", "segmentation"],
    "auto+seg": ["--guidance", "segmentation"],
}
UNBUDGETED_MODES = ("lossless", "bounded")

_LOAD = (
    "import numpy as np\n"
    "a = np.random.default_rng(0).random((700, 700))\n"
    "while True:\n"
    "    a = np.tanh(a @ a.T / 700.0)\n"
)


@contextmanager
def background_load(n: int) -> Iterator[None]:
    """``n`` busy processes under ``nice -n 19`` while the block runs."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", _LOAD], env=env)
        for _ in range(n)
    ]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _max_error(path: Path) -> float:
    """A bounded-mode error of 1/1000 of the value range (at least 1 for integers)."""
    v = _read_volume(path)
    span = float(v.max()) - float(v.min())
    return max(1.0, round(span / 1000.0)) if v.dtype.kind in "iu" else span / 1000.0


def run_case(path: Path, mode: str, ratio: float, budget: float, workdir: Path) -> dict[str, Any]:
    """One ``sciz compress`` process; its times and result.

    Parameters
    ----------
    path : Path
        Input TIFF.
    mode : str
        A key of :data:`BUDGETED_MODES`, or ``"lossless"`` / ``"bounded"``.
    ratio, budget : float
        Target ratio and time budget (budgeted modes only).
    workdir : Path
        Folder for the output file (removed afterwards).

    Returns
    -------
    dict
        ``mode``, ``budget`` (None when unbudgeted), ``encode_s``, ``wall_s``, ``ratio``,
        ``psnr``, ``error`` (the CLI's message when it failed).
    """
    out = workdir / f"{path.stem}.{mode.replace('+', '_')}.sciz"
    argv = [sys.executable, "-m", "napari_sciz", "compress", str(path), "-o", str(out)]
    argv += ["--json", "--force"]
    if mode in BUDGETED_MODES:
        argv += [*BUDGETED_MODES[mode], "--ratio", f"{ratio:g}", "--budget", f"{budget:g}"]
    elif mode == "bounded":
        argv += ["--mode", "bounded", "--max-error", f"{_max_error(path):g}"]
    else:
        argv += ["--mode", mode]
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    out.unlink(missing_ok=True)
    row: dict[str, Any] = {
        "mode": mode,
        "budget": budget if mode in BUDGETED_MODES else None,
        "wall_s": wall,
    }
    if done.returncode != 0:
        row["error"] = (done.stderr.strip().splitlines() or ["failed"])[-1]
        return row
    summary = json.loads(done.stdout)
    row.update(
        encode_s=float(summary["encode_seconds"]),
        ratio=float(summary["ratio"]),
        psnr=summary.get("psnr"),
    )
    return row


def render(record: dict[str, Any]) -> str:
    """The markdown section of a run."""
    rows = record["rows"]
    budget = record["budget"]
    lines = [
        f"## Time budgets under load (`{record['command']}`)",
        "",
        f"{record['date']}, {record['environment'].get('cpu', '?')}, device `{record['device']}`; "
        f"{record['load']} background process(es) at `nice -n 19` "
        f"(float64 matrix products) during the whole run. Budgeted modes: `--budget {budget:g}` "
        f"and `--ratio {record['ratio']:g}`; `lossless` and `bounded` take no budget. "
        "*encode* is the result's `encode_seconds` (the whole `compress()` call), *process* the "
        "wall time of the `sciz compress` process (start-up, reading, writing included), "
        "*over* = encode / budget - 1." + (f" {record['note']}" if record.get("note") else ""),
        "",
        "| volume | shape | mode | encode s | process s | over | ratio | PSNR dB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['volume']} | {r['shape']} | {r['mode']} | failed: {r['error']} |")
            continue
        over = f"{r['encode_s'] / r['budget'] - 1:+.1%}" if r["budget"] else "—"
        psnr = "∞" if r.get("psnr") is None else f"{float(r['psnr']):.2f}"
        lines.append(
            f"| {r['volume']} | {r['shape']} | {r['mode']} | {r['encode_s']:.1f} | "
            f"{r['wall_s']:.1f} | {over} | {r['ratio']:.1f}x | {psnr} |"
        )
    timed = [r for r in rows if r.get("budget") and "error" not in r]
    if timed:
        worst = max(timed, key=lambda r: r["encode_s"] / r["budget"])
        extra = [r["wall_s"] - r["encode_s"] for r in timed]
        lines += [
            "",
            f"Worst overrun: {worst['encode_s'] / worst['budget'] - 1:+.1%} "
            f"({worst['volume']}, {worst['mode']}); budgeted cases within +10 %: "
            f"{sum(r['encode_s'] <= 1.1 * r['budget'] for r in timed)} of {len(timed)}. "
            f"Process overhead beyond the encoder (start-up, read, write): "
            f"{min(extra):.1f}-{max(extra):.1f} s.",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=None, help="folder of volumes")
    p.add_argument("--volumes", default=None, help="comma-separated file stems (default: all)")
    p.add_argument("--modes", default="auto,auto+seg,lossy,lossy+seg,lossless,bounded")
    p.add_argument("--budget", type=float, default=20.0, help="seconds per case")
    p.add_argument("--ratio", type=float, default=64.0)
    p.add_argument("--load", type=int, default=2, help="background processes (nice 19)")
    add_output_options(p)
    args = p.parse_args(argv)
    data = args.data or find_data_dir()
    if data is None:
        p.error("no data folder found (give --data)")
    files = sorted(q for q in Path(data).iterdir() if q.suffix.lower() in (".tif", ".tiff"))
    if args.volumes:
        wanted = args.volumes.split(",")
        files = [q for q in files if q.name.split(".")[0] in wanted]
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in BUDGETED_MODES and m not in UNBUDGETED_MODES]
    if unknown:
        p.error(f"unknown mode(s): {', '.join(unknown)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, background_load(args.load):
        for path in files:
            shape = "x".join(str(n) for n in np.shape(_read_volume(path)))
            for mode in modes:
                row = run_case(path, mode, args.ratio, args.budget, Path(tmp))
                row.update(volume=path.name.split(".")[0], shape=shape)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    record = new_record(
        PROG,
        argv,
        "cpu",
        args.note,
        budget=args.budget,
        ratio=args.ratio,
        load=args.load,
        rows=rows,
    )
    write_results(record, render(record), args, SECTION)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
