"""Structure-aware fuzzing of the decoder: hostile headers and payloads with valid CRCs.

Run it as ``python -m napari_sciz.bench.fuzz``::

    python -m napari_sciz.bench.fuzz --cases 10000 --memory-gib 4 --json bench_out/fuzz.json

A crafted file recomputes its checksums, so the container's CRCs do not stop it. Each case
takes a small valid file of one coding mode (lossy, hybrid, lossless, bounded), changes its JSON
header (a field set to a huge, negative, mistyped or missing value) or its payloads (bytes
flipped, truncated, extended, zeroed, swapped between blocks), **re-packs it with valid CRCs**
(:func:`napari_sciz.core.bitstream.container.pack`) and decodes it three ways: the whole file,
a region and one lazy plane. The outcome of a case is

* ``refused``: every read raised a :class:`~napari_sciz.errors.SciZError` (a clear message);
* ``decoded``: the reads returned arrays of the header's shape and dtype (a mutation the
  format tolerates, e.g. an unused header key, or payload bits that still decode);
* ``crash``: any other exception, or the process died (a C/C++ abort);
* ``slow``: a case took longer than ``--case-seconds``;
* ``memory``: the process ran out of its ``--memory-gib`` address space (an unbounded
  allocation).

The long run executes cases in child processes under that memory limit, so a crash or abort
is counted and the run goes on. The test suite runs a short in-process version
(``tests/test_fuzz.py``).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from unittest import mock

import numpy as np

__all__ = ["OUTCOMES", "main", "mutate", "run_case", "sample_files"]

PROG = "python -m napari_sciz.bench.fuzz"
OUTCOMES = ("refused", "decoded", "crash", "slow", "memory")

#: values a header field is set to
_VALUES: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    1,
    2,
    7,
    255,
    2**31,
    2**40,
    2**63,
    -(2**40),
    0.5,
    1e308,
    -1e308,
    "",
    "x",
    "uint16",
    "lossless",
    [],
    [0],
    [1, 1, 1],
    [2**40, 2**40, 2**40],
    [-1, 5],
    {},
    {"type": "latent-grid", "version": 1},
)


def sample_files(seed: int = 0, kinds: Iterable[str] | None = None) -> dict[str, bytes]:
    """Small valid files of each coding mode (two or more blocks each).

    Parameters
    ----------
    seed : int
        Seed of the sample volumes' noise.
    kinds : iterable of str, optional
        The files to code (default: every one); a kind's file does not depend on which
        others are coded.
    """
    from ..core.api import compress
    from ..core.lossless import interpblock

    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:6, :40, :36]
    vol = 900 + 500 * np.sin(x / 5) * np.cos(y / 7) + 30 * z + rng.normal(0, 8, z.shape)
    vol = vol.astype(np.uint16)
    common = {"device": "cpu", "block_voxels": 4096}
    # blocks of 2^14 voxels with smooth structure: the encoder takes the wide least squares
    z, y, x = np.mgrid[:8, :64, :64]
    disc = 300 * ((x - 30) ** 2 + (y - 30) ** 2 < 300)
    wide = 2000 + 700 * np.sin(x / 7 + z / 3) * np.cos(y / 11) + disc + rng.normal(0, 2, z.shape)
    # a CT-like disc in exact-zero air with a few specks: sparse contexts (version 7), in lanes
    z, y, x = np.mgrid[:3, :160, :128]
    inside = (x - 64) ** 2 + (y - 80) ** 2 < 45**2
    ct = np.where(inside, 1000 + rng.normal(0, 6, z.shape), 0)
    ct[(rng.random(z.shape) < 2e-4) & ~inside] = 17
    # a noisy ramp at a bound of 16: interpolation blocks (integers and float32); a steeper,
    # quieter one: SZ3 blocks (float32, decoded in a helper process; the interpolation
    # candidate held back, since it codes that ramp smaller too)
    z, y, x = np.mgrid[:8, :64, :64]
    ramp = 2000 + 20 * x + 10 * y + rng.normal(0, 6, z.shape)
    steep = (2000 + 60 * x + 10 * y + rng.normal(0, 3, z.shape)).astype(np.float32)

    def sz3() -> bytes:
        with mock.patch.object(interpblock, "encode", lambda block, bound: None):
            return bytes(compress(steep, mode="bounded", max_error=16, block_voxels=16384).data)

    # a label image (discs of distinct labels): label blocks (each voxel a neighbour's copy)
    z, y, x = np.mgrid[:4, :64, :64]
    labels = np.zeros(z.shape, np.uint16)
    for k, (cy, cx, r) in enumerate(rng.integers(8, 56, (9, 3)) % [64, 64, 14] + [0, 0, 4]):
        labels[(y - cy) ** 2 + (x - cx) ** 2 < r**2] = k + 1
    # a slice zoomed 2x in y and x (corner-aligned linear interpolation), masked after the
    # zoom: resampled blocks (the coarse grid and corrections)
    coarse = 1000 + np.cumsum(np.cumsum(rng.normal(0, 1.5, (4, 48, 48)), 2), 1) / 4
    zoomed = np.rint(coarse).astype(np.int64)
    for axis in (1, 2):
        moved = np.moveaxis(zoomed, axis, -1)
        up = np.empty(moved.shape[:-1] + (2 * moved.shape[-1] - 1,), np.int64)
        up[..., ::2], up[..., 1::2] = moved, (moved[..., :-1] + moved[..., 1:] + 1) >> 1
        zoomed = np.moveaxis(up, -1, axis)
    z, y, x = np.mgrid[:4, :95, :95]
    zoomed[(x - 47) ** 2 + (y - 47) ** 2 > 44**2] = 0
    makers: dict[str, Callable[[], Any]] = {
        "lossy": lambda: compress(vol, 12, mode="lossy", steps=5, **common),
        "hybrid": lambda: compress(vol, 12, mode="hybrid", steps=5, **common),
        "lossless": lambda: compress(vol, mode="lossless", block_voxels=4096),
        "bounded": lambda: compress(vol, mode="bounded", max_error=3, block_voxels=4096),
        "lossless-wide": lambda: compress(
            wide.astype(np.uint16), mode="lossless", block_voxels=16384
        ),
        "lossless-sparse": lambda: compress(
            ct.astype(np.uint16), mode="lossless", block_voxels=30720
        ),
        "bounded-sz3": sz3,
        "bounded-interp-f32": lambda: compress(
            ramp.astype(np.float32), mode="bounded", max_error=16, block_voxels=16384
        ),
        "bounded-interp": lambda: compress(
            ramp.astype(np.uint16), mode="bounded", max_error=16, block_voxels=16384
        ),
        "lossless-labels": lambda: compress(labels, mode="lossless", block_voxels=8192),
        "lossless-resampled": lambda: compress(
            zoomed.astype(np.uint16), mode="lossless", block_voxels=20000
        ),
    }
    unknown = set(kinds or ()) - set(makers)
    if unknown:
        raise ValueError(f"no sample files of kinds {sorted(unknown)}")
    files = {}
    for kind in makers if kinds is None else kinds:
        made = makers[kind]()
        files[kind] = made if isinstance(made, bytes) else bytes(made.data)
    return files


def _leaves(node: Any, path: tuple = ()) -> Iterator[tuple]:
    """Paths of every key and list entry of a JSON value."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key)
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*path, i)
            yield from _leaves(value, (*path, i))


