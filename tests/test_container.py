"""Tests of the .sciz container (napari_sciz.core.bitstream.container)."""

from __future__ import annotations

import json
import os
import random
import struct
import threading
import tracemalloc
import zlib
from pathlib import Path

import pytest

from napari_sciz.core.bitstream import container
from napari_sciz.core.bitstream.container import (
    FORMAT_VERSION,
    HEADER_DICTIONARY,
    HEADER_DICTIONARY_V1,
    HEADER_DICTIONARY_V2,
    MAGIC,
    MAX_HEADER_BYTES,
    SciZFile,
    overhead,
    pack,
    write_atomic,
)
from napari_sciz.errors import FormatError, OutputExistsError, OutputFolderError, SciZError

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is in the `testing` extra
    given = None

HEADER = {
    "shape": [64, 128, 96],
    "dtype": "uint16",
    "axes": "ZYX",
    "voxel_size": [0.5, 0.1625, 0.1625],
    "value_range": [12, 4095],
    "mode": "inr",
    "name": "Ünïcode stack",
}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _deflate(raw: bytes) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=HEADER_DICTIONARY)
    return comp.compress(raw) + comp.flush()


def _build(
    zheader: bytes,
    entries: list[tuple[int, int]],
    payloads: bytes = b"",
    *,
    version: tuple[int, int] = FORMAT_VERSION,
    n_payloads: int | None = None,
    zheader_len: int | None = None,
    crc: int | None = None,
) -> bytes:
    """Hand-build a file, with every field overridable (independent of pack())."""
    pre = bytearray(MAGIC + bytes(version))
    pre += _varint(len(zheader) if zheader_len is None else zheader_len)
    pre += _varint(len(entries) if n_payloads is None else n_payloads)
    pre += zheader
    for length, c in entries:
        pre += struct.pack("<II", length, c)
    pre += struct.pack("<I", zlib.crc32(pre) if crc is None else crc)
    return bytes(pre) + payloads


def _with_header_text(text: bytes) -> bytes:
    return _build(_deflate(text), [])


def _read_all(source) -> tuple[dict, list[bytes]]:
    with SciZFile(source) as f:
        return f.header, [f.payload(i) for i in range(f.n_payloads)]


def _small_file() -> tuple[bytes, list[bytes]]:
    payloads = [b"first payload", b"", b"\x00\x01\x02\xff" * 3]
    return pack({"shape": [4, 5], "dtype": "uint8"}, payloads), payloads


# --------------------------------------------------------------------------------------------
# round trip, random access, overhead
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payloads",
    [
        [],
        [b""],
        [b"x"],
        [b"", b"", b""],
        [bytes(range(256)) * 3, b"", b"abc", b"\x00" * 1000, b""],
        [os.urandom(n) for n in range(0, 300, 7)],
    ],
    ids=["none", "one-empty", "one", "all-empty", "mixed", "many"],
)
@pytest.mark.parametrize("header", [{}, HEADER, {"nested": {"a": [1, 2.5, None, True]}}])
def test_round_trip(header: dict, payloads: list[bytes], tmp_path: Path) -> None:
    data = pack(header, payloads)
    assert data.startswith(MAGIC)
    assert len(data) == overhead(header, len(payloads)) + sum(map(len, payloads))
    path = tmp_path / "a.sciz"
    path.write_bytes(data)
    for source in (data, bytearray(data), memoryview(data), path, str(path)):
        with SciZFile(source) as f:
            assert f.header == header
            assert f.n_payloads == len(payloads)
            assert f.payload_sizes == [len(p) for p in payloads]
            assert f.file_size == len(data)
            assert f.version == FORMAT_VERSION
            assert [f.payload(i) for i in range(f.n_payloads)] == payloads
            f.verify()


