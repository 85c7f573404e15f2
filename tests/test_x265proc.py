"""x265 in helper processes: same streams as in this process, crashes contained."""

from __future__ import annotations

import os

import numpy as np
import pytest

av = pytest.importorskip("av")

from napari_sciz.core import helperproc  # noqa: E402
from napari_sciz.core.hybrid import basecodec, bases, x265proc  # noqa: E402
from napari_sciz.core.hybrid.search import encode_to_size  # noqa: E402
from napari_sciz.errors import FormatError  # noqa: E402

if "libx265" not in av.codecs_available:  # pragma: no cover - PyAV without x265
    pytest.skip("PyAV has no libx265", allow_module_level=True)

PARAMS = "crf=24:pools=1:frame-threads=1:log-level=error:asm=sse4.2"
OPTIONS = {"preset": "medium", "tune": "psnr", "x265-params": PARAMS}


def _frames(seed: int = 0, shape: tuple[int, int, int] = (5, 96, 80)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(np.cumsum(rng.normal(0, 3, shape), axis=1), axis=2)
    return np.clip(smooth - smooth.min(), 0, 4095).astype(np.uint16)


def test_helper_streams_equal_the_streams_coded_here() -> None:
    codes = _frames()
    assert x265proc.encode_frames(codes, "gray12le", OPTIONS) == x265proc.encode_frames_here(
        codes, "gray12le", OPTIONS
    )
    block = _frames(1).astype(np.float64)
    stream = bases.HEVCBase().encode(block, 20.0)
    assert np.abs(bases.HEVCBase().decode(stream, block.shape) - block).max() < 64


def test_a_helper_that_died_is_replaced() -> None:
    codes = _frames(2)
    expected = x265proc.encode_frames(codes, "gray12le", OPTIONS)  # leaves an idle helper
    with helperproc._idle_lock:
        helpers = list(helperproc._idle)
    assert helpers
    for helper in helpers:
        helper.proc.kill()
        helper.proc.wait()
    assert x265proc.encode_frames(codes, "gray12le", OPTIONS) == expected


def test_two_deaths_are_a_clear_error_and_hevc_is_skipped(monkeypatch) -> None:
    def dies(self, *args, **kwargs):
        self.proc.kill()
        raise EOFError("the helper process ended")

    monkeypatch.setattr(helperproc._Helper, "call", dies)
    with pytest.raises(x265proc.X265Crashed, match="crashed or hung twice"):
        x265proc.encode_frames(_frames(3), "gray12le", OPTIONS)
    block = _frames(4).astype(np.float64)
    assert encode_to_size(bases.HEVCBase(), block, 2000) is None  # the search skips HEVC


def test_an_encode_that_hangs_ends_its_helper_and_is_a_clear_error(monkeypatch) -> None:
    """x265 once spun for minutes in a flush (session 61); an encode past its time ends the
    helper, is tried once more, and a second hang is the same clear error as two crashes."""
    import time

    monkeypatch.setattr(x265proc, "_JOB", "napari_sciz.core.helperproc:wait_job")
    monkeypatch.setattr(x265proc, "encode_timeout", lambda voxels: 0.5)
    started = time.perf_counter()
    with pytest.raises(x265proc.X265Crashed, match="hung twice"):
        x265proc.encode_frames(_frames(7), "gray12le", OPTIONS)
    assert time.perf_counter() - started < 30.0
    monkeypatch.undo()
    assert x265proc.encode_timeout(4 * 2**20) == pytest.approx(150.0)  # (4 Mi voxels)


def test_without_a_working_helper_x265_runs_here(monkeypatch) -> None:
    monkeypatch.setattr(helperproc, "_MODULE", "napari_sciz.no_such_module")
    monkeypatch.setattr(helperproc, "_helpers_work", True)
    monkeypatch.setattr(helperproc, "_idle", [])
    monkeypatch.setattr(x265proc, "_helpers_work", True)
    codes = _frames(5)
    with pytest.warns(RuntimeWarning, match="could not start"):
        stream = x265proc.encode_frames(codes, "gray12le", OPTIONS)
    assert stream == x265proc.encode_frames_here(codes, "gray12le", OPTIONS)
    assert x265proc._helpers_work is False


def test_frames_of_one_coding_unit_are_coded_padded_and_old_files_still_decode() -> None:
    hevc = bases.HEVCBase()
    assert hevc._padded((4, 64, 64)) == (66, 66) and hevc._padded((4, 65, 127)) == (66, 128)
    block = _frames(6, (4, 64, 64)).astype(np.float64)
    stream = hevc.encode(block, 12.0)
    assert np.abs(hevc.decode(stream, block.shape) - block).max() < 40
    # a file written before: 64x64 frames (coded here through the helper)
    codes, side = basecodec._scaled(block, 4095)
    options = {"preset": "medium", "tune": "psnr", "x265-params": "crf=12:" + PARAMS[7:]}
    legacy = side + x265proc.encode_frames(codes, "gray12le", options)
    assert np.abs(hevc.decode(legacy, block.shape) - block).max() < 40
    with pytest.raises(FormatError, match="does not match"):
        hevc.decode(stream, (4, 70, 64))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_a_forked_child_starts_its_own_helpers() -> None:
    codes = _frames(7)
    expected = x265proc.encode_frames(codes, "gray12le", OPTIONS)  # the parent's helper idles
    pid = os.fork()
    if pid == 0:  # the child: its own helper, never the parent's pipes
        try:
            ok = not helperproc._idle and x265proc.encode_frames(codes, "gray12le", OPTIONS)
            os._exit(0 if ok == expected else 1)
        except BaseException:  # noqa: BLE001
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert helperproc._idle and x265proc.encode_frames(codes, "gray12le", OPTIONS) == expected
