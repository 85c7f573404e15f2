"""The classical base layers of a hybrid block: SPERR, HEVC and JPEG XL at a byte target.

Each base codec turns a block (float values in original units, shape ``(D, H, W)``) into one
self-contained stream of at most a given number of bytes, and back. The hybrid encoder
(:mod:`napari_sciz.core.hybrid.codec`) tries them per block and keeps the most accurate, so a
hybrid file is never worse than the best of them at its size.

* **SPERR** (3D wavelets + SPECK, ``imagecodecs``): the block as float64, bits-per-value mode.
* **HEVC** (x265 through PyAV's bundled FFmpeg, decoded by FFmpeg's HEVC decoder): the slices
  are the frames of one gray video, range-scaled and padded to even sizes by edge replication;
  ``tune psnr`` and CRF as the quality knob as in the benchmark, preset ``medium`` (the
  benchmark's anchor) with ``slow``'s quantization (:data:`HEVC_PRESET_PARAMS`), then
  ``slow``, ``slower`` and ``placebo`` while the time budget allows (:data:`HEVC_PRESETS`). Frames
  are 12-bit up to CRF 40 and 10-bit above: x265's 12-bit mode collapses past CRF 44-47 (the
  decoded volume falls to 6-16 dB PSNR at about the size that gave 26 dB one CRF step earlier,
  seen on five of the shared stacks), where 10-bit keeps degrading gently at the same sizes.
  The decoder reads the bit depth from the stream. HEVC decoding is bit-exact by the standard.
* **SPERR in slabs**: the same, on 2 to 4 independent slabs of planes (the encoder's
  refinement of a SPERR choice; a slab decodes alone).
* **JPEG XL** (libjxl VarDCT, effort 7, ``imagecodecs``): all slices tiled into one 16-bit
  mosaic (:mod:`napari_sciz.core.hybrid.mosaic`), range-scaled onto ``[0, 65535]``.

A block that none of them can code in its bytes (tiny blocks at high ratios) has no base
(:data:`NO_BASE`, number 0): its field codes the values themselves.

The HEVC and JPEG XL streams start with the block's value range (two float64). Every decoder
checks what it decoded against the block's shape before the values are used.
"""

from __future__ import annotations

import math
import struct
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from ...errors import FormatError, SciZError
from .headers import check_sperr_header, hevc_picture_sizes
from .mosaic import mosaic_layout, tile_mosaic, untile_mosaic
from .planes import HEVCPlanes, PlaneSource, SlabPlanes, WholePlanes
from .sperrpack import pack_sperr, unpack_sperr
from .x265proc import encode_frames

__all__ = [
    "BASES",
    "NO_BASE",
    "BaseCodec",
    "base_by_id",
]

Shape3 = tuple[int, int, int]
_RANGE = struct.Struct("<dd")


def _imagecodecs() -> Any:
    try:
        import imagecodecs
    except ModuleNotFoundError as exc:  # pragma: no cover - a dependency of napari-sciz
        raise SciZError("hybrid mode needs imagecodecs: pip install imagecodecs") from exc
    return imagecodecs