def test_magic_and_version_constants() -> None:
    assert isinstance(MAGIC, bytes) and len(MAGIC) == 8
    assert MAGIC[0] & 0x80 and b"SCIZ" in MAGIC and b"\r\n" in MAGIC
    assert FORMAT_VERSION == (3, 0)


def test_random_access(tmp_path: Path) -> None:
    rng = random.Random(1)
    payloads = [rng.randbytes(rng.randrange(0, 2000)) for _ in range(50)]
    data = pack(HEADER, payloads)
    path = tmp_path / "r.sciz"
    path.write_bytes(data)
    for source in (data, path):
        with SciZFile(source) as f:
            order = list(range(50)) * 2
            rng.shuffle(order)
            for i in order:
                assert f.payload(i) == payloads[i]
                off = f.payload_offset(i)
                assert data[off : off + f.payload_sizes[i]] == payloads[i]


def test_header_is_json_normalised() -> None:
    header = {"shape": (3, 4), "b": 1, "a": 2}
    with SciZFile(pack(header, [])) as f:
        assert f.header == {"shape": [3, 4], "a": 2, "b": 1}
    with SciZFile(pack({7: "int key"}, [])) as f:
        assert f.header == {"7": "int key"}


@pytest.mark.parametrize("n", [0, 1, 2, 127, 128, 300])
@pytest.mark.parametrize("header", [{}, HEADER, {"k": "v" * 20000}, {"x": list(range(3000))}])
def test_overhead_is_exact(header: dict, n: int) -> None:
    rng = random.Random(n)
    payloads = [b"\x00" * rng.choice([0, 1, 127, 128, 20000]) for _ in range(n)]
    assert len(pack(header, payloads)) - sum(map(len, payloads)) == overhead(header, n)


def test_overhead_is_small() -> None:
    # The fixed cost: 8 (magic) + 2 (version) + 1 + 1 (varints) + 4 ("{}" deflated) + 4 (crc).
    assert overhead({}, 0) == 20
    # Each payload costs exactly 8 bytes (uint32 length + crc32).
    assert overhead(HEADER, 5) - overhead(HEADER, 4) == 8
    raw = len(json.dumps(HEADER, separators=(",", ":"), ensure_ascii=False).encode())
    assert overhead(HEADER, 0) < 20 + raw


def test_large_headers_round_trip() -> None:
    # Sizes around the 64 KiB inflate chunk, highly compressible (long matches at the end).
    for n in range(65536 - 300, 65536 + 50, 7):
        header = {"k": "a" * n}
        assert SciZFile(pack(header, [])).header == header
    rng = random.Random(5)
    header = {f"key{i}": [rng.random() for _ in range(50)] for i in range(400)}
    assert SciZFile(pack(header, [b"x"])).header == header


def test_header_dictionary_is_frozen() -> None:
    """The preset dictionaries are part of their format major version: changing one makes the
    files written with it unreadable (docs/format.md, Appendix A)."""
    assert len(HEADER_DICTIONARY_V1) == 623
    assert zlib.crc32(HEADER_DICTIONARY_V1) == 0x8B9DE323
    assert len(HEADER_DICTIONARY_V2) == 1142
    assert zlib.crc32(HEADER_DICTIONARY_V2) == 0xB1E02030
    assert len(HEADER_DICTIONARY) == 1491
    assert zlib.crc32(HEADER_DICTIONARY) == 0x34436699
    spec = Path(__file__).parents[1] / "docs" / "format.md"
    if spec.exists():
        text = spec.read_text(encoding="utf-8")
        for dictionary, crc in (
            (HEADER_DICTIONARY_V1, "0x8b9de323"),
            (HEADER_DICTIONARY_V2, "0xb1e02030"),
            (HEADER_DICTIONARY, "0x34436699"),
        ):
            assert "\n" + dictionary.decode("ascii") + "\n" in text
            assert crc in text


