"""Read the image size a third-party base stream declares, before any library decodes it.

A hybrid file's base layer is a SPERR, HEVC or JPEG XL stream decoded by a C/C++ library that
allocates what the stream's own header asks for. A damaged or crafted file (CRCs recomputed)
could declare a huge image and make that library exhaust the machine's memory, or abort the
process, before napari-sciz sees the result. These parsers read only the size fields of each
stream (pure Python, bounded work) so that the decoders refuse a stream whose size is not the
block's, and never hand it to the library.

* SPERR: the stream header written by SPERR (version byte, packed flags, dimensions as
  little-endian ``uint32``; 3D streams then carry chunk dimensions and lengths), and each
  chunk's conditioner and SPECK headers (bit planes <= 64, coded bits <= 64 per value);
* HEVC: every sequence parameter set's ``pic_width/height_in_luma_samples`` less its
  conformance window (ITU-T H.265 §7.3.2.2, Annex B byte stream);
* JPEG XL: checked by the decoder itself against a caller-allocated output of the block's
  size (``imagecodecs.jpegxl_decode(out=...)`` compares the declared size before decoding).
"""

from __future__ import annotations

import math
import re
import struct

from ...errors import FormatError

__all__ = ["check_sperr_header", "hevc_picture_sizes"]

#: SPERR's packed flags (most significant bit first): portion, 3D, float input, multi-chunk
_SPERR_PORTION, _SPERR_3D, _SPERR_MULTI = 0x80, 0x40, 0x10


def check_sperr_header(stream: bytes, shape: tuple[int, ...]) -> None:
    """Refuse a SPERR stream whose declared size is not ``shape`` (ZYX or YX).

    Raises
    ------
    FormatError
        The header is truncated, declares another size, or declares chunks whose lengths do
        not fit in the stream.
    """
    what = "hybrid base layer (SPERR)"
    _check_sperr_container(stream, shape, what)


def _check_sperr_container(stream: bytes, shape: tuple[int, ...], what: str) -> None:
    if len(stream) < 2:
        raise FormatError(f"{what} is truncated")
    flags = stream[1]
    is_3d = len(shape) == 3
    if bool(flags & _SPERR_3D) != is_3d or flags & _SPERR_PORTION:
        raise FormatError(f"{what} does not match the block's shape")
    ndim = len(shape)
    if len(stream) < 2 + 4 * ndim:
        raise FormatError(f"{what} is truncated")
    dims = struct.unpack_from(f"<{ndim}I", stream, 2)
    if tuple(dims) != tuple(reversed(shape)):  # SPERR stores X first
        raise FormatError(f"{what} does not match the block's shape")
    if not is_3d:
        _check_sperr_chunk(stream[2 + 8 :], math.prod(shape), what)
        return
    pos = 2 + 12
    n_chunks, chunk_voxels = 1, math.prod(shape)
    if flags & _SPERR_MULTI:
        if len(stream) < pos + 6:
            raise FormatError(f"{what} is truncated")
        chunk = struct.unpack_from("<3H", stream, pos)
        if min(chunk) < 1:
            raise FormatError(f"{what} declares empty chunks")
        pos += 6
        n_chunks = math.prod(-(-d // c) for d, c in zip(dims, chunk, strict=True))
        chunk_voxels = math.prod(chunk)
    end = pos + 4 * n_chunks
    if len(stream) < end:
        raise FormatError(f"{what} is truncated")
    lengths = struct.unpack_from(f"<{n_chunks}I", stream, pos)
    if end + sum(lengths) > len(stream):
        raise FormatError(f"{what} is truncated (chunks)")
    for length in lengths:
        _check_sperr_chunk(stream[end : end + length], chunk_voxels, what)
        end += length


#: a chunk's conditioner flags: values coded, or a constant chunk (SPERR 0.8)
_CHUNK_CODED, _CHUNK_CONSTANT = 0x80, 0x81
#: conditioner header: flags, mean and step (float64); then SPECK: bit planes (u8), bits (u64)
_CONDITIONER, _SPECK_HEAD = 17, 9


def _check_sperr_chunk(chunk: bytes, voxels: int, what: str) -> None:
    """Refuse a chunk whose SPECK header asks for more bit planes or bits than a chunk of
    ``voxels`` values can hold (a hostile count makes SPERR allocate without bound)."""
    if not chunk:
        raise FormatError(f"{what} is truncated (chunk)")
    flags = chunk[0]
    if flags == _CHUNK_CONSTANT:
        if len(chunk) != _CONDITIONER:
            raise FormatError(f"{what} has an invalid constant chunk")
        return
    if flags != _CHUNK_CODED or len(chunk) < _CONDITIONER + _SPECK_HEAD:
        raise FormatError(f"{what} has an unsupported or truncated chunk")
    planes = chunk[_CONDITIONER]
    (bits,) = struct.unpack_from("<Q", chunk, _CONDITIONER + 1)
    if planes > 64 or bits > 64 * voxels + 4096:
        raise FormatError(f"{what} declares more coded bits than its block holds")
    if bits == 0:  # SPERR 0.8 dereferences an empty bit stream (a segmentation fault)
        raise FormatError(f"{what} declares an empty coded chunk")


class _Bits:
    """Most-significant-bit-first reader of an RBSP (H.265 ``u(n)`` and ``ue(v)``)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise FormatError("hybrid base layer (HEVC) has a truncated parameter set")
            value = (value << 1) | ((self.data[byte] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise FormatError("hybrid base layer (HEVC) has an invalid parameter set")
        return (1 << zeros) - 1 + self.u(zeros)


def _skip_profile_tier_level(bits: _Bits, max_sub_layers_minus1: int) -> None:
    bits.u(88)  # general profile space, tier, profile, compatibility and constraint flags
    bits.u(8)  # general_level_idc
    present = [(bits.u(1), bits.u(1)) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        bits.u(2 * (8 - max_sub_layers_minus1))
    for profile, level in present:
        bits.u(88 * profile + 8 * level)


def _sps_size(rbsp: bytes) -> tuple[int, int]:
    bits = _Bits(rbsp)
    bits.u(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = bits.u(3)
    bits.u(1)  # sps_temporal_id_nesting_flag
    _skip_profile_tier_level(bits, max_sub_layers_minus1)
    bits.ue()  # sps_seq_parameter_set_id
    chroma = bits.ue()  # chroma_format_idc
    if chroma == 3 and bits.u(1):  # separate_colour_plane_flag
        chroma = 0
    width = bits.ue()
    height = bits.ue()
    if bits.u(1):  # conformance_window_flag: the decoded pictures are cropped
        sub_w, sub_h = (2, 2) if chroma == 1 else (2, 1) if chroma == 2 else (1, 1)
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    return width, height


_START = re.compile(b"\x00\x00\x01")


def hevc_picture_sizes(body: bytes) -> list[tuple[int, int]]:
    """``(width, height)`` of the decoded pictures of every sequence parameter set of an
    Annex B HEVC stream (after the conformance window's cropping)."""
    sizes = []
    starts = [m.end() for m in _START.finditer(body)]
    for i, start in enumerate(starts):
        stop = starts[i + 1] - 3 if i + 1 < len(starts) else len(body)
        if stop - start < 3 or (body[start] >> 1) & 0x3F != 33:  # 33: SPS
            continue
        rbsp = body[start + 2 : stop].replace(b"\x00\x00\x03", b"\x00\x00")
        sizes.append(_sps_size(rbsp))
    return sizes
