"""Reading a ``.sciz`` file: :class:`SciZFile` validates everything before it is used.

Reading is safe on files from strangers: the header is JSON (no pickle, no eval), every size
declared in the file is checked against the actual file size and against fixed limits before
anything is allocated, and the decompressed header size is capped. Any problem with a file
raises :class:`~napari_sciz.errors.FormatError` with a one-line message.
"""

from __future__ import annotations

import json
import operator
import os
import threading
import zlib
from itertools import accumulate
from typing import IO, Any

from ...errors import FormatError
from .layout import (
    _CRC,
    _DICTIONARIES,
    _ENTRY,
    _FIXED,
    _FOREIGN,
    _MAX_VARINT,
    _VERSION_OFFSET,
    _WBITS,
    FORMAT_VERSION,
    MAGIC,
    MAX_HEADER_BYTES,
    MAX_PAYLOADS,
)

__all__ = ["SciZFile"]


def _sniff(prefix: bytes) -> str:
    """Describe why `prefix` (the first bytes of a file) is not a ``.sciz`` signature."""
    text_mode = "damaged .sciz file: line endings were converted ({}); copy it in binary mode"
    if prefix.startswith(b"\x89SCIZ\n"):
        return text_mode.format("CRLF to LF")
    if prefix.startswith((b"\x89SCIZ\r\r\n", b"\x89SCIZ\r\n\r\n")):
        return text_mode.format("LF to CRLF")
    if prefix.startswith(b"\x89SCIZ"):
        return "damaged .sciz file: corrupted signature"
    for sig, what in _FOREIGN:
        if prefix.startswith(sig):
            return f"not a .sciz file (this is {what})"
    return f"not a .sciz file (unknown signature {prefix[:8]!r})"