def test_format_2_files_still_read_with_their_dictionary() -> None:
    header = {"format": "sciz", "mode": "hybrid", "shape": [3, 4, 5], "name": None}
    comp = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=HEADER_DICTIONARY_V2)
    zheader = comp.compress(json.dumps(header).encode()) + comp.flush()
    data = _build(zheader, [(3, zlib.crc32(b"abc"))], b"abc", version=(2, 0))
    with SciZFile(data) as f:
        assert f.version == (2, 0) and f.header == header and f.payload(0) == b"abc"


def test_format_1_files_still_read_with_their_dictionary() -> None:
    header = {"format": "sciz", "mode": "lossy", "shape": [3, 4, 5]}
    comp = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=HEADER_DICTIONARY_V1)
    zheader = comp.compress(json.dumps(header).encode()) + comp.flush()
    pre = bytearray(MAGIC + bytes([1, 0]) + bytes([len(zheader), 1]) + zheader)
    pre += struct.pack("<II", 3, zlib.crc32(b"abc"))
    data = bytes(pre) + struct.pack("<I", zlib.crc32(pre)) + b"abc"
    with SciZFile(data) as f:
        assert f.version == (1, 0) and f.header == header and f.payload(0) == b"abc"
    assert len(pack({"format": "sciz", "mode": "lossy", "shape": [3, 4, 5]}, [])) < len(data)


# --------------------------------------------------------------------------------------------
# corruption, truncation, foreign files
# --------------------------------------------------------------------------------------------


def test_every_single_byte_flip_is_detected() -> None:
    data, _ = _small_file()
    assert len(data) < 200
    for pos in range(len(data)):
        for mask in (0x01, 0x10, 0x80, 0xFF):
            bad = bytearray(data)
            bad[pos] ^= mask
            with pytest.raises(FormatError):
                _read_all(bytes(bad))


def test_every_byte_flip_is_detected_from_path(tmp_path: Path) -> None:
    data, _ = _small_file()
    path = tmp_path / "flip.sciz"
    for pos in range(0, len(data), 3):
        bad = bytearray(data)
        bad[pos] ^= 0x04
        path.write_bytes(bad)
        with pytest.raises(FormatError, match="flip.sciz"):
            _read_all(path)


def test_every_truncation_is_detected(tmp_path: Path) -> None:
    data, _ = _small_file()
    for length in range(len(data)):
        with pytest.raises(FormatError):
            SciZFile(data[:length])
    path = tmp_path / "t.sciz"
    path.write_bytes(data[:-1])
    with pytest.raises(FormatError, match=r"t\.sciz: truncated"):
        SciZFile(path)


def test_truncation_after_open_is_detected(tmp_path: Path) -> None:
    data, _ = _small_file()
    path = tmp_path / "shrink.sciz"
    path.write_bytes(data)
    with SciZFile(path) as f:
        with open(path, "r+b") as fh:
            fh.truncate(len(data) - 5)
        with pytest.raises(FormatError, match="truncated"):
            f.payload(2)


@pytest.mark.parametrize("extra", [b"\x00", b"garbage", MAGIC])
def test_trailing_data_is_rejected(extra: bytes) -> None:
    data, _ = _small_file()
    with pytest.raises(FormatError, match="trailing"):
        SciZFile(data + extra)


def test_payload_checksum_mismatch_message() -> None:
    data, payloads = _small_file()
    bad = bytearray(data)
    bad[-1] ^= 1
    with SciZFile(bytes(bad)) as f:
        assert f.payload(0) == payloads[0]  # other payloads stay readable
        with pytest.raises(FormatError, match="payload 2 checksum mismatch"):
            f.payload(2)
        with pytest.raises(FormatError):
            f.verify()


