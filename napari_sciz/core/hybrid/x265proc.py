"""x265 encodes in helper processes, so that a crash of the encoder library cannot end the caller.

The x265 bundled with PyAV reads memory it did not set on frames 64 pixels high or wide (the
same frames give run-to-run different streams; the base pads them, see
:meth:`~napari_sciz.core.hybrid.bases.HEVCBase._padded`) and has corrupted its heap on
narrower ones; the test suite saw it crash in the middle of a long session, taking the whole
process (napari, a CLI run, a Dask worker) with it. HEVC encodes therefore run in helper
processes: the frames go down a pipe, the stream comes back. A helper is started when every
helper is busy (so there are as many as threads coding HEVC at once), kept for the next
encodes and ended with the interpreter. If a helper dies, the encode is tried once more in
another; a second death is an :class:`X265Crashed` error, which the hybrid encoder's search
takes as "no HEVC for this block". Where no helper can start (a frozen application without a
Python interpreter, a PyAV the helper cannot import), encodes run in this process as before.

The same PyAV (so the same x265) codes the frames in the helper: the streams are
byte-identical to in-process encodes.

The helper runs this module (``python -m napari_sciz.core.hybrid.x265proc``); it imports
numpy, PyAV and the hybrid package's modules, not torch, and ignores Ctrl+C (it ends when
its input closes).
"""

from __future__ import annotations

import atexit
import json
import os
import struct
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import SciZError

__all__ = ["X265Crashed", "encode_frames", "encode_frames_here"]

#: the module the helper runs
_MODULE = "napari_sciz.core.hybrid.x265proc"
_LEN = struct.Struct("<Q")
_OK, _FAILED, _READY = b"\x00", b"\x01", b"R"


class X265Crashed(SciZError):
    """The x265 helper process died twice in a row on one encode."""


def encode_frames_here(codes: np.ndarray, pix_fmt: str, options: dict[str, Any]) -> bytes:
    """Code the frames ``codes`` (``(D, H, W)`` uint16) with libx265 through PyAV, here.

    Parameters
    ----------
    codes : numpy.ndarray
        The frames, ``uint16``, even height and width.
    pix_fmt : str
        ``"gray12le"`` or ``"gray10le"``.
    options : dict
        The codec context's options (``preset``, ``tune``, ``x265-params``).

    Returns
    -------
    bytes
        The HEVC elementary stream (every packet, flushed).
    """
    from fractions import Fraction

    import av

    z, h, w = codes.shape
    ctx = av.CodecContext.create("libx265", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, pix_fmt
    ctx.time_base, ctx.framerate = Fraction(1, 25), Fraction(25, 1)
    ctx.options = dict(options)
    out = bytearray()
    for i in range(z):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(codes[i]), format=pix_fmt)
        frame.pts = i
        for packet in ctx.encode(frame):
            out += bytes(packet)
    for packet in ctx.encode(None):
        out += bytes(packet)
    return bytes(out)


class _Helper:
    """One helper process and its pipes; :class:`OSError` if it cannot start."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parents[3])  # the folder holding napari_sciz
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", _MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.read(1) != _READY:  # it could not import what it needs
            self.close()
            raise OSError("the x265 helper process did not start")

    def encode(self, codes: np.ndarray, pix_fmt: str, options: dict[str, Any]) -> bytes:
        """The stream; :class:`OSError` or :class:`EOFError` when the helper is gone, and
        :class:`RuntimeError` with its message when x265 refused the frames."""
        codes = np.ascontiguousarray(codes, dtype=np.uint16)
        head = json.dumps({"shape": codes.shape, "pix_fmt": pix_fmt, "options": options}).encode()
        pipe_in, pipe_out = self.proc.stdin, self.proc.stdout
        assert pipe_in is not None and pipe_out is not None
        pipe_in.write(_LEN.pack(len(head)) + head)
        pipe_in.write(memoryview(codes).cast("B"))
        pipe_in.flush()
        status = _read_exactly(pipe_out, 1)
        body = _read_exactly(pipe_out, _LEN.unpack(_read_exactly(pipe_out, _LEN.size))[0])
        if status == _FAILED:
            raise RuntimeError(body.decode("utf-8", "replace"))
        return body

    def close(self) -> None:
        """End the helper (it exits when its input closes)."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):  # pragma: no cover - a stuck helper
            self.proc.kill()
            self.proc.wait()


