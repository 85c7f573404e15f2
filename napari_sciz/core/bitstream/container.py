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
import operator
import os
import struct
import threading
import zlib
from collections.abc import Iterable, Sequence
from itertools import accumulate
from pathlib import Path
from typing import IO, Any

from ...errors import FormatError

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

#: File signature (8 bytes, PNG-style): a non-ASCII byte, the name, then CR LF LF so that
#: text-mode transfers (CRLF <-> LF conversion) are detected.
MAGIC: bytes = b"\x89SCIZ\r\n\n"

#: Format version written by this library: (major, minor). Files with a newer *major* version
#: are rejected; a newer *minor* version of the same major is readable.
FORMAT_VERSION: tuple[int, int] = (3, 0)

#: Largest header JSON accepted, in bytes, both deflated and inflated.
MAX_HEADER_BYTES: int = 16 * 1024 * 1024

#: Largest number of payloads in one file.
MAX_PAYLOADS: int = 1 << 24

#: Largest single payload (the index stores lengths as uint32).
MAX_PAYLOAD_BYTES: int = (1 << 32) - 1

#: Preset DEFLATE dictionary of the header in format 1.x files (RFC 1950 "FDICT" semantics, used
#: with raw DEFLATE): typical header JSON of early designs. Frozen: files written by napari-sciz
#: 0.2 and earlier use it (files written with one dictionary cannot be read with another).
HEADER_DICTIONARY_V1: bytes = (
    b'{"axes":"ZYX","block_grid":[1,1,1],"block_shape":[64,64,64],"channel_axis":null,'
    b'"dtype":"uint8","int16","uint32","float32","float64","dtype":"uint16",'
    b'"library_version":"0.1.0","mode":"lossless","mode":"inr","model":{"activation":"sine",'
    b'"base_resolution":16,"features_per_level":2,"hidden":32,"layers":2,"levels":16,'
    b'"log2_hashmap_size":19,"per_level_scale":1.5},"name":null,"quant":{"latent_step":0.0,'
    b'"weight_step":0.0},"ratio":100.0,"seed":0,"shape":[128,512,512],"steps":1000,'
    b'"units":["nanometer","nanometer","nanometer"],'
    b'"units":["micrometer","micrometer","micrometer"],'
    b'"value_range":[0,65535],"voxel_size":[1.0,1.0,1.0]}'
)

