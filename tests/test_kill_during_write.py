"""A writer killed (SIGKILL) at a random moment leaves the old file or the new one, never a part.

A child process forked from the test rewrites one destination over and over, alternating two
contents, and is killed at a random time; the destination must then hold one of the two complete
contents. Fork makes a child cheap (no interpreter start-up), so a kill can land anywhere in a
write: while the temporary file is filled, while it is fsync'ed, or during the rename.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_sciz.io import write_bytes_atomic, write_image
from napari_sciz.io.atomic import _owner_tag, sweep_stale_temps

pytestmark = pytest.mark.skipif(
    os.name != "posix" or "fork" not in multiprocessing.get_all_start_methods(),
    reason="needs fork and SIGKILL",
)

SHAPE = (16, 128, 128)
KILLS = int(os.environ.get("SCIZ_KILL_ROUNDS", "100"))


def _contents() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4096, SHAPE, dtype=np.uint16)
    return a, (4095 - a).astype(np.uint16)


def _write_sciz(path: Path, data: np.ndarray) -> None:
    write_bytes_atomic(path, b"SCIZ" + data.tobytes(), force=True)


def _read_sciz(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    assert raw[:4] == b"SCIZ", "partial or foreign .sciz"
    return np.frombuffer(raw[4:], np.uint16).reshape(SHAPE)


def _write_tiff(path: Path, data: np.ndarray) -> None:
    write_image(path, data, axes="ZYX", force=True)


def _read_tiff(path: Path) -> np.ndarray:
    return tifffile.imread(path)


def _write_zarr(path: Path, data: np.ndarray) -> None:
    from napari_sciz.io.ome_zarr import write_ome_zarr

    regions = ((np.s_[z : z + 4], data[z : z + 4]) for z in range(0, SHAPE[0], 4))
    write_ome_zarr(path, SHAPE, data.dtype, regions, axes="ZYX", force=True)


def _read_zarr(path: Path) -> np.ndarray:
    import zarr

    return np.asarray(zarr.open_group(str(path), mode="r")["0"][...])


FORMATS: dict[str, tuple[str, Callable, Callable]] = {
    "sciz": ("out.sciz", _write_sciz, _read_sciz),
    "tiff": ("out.ome.tif", _write_tiff, _read_tiff),
    "zarr": ("out.ome.zarr", _write_zarr, _read_zarr),
}


def _rewrite_forever(kind: str, path: str, started, first_write) -> None:
    _, write, _ = FORMATS[kind]
    a, b = _contents()
    t0 = time.perf_counter()
    write(Path(path), b)
    first_write.value = time.perf_counter() - t0
    started.set()  # the kill's random moment counts from here, not from the fork
    i = 1
    while True:
        write(Path(path), b if i % 2 == 0 else a)
        i += 1


def _write_seconds(write: Callable, path: Path, data: np.ndarray) -> float:
    t0 = time.perf_counter()
    for _ in range(3):
        write(path, data)
    return (time.perf_counter() - t0) / 3


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_sigkill_during_write_leaves_old_or_new(tmp_path: Path, kind: str) -> None:
    if kind == "zarr":
        pytest.importorskip("zarr")
    name, write, read = FORMATS[kind]
    target = tmp_path / name
    a, b = _contents()
    one_write = _write_seconds(write, target, a)
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(f"{kind}-kills")
    seen = {"old/a": 0, "new/b": 0}
    for _ in range(KILLS):
        started, first_write = ctx.Event(), ctx.Value("d", 0.0)
        args = (kind, str(target), started, first_write)
        child = ctx.Process(target=_rewrite_forever, args=args, daemon=True)
        child.start()
        assert started.wait(60), "the writer did not start"
        # a forked child of a big test process can write slower than the parent measured
        time.sleep(rng.uniform(0.0, 3.0 * max(one_write, first_write.value)))
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        assert child.exitcode == -signal.SIGKILL
        got = read(target)
        if np.array_equal(got, a):
            seen["old/a"] += 1
        else:
            np.testing.assert_array_equal(got, b, err_msg="destination is neither old nor new")
            seen["new/b"] += 1
    print(f"{kind}: {KILLS} kills, one write {one_write * 1e3:.1f} ms, {seen}")
    assert seen["old/a"] and seen["new/b"], "kills did not land across whole writes"
    # what the killed writers left behind is tidied by the next writer (here: by hand)
    sweep_stale_temps(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_sweep_leaves_live_writers_alone(tmp_path: Path) -> None:
    target = tmp_path / "x.sciz"
    host = _owner_tag().rsplit("-", 1)[0]
    mine = tmp_path / f".x.sciz.{host}-{os.getpid()}.abc.tmp"
    mine.write_bytes(b"in progress")
    other_host = tmp_path / ".x.sciz.elsewhere-1.abc.tmp"
    other_host.write_bytes(b"another machine's write")
    ctx = multiprocessing.get_context("fork")
    dead = ctx.Process(target=os._exit, args=(0,))
    dead.start()
    dead.join()
    stale = tmp_path / f".x.sciz.{host}-{dead.pid}.abc.tmp"
    stale.mkdir()
    (stale / "chunk").write_bytes(b"x")
    assert sweep_stale_temps(target) == 1
    assert mine.exists() and other_host.exists() and not stale.exists()