def _read_exactly(pipe: Any, n: int) -> bytes:
    data = pipe.read(n)
    if data is None or len(data) != n:
        raise EOFError("the x265 helper process ended")
    return data


#: helpers not in use (one is started whenever every helper is busy)
_idle: list[_Helper] = []
_idle_lock = threading.Lock()
#: False once a helper could not start: x265 then runs in this process
_helpers_work = True


def _forget_inherited() -> None:
    """In a forked child: the parent's helpers are the parent's (their pipes closed here)."""
    global _idle_lock
    _idle_lock = threading.Lock()
    for helper in _idle:
        for pipe in (helper.proc.stdin, helper.proc.stdout):
            if pipe is not None:
                pipe.close()
    _idle.clear()


if hasattr(os, "register_at_fork"):  # (POSIX)
    os.register_at_fork(after_in_child=_forget_inherited)


@atexit.register
def _close_helpers() -> None:
    with _idle_lock:
        helpers, _idle[:] = list(_idle), []
    for helper in helpers:
        helper.close()


def _acquire() -> _Helper | None:
    """An idle helper, or a new one; None where helpers cannot run (x265 in this process)."""
    global _helpers_work
    with _idle_lock:
        if _idle:
            return _idle.pop()
    if not _helpers_work or not sys.executable or getattr(sys, "frozen", False):
        return None
    try:
        return _Helper()
    except OSError:
        _helpers_work = False
        warnings.warn(
            "napari-sciz: the x265 helper process could not start; HEVC is coded in this process",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _release(helper: _Helper) -> None:
    with _idle_lock:
        _idle.append(helper)


def encode_frames(codes: np.ndarray, pix_fmt: str, options: dict[str, Any]) -> bytes:
    """Code the frames ``codes`` with libx265 in a helper process.

    Parameters are those of :func:`encode_frames_here`. A helper that dies is replaced and
    the encode tried once more; :class:`X265Crashed` if that one dies too. Where helpers cannot
    start, the frames are coded in this process.
    """
    for _ in range(2):
        helper = _acquire()
        if helper is None:
            return encode_frames_here(codes, pix_fmt, options)
        try:
            stream = helper.encode(codes, pix_fmt, options)
        except (OSError, EOFError):
            helper.proc.kill()
            helper.proc.wait()
            continue
        except RuntimeError:  # x265 refused the frames; the helper answered and stays usable
            _release(helper)
            raise
        except BaseException:
            helper.close()  # (an interrupted request leaves the pipe mid-message)
            raise
        _release(helper)
        return stream
    raise X265Crashed(
        "the HEVC encoder (x265) crashed twice on this block; it is coded without HEVC"
    )


def _serve() -> None:
    """The helper's loop: read requests from stdin until it closes, answer on stdout."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the caller's; we end with stdin
    stdin = sys.stdin.buffer
    stdout = os.fdopen(os.dup(1), "wb")  # the answers; anything printed goes to stderr
    os.dup2(2, 1)
    import av  # noqa: F401 - (before saying ready: a helper without PyAV never starts)

    stdout.write(_READY)
    stdout.flush()
    while True:
        size = stdin.read(_LEN.size)
        if len(size) != _LEN.size:
            return
        request = json.loads(stdin.read(_LEN.unpack(size)[0]))
        shape = tuple(int(n) for n in request["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        raw = stdin.read(2 * count)
        if len(raw) != 2 * count:
            return
        codes = np.frombuffer(raw, dtype=np.uint16).reshape(shape)
        try:
            body, status = encode_frames_here(codes, request["pix_fmt"], request["options"]), _OK
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            body, status = f"{type(exc).__name__}: {exc}".encode(), _FAILED
        stdout.write(status + _LEN.pack(len(body)) + body)
        stdout.flush()


if __name__ == "__main__":
    _serve()