def test_header_checksum_mismatch_message() -> None:
    data, _ = _small_file()
    bad = bytearray(data)
    bad[14] ^= 1  # inside the deflated header
    with pytest.raises(FormatError, match="header checksum mismatch"):
        SciZFile(bytes(bad))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty file"),
        (b"II*\x00\x08\x00\x00\x00" + bytes(100), "TIFF"),
        (b"MM\x00*\x00\x00\x00\x08" + bytes(100), "TIFF"),
        (b"II+\x00\x08\x00\x00\x00" + bytes(100), "BigTIFF"),
        (b"\x93NUMPY\x01\x00v\x00{'descr': '<u2'}", "NumPy"),
        (b"PK\x03\x04" + bytes(40), "ZIP"),
        (b"hello world, this is text\n", "not a .sciz file"),
        (b"\x89", "truncated"),
        (MAGIC[:5], "truncated"),
        (MAGIC, "truncated"),
        (MAGIC + b"\x01", "truncated"),
        (b"\x89SCIZ\n\n\x01\x00" + bytes(20), "CRLF to LF"),
        (b"\x89SCIZ\r\r\n\r\n\x01\x00" + bytes(20), "LF to CRLF"),
        (b"\x89SCIZ??\n\x01\x00" + bytes(20), "corrupted signature"),
    ],
)
def test_foreign_files(content: bytes, match: str, tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=match):
        SciZFile(content)
    path = tmp_path / "foreign.tif"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=f"foreign.tif: .*{match}"):
        SciZFile(path)


def test_random_bytes_are_rejected() -> None:
    rng = random.Random(0)
    for n in [1, 7, 8, 9, 10, 50, 1000]:
        for _ in range(20):
            with pytest.raises(FormatError):
                SciZFile(rng.randbytes(n))
            with pytest.raises(FormatError):
                _read_all(MAGIC + bytes(FORMAT_VERSION) + rng.randbytes(n))


def test_text_mode_transfer_is_named() -> None:
    data, _ = _small_file()
    with pytest.raises(FormatError, match="CRLF to LF"):
        SciZFile(data.replace(b"\r\n", b"\n"))


# --------------------------------------------------------------------------------------------
# versions
# --------------------------------------------------------------------------------------------


def _set_version(data: bytes, major: int, minor: int) -> bytes:
    """Change the version bytes and fix the preamble checksum."""
    with SciZFile(data) as f:
        preamble_len = f.payload_offset(0) if f.n_payloads else f.file_size
    pre = bytearray(data[: preamble_len - 4])
    pre[8:10] = bytes([major, minor])
    return bytes(pre) + struct.pack("<I", zlib.crc32(pre)) + data[preamble_len:]


def test_newer_major_version_is_rejected(tmp_path: Path) -> None:
    data, _ = _small_file()
    for major in (FORMAT_VERSION[0] + 1, 255):
        newer = _set_version(data, major, 0)
        with pytest.raises(FormatError, match="newer napari-sciz.*upgrade"):
            SciZFile(newer)
    path = tmp_path / "new.sciz"
    path.write_bytes(_set_version(data, 4, 3))
    with pytest.raises(
        FormatError, match=r"new\.sciz: written by a newer napari-sciz \(format 4\.3"
    ):
        SciZFile(path)


def test_newer_minor_version_is_readable() -> None:
    data, payloads = _small_file()
    newer = _set_version(data, FORMAT_VERSION[0], FORMAT_VERSION[1] + 7)
    with SciZFile(newer) as f:
        assert f.version == (FORMAT_VERSION[0], FORMAT_VERSION[1] + 7)
        assert [f.payload(i) for i in range(f.n_payloads)] == payloads


def test_version_zero_is_rejected() -> None:
    data, _ = _small_file()
    with pytest.raises(FormatError, match="unsupported format version 0"):
        SciZFile(_set_version(data, 0, 9))


# --------------------------------------------------------------------------------------------
# hostile files: declared sizes, decompression bombs, bad JSON
# --------------------------------------------------------------------------------------------


