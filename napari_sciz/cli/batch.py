"""``sciz compress`` or ``decompress`` of several inputs: each to its own file in one folder.

A facility compresses folders of stacks, not one file: ``sciz compress *.tif -o out/``
codes every input with the same options in one process (torch, the codecs and numba's
kernels are loaded once; with ``--workers N`` one Dask cluster serves every file), and
``sciz decompress out/*.sciz -o restored/`` decodes an archive back. A file that fails is
reported and the others go on; ``--skip-existing`` makes a run that was stopped resumable.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from ..errors import CancelledError, InvalidInputError, SciZError
from ..io.formats import SUPPORTED_EXTENSIONS
from ..io.ome_zarr import ZARR_EXTENSIONS, is_zarr_path
from .text import PROG, file_error

__all__ = ["is_batch", "output_name", "run_batch"]

#: what an input's name ends in, longest first (stripped from the output's name)
_ENDINGS = sorted((*SUPPORTED_EXTENSIONS, *ZARR_EXTENSIONS, ".sciz"), key=len, reverse=True)


def output_name(path: str | Path, suffix: str = ".sciz") -> str:
    """The name of an input's output: its name without its (possibly double) extension,
    then ``suffix`` (``a.ome.tif`` and ``a.ome.zarr`` give ``a.sciz``)."""
    name = Path(str(path).rstrip("/\\")).name
    for ext in _ENDINGS:
        if name.lower().endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)] + suffix
    return name + suffix


def _targets(inputs: list[str], folder: Path, suffix: str) -> list[Path]:
    """Where each input is written; two inputs of the same name are refused up front."""
    targets = [folder / output_name(p, suffix) for p in inputs]
    seen: dict[Path, str] = {}
    for inp, target in zip(inputs, targets, strict=True):
        if target in seen:
            raise InvalidInputError(
                f"{seen[target]} and {inp} would both be written to {target}; "
                "compress them into different folders"
            )
        seen[target] = inp
    return targets


def _check_batch(args: argparse.Namespace, folder: Path, suffix: str) -> None:
    """Options that hold for one input only, and the output folder."""
    if not folder.is_dir():
        if folder.suffix or not folder.exists():
            raise InvalidInputError(
                f"with {len(args.input)} inputs, -o names the folder they are written to "
                f"(each as <name>{suffix}); {folder} is not a folder"
                + ("" if folder.exists() or folder.suffix else " (create it first)")
            )
        raise InvalidInputError(f"-o {folder} is not a folder")
    if getattr(args, "labels", None) is not None and len(args.input) > 1:
        raise InvalidInputError("--labels belongs to one input; compress that file on its own")


@contextmanager
def _shared_cluster(args: argparse.Namespace) -> Iterator[None]:
    """One Dask client for every file of a distributed batch (``args.client``)."""
    if getattr(args, "workers", None) is None and getattr(args, "scheduler", None) is None:
        yield
        return
    from ..core.cluster import dask_client

    with dask_client(args.scheduler, args.workers) as client:
        args.client = client
        try:
            yield
        finally:
            args.client = None


def run_batch(
    args: argparse.Namespace, one_file: Callable[[argparse.Namespace], int], suffix: str
) -> int:
    """Compress or decompress every input of ``args`` into the folder ``args.output``.

    Parameters
    ----------
    args : argparse.Namespace
        The command's options (``input`` a list).
    one_file : callable
        Codes the one input of a copy of ``args`` (``input`` and ``output`` set to one
        file); raises on failure.
    suffix : str
        The outputs' extension (``".sciz"``, ``".tif"``...).

    Returns
    -------
    int
        0 when every input was written (or skipped), 1 otherwise.
    """
    folder = Path(args.output)
    _check_batch(args, folder, suffix)
    inputs = [str(p) for p in args.input]
    targets = _targets(inputs, folder, suffix)
    failed: list[str] = []
    skipped = written = 0
    say = _Say(enabled=not getattr(args, "json", False))
    with _shared_cluster(args) if len(inputs) > 1 else nullcontext():
        for i, (inp, target) in enumerate(zip(inputs, targets, strict=True), start=1):
            if target.exists() and args.skip_existing:
                say(f"[{i}/{len(inputs)}] {inp}: {target} exists, skipped")
                skipped += 1
                continue
            say(f"[{i}/{len(inputs)}] {inp} -> {target}")
            one = copy.copy(args)
            one.input, one.output = inp, str(target)
            try:
                one_file(one)
            except (KeyboardInterrupt, CancelledError) as exc:  # (Ctrl-C: the batch stops)
                raise CancelledError(
                    f"cancelled during {inp} (not written); "
                    + _summary(written, skipped, failed, folder)
                ) from exc
            except (SciZError, OSError, MemoryError) as exc:
                print(file_error(inp, exc), file=sys.stderr)
                failed.append(inp)
                continue
            written += 1
    say(_summary(written, skipped, failed, folder))
    return 1 if failed else 0


def _summary(written: int, skipped: int, failed: list[str], folder: Path) -> str:
    """The batch's last line."""
    parts = [f"{written} file{'s' if written != 1 else ''} written to {folder}"]
    if skipped:
        parts.append(f"{skipped} skipped (already there)")
    if failed:
        parts.append(f"{len(failed)} failed: {', '.join(Path(p).name for p in failed)}")
    return "; ".join(parts)


class _Say:
    """Progress lines of the batch on stderr (none with ``--json``: stdout has the
    summaries, one JSON object per line)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, line: str) -> None:
        if self.enabled:
            print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def is_batch(args: argparse.Namespace) -> bool:
    """Whether ``args`` asks for a batch: several inputs, or ``-o`` an existing folder (that
    is not a Zarr store: a store is one image)."""
    out = Path(args.output)
    return len(args.input) > 1 or (out.is_dir() and not is_zarr_path(out))
