"""Byte layout constants of the lossless block payloads (see ``docs/format.md``)."""

from __future__ import annotations

import struct

from ...errors import FormatError

_MAGIC = b"SZL"


_RAW_MAGIC = b"SZR"


#: version of the coded payloads written (1 = row-wise coder, 2 = wavefront coder with one
#: probability model per symbol, 3 = version 2 with each wavefront's symbols sorted by context
#: class; all still decoded). Version 4 has the same prediction and contexts, but the block is
#: cut into row bands ("lanes") coded independently, the entropy coder's symbols are grouped
#: by class over the whole block (lane by lane, C order inside a class and lane) and the raw
#: bits are in lane and C order: the decoder decodes each class's symbols with one call, then
#: runs one compiled loop per lane, the lanes on threads
#: (:func:`.rasterkernels.decode_raster`)
#: Version 5 replaces the fixed contexts by a context tree grown for the block
#: (:mod:`.ctxtree`) and may code residuals negated where the west and north residuals lean
#: negative. Version 6 adds sub-predictor 7, the wide least squares of :mod:`.xls` (25
#: neighbours, a weight set per gradient level), whose weights follow the tree. Version 7 is
#: version 6 with the ANS symbols grouped lane by lane (context by context inside a lane): the
#: decoder starts a lane's compiled loop as soon as its symbols are decoded, while it decodes
#: the next lane's
_VERSION = 7


_VERSIONS = (1, 2, 3, 4, 5, 6, 7)


#: first version whose symbols are grouped lane by lane (before: context by context)
LANE_MAJOR_VERSION = 7


#: version byte of stored (raw) blocks
_RAW_VERSION = 1


#: header of versions 2-6
_HEAD2 = struct.Struct("<3sBBBIIIIqddIBBBBIIIIQ")


#: version 4, after the header: byte lengths of the class-count and lane-count streams, the
#: number of lanes and their axis (0: slabs of slices, 1: bands of rows), the predictor map
#: (per gradient level: 0 the blend, ``i + 1`` sub-predictor ``i`` alone)
_V4_EXT = struct.Struct("<IIBB8s")


#: version 4: the raw-bit position where each lane after the first starts
_V4_LANE_BITS = struct.Struct("<Q")


#: version 5, after the lane bit positions: residuals negated where ``sign(rW) + sign(rN) < 0``
#: (0 or 1), the level shift of the predicted-intensity property, the context tree's byte
#: length (the tree follows)
_V5_EXT = struct.Struct("<BBH")


#: version 6, after the tree: the byte length of the wide least-squares weights (0: none; else
#: 16 sets of ``<25hq``, slice group major, gradient level minor)
_V6_EXT = struct.Struct("<H")


#: version 7, after the wide least squares: the byte length of the sparse-context section (0:
#: none; see :class:`.sparse.SparseTable`)
_V7_EXT = struct.Struct("<I")


_U32 = struct.Struct("<I")


class PayloadReader:
    """Sequential reads of a block payload from ``pos``, every length checked (``what``
    names the payload in the error)."""

    def __init__(self, payload: bytes, pos: int, what: str) -> None:
        self.payload, self.pos, self.what = payload, pos, what

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes; :class:`FormatError` past the payload's end."""
        if n < 0 or self.pos + n > len(self.payload):
            raise FormatError(f"{self.what} is truncated")
        out = self.payload[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        """The next little-endian ``u32``."""
        return _U32.unpack(self.take(4))[0]

    def section(self) -> bytes:
        """The next section: a ``u32`` length, then that many bytes."""
        return self.take(self.u32())