def _peak_alloc(func) -> int:
    tracemalloc.start()
    try:
        func()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_build(b"", [], zheader_len=1 << 60), "header size"),
        (_build(b"", [], zheader_len=MAX_HEADER_BYTES + 1), "header size"),
        (_build(_deflate(b"{}"), [], n_payloads=1 << 40), "payload count"),
        (_build(_deflate(b"{}"), [], n_payloads=(1 << 24) - 1), "need"),
        (_build(b"", [], zheader_len=100_000), "need"),
        (_build(_deflate(b"{}"), [(0xFFFFFFFF, 0)] * 1000), "truncated"),
        (MAGIC + b"\x01\x00" + b"\xff" * 12 + b"\x00" * 10, "too long"),
        (MAGIC + b"\x01\x00" + b"\x82\x00" + b"\x00" * 10, "non-canonical"),
    ],
    ids=[
        "header-2^60",
        "header-over-limit",
        "n-2^40",
        "n-max",
        "header-past-eof",
        "payloads-past-eof",
        "varint-too-long",
        "varint-non-canonical",
    ],
)
def test_huge_declared_sizes_are_rejected_without_allocation(data: bytes, match: str) -> None:
    def attempt() -> None:
        with pytest.raises(FormatError, match=match):
            SciZFile(data)

    assert _peak_alloc(attempt) < 512 * 1024


def test_decompression_bomb_is_rejected() -> None:
    raw = b'{"a":"' + b" " * (MAX_HEADER_BYTES + 10) + b'"}'
    bomb = _build(_deflate(raw), [])
    assert len(bomb) < 100_000

    def attempt() -> None:
        with pytest.raises(FormatError, match="inflates to more than"):
            SciZFile(bomb)

    assert _peak_alloc(attempt) < MAX_HEADER_BYTES * 1.25


