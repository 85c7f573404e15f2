"""Atomic file output shared by every writer in napari-sciz.

A file written through :func:`atomic_write` appears complete or not at all: the content goes to a
temporary file in the destination's directory (created exclusively, with the permissions
:func:`open` would give), which is flushed, fsync'ed and moved into place. With ``force=False``
it is hard-linked into place, which fails if the destination appeared meanwhile, so a
concurrently created file is never clobbered (on filesystems without hard links it falls back to
:func:`os.replace` after a last existence check). On any exception, ``KeyboardInterrupt``
included, the temporary file is removed and the destination is left untouched.

:func:`write_bytes_atomic` is the bytes variant (the ``.sciz`` container); image writers use
:func:`atomic_write` and stream into the yielded file object, so large arrays are never turned into
one ``bytes`` object.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ..errors import OutputExistsError

__all__ = ["atomic_write", "check_output", "write_bytes_atomic"]

PathLike = str | os.PathLike[str]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.absolute() == b.absolute()


def check_output(path: PathLike, *, force: bool = False, inputs: Iterable[object] = ()) -> Path:
    """Check that ``path`` may be written, without writing anything.

    Parameters
    ----------
    path : str or os.PathLike
        The destination.
    force : bool, default False
        Whether an existing destination may be overwritten.
    inputs : iterable
        Files that must never be overwritten, even with ``force``. Items that are not paths
        (``bytes`` sources, arrays...) are ignored.

    Returns
    -------
    pathlib.Path
        ``Path(path)``.

    Raises
    ------
    OutputExistsError
        If ``path`` is (the same file as) one of ``inputs``, is a directory, or exists and
        ``force`` is False.
    """
    target = Path(path)
    for inp in inputs:
        if isinstance(inp, str | os.PathLike) and _same_file(target, Path(inp)):
            raise OutputExistsError(f"{target} is an input file; refusing to overwrite it")
    if target.is_dir():
        raise OutputExistsError(f"{target} exists and is a directory")
    if not force and os.path.lexists(target):
        raise OutputExistsError(f"{target} exists; use --force to overwrite")
    return target


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # pragma: no cover - directories cannot be fsync'ed on Windows
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse
        pass
    finally:
        os.close(fd)


def _create_temp(target: Path) -> tuple[BinaryIO, Path]:
    # mode "x": O_CREAT | O_EXCL with permissions 0o666 & ~umask, as for a normal open().
    for _ in range(100):  # pragma: no branch
        candidate = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            return open(candidate, "x+b"), candidate  # closed by the caller
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
    raise FileExistsError(  # pragma: no cover
        errno.EEXIST, "cannot create a temporary file", str(target.parent)
    )


def _commit(tmp: Path, target: Path, force: bool) -> None:
    if force:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)  # atomic, and fails if target appeared meanwhile
    except FileExistsError:
        raise OutputExistsError(f"{target} exists; use --force to overwrite") from None
    except (OSError, NotImplementedError):  # no hard links on this filesystem
        if os.path.lexists(target):
            raise OutputExistsError(f"{target} exists; use --force to overwrite") from None
        os.replace(tmp, target)
    else:
        os.unlink(tmp)


@contextmanager
def atomic_write(
    path: PathLike, *, force: bool = False, inputs: Iterable[object] = ()
) -> Iterator[BinaryIO]:
    """Open a temporary binary file that replaces ``path`` when the block exits normally.

    Parameters
    ----------
    path : str or os.PathLike
        Destination. Its directory must exist.
    force : bool, default False
        Overwrite ``path`` if it exists.
    inputs : iterable
        Files that must never be overwritten, even with ``force`` (see :func:`check_output`).

    Yields
    ------
    BinaryIO
        A seekable binary file object opened for writing on the temporary file.

    Raises
    ------
    OutputExistsError
        See :func:`check_output`; also raised if ``path`` appears while writing and ``force``
        is False.
    OSError
        If the file cannot be written (missing directory, permission denied, disk full...); the
        message names ``path``, not the temporary file.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> out = os.path.join(tempfile.mkdtemp(), "a.npy")
    >>> with atomic_write(out) as fh:
    ...     np.save(fh, np.arange(3))
    >>> np.load(out).tolist()
    [0, 1, 2]
    """
    target = check_output(path, force=force, inputs=inputs)
    tmp: Path | None = None
    try:
        fh, tmp = _create_temp(target)
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _commit(tmp, target, force)
        tmp = None
        _fsync_dir(target.parent)
    except OutputExistsError:
        raise
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:  # pragma: no cover
                pass


def write_bytes_atomic(
    path: PathLike,
    data: bytes | bytearray | memoryview,
    *,
    force: bool = False,
    inputs: Iterable[object] = (),
) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination. Its directory must exist.
    data : bytes-like
        The complete file contents.
    force : bool, default False
        Overwrite ``path`` if it exists.
    inputs : iterable
        Files that must never be overwritten, even with ``force``.

    Returns
    -------
    pathlib.Path
        ``Path(path)``.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``force`` is False, is a directory, or is one of ``inputs``.
    OSError
        If the file cannot be written; the message names ``path``.
    """
    with atomic_write(path, force=force, inputs=inputs) as fh:
        fh.write(data)
    return Path(path)
