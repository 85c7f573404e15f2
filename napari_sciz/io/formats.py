"""File names, axes and units shared by the image readers and writers of :mod:`napari_sciz.io`.

* :data:`SUPPORTED_EXTENSIONS`, :func:`check_extension`, :func:`stem`: which files are images;
* :func:`default_axes`: the axes of an array whose file does not name them;
* :func:`normalize_unit`, :data:`LENGTH_IN_UM`: unit spellings as one canonical name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InvalidInputError

__all__ = [
    "LENGTH_IN_UM",
    "SUPPORTED_EXTENSIONS",
    "axes_from_labels",
    "check_extension",
    "default_axes",
    "normalize_unit",
    "one_line",
    "stem",
]

#: File name endings handled by :func:`~.image.read_image` and :func:`~.writing.write_image`.
SUPPORTED_EXTENSIONS = (".ome.tif", ".ome.tiff", ".tif", ".tiff", ".npy")

_UNIT_ALIASES = {
    "micron": "µm",
    "microns": "µm",
    "micrometer": "µm",
    "micrometre": "µm",
    "um": "µm",
    "\u03bcm": "µm",  # Greek mu
    "\\u00b5m": "µm",  # escaped in some ImageJ descriptions
    "nanometer": "nm",
    "nanometre": "nm",
    "millimeter": "mm",
    "millimetre": "mm",
    "centimeter": "cm",
    "meter": "m",
    "metre": "m",
    "angstrom": "Å",
    "sec": "s",
    "second": "s",
    "seconds": "s",
    "msec": "ms",
    "min": "min",
    "pixel": "",
    "pixels": "",
    "px": "",
}
#: micrometres in one unit of length
LENGTH_IN_UM = {"nm": 1e-3, "µm": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}


def default_axes(ndim: int) -> str:
    """Return the axes assumed for an unlabeled array with ``ndim`` dimensions.

    Parameters
    ----------
    ndim : int
        Number of dimensions.

    Returns
    -------
    str
        ``"YX"``, ``"ZYX"``, ``"CZYX"``, ``"TCZYX"`` for 2 to 5 dimensions (extra leading axes
        are ``"Q"``); ``"X"`` for 1D and ``""`` for 0D.
    """
    names = "TCZYX"
    if ndim <= len(names):
        return names[len(names) - ndim :]
    return "Q" * (ndim - len(names)) + names


def axes_from_labels(labels: Any, ndim: int) -> str | None:
    """An axes string like ``"TYX"`` from a napari layer's axis labels, when they are
    ``ndim`` distinct T/C/Z/Y/X letters (either case); None otherwise (napari's default
    labels ``"-3", "-2", "-1"`` say nothing)."""
    if labels is None or len(labels) != ndim:
        return None
    letters = [str(label).upper() for label in labels]
    if any(len(x) != 1 or x not in "TCZYX" for x in letters) or len(set(letters)) != ndim:
        return None
    return "".join(letters)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for ext in SUPPORTED_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def check_extension(path: Path) -> str:
    """The supported extension of ``path`` (:class:`InvalidInputError` otherwise)."""
    ext = _suffix(path)
    if ext not in SUPPORTED_EXTENSIONS:
        shown = ext or "(none)"
        raise InvalidInputError(
            f"unsupported file type {shown!r} for {path.name} "
            "(expected .tif, .tiff, .ome.tif, .ome.tiff, .npy or a .zarr/.ome.zarr store)"
        )
    return ext


def stem(path: Path) -> str:
    """The file name without its (possibly double) extension: the image's name."""
    ext = _suffix(path)
    name = path.name
    return name[: len(name) - len(ext)] if name.lower().endswith(ext) else path.stem


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (a reader's error for the user)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def normalize_unit(unit: object) -> str:
    """One spelling per unit (``"micron"``, ``"um"``: ``"µm"``; pixels: ``""``)."""
    if unit is None:
        return ""
    text = str(unit).strip()
    return _UNIT_ALIASES.get(text.lower(), text)