#: Preset DEFLATE dictionary of the header in format 2.x files: the keys and common values of
#: the headers of napari-sciz 0.2 in all four coding modes (a typical header: 40-80 bytes; with
#: the 1.x dictionary, 170-210). Frozen: files written with format 2.0 use it.
HEADER_DICTIONARY_V2: bytes = (
    b'{"axes":"YX","axes":"TYX","axes":"CZYX","axes":"TZYX","axes":"ZYX",'
    b'"blocks":{"block_shape":[1,512,512],"count":1,"counts":[1,1,1],"spatial_ndim":2},'
    b'"blocks":{"block_shape":[64,256,256],"count":16,"counts":[1,2,2],"spatial_ndim":3},'
    b'"dtype":"uint8","dtype":"int16","dtype":"uint32","dtype":"float32","dtype":"float64",'
    b'"dtype":"uint16","encoder":{"budget":null,"device":"cuda","device":"cpu","seed":0,"steps":300},'
    b'"format":"sciz","guidance":"segmentation","guidance":"perceptual","guidance_weights":'
    b'{"boundary":1.0,"dice":1.0,"gradient":0.0,"max_psnr_loss":1.0,"side":1.0,"ssim":1.0},'
    b'"guidance":"none","library":"napari-sciz 0.2.0","max_error":null,"max_error":1.0,'
    b'"mode":"bounded","mode":"lossless","model":{"type":"causal-predictor","version":1},'
    b'"mode":"lossy","model":{"activation":"relu","type":"latent-grid","version":1},'
    b'"mode":"hybrid","model":{"activation":"relu","type":"classical+latent-grid","version":2},'
    b'"name":null,"shape":[64,512,512],"target_ratio":64.0,'
    b'"units":["nanometer","nanometer","nanometer"],"units":["micrometer","micrometer","micrometer"],'
    b'"units":null,"value_range":[0,65535],"voxel_size":[1.0,1.0,1.0],"voxel_size":null}'
)
#: Preset DEFLATE dictionary of the header in format 3.x files: the keys and common values of
#: the headers of every coding mode, then a whole typical lossless header and a whole typical
#: hybrid one (the default mode, nearest the end, where DEFLATE's distances are cheapest), so
#: that a header deflates to 25-50 bytes (33 for a single-block hybrid file; 62 with the 2.x
#: dictionary: 3 % of a 1 kB file). Part of format major version 3: it MUST NOT change within
#: it (a test pins its CRC-32; docs/format.md, Appendix A).
HEADER_DICTIONARY: bytes = (
    b'{"axes":"YX","axes":"TYX","axes":"CZYX","axes":"TZYX",'
    b'"blocks":{"block_shape":[1,512,512],"count":1,"counts":[1,1,1],"spatial_ndim":2},'
    b'"blocks":{"block_shape":[64,256,256],"count":16,"counts":[1,2,2],"spatial_ndim":3},'
    b'"dtype":"uint8","dtype":"int16","dtype":"uint32","dtype":"float32","dtype":"float64",'
    b'"encoder":{"budget":null,"device":"cuda","seed":0,"steps":300},'
    b'"guidance":"segmentation","guidance":"perceptual","guidance_weights":'
    b'{"boundary":1.0,"dice":1.0,"gradient":0.0,"max_psnr_loss":1.0,"side":1.0,"ssim":1.0},'
    b'"max_error":1.0,"mode":"bounded","mode":"lossy","model":{"activation":"relu",'
    b'"type":"latent-grid","version":2},"name":"image","target_ratio":16.0,"target_ratio":256.0,'
    b'"units":["nanometer","nanometer","nanometer"],"units":["micrometer","micrometer","micrometer"],'
    b'"value_range":[0,255],"voxel_size":[1.0,1.0,1.0]}'
    b'{"axes":"ZYX","blocks":{"block_shape":[64,512,512],"count":1,"counts":[1,1,1],"spatial_ndim":3},'
    b'"dtype":"uint16","format":"sciz","library":"napari-sciz 0.2.0","mode":"lossless",'
    b'"model":{"type":"causal-predictor","version":1},"shape":[64,512,512],"value_range":[0,65535]}'
    b'{"axes":"ZYX","blocks":{"block_shape":[64,512,512],"count":1,"counts":[1,1,1],"spatial_ndim":3},'
    b'"dtype":"uint16","encoder":{"budget":120,"device":"cpu","seed":0,"steps":0},"format":"sciz",'
    b'"guidance":"none","library":"napari-sciz 0.2.0","mode":"hybrid","model":{"activation":"relu",'
    b'"type":"classical+latent-grid","version":4},"shape":[64,512,512],"target_ratio":64.0,'
    b'"value_range":[0,65535]}'
)
#: the header dictionary of each format major version this library reads
_DICTIONARIES = {1: HEADER_DICTIONARY_V1, 2: HEADER_DICTIONARY_V2, 3: HEADER_DICTIONARY}

_ENTRY = struct.Struct("<II")  # index entry: payload length, payload crc32
_CRC = struct.Struct("<I")
_VERSION_OFFSET = len(MAGIC)
_FIXED = len(MAGIC) + 2  # magic + major + minor
_MAX_VARINT = 10  # bytes of a LEB128 encoding of a value < 2**64
_ZLEVEL = 9
_WBITS = -15  # raw DEFLATE (RFC 1951): the preamble CRC-32 already protects the header
_MEMLEVEL = 9

# Signatures of formats a user may hand us by mistake, to name them in the error message.
_FOREIGN = (
    (b"II*\x00", "a TIFF file"),
    (b"MM\x00*", "a TIFF file"),
    (b"II+\x00", "a BigTIFF file"),
    (b"MM\x00+", "a BigTIFF file"),
    (b"\x93NUMPY", "a NumPy .npy file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
    (b"\x89PNG\r\n\x1a\n", "a PNG file"),
    (b"PK\x03\x04", "a ZIP archive (.npz/.zip)"),
    (b"\x1f\x8b", "a gzip file"),
    (b"\x28\xb5\x2f\xfd", "a zstd file"),
)


# --------------------------------------------------------------------------------------------
# encoding helpers
# --------------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    """Encode a non-negative integer as unsigned LEB128."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


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
# reading
# --------------------------------------------------------------------------------------------


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
