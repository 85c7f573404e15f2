"""The benchmark's data: where the shared folder is and the volumes in it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["find_data_dir", "list_volumes"]


def find_data_dir(cwd: Path | None = None) -> Path | None:
    """Locate the shared ``data`` folder.

    Looks, in order, at the ``shared/data`` folder beside the repository that holds this package,
    ``../shared/data`` and ``shared/data`` relative to ``cwd``.

    Parameters
    ----------
    cwd : Path, optional
        Directory to resolve relative candidates against (default: the current directory).

    Returns
    -------
    Path or None
        The first candidate that is a directory.
    """
    cwd = Path.cwd() if cwd is None else Path(cwd)
    here = Path(__file__).resolve()
    candidates = [
        here.parents[3] / "shared" / "data",
        cwd / ".." / "shared" / "data",
        cwd / "shared" / "data",
    ]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return None


def _read_volume(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return np.load(path)
    import tifffile

    return np.asarray(tifffile.imread(path))


def list_volumes(
    data_dir: Path, names: Sequence[str] | None = None, *, include_2d: bool = False
) -> list[tuple[str, np.ndarray]]:
    """Load the benchmark volumes of ``data_dir`` (``*.tif``, ``*.tiff``, ``*.npy``), by name.

    Parameters
    ----------
    data_dir : Path
        Folder of the volumes.
    names : sequence of str, optional
        Only these (file stems); an unknown name raises ``FileNotFoundError``.  Named volumes are
        loaded even when 2D.
    include_2d : bool
        Also the 2D images (skipped by default).

    Returns
    -------
    list of (str, np.ndarray)
        Sorted by name.
    """
    files = {
        p.name.split(".")[0]: p
        for p in sorted(Path(data_dir).iterdir())
        if p.suffix.lower() in (".tif", ".tiff", ".npy")
    }
    if names:
        missing = [n for n in names if n not in files]
        if missing:
            raise FileNotFoundError(
                f"no volume named {', '.join(missing)} in {data_dir} (have: {', '.join(files)})"
            )
        selected = [(n, files[n]) for n in names]
    else:
        selected = sorted(files.items())
    out = []
    for name, path in selected:
        arr = _read_volume(path)
        if arr.ndim < 3 and not (include_2d or names):
            continue
        out.append((name, arr))
    return out
