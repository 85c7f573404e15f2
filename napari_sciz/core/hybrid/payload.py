"""The hybrid block payload: its layers packed and read back.

Version 6 (written unless the base is halved)::

    u8 version (6) | u8 base codec (low 4 bits: 0 none, 1 SPERR, 2 JPEG XL, 3 HEVC,
    4 SPERR slabs; bit 4: the block is one plane; bit 5: a neural filter follows)
    | varint base length | base stream | varint filter length | loop filter (may be empty)
    | varint network length | neural filter (:mod:`.nnfilter`; only with bit 5)
    | field payload (latent-grid block payload; absent when no field is fitted)

Version 7 (written for a halved base) is the same layout with bit 6 of the codec byte set:
the base codes the block's planes at half resolution (:mod:`.halved`). Older readers refuse
it ("upgrade napari-sciz"), and read every other file this version writes.

Version 5 is the same layout with the network's weights stored as int8 (:mod:`.nnfilter`
reads both forms). Versions 3 and 4 have no network; version 4 differs from 3 only in how its
SPERR streams are coded (:mod:`.sperrpack`). Version 2 payloads (``b"SZH" | u8 2 | u8 codec |
u8 flags | u32 base length``, SPERR streams as SPERR wrote them) and version 1 (SPERR base, no
loop filter) still decode.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from ...errors import FormatError
from ..bitstream.layout import _varint, read_varint
from .bases import BaseCodec, base_by_id
from .halved import HALVED_BIT, HalvedBase

__all__ = ["Layers", "describe", "head_bytes", "layer_sizes", "pack", "parse"]

_MAGIC = b"SZH"
VERSION = 7
#: the version written for payloads whose base is not halved (read by readers of version 6)
_PLAIN_VERSION = 6
#: the first version with a halved base (:data:`~.halved.HALVED_BIT`)
_HALVED_VERSION = 7
#: the first version with a neural filter
_NETWORK_VERSION = 5
#: head of version 1 and 2 payloads: magic, version, base codec, flags, base length
_HEAD_V2 = struct.Struct("<3sBBBI")
#: bit of the codec byte of a version-3 head: the block is one plane
_FLAT_BIT = 0x10
#: bit of the codec byte of a version-5 head: a neural filter follows the loop filter
_NETWORK_BIT = 0x20


@dataclass(frozen=True)
class Layers:
    """The parts of a hybrid payload (empty bytes: the layer is absent)."""

    codec: BaseCodec
    base: bytes
    filt: bytes
    network: bytes
    field: bytes


def head_bytes(high: int) -> int:
    """Most bytes a version-3 head takes in a payload of at most ``high`` bytes."""
    return 2 + len(_varint(max(high, 0)))


def pack(
    codec_ident: int, base: bytes, filt: bytes, network: bytes, field: bytes, flat: bool
) -> bytes:
    """A payload of these layers: version 6, or 7 when the base is halved (``codec_ident``
    with :data:`~.halved.HALVED_BIT`)."""
    flags = (_FLAT_BIT if flat else 0) | (_NETWORK_BIT if network else 0)
    version = _HALVED_VERSION if codec_ident & HALVED_BIT else _PLAIN_VERSION
    head = bytes([version, codec_ident | flags])
    net = _varint(len(network)) + network if network else b""
    return b"".join((head, _varint(len(base)), base, _varint(len(filt)), filt, net, field))


def _parse_head(payload: bytes) -> tuple[int, int, int, int, int]:
    """``(version, codec number, flag bits, base start, base length)`` of a payload."""
    if payload[:3] == _MAGIC:
        if len(payload) < _HEAD_V2.size:
            raise FormatError("hybrid block payload is truncated")
        _magic, version, codec, flags, base_len = _HEAD_V2.unpack_from(payload)
        if not 1 <= version <= 2:
            raise FormatError(f"hybrid payload version {version} is not supported")
        if flags > 1:
            raise FormatError("hybrid payload has unknown flags")
        if version == 1 and codec != 1:
            raise FormatError(f"unknown base codec {codec} in a hybrid payload")
        return version, codec, _FLAT_BIT if flags & 1 else 0, _HEAD_V2.size, base_len
    if len(payload) < 3:
        raise FormatError("hybrid block payload is truncated")
    version, byte = payload[0], payload[1]
    if not 3 <= version <= VERSION:
        if VERSION < version < 16:
            raise FormatError(
                f"hybrid payload version {version} is not supported; upgrade napari-sciz"
            )
        raise FormatError("not a hybrid block payload")
    known = _FLAT_BIT | 0x0F | (_NETWORK_BIT if version >= _NETWORK_VERSION else 0)
    if version >= _HALVED_VERSION:
        known |= HALVED_BIT
    if byte & ~known:
        raise FormatError("hybrid payload has unknown flags")
    base_len, start = read_varint(payload, 2)
    return version, byte & (0x0F | HALVED_BIT), byte & ~(0x0F | HALVED_BIT), start, base_len


def _section(payload: bytes, pos: int, what: str) -> tuple[bytes, int]:
    """A varint-length section at ``pos`` and the position after it."""
    length, pos = read_varint(payload, pos)
    if pos + length > len(payload):
        raise FormatError(f"hybrid block payload is truncated ({what})")
    return payload[pos : pos + length], pos + length


def parse(payload: bytes, shape3: tuple[int, int, int]) -> Layers:
    """Split a payload into its layers.

    Raises
    ------
    FormatError
        Not a hybrid payload, an unknown version or base codec, a truncated payload or one
        that does not match the block's shape.
    """
    version, codec, flags, start, base_len = _parse_head(payload)
    base_codec = base_by_id(codec & 0x0F, version)
    if codec & HALVED_BIT:
        base_codec = HalvedBase(base_codec)
    if bool(flags & _FLAT_BIT) != (shape3[0] == 1):
        raise FormatError("hybrid payload does not match the block's shape")
    if start + base_len > len(payload):
        raise FormatError("hybrid block payload is truncated (base layer)")
    base = payload[start : start + base_len]
    pos = start + base_len
    if version == 1:
        return Layers(base_codec, base, b"", b"", payload[pos:])
    filt, pos = _section(payload, pos, "loop filter")
    network = b""
    if flags & _NETWORK_BIT:
        network, pos = _section(payload, pos, "neural filter")
    return Layers(base_codec, base, filt, network, payload[pos:])


def _any_shape(payload: bytes) -> tuple[int, int, int]:
    """A block shape that agrees with the payload's one-plane flag."""
    return (1, 1, 1) if _parse_head(payload)[2] & _FLAT_BIT else (2, 1, 1)


def layer_sizes(payload: bytes) -> tuple[int, int]:
    """Bytes of the base layer and of the fitted residual field in a hybrid payload."""
    layers = parse(payload, _any_shape(payload))
    return len(layers.base), len(layers.field)


def describe(payload: bytes) -> dict[str, Any]:
    """Base codec, layer sizes, filter classes and network of a hybrid payload (``sciz info``)."""
    from .loopfilter import parse_loop_filter
    from .nnfilter import parse_neural_filter

    layers = parse(payload, _any_shape(payload))
    parsed = parse_loop_filter(layers.filt) if layers.filt else None
    net = parse_neural_filter(layers.network) if layers.network else None
    return {
        "base": layers.codec.name,
        "base_bytes": len(layers.base),
        "filter_bytes": len(layers.filt),
        "filter_classes": 0 if parsed is None else parsed.classes,
        "filter_wide": parsed is not None and parsed.wide,
        "tone_knots": 0 if parsed is None or parsed.tone is None else parsed.tone.knots,
        "network_bytes": len(layers.network),
        "network_hidden": 0 if net is None else net.hidden,
        "field_bytes": len(layers.field),
    }
