"""The ``.sciz`` container: magic, format version, header, payload index, checksums.

A ``.sciz`` file is one self-describing file made of a small *preamble* (signature, format
version, a deflated JSON header and an index of payload lengths and CRC-32s, protected by one
CRC-32) followed by the payloads, back to back. The byte layout is specified in
``docs/format.md``; this module is the reference implementation.

* :func:`pack` builds the bytes of a complete file from a header dict and a list of payloads.
* :func:`overhead` returns exactly how many bytes :func:`pack` adds besides the payloads.
* :class:`SciZFile` reads a file from a path (lazily, with ``seek``; payloads are read on
  demand) or from an in-memory buffer, validating everything before it is used.
* :func:`write_atomic` writes bytes to a path without ever leaving a partial file behind.

Reading is safe on files from strangers: the header is JSON (no pickle, no eval), every size
declared in the file is checked against the actual file size and against fixed limits before
anything is allocated, and the decompressed header size is capped. Any problem with a file
raises :class:`~napari_sciz.errors.FormatError` with a one-line message.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from .layout import (
    _CRC,
    _ENTRY,
    _FIXED,
    _MEMLEVEL,
    _WBITS,
    _ZLEVEL,
    FORMAT_VERSION,
    HEADER_DICTIONARY,
    HEADER_DICTIONARY_V1,
    HEADER_DICTIONARY_V2,
    MAGIC,
    MAX_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_PAYLOADS,
    _varint,
)
from .scizfile import SciZFile

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "MAX_HEADER_BYTES",
    "MAX_PAYLOADS",
    "MAX_PAYLOAD_BYTES",
    "HEADER_DICTIONARY",
    "HEADER_DICTIONARY_V1",
    "HEADER_DICTIONARY_V2",
    "pack",
    "overhead",
    "SciZFile",
    "write_atomic",
]


# --------------------------------------------------------------------------------------------
# encoding helpers
# --------------------------------------------------------------------------------------------


def _encode_header(header: dict) -> bytes:
    """Serialise and deflate a header dict (compact, sorted, UTF-8 JSON; raw DEFLATE level 9)."""
    if not isinstance(header, dict):
        raise TypeError(f"header must be a dict, not {type(header).__name__}")
    try:
        text = json.dumps(
            header, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise TypeError(f"header is not JSON-serialisable: {exc}") from exc
    raw = text.encode("utf-8")
    if len(raw) > MAX_HEADER_BYTES:
        raise ValueError(f"header JSON is {len(raw)} bytes; the limit is {MAX_HEADER_BYTES}")
    comp = zlib.compressobj(
        _ZLEVEL, zlib.DEFLATED, _WBITS, _MEMLEVEL, zlib.Z_DEFAULT_STRATEGY, HEADER_DICTIONARY
    )
    return comp.compress(raw) + comp.flush()


def _preamble_size(zheader_len: int, n_payloads: int) -> int:
    return (
        _FIXED
        + len(_varint(zheader_len))
        + len(_varint(n_payloads))
        + zheader_len
        + _ENTRY.size * n_payloads
        + _CRC.size
    )


def _check_n_payloads(n_payloads: int) -> None:
    if not 0 <= n_payloads <= MAX_PAYLOADS:
        raise ValueError(f"number of payloads must be in [0, {MAX_PAYLOADS}], got {n_payloads}")


def pack(header: dict, payloads: Sequence[bytes]) -> bytes:
    """Build the bytes of a complete ``.sciz`` file.

    Parameters
    ----------
    header : dict
        JSON-serialisable dict describing the payloads (defined by the codec; see
        ``napari_sciz/core/api.py``). It is stored as compact JSON with sorted keys, so it reads
        back in JSON-normalised form (tuples become lists, non-string keys become strings).
        NaN and infinities are not allowed.
    payloads : sequence of bytes-like
        The payloads, in order. Empty payloads are allowed.

    Returns
    -------
    bytes
        The file contents; ``len(result) == overhead(header, len(payloads)) +
        sum(len(p) for p in payloads)``.

    Raises
    ------
    TypeError
        If `header` is not a dict or is not JSON-serialisable.
    ValueError
        If the header JSON exceeds :data:`MAX_HEADER_BYTES`, a payload exceeds
        :data:`MAX_PAYLOAD_BYTES`, or there are more than :data:`MAX_PAYLOADS` payloads.
    """
    zheader = _encode_header(header)
    views = [memoryview(p).cast("B") for p in payloads]
    _check_n_payloads(len(views))
    index = bytearray()
    for i, view in enumerate(views):
        if view.nbytes > MAX_PAYLOAD_BYTES:
            raise ValueError(
                f"payload {i} is {view.nbytes} bytes; the limit is {MAX_PAYLOAD_BYTES}"
            )
        index += _ENTRY.pack(view.nbytes, zlib.crc32(view))
    out = bytearray(MAGIC)
    out += bytes(FORMAT_VERSION)
    out += _varint(len(zheader))
    out += _varint(len(views))
    out += zheader
    out += index
    out += _CRC.pack(zlib.crc32(out))
    for view in views:
        out += view
    return bytes(out)


def overhead(header: dict, n_payloads: int) -> int:
    """Return the exact number of bytes :func:`pack` adds besides the payloads.

    The result depends only on the header and on the number of payloads (not on the payload
    sizes), so rate control can compute the payload budget before coding.

    Parameters
    ----------
    header : dict
        The header that will be passed to :func:`pack`.
    n_payloads : int
        The number of payloads that will be passed to :func:`pack`.

    Returns
    -------
    int
        ``len(pack(header, payloads)) - sum(len(p) for p in payloads)``.

    Raises
    ------
    TypeError, ValueError
        As :func:`pack`, for an invalid header or number of payloads.
    """
    _check_n_payloads(n_payloads)
    return _preamble_size(len(_encode_header(header)), n_payloads)


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes | bytearray | memoryview,
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Write `data` to `path` atomically: the file appears complete or not at all.

    The data goes to a temporary file in the same directory, which is flushed, fsync'ed and
    moved into place with :func:`os.replace` (or hard-linked into place when `force` is False,
    so that a file created concurrently is never overwritten). On any exception, including
    ``KeyboardInterrupt``, the temporary file is removed and `path` is left untouched.

    Parameters
    ----------
    path : str or os.PathLike
        Destination. Its directory must exist.
    data : bytes-like
        The complete file contents.
    force : bool, default False
        Overwrite `path` if it exists.
    inputs : iterable of paths, optional
        Files that must never be overwritten (the inputs of the command), even with `force`.

    Returns
    -------
    pathlib.Path
        ``Path(path)``.

    Raises
    ------
    OutputExistsError
        If `path` exists and `force` is False, if `path` is a directory, or if `path` is
        (resolves to) the same file as one of `inputs`.
    OSError
        If the file cannot be written (missing directory, permission denied, disk full...);
        the error names `path`, not the temporary file.
    """
    from ...io.atomic import write_bytes_atomic

    return write_bytes_atomic(path, data, force=force, inputs=inputs)