def _mutate_header(header: dict, rng: random.Random) -> None:
    path = rng.choice(list(_leaves(header)))
    parent = header
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if isinstance(parent, dict) and rng.random() < 0.15:
        del parent[last]
    else:
        parent[last] = copy.deepcopy(rng.choice(_VALUES))


def _mutate_payloads(payloads: list[bytes], rng: random.Random) -> None:
    i = rng.randrange(len(payloads))
    data = bytearray(payloads[i])
    kind = rng.randrange(6)
    if kind == 0 and data:  # flip a few bytes
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncate
        del data[rng.randrange(len(data) + 1) :]
    elif kind == 2:  # extend
        data += rng.randbytes(rng.randint(1, 64))
    elif kind == 3 and data:  # a 4-byte field set to a huge value
        pos = rng.randrange(len(data))
        data[pos : pos + 4] = b"\xff\xff\xff\x7f"
    elif kind == 4 and data:  # zero a range
        a = rng.randrange(len(data))
        data[a : a + rng.randint(1, 32)] = bytes(min(len(data) - a, 32))
    else:  # another block's payload
        data = bytearray(payloads[rng.randrange(len(payloads))])
    payloads[i] = bytes(data)


def mutate(blob: bytes, rng: random.Random) -> bytes:
    """A hostile variant of ``blob`` with valid CRCs (header or payloads, or both, changed)."""
    from ..core.bitstream import container

    with container.SciZFile(blob) as f:
        header = copy.deepcopy(f.header)
        payloads = [f.payload(i) for i in range(f.n_payloads)]
    what = rng.random()
    if what < 0.45 or not payloads:
        _mutate_header(header, rng)
    if what >= 0.35 and payloads:
        _mutate_payloads(payloads, rng)
    try:
        return container.pack(header, payloads)
    except (TypeError, ValueError):  # not representable (e.g. NaN): keep the header
        with container.SciZFile(blob) as f:
            return container.pack(f.header, payloads)