class BaseCodec(ABC):
    """One classical codec as a hybrid base layer.

    Attributes
    ----------
    ident : int
        The codec's number in a hybrid payload.
    name : str
        Short name (``"sperr"``, ``"hevc"``, ``"jpegxl"``).
    lo, hi : float
        Range of the quality parameter.
    increasing : bool
        Whether the stream grows with the parameter.
    log : bool
        Whether the parameter is searched on a log scale.
    by_plane : bool
        Whether one plane decodes without the whole block (:meth:`planes`).
    slope : float or None
        Typical change of the stream's log size over the parameter's range (0 to 1, size
        increasing): the size search's step while only one side of the target is known
        (bisection when None).
    choice_weight : float
        The codec's part of the time the base choice has, relative to the others'.
    """

    ident: int
    name: str
    lo: float
    hi: float
    increasing: bool
    log: bool
    by_plane: bool = False
    slope: float | None = None
    choice_weight: float = 1.0

    @abstractmethod
    def available(self) -> bool:
        """Whether the codec's library is installed."""

    def supports(self, shape3: Shape3) -> bool:
        """Whether a block of this shape can be coded."""
        return True

    @abstractmethod
    def encode(self, block: np.ndarray, param: float) -> bytes:
        """The stream of ``block`` at quality ``param``."""

    @abstractmethod
    def decode(self, stream: bytes, shape3: Shape3) -> np.ndarray:
        """Float64 values of shape ``shape3``; :class:`FormatError` for a bad stream."""

    def refined(self) -> BaseCodec | None:
        """A slower setting of the same codec that codes better (same decoder), if any."""
        return None

    def param_for_size(self, block: np.ndarray, nbytes: int) -> float | None:
        """A quality parameter whose stream should come close to ``nbytes`` (a rate-driven
        codec knows it), or None; the size search starts there."""
        return None

    @property
    def cost(self) -> float:
        """Time of this setting's search relative to the codec's first setting (a guess the
        budget guards use)."""
        return 1.0

    def proxy(self) -> BaseCodec | None:
        """A much faster setting of the codec whose stream sizes follow this one's over the
        parameter (within a factor, with about the same slope), or None: a size search from
        scratch finds its start and slope with it first (:func:`~.search.encode_to_size`)."""
        return None

    def filler(self, param: float) -> BaseCodec | None:
        """For a codec whose stream size jumps between nearby parameters: a variant whose own
        parameter (0 to 1) grows the stream of ``param`` continuously up to about the next
        jump, decoded by the same decoder (the size search fills the bytes a jump leaves with
        it, :func:`~.search.encode_to_size`); None for codecs without jumps."""
        return None

    def shrinker(self, param: float, shape3: Shape3) -> BaseCodec | None:
        """For a codec whose stream size jumps: a variant whose own parameter (0 to 1) takes
        the stream of ``param`` (the smallest one found too large) down in small steps,
        smallest at 0, ``param``'s own stream at 1; decoded by the same decoder. It fills a
        jump from above where :meth:`filler` cannot fill it from below. None by default."""
        return None

    def planes(self, stream: bytes, shape3: Shape3) -> PlaneSource:
        """The decoded planes on demand (here: the whole block on the first request)."""
        return WholePlanes(lambda: self.decode(stream, shape3))


#: a coded SPERR stream is at most about this share of SPERR's (its code is 5-30 % smaller):
#: SPERR is asked for the bits per value over it, and for that much more again, up to
#: :data:`_OVERCODE_TRIES` times, while the code falls short of the budget
_CODED_SHARE = 0.8
_OVERCODE_TRIES = 3
#: bytes a coded stream may fall short of its budget (the code's next bit did not fit)
_FILLED = 2


def _split_range(stream: bytes) -> tuple[float, float, bytes]:
    if len(stream) < _RANGE.size:
        raise FormatError("hybrid base layer is truncated")
    vmin, vmax = _RANGE.unpack_from(stream)
    if not (math.isfinite(vmin) and math.isfinite(vmax) and vmax >= vmin):
        raise FormatError("hybrid base layer holds an invalid value range")
    return vmin, vmax, stream[_RANGE.size :]


def _scaled(block: np.ndarray, maxcode: int, stretch: float = 1.0) -> tuple[np.ndarray, bytes]:
    """The block as integer codes ``0..maxcode`` and the range that maps them back. With
    ``stretch > 1`` the stored range is that much wider than the block's, so the block takes
    ``1 / stretch`` of the codes (a codec's quantizer is then coarser on it by that factor:
    ``2 ** (1 / 6)`` is one HEVC QP step); the decoder maps the codes back the same way."""
    vmin, vmax = float(block.min()), float(block.max())
    if vmax > vmin and stretch != 1.0:
        vmax = vmin + (vmax - vmin) * stretch
    span = vmax - vmin if vmax > vmin else 1.0
    codes = np.clip(np.rint((block.astype(np.float64) - vmin) * (maxcode / span)), 0, maxcode)
    return codes.astype(np.uint16), _RANGE.pack(vmin, vmax)


