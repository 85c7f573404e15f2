"""``sciz compress`` of several inputs: each to its own ``.sciz`` file in one folder.

A facility compresses folders of stacks, not one file: ``sciz compress *.tif -o out/``
codes every input with the same options in one process (torch, the codecs and numba's
kernels are loaded once; with ``--workers N`` one Dask cluster serves every file). A file
that fails is reported and the others go on; ``--skip-existing`` makes a run that was
stopped resumable.
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
from ..io.ome_zarr import ZARR_EXTENSIONS
from .text import PROG

__all__ = ["compress_batch", "is_batch", "output_name"]


def output_name(path: str | Path) -> str:
    """The ``.sciz`` file name of an input: its name without its (possibly double)
    extension (``a.ome.tif`` and ``a.ome.zarr`` give ``a.sciz``)."""
    name = Path(str(path).rstrip("/\\")).name
    for ext in sorted((*SUPPORTED_EXTENSIONS, *ZARR_EXTENSIONS), key=len, reverse=True):
        if name.lower().endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)] + ".sciz"
    return name + ".sciz"


def _targets(inputs: list[str], folder: Path) -> list[Path]:
    """Where each input is written; two inputs of the same name are refused up front."""
    targets = [folder / output_name(p) for p in inputs]
    seen: dict[Path, str] = {}
    for inp, target in zip(inputs, targets, strict=True):
        if target in seen:
            raise InvalidInputError(
                f"{seen[target]} and {inp} would both be written to {target}; "
                "compress them into different folders"
            )
        seen[target] = inp
    return targets


def _check_batch(args: argparse.Namespace, folder: Path) -> None:
    """Options that hold for one input only, and the output folder."""
    if not folder.is_dir():
        if folder.suffix.lower() == ".sciz" or not folder.exists():
            raise InvalidInputError(
                f"with {len(args.input)} inputs, -o names the folder they are written to "
                f"(each as <name>.sciz); {folder} is not a folder"
                + ("" if folder.exists() or folder.suffix else " (create it first)")
            )
        raise InvalidInputError(f"-o {folder} is not a folder")
    if args.labels is not None and len(args.input) > 1:
        raise InvalidInputError("--labels belongs to one input; compress that file on its own")


@contextmanager
def _shared_cluster(args: argparse.Namespace) -> Iterator[None]:
    """One Dask client for every file of a distributed batch (``args.client``)."""
    if args.workers is None and args.scheduler is None:
        yield
        return
    from ..core.cluster import dask_client

    with dask_client(args.scheduler, args.workers) as client:
        args.client = client
        try:
            yield
        finally:
            args.client = None


def compress_batch(
    args: argparse.Namespace, compress_one: Callable[[argparse.Namespace], int]
) -> int:
    """Compress every input of ``args`` into the folder ``args.output``.

    Parameters
    ----------
    args : argparse.Namespace
        The ``compress`` command's options (``input`` a list).
    compress_one : callable
        Compresses the one input of a copy of ``args`` (``input`` and ``output`` set to one
        file); raises on failure.

    Returns
    -------
    int
        0 when every input was written (or skipped), 1 otherwise.
    """
    folder = Path(args.output)
    _check_batch(args, folder)
    inputs = [str(p) for p in args.input]
    targets = _targets(inputs, folder)
    failed: list[str] = []
    skipped = written = 0
    say = _Say(enabled=not args.json)
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
                compress_one(one)
            except (KeyboardInterrupt, CancelledError) as exc:  # (Ctrl-C: the batch stops)
                raise CancelledError(
                    f"cancelled while coding {inp} (not written); "
                    + _summary(written, skipped, failed, folder)
                ) from exc
            except (SciZError, OSError, MemoryError) as exc:
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                named = Path(inp).name in message  # (most messages name the file already)
                print(f"{PROG}: error: {'' if named else inp + ': '}{message}", file=sys.stderr)
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
    """Whether ``args`` asks for a batch: several inputs, or ``-o`` an existing folder."""
    return len(args.input) > 1 or Path(args.output).is_dir()