def run_case(blob: bytes) -> tuple[str, str]:
    """Decode ``blob`` whole, as a region and as a plane; return (outcome, detail)."""
    from ..core.api import decompress, open_sciz
    from ..errors import SciZError

    refused = 0
    try:
        reader = open_sciz(blob)
    except SciZError:
        return "refused", ""
    except MemoryError:
        return "memory", "open"
    except Exception as exc:  # noqa: BLE001 - what the fuzzer looks for
        return "crash", f"open: {type(exc).__name__}: {exc}"[:300]
    shape = reader.shape
    reads = (
        lambda: decompress(blob),
        lambda: reader.decode([(0, max(1, n // 2)) for n in shape]),
        lambda: reader[(shape[0] - 1,)],
    )
    for read in reads:
        try:
            out = np.asarray(read())
        except SciZError:
            refused += 1
            continue
        except MemoryError:
            return "memory", "decode"
        except Exception as exc:  # noqa: BLE001
            return "crash", f"decode: {type(exc).__name__}: {exc}"[:300]
        if out.dtype != reader.dtype:
            return "crash", f"decoded dtype {out.dtype} for {reader.dtype}"
    return ("refused" if refused == len(reads) else "decoded"), ""


def _child(seed: int, start: int, count: int, case_seconds: float, memory_gib: float) -> None:
    """Run cases ``start:start+count`` and print one JSON line per case (child process)."""
    import resource

    limit = int(memory_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    files = sample_files(seed)
    names = sorted(files)
    for case in range(start, start + count):
        rng = random.Random(f"{seed}:{case}")
        name = names[case % len(names)]
        blob = mutate(files[name], rng)
        print(json.dumps({"case": case, "mode": name, "started": True}), flush=True)
        t0 = time.perf_counter()
        outcome, detail = run_case(blob)
        seconds = time.perf_counter() - t0
        if outcome in ("refused", "decoded") and seconds > case_seconds:
            outcome = "slow"
        print(json.dumps({"case": case, "outcome": outcome, "detail": detail, "s": seconds}))
        sys.stdout.flush()


def run(
    cases: int, seed: int, batch: int, case_seconds: float, memory_gib: float
) -> dict[str, Any]:
    """Run ``cases`` cases in child processes; count the outcomes."""
    counts: Counter[str] = Counter()
    failures: list[dict[str, Any]] = []
    slowest = 0.0
    case = 0
    t0 = time.perf_counter()
    while case < cases:
        n = min(batch, cases - case)
        cmd = [sys.executable, "-m", "napari_sciz.bench.fuzz", "--child"]
        cmd += [f"--seed={seed}", f"--start={case}", f"--cases={n}"]
        cmd += [f"--case-seconds={case_seconds}", f"--memory-gib={memory_gib}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        last_started, done = None, set()
        for line in proc.stdout.splitlines():
            rec = json.loads(line)
            if rec.get("started"):
                last_started = rec
                continue
            done.add(rec["case"])
            counts[rec["outcome"]] += 1
            slowest = max(slowest, rec["s"])
            if rec["outcome"] not in ("refused", "decoded"):
                failures.append(rec)
        if proc.returncode != 0:  # the child died: the case it had started crashed it
            dead = last_started["case"] if last_started else case
            kind = "memory" if "MemoryError" in proc.stderr else "crash"
            counts[kind] += 1
            failures.append({"case": dead, "outcome": kind, "detail": proc.stderr[-300:]})
            done.add(dead)
            case = dead + 1
        else:
            case += n
    return {
        "cases": sum(counts.values()),
        "outcomes": {k: counts.get(k, 0) for k in OUTCOMES},
        "slowest_case_seconds": slowest,
        "seconds": time.perf_counter() - t0,
        "failures": failures[:50],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=500, help="cases per child process")
    p.add_argument("--case-seconds", type=float, default=10.0, help="a slower case is a hang")
    p.add_argument("--memory-gib", type=float, default=4.0, help="address space of a child")
    p.add_argument("--json", default=None, help="write the summary here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args.seed, args.start, args.cases, args.case_seconds, args.memory_gib)
        return 0
    summary = run(args.cases, args.seed, args.batch, args.case_seconds, args.memory_gib)
    text = json.dumps(summary, indent=2)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(text)
    print(text)
    bad = sum(summary["outcomes"][k] for k in ("crash", "slow", "memory"))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