def _unscaled(codes: np.ndarray, vmin: float, vmax: float, maxcode: int) -> np.ndarray:
    span = vmax - vmin if vmax > vmin else 1.0
    return codes.astype(np.float64) * (span / maxcode) + vmin


class SPERRBase(BaseCodec):
    """SPERR in bits-per-value mode on the float64 block (2D for one-plane blocks).

    In hybrid payloads of version 4 (``coded``) the SPECK bits of SPERR's stream are
    arithmetic-coded (:mod:`.bitmix`), and a stream of quality ``param`` takes ``param`` bits
    per value to the byte: SPERR is asked for more bits than that (its rate mode cuts one
    embedded stream), and the longest prefix whose code fits is kept
    (:func:`~.sperrpack.pack_sperr`).
    """

    ident, name, lo, hi, increasing, log = 1, "sperr", 1e-4, 64.0, True, True

    def available(self) -> bool:  # noqa: D102
        sperr = getattr(_imagecodecs(), "SPERR", None)
        return bool(sperr is not None and sperr.available)

    def __init__(self, packed: bool = True, coded: bool = True) -> None:
        #: whether streams are in the packed form of :mod:`.sperrpack` (hybrid payloads of
        #: version 3 and later; earlier ones hold SPERR's own streams)
        self.packed = packed
        #: whether packed streams have their SPECK bits arithmetic-coded (version 4)
        self.coded = packed and coded

    def encode(self, block: np.ndarray, param: float) -> bytes:  # noqa: D102
        data = np.ascontiguousarray(block, dtype=np.float64)
        data = data[0] if data.shape[0] == 1 else data
        if float(data.max()) == float(data.min()):
            param = 1e-3  # constant: a few header bytes
        if not self.coded:
            stream = bytes(_imagecodecs().sperr_encode(data, float(param), "bpp"))
            return pack_sperr(stream, data.shape) if self.packed else stream
        budget = max(int(param * data.size / 8.0), 1)
        bpp = min(float(param) / _CODED_SHARE, self.hi)
        for _ in range(_OVERCODE_TRIES):
            stream = bytes(_imagecodecs().sperr_encode(data, bpp, "bpp"))
            packed = pack_sperr(stream, data.shape, coded=True, budget=budget)
            full = len(stream) < 0.95 * bpp * data.size / 8  # SPERR coded every bit plane
            if len(packed) >= budget - _FILLED or full or bpp >= self.hi:
                break
            bpp = min(bpp / _CODED_SHARE, self.hi)
        return packed

    def param_for_size(self, block: np.ndarray, nbytes: int) -> float | None:
        """Bits per value of ``nbytes`` (a coded stream lands on it to the byte; SPERR's own
        rate mode within a few bytes: 0.3 % is left for its header)."""
        share = 1.0 if self.coded else 0.997
        return 8.0 * share * nbytes / max(block.size, 1)

    def refined(self) -> BaseCodec | None:
        """The same bits per value in independent slabs of planes (:class:`SPERRSlabsBase`)."""
        return SPERRSlabsBase(2, self.packed, self.coded)

    def decode(self, stream: bytes, shape3: Shape3) -> np.ndarray:  # noqa: D102
        shape = shape3[1:] if shape3[0] == 1 else shape3
        stream = unpack_sperr(stream, shape, coded=self.coded) if self.packed else stream
        check_sperr_header(stream, shape)  # before SPERR allocates what the stream declares
        try:
            values = _imagecodecs().sperr_decode(stream, shape=shape, dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 - any SPERR failure means a bad stream
            raise FormatError(f"hybrid base layer (SPERR) cannot be decoded: {exc}") from exc
        values = np.asarray(values, dtype=np.float64)
        if values.size != math.prod(shape3):
            raise FormatError("hybrid base layer (SPERR) does not match the block's shape")
        return values.reshape(shape3)


class SPERRSlabsBase(SPERRBase):
    """SPERR on ``slabs`` independent slabs of planes at the same bits per value.

    A slice of a volume whose planes correlate weakly, or whose noise differs along z, can code
    better in slabs than as one 3D wavelet transform (SPERR's z levels then span fewer
    planes), and a slab decodes without the others (a viewer's plane costs one slab). The
    encoder reaches it from SPERR's first choice (:meth:`SPERRBase.refined`: 2, 3, then 4
    slabs) and keeps it only where it is more accurate. Stream: ``u8`` number of slabs ``k``,
    ``k`` x ``u32`` slab stream lengths, the slab streams (plane ``(i * D) // k`` starts slab
    ``i``).
    """

    ident, name = 4, "sperr-slabs"
    by_plane = True
    _LEN = struct.Struct("<I")

    def __init__(self, slabs: int = 2, packed: bool = True, coded: bool = True) -> None:
        super().__init__(packed, coded)
        self.slabs = slabs

    def refined(self) -> BaseCodec | None:  # noqa: D102
        if self.slabs >= MAX_SPERR_SLABS:
            return None
        return SPERRSlabsBase(self.slabs + 1, self.packed, self.coded)

    @staticmethod
    def _cuts(depth: int, k: int) -> list[int]:
        return [(i * depth) // k for i in range(k + 1)]

    def encode(self, block: np.ndarray, param: float) -> bytes:  # noqa: D102
        k = max(1, min(self.slabs, block.shape[0]))
        cuts = self._cuts(block.shape[0], k)
        slabs = zip(cuts[:-1], cuts[1:], strict=True)
        streams = [SPERRBase.encode(self, block[a:b], param) for a, b in slabs]
        lengths = b"".join(self._LEN.pack(len(x)) for x in streams)
        return bytes([k]) + lengths + b"".join(streams)

    def _slabs(self, stream: bytes, shape3: Shape3) -> list[tuple[int, int, bytes]]:
        """``(z0, z1, slab stream)`` of every slab; :class:`FormatError` if inconsistent."""
        if not stream:
            raise FormatError("hybrid base layer (SPERR slabs) is truncated")
        k = stream[0]
        pos = 1 + self._LEN.size * k
        if not 1 <= k <= min(shape3[0], 255) or len(stream) < pos:
            raise FormatError("hybrid base layer (SPERR slabs) declares an invalid slab count")
        lengths = [self._LEN.unpack_from(stream, 1 + self._LEN.size * i)[0] for i in range(k)]
        if pos + sum(lengths) != len(stream):
            raise FormatError("hybrid base layer (SPERR slabs) has inconsistent lengths")
        cuts = self._cuts(shape3[0], k)
        out = []
        for i, n in enumerate(lengths):
            out.append((cuts[i], cuts[i + 1], stream[pos : pos + n]))
            pos += n
        return out

    def decode(self, stream: bytes, shape3: Shape3) -> np.ndarray:  # noqa: D102
        return self.planes(stream, shape3).upto(shape3[0])

    def planes(self, stream: bytes, shape3: Shape3) -> PlaneSource:
        """The slabs decoded as requests touch them (:class:`~.planes.SlabPlanes`)."""
        h, w = shape3[1], shape3[2]
        slabs = [
            (a, b, lambda a=a, b=b, x=x: SPERRBase.decode(self, x, (b - a, h, w)))
            for a, b, x in self._slabs(stream, shape3)
        ]
        return SlabPlanes(shape3, slabs)


#: most slabs :class:`SPERRSlabsBase` tries
MAX_SPERR_SLABS = 4


class JPEGXLBase(BaseCodec):
    """JPEG XL (VarDCT, effort 7) on the slices tiled into one 16-bit mosaic."""

    #: distances above about 15 take libjxl's slow path (an encode of the 60x256x256 nuclei
    #: stack: 1.8 s at distance 15, 7.9 s at 20 and 25) for images no base would keep
    ident, name, lo, hi, increasing, log = 2, "jpegxl", 0.01, 15.0, False, True
    effort = 7

    def available(self) -> bool:  # noqa: D102
        jxl = getattr(_imagecodecs(), "JPEGXL", None)
        return bool(jxl is not None and jxl.available)

    def encode(self, block: np.ndarray, param: float) -> bytes:  # noqa: D102
        codes, side = _scaled(block, 65535)
        mosaic, _ = tile_mosaic(codes)
        stream = _imagecodecs().jpegxl_encode(
            np.ascontiguousarray(mosaic), distance=float(param), effort=self.effort
        )
        return side + bytes(stream)

    def decode(self, stream: bytes, shape3: Shape3) -> np.ndarray:  # noqa: D102
        vmin, vmax, body = _split_range(stream)
        z, h, w = shape3
        rows, cols = mosaic_layout(z, h, w)
        # the first frame only, into an array of the block's size: imagecodecs refuses a
        # stream that declares another size before libjxl decodes (or allocates) anything
        mosaic = np.empty((rows * h, cols * w), np.uint16)
        try:
            _imagecodecs().jpegxl_decode(body, 0, out=mosaic)
        except Exception as exc:  # noqa: BLE001 - any libjxl failure means a bad stream
            raise FormatError(
                f"hybrid base layer (JPEG XL) cannot be decoded or does not match the block's "
                f"shape: {exc}"
            ) from exc
        return _unscaled(untile_mosaic(mosaic, z, h, w, cols), vmin, vmax, 65535)


#: x265 presets of the HEVC base: the first for the search among the base codecs, the next
#: ones in turn while the time budget leaves room (``slow`` is 1-2x ``medium``'s time and
#: codes better: pydicom 64x 43.5 -> 50.0 dB, philips 57.5 -> 57.7 dB; ``slower`` is 2-4x
#: ``slow``'s time: 51.1 and 57.8 dB). Starting at ``slow`` cut short budgets' searches
#: (20 s under load: philips at 94x instead of 64x)
#: ``placebo`` (x265's slowest: full-search motion, all partition shapes, deepest RDO) is tried
#: last, only when the budget leaves room for its cost (:data:`HEVC_PRESET_COST`): 7-20x
#: ``medium``'s time; on the CT brain at 64x 51.1 -> 53.0 dB, elsewhere +0.0-0.02 dB
HEVC_PRESETS = ("medium", "slow", "slower", "placebo")
#: the refinement starts a preset's search only while 12 ``medium`` encodes times this fit in
#: the time left (a ``slower`` encode takes 2-8 of them, a ``placebo`` one 7-20: the first
#: encode always ends in time; per-encode costs 2 / 5 / 20 measured 0.03 dB lower on philips)
HEVC_PRESET_COST = {"medium": 1.0, "slow": 1.0, "slower": 1.0, "placebo": 8.0}
#: the x265 preset whose CRF for a size starts the first search (:meth:`HEVCBase.proxy`): 2-5x
#: faster than ``medium`` with rdoq, its streams 0.83-1.2x as large at the same CRF and their
#: log size changing at about the same rate per CRF (nbsd, spam, philips at CRF 15-30)
HEVC_PROXY_PRESET = "ultrafast"
#: x265 parameters added to a preset's: ``medium`` with the rate-distortion optimised
#: quantization of ``slow`` and above (level 2), about 1.2x ``medium``'s time for most of
#: ``slow``'s gain, so the first search compares HEVC with the other bases nearer to what its
#: refinement reaches (same stream size: nbsd 64x 36.88 -> 37.10 dB, ``slow`` 37.15; spam 64x
#: 20.98 -> 21.28 / 21.29; philips 256x 50.97 -> 51.32 / 51.43; neuroproof 256x 24.40 ->
#: 24.71 / 24.69; savu 256x 41.07 -> 41.28 / 41.44)
HEVC_PRESET_PARAMS = {"medium": ":rdoq-level=2"}
#: the highest x265 CRF coded with 12-bit frames; above it frames are 10-bit (module doc)
HEVC_12BIT_MAX_CRF = 40.0


def _frame_side(n: int) -> int:
    """An HEVC frame side for ``n`` pixels: even, 66 for 63 or 64 (:meth:`HEVCBase._padded`)."""
    side = n + n % 2
    return 66 if side == 64 else side


class HEVCBase(BaseCodec):
    """HEVC (x265, 12-bit gray frames, ``tune psnr``) through PyAV."""

    ident, name, lo, hi, increasing, log = 3, "hevc", -6.0, 51.0, False, False
    by_plane = True
    #: x265's size changes by 0.08 (CT phantom) to 0.28 (nuclei) in log per CRF unit
    slope = 8.0
    #: its search takes 4-8 encodes of 0.2-2 s (x265 sizes are bumpy in the CRF) where SPERR's
    #: lands in 1-2 and JPEG XL's, which never won a block (docs/method.md), ends early or
    #: loses: three parts of the choice's time for one of JPEG XL's
    choice_weight = 3.0

    def __init__(self, preset: str = HEVC_PRESETS[0]) -> None:
        self.preset = preset

    def refined(self) -> BaseCodec | None:  # noqa: D102
        i = HEVC_PRESETS.index(self.preset) if self.preset in HEVC_PRESETS else -1
        return HEVCBase(HEVC_PRESETS[i + 1]) if 0 <= i < len(HEVC_PRESETS) - 1 else None

    @property
    def cost(self) -> float:  # noqa: D102
        return HEVC_PRESET_COST.get(self.preset, 1.0)

    def proxy(self) -> BaseCodec | None:  # noqa: D102
        return HEVCBase(HEVC_PROXY_PRESET) if self.preset == HEVC_PRESETS[0] else None

    def available(self) -> bool:  # noqa: D102
        try:
            import av
        except ImportError:
            return False
        return "libx265" in av.codecs_available and "hevc" in av.codecs_available

    def supports(self, shape3: Shape3) -> bool:  # noqa: D102
        # the x265 bundled with PyAV 18 corrupts its heap (AVX2) or gives run-to-run different
        # streams (SSE4.2) on frames narrower than one 64-pixel coding tree unit (seen here);
        # frames of exactly one unit are coded padded (:meth:`_padded`)
        return shape3[1] >= 64 and shape3[2] >= 64

    @staticmethod
    def _padded(shape3: Shape3) -> tuple[int, int]:
        """The coded frame size: even, and never one 64-pixel coding unit high or wide (66).

        On frames 64 pixels high or wide the bundled x265 reads memory it did not set: the same
        frames gave run-to-run different streams in 11 of 70 settings tried (64x64, 128x64,
        64x192, 200x64; none at 65 to 256 pixels), and a long test session crashed in it.
        """
        return _frame_side(shape3[1]), _frame_side(shape3[2])

    @staticmethod
    def _legacy_padded(shape3: Shape3) -> tuple[int, int]:
        """The frame size of files written before 64-pixel frames were padded (just even)."""
        return shape3[1] + shape3[1] % 2, shape3[2] + shape3[2] % 2

    @staticmethod
    def _format_for(crf: float) -> tuple[str, int]:
        """The frames' pixel format and largest code at quality ``crf`` (see the module doc)."""
        return ("gray12le", 4095) if crf <= HEVC_12BIT_MAX_CRF else ("gray10le", 1023)

    def filler(self, param: float) -> BaseCodec | None:  # noqa: D102
        return HEVCFill(self.preset, param)

    def shrinker(self, param: float, shape3: Shape3) -> BaseCodec | None:  # noqa: D102
        # one frame (a 2D image): its size moves only at whole QP steps (coins 32x: CRF 33
        # codes 3675 B, 1 % over, CRF 34 ~13 % under); a stretched code range moves it between
        return HEVCFill(self.preset, param, shrink=True) if shape3[0] == 1 else None

    def encode(self, block: np.ndarray, param: float) -> bytes:  # noqa: D102
        return self._encode(block, param, "")

    def _encode(
        self, block: np.ndarray, crf: float, zones: str, aq: float = 0.0, stretch: float = 1.0
    ) -> bytes:
        """x265 at ``crf``, with x265 ``zones`` (frame ranges and bitrate factors) if any,
        adaptive quantization of strength ``aq`` if positive, and the block's codes spread
        over ``1 / stretch`` of the code range (:func:`_scaled`)."""
        pix_fmt, maxcode = self._format_for(crf)
        codes, side = _scaled(block, maxcode, stretch)
        _, h, w = codes.shape
        ph, pw = self._padded(codes.shape)  # type: ignore[arg-type]
        if (ph, pw) != (h, w):
            codes = np.pad(codes, ((0, 0), (0, ph - h), (0, pw - w)), mode="edge")
        # asm=sse4.2: the AVX2 kernels of the x265 bundled with PyAV 18 corrupt the heap on
        # frames 48 or fewer pixels wide (seen here); SSE4.2 costs about a third more time
        # and keeps a future change of `supports` from crashing the process. The encode
        # runs in a helper process (:mod:`.x265proc`): a crash there does not end this one
        params = f"crf={crf:.4f}:pools=1:frame-threads=1:info=0:log-level=error:asm=sse4.2"
        params += HEVC_PRESET_PARAMS.get(self.preset, "")
        params += f":zones={zones}" if zones else ""
        params += f":aq-mode=1:aq-strength={aq:.4f}" if aq > 0 else ""
        options = {"preset": self.preset, "tune": "psnr", "x265-params": params}
        return bytes(side) + encode_frames(codes, pix_fmt, options)

    def decode(self, stream: bytes, shape3: Shape3) -> np.ndarray:  # noqa: D102
        return self.planes(stream, shape3).upto(shape3[0])

    def planes(self, stream: bytes, shape3: Shape3) -> PlaneSource:
        """The frames decoded as far as asked (:class:`~.planes.HEVCPlanes`)."""
        try:
            import av  # noqa: F401
        except ImportError as exc:
            raise SciZError(
                "this file's base layer is HEVC, which needs PyAV to decode: pip install av"
            ) from exc
        vmin, vmax, body = _split_range(stream)
        allowed = {self._padded(shape3)[::-1], self._legacy_padded(shape3)[::-1]}
        sizes = hevc_picture_sizes(body)  # before FFmpeg allocates what the stream declares
        if not sizes or len(set(sizes)) != 1 or sizes[0] not in allowed:
            raise FormatError("hybrid base layer (HEVC) does not match the block's shape")
        pw, ph = sizes[0]
        return HEVCPlanes(
            body, shape3, (ph, pw), lambda codes, maxcode: _unscaled(codes, vmin, vmax, maxcode)
        )


#: x265 bitrate factor of the frames an HEVC fill codes finer: their quantizer scale is divided
#: by it (1.04: a third of a QP step), which carries a frame across x265's size jumps
HEVC_FILL_FACTOR = 1.04
#: the largest adaptive-quantization strength of the fill of a one-frame block (a 2D image):
#: without adaptive QPs every coding unit of the frame takes the same QP, so its size moves
#: only at whole QP steps (~10 %), and zones do not move it at all. With them the size moves
#: with the strength: up on bbbc034 (CRF 27: 4230 B without, 4256 / 4338 / 4562 B at 0.1 /
#: 0.2 / 0.4; its hybrid file at 128x: 130.7x -> 128.4x, +0.001 dB), down on noisier images
#: (the search keeps a fill only when it fits and is more accurate than the plain stream)
HEVC_FILL_AQ = 0.5


class HEVCFill(HEVCBase):
    """HEVC at a fixed CRF with its first frames coded finer: the filler of :class:`HEVCBase`.

    x265's stream size jumps by up to 10 % between CRFs a thousandth apart (without adaptive
    quantization, ``tune psnr``, the frames' quantizers round together), so a CRF search can
    end well short of its bytes. At fill level ``f`` (0 to 1) of a ``D``-frame block, the
    first ``floor(f D)`` frames get the x265 zone factor :data:`HEVC_FILL_FACTOR` and the next
    one a fraction of it: the size grows from the CRF's stream (``f = 0``) in small steps.
    Measured against the largest CRF stream that fits (``slow``, after the loop filter):
    nbsd 64x 36.99 dB at 0.93 of the bytes -> fill, philips 256x +0.07 dB, neuroproof 64x
    +0.05 dB, pydicom 256x +0.43 dB. A block of one frame (a 2D image), whose size zones do
    not move, is filled with adaptive quantization of strength ``f`` times
    :data:`HEVC_FILL_AQ` instead. With ``shrink`` (:meth:`HEVCBase.shrinker`, one frame) the
    CRF is the finer one whose stream was too large and the block's codes span ``1 / s`` of
    the code range, ``s = 2 ** ((1 - f) / 6)`` (:func:`_scaled`; the stream's stored range is
    ``s`` times the block's): x265's quantizer is then ``s`` times coarser on the block, from
    one QP step (``f = 0``) to none (``f = 1``, the CRF's own stream), so the size comes down
    into the bytes from above in small steps, on any image (img_terra_2d, a noisy 1024x1024
    telomere image, at 8192 B: CRF 24 codes 8392 B, CRF 25 6938 B / 38.89 dB; stretched
    1.01 from CRF 24: 8140 B / 39.09 dB). An ordinary HEVC stream: the decoder maps the codes
    back with the stored range and does not know.
    """

    lo, hi, increasing, log = 0.0, 1.0, True, False
    slope = None  # (a fill spans a few per cent: bisection)

    def __init__(self, preset: str, crf: float, shrink: bool = False) -> None:
        super().__init__(preset)
        self.crf = crf
        self.shrink = shrink

    def refined(self) -> BaseCodec | None:  # noqa: D102
        return None

    def filler(self, param: float) -> BaseCodec | None:  # noqa: D102
        return None

    def shrinker(self, param: float, shape3: Shape3) -> BaseCodec | None:  # noqa: D102
        return None

    @staticmethod
    def zones(depth: int, level: float) -> str:
        """The x265 ``zones`` value of fill ``level`` for ``depth`` frames ("" for none)."""
        x = min(max(level, 0.0), 1.0) * depth
        k = min(int(x), depth)
        frac = x - k
        out = [f"0,{k - 1},b={HEVC_FILL_FACTOR:.4f}"] if k >= 1 else []
        if frac >= 1e-4 and k < depth:
            out.append(f"{k},{k},b={1.0 + (HEVC_FILL_FACTOR - 1.0) * frac:.4f}")
        return "/".join(out)

    def encode(self, block: np.ndarray, param: float) -> bytes:  # noqa: D102
        level = min(max(param, 0.0), 1.0)
        if self.shrink:  # from a quantizer one QP step coarser (0) to the CRF's own (1)
            return self._encode(block, self.crf, "", stretch=2.0 ** ((1.0 - level) / 6.0))
        if block.shape[0] == 1:  # one frame: zones do not move its size, adaptive QPs do
            return self._encode(block, self.crf, "", HEVC_FILL_AQ * level)
        return self._encode(block, self.crf, self.zones(block.shape[0], level))


class NoBase(BaseCodec):
    """No base layer: the block's field codes everything (blocks no classical codec fits)."""

    ident, name, lo, hi, increasing, log = 0, "none", 0.0, 0.0, True, False

    def available(self) -> bool:
        return True

    def encode(self, block: np.ndarray, param: float) -> bytes:
        return b""

    def decode(self, stream: bytes, shape3: Shape3) -> np.ndarray:
        if stream:
            raise FormatError("hybrid payload without a base layer carries base bytes")
        return np.zeros(shape3, np.float64)


#: the base codecs, in the order the encoder tries them (fastest first)
BASES: tuple[BaseCodec, ...] = (SPERRBase(), HEVCBase(), JPEGXLBase())
#: the empty base of field-only blocks (never searched; decoded by its number, 0)
NO_BASE = NoBase()


def base_by_id(ident: int, version: int) -> BaseCodec:
    """The base codec numbered ``ident`` in a hybrid payload of ``version``; :class:`FormatError`
    if unknown.

    SPERR streams are SPERR's own in versions 1 and 2, packed (:mod:`.sperrpack`) in version 3,
    packed with their SPECK bits arithmetic-coded from version 4 on.
    """
    packed, coded = version >= 3, version >= 4
    sperrs = (SPERRBase(packed, coded), SPERRSlabsBase(2, packed, coded))
    for codec in (NO_BASE, *sperrs, *BASES):
        if codec.ident == ident:
            return codec
    raise FormatError(f"unknown base codec {ident} in a hybrid payload")
