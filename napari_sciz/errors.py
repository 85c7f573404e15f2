"""Exception types raised by napari-sciz.

Every error a user can cause derives from :class:`SciZError`, so callers (the CLI, the napari
widgets) can catch one type and show its message without a traceback.
"""

from __future__ import annotations

__all__ = [
    "SciZError",
    "InvalidInputError",
    "FormatError",
    "RatioUnreachableError",
    "CancelledError",
    "OutputExistsError",
    "OutputFolderError",
]


class SciZError(Exception):
    """Base class of all napari-sciz errors that are meant for the user."""


class InvalidInputError(SciZError, ValueError):
    """The input array, argument or region is not supported (dtype, shape, NaN/Inf, ROI...)."""


class FormatError(SciZError):
    """A ``.sciz`` file is corrupted, truncated, foreign, or written by a newer format version."""


class RatioUnreachableError(SciZError, ValueError):
    """The requested compression ratio cannot be met for this input.

    ``need_bytes``: the fewest bytes the file needs, where the codec knows it (else None).
    """

    def __init__(self, message: str, need_bytes: int | None = None) -> None:
        super().__init__(message)
        self.need_bytes = need_bytes


class CancelledError(SciZError):
    """A compression job was cancelled by the user; no output was written."""


class OutputExistsError(SciZError, FileExistsError):
    """The output file exists (pass ``force=True`` / ``--force``) or would overwrite an input."""


class OutputFolderError(SciZError, OSError):
    """The folder an output would be written to is missing, not a folder, or not writable."""
