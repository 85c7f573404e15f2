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

import ctypes
import errno
import os
import secrets
import shutil
import socket
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ..errors import OutputExistsError, OutputFolderError

__all__ = [
    "atomic_write",
    "check_output",
    "check_output_folder",
    "exchange_paths",
    "sweep_stale_temps",
    "temp_name",
    "write_bytes_atomic",
]

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
    OutputFolderError
        If the folder ``path`` would go in does not exist, is not a folder or is not writable.
    """
    target = Path(path)
    check_output_folder(target)
    for inp in inputs:
        if isinstance(inp, str | os.PathLike) and _same_file(target, Path(inp)):
            raise OutputExistsError(f"{target} is an input file; refusing to overwrite it")
    if target.is_dir():
        raise OutputExistsError(f"{target} exists and is a directory")
    if not force and os.path.lexists(target):
        raise OutputExistsError(f"{target} exists; use --force to overwrite")
    return target


def check_output_folder(path: PathLike) -> Path:
    """Check that the folder a new file ``path`` would go in exists and is writable.

    Parameters
    ----------
    path : str or os.PathLike
        The destination file (or store).

    Returns
    -------
    pathlib.Path
        The folder.

    Raises
    ------
    OutputFolderError
        If the folder does not exist, is not a folder, or this user may not create files in it.
    """
    folder = Path(path).absolute().parent
    if not folder.exists():
        raise OutputFolderError(f"no such folder: {folder} (create it first)")
    if not folder.is_dir():
        raise OutputFolderError(f"{folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputFolderError(f"no permission to write in {folder}")
    return folder


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


def _owner_tag() -> str:
    """``host-pid`` of this process, so a later writer can tell whose temporary files are stale."""
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:32]
    return f"{host or 'host'}-{os.getpid()}"


def temp_name(target: Path, suffix: str = ".tmp") -> Path:
    """A fresh hidden sibling of ``target`` tagged with this host and process id.

    Parameters
    ----------
    target : pathlib.Path
        The destination the temporary file or folder will replace.
    suffix : str
        ``.tmp`` for content being written, ``.old`` for a replaced store being removed.

    Returns
    -------
    pathlib.Path
        ``.<name>.<host>-<pid>.<random>.<suffix>`` in the destination's folder.
    """
    return target.parent / f".{target.name}.{_owner_tag()}.{secrets.token_hex(6)}{suffix}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists, owned by someone else
        return True
    return True


def sweep_stale_temps(target: Path) -> int:
    """Remove what writers of ``target`` on this host left when they were killed.

    A process killed while writing (SIGKILL, power loss of a child...) cannot clean up, so its
    temporary file, or the old Zarr store it was replacing, stays next to the destination. Only
    entries tagged with this host and the id of a process that no longer exists are removed;
    files of running writers, and of other hosts on a shared filesystem, are left alone.

    Parameters
    ----------
    target : pathlib.Path
        The destination.

    Returns
    -------
    int
        The number of entries removed.
    """
    host = _owner_tag().rsplit("-", 1)[0]
    prefix = f".{target.name}.{host}-"
    removed = 0
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return 0
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix) or not name.endswith((".tmp", ".old")):
            continue
        pid_text = name[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:  # pragma: no cover - raced with another sweeper
            pass
    return removed


def _create_temp(target: Path) -> tuple[BinaryIO, Path]:
    # mode "x": O_CREAT | O_EXCL with permissions 0o666 & ~umask, as for a normal open().
    sweep_stale_temps(target)
    for _ in range(100):  # pragma: no branch
        candidate = temp_name(target)
        try:
            return open(candidate, "x+b"), candidate  # closed by the caller
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
    raise FileExistsError(  # pragma: no cover
        errno.EEXIST, "cannot create a temporary file", str(target.parent)
    )


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one system call (Linux >= 3.15); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # pragma: no cover - glibc < 2.28, musl
        return False
    path_t, int_t = ctypes.c_char_p, ctypes.c_int
    renameat2.argtypes = [int_t, path_t, int_t, path_t, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False  # filesystem without RENAME_EXCHANGE
    raise OSError(err, os.strerror(err), str(b))


def exchange_paths(new: Path, target: Path) -> Path | None:
    """Put the folder ``new`` at ``target``, atomically where the system allows it.

    Parameters
    ----------
    new : pathlib.Path
        A complete folder (a Zarr store) next to ``target``.
    target : pathlib.Path
        The destination; replaced if it exists.

    Returns
    -------
    pathlib.Path or None
        Where the replaced folder now is (to be removed by the caller), or None when ``target``
        did not exist.

    Notes
    -----
    On Linux the two paths are swapped with ``renameat2(RENAME_EXCHANGE)``: at every instant
    ``target`` is either the old or the new store. Elsewhere the old store is first renamed
    aside, so a process killed between the two renames leaves no store at ``target``; the
    old one then survives next to it as ``.<name>.<host>-<pid>.<random>.old``.
    """
    if not os.path.lexists(target):
        os.rename(new, target)
        return None
    if _renameat2_exchange(new, target):
        return new  # now holds the old store
    backup = temp_name(target, ".old")
    os.rename(target, backup)
    os.rename(new, target)
    return backup


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