@pytest.mark.parametrize(
    ("zheader", "match"),
    [
        (_deflate(b"[1, 2]"), "JSON list, not an object"),
        (_deflate(b'"text"'), "JSON str, not an object"),
        (_deflate(b"{"), "not valid JSON"),
        (_deflate(b'{"a": NaN}'), "not valid JSON"),
        (_deflate(b'{"a": Infinity}'), "not valid JSON"),
        (_deflate(b'{"a": 1, "a": 2}'), "duplicate key"),
        (_deflate(b'{"a": "\xff\xfe"}'), "not valid JSON"),
        (_deflate(b"[" * 100_000 + b"]" * 100_000), "not valid JSON"),
        (_deflate(b"{}") + b"\x00", "single complete DEFLATE"),
        (_deflate(b"{}")[:-1], "single complete DEFLATE"),
        (zlib.compress(b"{}"), "cannot inflate"),
        (b"", "single complete DEFLATE"),
    ],
)
def test_bad_header_is_rejected(zheader: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        SciZFile(_build(zheader, []))


def test_lazy_read_from_path(tmp_path: Path) -> None:
    big = [b"\x00" * (4 << 20), b"\x01" * (4 << 20)]
    path = tmp_path / "big.sciz"
    path.write_bytes(pack(HEADER, big))

    def open_only() -> None:
        with SciZFile(path) as f:
            assert f.payload_sizes == [4 << 20, 4 << 20]

    assert _peak_alloc(open_only) < 256 * 1024


# --------------------------------------------------------------------------------------------
# API behaviour
# --------------------------------------------------------------------------------------------


def test_missing_file_and_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sciz"
    with pytest.raises(FormatError, match=r"cannot open .*nope\.sciz: no such file") as info:
        SciZFile(missing)
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert isinstance(info.value, SciZError)
    with pytest.raises(FormatError, match="cannot open"):
        SciZFile(tmp_path)


def test_bad_source_type() -> None:
    with pytest.raises(TypeError):
        SciZFile(123)  # type: ignore[arg-type]


def test_index_errors_and_close(tmp_path: Path) -> None:
    data, payloads = _small_file()
    path = tmp_path / "c.sciz"
    path.write_bytes(data)
    with SciZFile(path) as f:
        for bad in (-1, 3, 100):
            with pytest.raises(IndexError):
                f.payload(bad)
        with pytest.raises(TypeError):
            f.payload(1.0)  # type: ignore[arg-type]
        assert "3 payloads" in repr(f)
    assert f.closed
    with pytest.raises(ValueError, match="closed"):
        f.payload(0)
    f.close()  # idempotent
    assert f.header == {"shape": [4, 5], "dtype": "uint8"}  # metadata stays available


def test_bytes_and_path_give_identical_results(tmp_path: Path) -> None:
    rng = random.Random(3)
    payloads = [rng.randbytes(rng.randrange(0, 500)) for _ in range(17)]
    data = pack(HEADER, payloads)
    path = tmp_path / "same.sciz"
    path.write_bytes(data)
    with SciZFile(data) as a, SciZFile(path) as b:
        for attr in ("header", "n_payloads", "payload_sizes", "file_size", "version"):
            assert getattr(a, attr) == getattr(b, attr)
        for i in range(a.n_payloads):
            assert a.payload(i) == b.payload(i) == payloads[i]
            assert a.payload_offset(i) == b.payload_offset(i)
    # and the same errors (bar the file name prefix)
    bad = bytearray(data)
    bad[30] ^= 0x40
    path.write_bytes(bad)
    with pytest.raises(FormatError) as from_bytes:
        SciZFile(bytes(bad))
    with pytest.raises(FormatError) as from_path:
        SciZFile(path)
    assert str(from_path.value) == f"{path}: {from_bytes.value}"


def test_concurrent_reads_from_path(tmp_path: Path) -> None:
    payloads = [bytes([i]) * (1000 + i) for i in range(32)]
    path = tmp_path / "mt.sciz"
    path.write_bytes(pack({}, payloads))
    errors: list[BaseException] = []
    with SciZFile(path) as f:

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(200):
                    i = rng.randrange(32)
                    assert f.payload(i) == payloads[i]
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


# --------------------------------------------------------------------------------------------
# write_atomic
# --------------------------------------------------------------------------------------------


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_write_atomic_creates_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "out.sciz"
    assert write_atomic(target, b"one") == target
    assert target.read_bytes() == b"one"
    with pytest.raises(OutputExistsError, match="exists; use --force to overwrite"):
        write_atomic(target, b"two")
    assert target.read_bytes() == b"one"
    assert write_atomic(str(target), memoryview(b"three"), force=True) == target
    assert target.read_bytes() == b"three"
    assert _leftovers(tmp_path) == []
    assert isinstance(OutputExistsError("x"), FileExistsError)


@pytest.mark.skipif(os.name != "posix", reason="umask is POSIX")
def test_write_atomic_respects_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        target = write_atomic(tmp_path / "m.sciz", b"x")
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o640


def test_write_atomic_never_overwrites_an_input(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "input.tif"
    src.write_bytes(b"precious")
    monkeypatch.chdir(tmp_path)
    aliases = [src, "input.tif", tmp_path / "." / "input.tif"]
    if hasattr(os, "link"):
        os.link(src, tmp_path / "hard.tif")
        aliases.append(tmp_path / "hard.tif")
    if hasattr(os, "symlink"):
        try:
            os.symlink(src, tmp_path / "sym.tif")
            aliases.append(tmp_path / "sym.tif")
        except OSError:  # pragma: no cover - e.g. Windows without privilege
            pass
    for alias in aliases:
        for force in (False, True):
            with pytest.raises(OutputExistsError, match="input"):
                write_atomic(alias, b"boom", force=force, inputs=[Path("other.tif"), src])
    assert src.read_bytes() == b"precious"
    # a non-existing input does not block writing
    assert write_atomic(tmp_path / "new.sciz", b"ok", inputs=[tmp_path / "ghost.tif"]).exists()
    assert _leftovers(tmp_path) == []


def test_write_atomic_directory_target(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    for force in (False, True):
        with pytest.raises(OutputExistsError, match="directory"):
            write_atomic(tmp_path / "d", b"x", force=force)


def test_write_atomic_missing_directory(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "out.sciz"
    with pytest.raises(OutputFolderError, match=r"no such folder: .*such"):
        write_atomic(target, b"x")
    assert not target.parent.exists()


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, OSError, RuntimeError])
@pytest.mark.parametrize("force", [False, True])
def test_write_atomic_cleans_up_on_error(
    tmp_path: Path, monkeypatch, exc_type: type[BaseException], force: bool
) -> None:
    target = tmp_path / "out.sciz"
    if force:
        target.write_bytes(b"old")

    def boom(fd: int) -> None:
        assert len(_leftovers(tmp_path)) == 1  # the temp file exists at this point
        raise exc_type("interrupted")

    monkeypatch.setattr(container.os, "fsync", boom)
    with pytest.raises(exc_type):
        write_atomic(target, b"new data", force=force)
    assert _leftovers(tmp_path) == []
    if force:
        assert target.read_bytes() == b"old"
    else:
        assert not target.exists()


def test_write_atomic_does_not_clobber_a_file_created_meanwhile(
    tmp_path: Path, monkeypatch
) -> None:
    target = tmp_path / "race.sciz"
    real_fsync = os.fsync

    def create_target_then_fsync(fd: int) -> None:
        target.write_bytes(b"someone else")
        real_fsync(fd)

    monkeypatch.setattr(container.os, "fsync", create_target_then_fsync)
    with pytest.raises(OutputExistsError):
        write_atomic(target, b"mine")
    assert target.read_bytes() == b"someone else"
    assert _leftovers(tmp_path) == []


def test_write_atomic_without_hard_links(tmp_path: Path, monkeypatch) -> None:
    def no_link(src, dst) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(container.os, "link", no_link)
    target = write_atomic(tmp_path / "nl.sciz", b"data")
    assert target.read_bytes() == b"data"
    with pytest.raises(OutputExistsError):
        write_atomic(target, b"again")
    assert _leftovers(tmp_path) == []


def test_write_then_read(tmp_path: Path) -> None:
    payloads = [b"abc", b"", b"defg"]
    path = write_atomic(tmp_path / "rt.sciz", pack(HEADER, payloads))
    assert _read_all(path) == (HEADER, payloads)


# --------------------------------------------------------------------------------------------
# property tests
# --------------------------------------------------------------------------------------------

if given is not None:
    _json = st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=20,
    )
    _headers = st.dictionaries(st.text(max_size=12), _json, max_size=8)
    _payloads = st.lists(st.binary(max_size=300), max_size=12)

    @settings(max_examples=150, deadline=None)
    @given(header=_headers, payloads=_payloads)
    def test_property_round_trip(header: dict, payloads: list[bytes]) -> None:
        data = pack(header, payloads)
        assert len(data) == overhead(header, len(payloads)) + sum(map(len, payloads))
        assert _read_all(data) == (header, payloads)

    @settings(max_examples=150, deadline=None)
    @given(
        header=_headers,
        payloads=_payloads,
        pos=st.integers(min_value=0),
        mask=st.integers(1, 255),
    )
    def test_property_flip_detected(header: dict, payloads, pos: int, mask: int) -> None:
        data = bytearray(pack(header, payloads))
        data[pos % len(data)] ^= mask
        with pytest.raises(FormatError):
            _read_all(bytes(data))

    @settings(max_examples=300, deadline=None)
    @given(tail=st.binary(max_size=64), version=st.sampled_from([b"\x01\x00", b"\x01\x05"]))
    def test_property_garbage_after_magic(tail: bytes, version: bytes) -> None:
        # Never any exception but FormatError (a valid file this way is astronomically rare).
        with pytest.raises(FormatError):
            _read_all(MAGIC + version + tail)
