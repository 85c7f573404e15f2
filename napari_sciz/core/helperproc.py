"""Third-party codec calls in helper processes, so that a crash there cannot end the caller.

Two libraries napari-sciz calls can take the whole process down with them: the x265 bundled
with PyAV has corrupted its heap on some frame sizes (:mod:`.hybrid.x265proc`), and SZ3's
decoder aborts or segfaults on damaged or hostile streams (seen on 71 of 300 streams with a
few bytes changed; :mod:`.lossless.szblock`). Such calls run in helper processes: the request
goes down a pipe, the answer comes back. A helper is started when every helper is busy (so
there are as many as threads calling at once), kept for the next calls and ended with the
interpreter. A call may bound the helper's memory (its address space grows by at most that
much during the call; Linux) and its time (a watchdog thread kills the helper when it does not
answer: pipes cannot be waited on with a timeout on Windows). A helper that ended while idle is
not handed out again.

A *job* is a function ``job(head: dict, body: bytes) -> bytes`` named as ``"module:function"``;
the helper imports its module on first use. Errors the job raises come back as
:class:`JobFailed` (the helper stays usable); an :class:`ImportError` there means the helper
cannot run this job (:class:`HelperUnavailable`, as when no helper can start: a frozen
application without a Python interpreter). A helper that dies or runs past its time is
:class:`HelperDied`.

The helper runs this module (``python -m napari_sciz.core.helperproc``); it imports numpy and
the jobs' modules, never torch, and ignores Ctrl+C (it ends when its input closes).
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["HelperDied", "HelperUnavailable", "JobFailed", "call", "wait_job"]

#: the module the helper runs
_MODULE = "napari_sciz.core.helperproc"
_LEN = struct.Struct("<Q")
_OK, _FAILED, _UNAVAILABLE, _READY = b"\x00", b"\x01", b"\x02", b"R"


class HelperDied(OSError):
    """The helper process ended during the call, or did not answer in time."""


class HelperUnavailable(RuntimeError):
    """No helper process can run the job here (the caller may run it in its own process)."""


class JobFailed(RuntimeError):
    """The job raised an error in the helper (its message); the helper is still usable."""


class _Helper:
    """One helper process and its pipes; :class:`OSError` if it cannot start."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parents[2])  # the folder holding napari_sciz
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        env.setdefault("OPENBLAS_NUM_THREADS", "1")  # (no BLAS work here; less to map)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", _MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert self.proc.stdout is not None
        self.expired = False
        if self.proc.stdout.read(1) != _READY:
            self.kill()
            raise OSError("the helper process did not start")

    def call(
        self, job: str, head: dict[str, Any], body: bytes | memoryview, timeout: float | None,
        memory: int | None,
    ) -> tuple[bytes, bytes]:  # fmt: skip
        """The job's status and answer; :class:`OSError` or :class:`EOFError` when the
        helper is gone, :class:`TimeoutError` when it did not answer in ``timeout`` s (a
        watchdog then killed it: pipes cannot be waited on with a timeout on every platform)."""
        request = json.dumps({"job": job, "head": head, "memory": memory}).encode()
        pipe_in, pipe_out = self.proc.stdin, self.proc.stdout
        assert pipe_in is not None and pipe_out is not None
        fired = threading.Event()

        def expire() -> None:
            fired.set()
            self.proc.kill()

        watchdog = None if timeout is None else threading.Timer(timeout, expire)
        if watchdog is not None:
            watchdog.daemon = True
            watchdog.start()
        try:
            pipe_in.write(_LEN.pack(len(request)) + request + _LEN.pack(len(body)))
            pipe_in.write(body)
            pipe_in.flush()
            status = _read_exactly(pipe_out, 1)
            size = _LEN.unpack(_read_exactly(pipe_out, _LEN.size))[0]
            return status, _read_exactly(pipe_out, size)
        except (OSError, EOFError):
            if fired.is_set():
                raise TimeoutError from None
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()
                self.expired = fired.is_set()  # (it may have fired as the answer came)

    def close(self) -> None:
        """End the helper (it exits when its input closes)."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):  # pragma: no cover - a stuck helper
            self.kill()

    def kill(self) -> None:
        """End the helper now."""
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:  # pragma: no cover - a pipe already broken
                    pass


def _read_exactly(pipe: Any, n: int) -> bytes:
    data = pipe.read(n)
    if data is None or len(data) != n:
        raise EOFError("the helper process ended")
    return data


#: helpers not in use (one is started whenever every helper is busy)
_idle: list[_Helper] = []
_idle_lock = threading.Lock()
#: False once a helper could not start: callers then run their jobs themselves
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


def _acquire() -> _Helper:
    """An idle helper, or a new one; :class:`HelperUnavailable` where helpers cannot run."""
    global _helpers_work
    with _idle_lock:
        while _idle:
            helper = _idle.pop()
            if helper.proc.poll() is None:
                return helper
            helper.kill()  # (it ended while idle: killed from outside)
    if not _helpers_work or not sys.executable or getattr(sys, "frozen", False):
        raise HelperUnavailable("helper processes cannot run here")
    try:
        return _Helper()
    except OSError as exc:
        _helpers_work = False
        raise HelperUnavailable("the helper process could not start") from exc


def _release(helper: _Helper) -> None:
    with _idle_lock:
        _idle.append(helper)


def call(
    job: str,
    head: dict[str, Any],
    body: bytes | memoryview = b"",
    *,
    timeout: float | None = None,
    memory: int | None = None,
) -> bytes:
    """Run ``job`` in a helper process.

    Parameters
    ----------
    job : str
        ``"module:function"``; the function takes ``(head, body)`` and returns bytes.
    head : dict
        The job's parameters (JSON).
    body : bytes
        The job's data.
    timeout : float, optional
        Seconds the helper has to answer; it is killed after that (:class:`HelperDied`).
    memory : int, optional
        Bytes the helper's address space may grow by during the job (POSIX with
        ``/proc``: Linux; elsewhere unbounded). A job over it fails (:class:`JobFailed` for a
        Python ``MemoryError``, :class:`HelperDied` when the library aborts).

    Returns
    -------
    bytes
        The job's answer.

    Raises
    ------
    HelperUnavailable
        No helper can run the job here.
    HelperDied
        The helper ended during the job or ran past ``timeout``.
    JobFailed
        The job raised an error (its message).
    """
    helper = _acquire()
    try:
        status, answer = helper.call(job, head, body, timeout, memory)
    except TimeoutError as exc:
        helper.kill()
        raise HelperDied(f"the helper process did not answer in {timeout:.0f} s") from exc
    except (OSError, EOFError) as exc:
        helper.kill()
        raise HelperDied("the helper process ended during the job") from exc
    except BaseException:
        helper.kill()  # (an interrupted request leaves the pipe mid-message)
        raise
    if helper.expired:
        helper.kill()
    else:
        _release(helper)
    if status == _UNAVAILABLE:
        raise HelperUnavailable(answer.decode("utf-8", "replace"))
    if status == _FAILED:
        raise JobFailed(answer.decode("utf-8", "replace"))
    return answer


def wait_job(head: dict[str, Any], body: bytes) -> bytes:
    """A job that waits ``head["seconds"]`` (default a minute: a job that hangs) and answers
    ``body`` (checks of the time limit)."""
    import time

    time.sleep(float(head.get("seconds", 60.0)))
    return body


def _address_space() -> int | None:
    """This process's virtual memory size in bytes (Linux), else None."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _run(job: str, head: dict[str, Any], body: bytes, memory: int | None) -> tuple[bytes, bytes]:
    """One job, in the helper: its status and answer."""
    try:
        module, name = job.split(":")
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        return _UNAVAILABLE, f"{type(exc).__name__}: {exc}".encode()
    limit = None
    if memory is not None and (now := _address_space()) is not None:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)
        hard = limit[1]
        soft = now + int(memory)
        resource.setrlimit(resource.RLIMIT_AS, (soft if hard < 0 else min(soft, hard), hard))
    try:
        return _OK, bytes(function(head, body))
    except ImportError as exc:  # the job needs what this interpreter cannot import
        return _UNAVAILABLE, f"{type(exc).__name__}: {exc}".encode()
    except Exception as exc:  # noqa: BLE001 - reported to the caller
        return _FAILED, f"{type(exc).__name__}: {exc}".encode()
    finally:
        if limit is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, limit)


def _serve() -> None:
    """The helper's loop: read requests from stdin until it closes, answer on stdout."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the caller's; we end with stdin
    stdin = sys.stdin.buffer
    stdout = os.fdopen(os.dup(1), "wb")  # the answers; anything printed goes to stderr
    os.dup2(2, 1)
    import numpy  # noqa: F401 - every job uses it

    stdout.write(_READY)
    stdout.flush()
    while True:
        size = stdin.read(_LEN.size)
        if len(size) != _LEN.size:
            return
        request = json.loads(stdin.read(_LEN.unpack(size)[0]))
        n = _LEN.unpack(stdin.read(_LEN.size))[0]
        body = stdin.read(n)
        if len(body) != n:
            return
        status, answer = _run(request["job"], request["head"], body, request.get("memory"))
        stdout.write(status + _LEN.pack(len(answer)) + answer)
        stdout.flush()


if __name__ == "__main__":
    _serve()