def _json_object_pairs(pairs: list[tuple[str, Any]]) -> dict:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class SciZFile:
    """Read side of a ``.sciz`` file.

    Opening validates the signature, the format version, the preamble checksum, all declared
    sizes against the actual file size, and decodes the header; payloads are read (and their
    checksums verified) on demand by :meth:`payload`. A file opened from a path is read with
    ``seek``: only the preamble is read at open time, never the whole file.

    Parameters
    ----------
    source : str, os.PathLike, bytes, bytearray or memoryview
        A path to a ``.sciz`` file, or the contents of one. ``bytes`` are always contents,
        never a path.

    Attributes
    ----------
    header : dict
        The decoded JSON header.
    n_payloads : int
        Number of payloads.
    payload_sizes : list of int
        Size in bytes of each payload.
    file_size : int
        Total size of the file in bytes.
    version : tuple of int
        Format version ``(major, minor)`` the file was written with.
    name : str or None
        The path as given, or None for in-memory sources.

    Raises
    ------
    FormatError
        If the file cannot be opened (missing, a directory, no permission: the ``OSError`` is
        chained as ``__cause__``), is empty, foreign, truncated, corrupted, has trailing data,
        or was written by a newer major format version. The message names the file when it
        was opened from a path.

    Notes
    -----
    Instances are safe to share between threads (reads are serialised by a lock). Use as a
    context manager, or call :meth:`close`, to release the file handle.
    """

    header: dict
    n_payloads: int
    payload_sizes: list[int]
    file_size: int
    version: tuple[int, int]
    name: str | None

    def __init__(self, source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> None:
        self._fh: IO[bytes] | None = None
        self._buf: memoryview | None = None
        self._lock = threading.Lock()
        self._closed = False
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.name = None
            self._buf = memoryview(source).cast("B")
            self.file_size = self._buf.nbytes
        elif isinstance(source, (str, os.PathLike)):
            self.name = os.fspath(source)
            try:
                # unbuffered: every read goes to the file (no stale buffer, no read-ahead)
                self._fh = open(self.name, "rb", buffering=0)  # closed in close()
                self.file_size = os.fstat(self._fh.fileno()).st_size
            except OSError as exc:
                self.close()
                reason = exc.strerror or str(exc)
                if isinstance(exc, FileNotFoundError):
                    reason = "no such file"
                raise FormatError(f"cannot open {self.name}: {reason}") from exc
        else:
            raise TypeError(
                f"source must be a path or bytes-like contents, not {type(source).__name__}"
            )
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    # -- low level ---------------------------------------------------------------------------

    def _error(self, message: str) -> FormatError:
        return FormatError(f"{self.name}: {message}" if self.name is not None else message)

    def _read_at(self, offset: int, size: int) -> bytes:
        """Read exactly `size` bytes at `offset` (FormatError if the file is shorter)."""
        if self._buf is not None:
            data = bytes(self._buf[offset : offset + size])
        else:
            if self._fh is None:
                raise ValueError("I/O operation on a closed SciZFile")
            parts: list[bytes] = []
            remaining = size
            with self._lock:  # seek + read must not interleave between threads
                try:
                    self._fh.seek(offset)
                    while remaining:
                        chunk = self._fh.read(remaining)
                        if not chunk:
                            break
                        parts.append(chunk)
                        remaining -= len(chunk)
                except OSError as exc:
                    raise self._error(f"read error: {exc.strerror or exc}") from exc
            data = parts[0] if len(parts) == 1 else b"".join(parts)
        if len(data) != size:
            raise self._error(
                f"truncated: needs {offset + size} bytes but the file has only {offset + len(data)}"
            )
        return data

    def _parse(self) -> None:
        size = self.file_size
        if size == 0:
            raise self._error("empty file, not a .sciz file")
        prefix = self._read_at(0, min(size, _FIXED + 2 * _MAX_VARINT))
        if not prefix.startswith(MAGIC):
            if MAGIC.startswith(prefix):
                raise self._error(f"truncated: only {size} bytes")
            raise self._error(_sniff(prefix))
        if len(prefix) < _FIXED:
            raise self._error(f"truncated: only {size} bytes")
        major, minor = prefix[_VERSION_OFFSET], prefix[_VERSION_OFFSET + 1]
        self.version = (major, minor)
        if major > FORMAT_VERSION[0]:
            raise self._error(
                f"written by a newer napari-sciz (format {major}.{minor}; this version reads "
                f"{FORMAT_VERSION[0]}.x); upgrade napari-sciz"
            )
        if major < 1:
            raise self._error(f"unsupported format version {major}.{minor}")

        pos = _FIXED
        zheader_len, pos = self._read_varint(prefix, pos, "header length")
        n_payloads, pos = self._read_varint(prefix, pos, "payload count")
        if zheader_len > MAX_HEADER_BYTES:
            raise self._error(
                f"corrupted: declared header size {zheader_len} exceeds the limit "
                f"{MAX_HEADER_BYTES}"
            )
        if n_payloads > MAX_PAYLOADS:
            raise self._error(
                f"corrupted: declared payload count {n_payloads} exceeds the limit {MAX_PAYLOADS}"
            )
        preamble_len = pos + zheader_len + _ENTRY.size * n_payloads + _CRC.size
        if preamble_len > size:
            raise self._error(
                f"truncated or corrupted: the header and index need {preamble_len} bytes but "
                f"the file has only {size}"
            )
        preamble = self._read_at(0, preamble_len)
        body_end = preamble_len - _CRC.size
        (stored_crc,) = _CRC.unpack_from(preamble, body_end)
        if zlib.crc32(memoryview(preamble)[:body_end]) != stored_crc:
            raise self._error("corrupted: header checksum mismatch")

        index_start = pos + zheader_len
        sizes: list[int] = []
        crcs: list[int] = []
        for length, crc in _ENTRY.iter_unpack(memoryview(preamble)[index_start:body_end]):
            sizes.append(length)
            crcs.append(crc)
        expected = preamble_len + sum(sizes)
        if expected > size:
            raise self._error(f"truncated: expected {expected} bytes, the file has {size}")
        if expected < size:
            raise self._error(
                f"corrupted: {size - expected} bytes of trailing data after the last payload"
            )

        self.header = self._decode_header(memoryview(preamble)[pos:index_start])
        self.n_payloads = n_payloads
        self.payload_sizes = sizes
        self._crcs = crcs
        self._offsets = list(accumulate(sizes, initial=preamble_len))

    def _read_varint(self, buf: bytes, pos: int, what: str) -> tuple[int, int]:
        value = 0
        for k in range(_MAX_VARINT):
            if pos + k >= len(buf):
                if len(buf) < self.file_size:  # pragma: no cover - prefix covers 2 varints
                    break
                raise self._error(f"truncated: file ends inside the {what}")
            byte = buf[pos + k]
            value |= (byte & 0x7F) << (7 * k)
            if not byte & 0x80:
                if byte == 0 and k > 0:
                    raise self._error(f"corrupted: non-canonical encoding of the {what}")
                return value, pos + k + 1
        raise self._error(f"corrupted: {what} is too long")

    def _decode_header(self, zheader: memoryview) -> dict:
        # Inflate in bounded chunks so that a decompression bomb costs at most the limit.
        inflater = zlib.decompressobj(_WBITS, _DICTIONARIES[self.version[0]])
        raw = bytearray()
        pending: bytes | memoryview = zheader
        try:
            while not inflater.eof:
                chunk = inflater.decompress(pending, 1 << 16)
                if not chunk and len(inflater.unconsumed_tail) == len(pending):
                    break  # no progress: the input ends before the stream does
                pending = inflater.unconsumed_tail
                raw += chunk
                if len(raw) > MAX_HEADER_BYTES:
                    raise self._error(
                        f"corrupted: the header inflates to more than {MAX_HEADER_BYTES} bytes"
                    )
        except zlib.error as exc:
            raise self._error(f"corrupted: cannot inflate the header ({exc})") from exc
        if not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
            raise self._error("corrupted: the header is not a single complete DEFLATE stream")
        try:
            header = json.loads(
                raw.decode("utf-8"),
                object_pairs_hook=_json_object_pairs,
                parse_constant=_json_constant,
            )
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise self._error(f"corrupted: the header is not valid JSON ({exc})") from exc
        if not isinstance(header, dict):
            raise self._error(
                f"corrupted: the header is a JSON {type(header).__name__}, not an object"
            )
        return header

    # -- public --------------------------------------------------------------------------------

    def _check_index(self, i: int) -> int:
        i = operator.index(i)
        if not 0 <= i < self.n_payloads:
            raise IndexError(f"payload index {i} out of range [0, {self.n_payloads})")
        return i

    def payload(self, i: int) -> bytes:
        """Read payload `i` and verify its checksum.

        Parameters
        ----------
        i : int
            Payload index, ``0 <= i < n_payloads`` (negative indices are not accepted).

        Returns
        -------
        bytes
            The payload.

        Raises
        ------
        IndexError
            If `i` is out of range.
        FormatError
            If the payload checksum does not match or the file was truncated since it was
            opened.
        ValueError
            If the file is closed.
        """
        if self._closed:
            raise ValueError("I/O operation on a closed SciZFile")
        i = self._check_index(i)
        data = self._read_at(self._offsets[i], self.payload_sizes[i])
        if zlib.crc32(data) != self._crcs[i]:
            raise self._error(f"corrupted: payload {i} checksum mismatch")
        return data

    def payload_offset(self, i: int) -> int:
        """Return the byte offset of payload `i` in the file."""
        return self._offsets[self._check_index(i)]

    def verify(self) -> None:
        """Read every payload and verify its checksum (FormatError on the first mismatch)."""
        for i in range(self.n_payloads):
            self.payload(i)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Release the file handle (a no-op for in-memory sources; idempotent)."""
        self._closed = True
        fh, self._fh = self._fh, None
        self._buf = None
        if fh is not None:
            fh.close()

    def __enter__(self) -> SciZFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        fh = getattr(self, "_fh", None)
        if fh is not None:
            fh.close()

    def __repr__(self) -> str:
        where = repr(self.name) if self.name is not None else "<bytes>"
        state = "closed" if self._closed else f"{getattr(self, 'n_payloads', '?')} payloads"
        return f"<SciZFile {where} {getattr(self, 'file_size', '?')} bytes, {state}>"
