"""The ``sciz`` command line: compress, decompress and inspect ``.sciz`` files.

::

    sciz compress IN -o OUT.sciz --ratio R [--mode auto|lossy|hybrid] [--device auto|cpu|cuda|mps]
                     [--steps N | --budget SECONDS | --effort PRESET] [--seed S] [--force] [--json]
                     [--guidance none|segmentation|perceptual] [--labels LABELS.tif]
    sciz compress IN -o OUT.sciz --mode lossless|bounded [--max-error E] [--force] [--json]
    sciz compress IN [IN ...] -o FOLDER/ [options] [--skip-existing]   (one .sciz per input)
    sciz decompress IN.sciz -o OUT.tif [--roi "z0:z1,y0:y1,x0:x1"] [--scale S] [--force]
    sciz decompress IN.sciz [IN.sciz ...] -o FOLDER/ [--format tif|ome.tif|npy|ome.zarr]
    sciz info IN.sciz [IN.sciz ...] [--json]
    sciz bench ...        (napari_sciz.bench.run)
    sciz demo ...         (napari_sciz._demo)

Every user error (:class:`~napari_sciz.errors.SciZError`, :class:`OSError`, :class:`MemoryError`)
prints one line ``sciz: error: <message>`` to stderr and exits with status 1; usage errors exit
with 2 (argparse); Ctrl-C exits with 130 ("cancelled; no output written"). ``--debug`` shows the
traceback instead.

This module never imports Qt, napari or magicgui, and imports torch only through the codec
(:mod:`napari_sciz.core.api`), lazily, when a command needs it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from ..errors import CancelledError, SciZError
from .parser import build_parser
from .text import _CANCELLED, PROG

__all__ = ["PROG", "build_parser", "main"]

_DELEGATES = {"bench": "napari_sciz.bench.run", "demo": "napari_sciz._demo"}


def _delegate(command: str, argv: list[str]) -> int:
    module_name = _DELEGATES[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise SciZError(
                f"the '{command}' command is not available in this installation "
                f"({module_name} is missing)"
            ) from exc
        raise SciZError(
            f"the '{command}' command needs the package '{missing}', which is not installed"
        ) from exc
    entry = getattr(module, "main", None)
    if not callable(entry):
        raise SciZError(f"the '{command}' command is not available ({module_name} has no main)")
    code = entry(argv)
    return int(code) if code is not None else 0


def _error(message: str) -> None:
    lines = str(message).strip().splitlines()
    print(f"{PROG}: error: {lines[0] if lines else 'unknown error'}", file=sys.stderr)


def _os_error_message(exc: OSError) -> str:
    if exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename is not None else exc.strerror
    return str(exc) or type(exc).__name__


def _silence_stdout() -> None:
    """Point standard output at the null device, so that the interpreter's final flush of a
    closed pipe does not print a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # (no file descriptor: an in-memory stream)
        pass


def _split_delegate(argv: list[str]) -> tuple[list[str], str, list[str]] | None:
    """Return (global options, command, rest) when the command is ``bench`` or ``demo``."""
    for i, token in enumerate(argv):
        if not token.startswith("-"):
            if token in _DELEGATES:
                return argv[:i], token, argv[i + 1 :]
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sciz`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 1 for errors, 2 for usage errors, 130 when cancelled.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    delegate = _split_delegate(args_list)
    if delegate is not None:
        global_args, command, rest = delegate
        args = parser.parse_args([*global_args, command])
    else:
        args = parser.parse_args(args_list)
    debug = bool(args.debug)
    try:
        if delegate is not None:
            return _delegate(delegate[1], delegate[2])
        return int(args.handler(args))
    except KeyboardInterrupt:
        if debug:
            raise
        _error(_CANCELLED)
        return 130
    except CancelledError as exc:
        if debug:
            raise
        _error(str(exc) or _CANCELLED)
        return 130
    except MemoryError as exc:
        if debug:
            raise
        _error(f"out of memory{': ' + str(exc) if str(exc) else ''}")
        return 1
    except SciZError as exc:
        if debug:
            raise
        _error(str(exc) or type(exc).__name__)
        return 1
    except BrokenPipeError:
        # whoever read the output went away (``sciz info F | head``): nothing to report
        _silence_stdout()
        return 141  # (128 + SIGPIPE, as a shell reports it)
    except OSError as exc:
        if debug:
            raise
        _error(_os_error_message(exc))
        return 1
    except RuntimeError as exc:
        # torch.OutOfMemoryError (a RuntimeError) without importing torch here
        if debug or type(exc).__name__ != "OutOfMemoryError":
            raise
        _error("out of GPU memory; try a smaller input or --device cpu")
        return 1
