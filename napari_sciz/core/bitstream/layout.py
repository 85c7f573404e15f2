"""The fixed parts of the ``.sciz`` layout: signature, version, limits, header dictionaries.

Shared by the writer (:mod:`.container`) and the reader (:mod:`.scizfile`); ``docs/format.md``
specifies the bytes.
"""

from __future__ import annotations

import struct

from ...errors import FormatError

__all__ = [
    "payload_head",
    "FORMAT_VERSION",
    "HEADER_DICTIONARY",
    "HEADER_DICTIONARY_V1",
    "HEADER_DICTIONARY_V2",
    "MAGIC",
    "MAX_HEADER_BYTES",
    "MAX_PAYLOADS",
    "MAX_PAYLOAD_BYTES",
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


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The unsigned LEB128 integer at ``data[pos:]`` and the position after it.

    Raises
    ------
    FormatError
        Truncated data, or more than 36 bits.
    """
    value = 0
    shift = 0
    while True:
        if pos >= len(data) or shift > 35:
            raise FormatError("block payload is truncated or corrupted (bad varint)")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def payload_head(data: bytes, head: struct.Struct, magic: bytes, version: int, what: str) -> tuple:
    """The fields of a payload's fixed ``head`` after its magic and version (the first two).

    Raises
    ------
    FormatError
        ``"<what>: truncated payload"``, ``"<what>: bad magic"`` (another kind of payload),
        or ``"<what> version N is newer than this napari-sciz reads"``.
    """
    if len(data) < head.size:
        raise FormatError(f"{what}: truncated payload")
    found, found_version, *fields = head.unpack_from(data)
    if found != magic:
        raise FormatError(f"{what}: not this kind of payload (bad magic)")
    if found_version != version:
        raise FormatError(
            f"{what} version {found_version} is newer than this napari-sciz reads ({version}); "
            "update napari-sciz"
        )
    return tuple(fields)
