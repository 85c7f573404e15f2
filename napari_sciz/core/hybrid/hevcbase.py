"""The HEVC base layer of a hybrid block: x265 presets, 10/12-bit frames, filling a byte target.

The slices of a block are the frames of one gray video, range-scaled and padded to even sizes
by edge replication (:mod:`.bases` describes every base codec).
"""

from __future__ import annotations

import numpy as np

from ...errors import FormatError, SciZError
from .basecodec import BaseCodec, Shape3, _scaled, _split_range, _unscaled
from .headers import hevc_picture_sizes
from .planes import HEVCPlanes, PlaneSource
from .x265proc import encode_frames

__all__ = ["HEVC_PRESETS", "HEVCBase", "HEVCFill"]

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
#: blocks of these many frames may come down to their bytes from a stream too large by a
#: stretched code range (:meth:`HEVCBase.shrinker`): one frame, or the 3-4 planes of a colour
#: image, whose first holds most of the bytes (x265 medium at the bytes of 64x, PSNR of the
#: image: ihc 29.82 dB at 92.8 % of the bytes -> 30.12 dB at 99.6 %, astronaut 32.80 -> 33.04
#: dB; hybrid files at a 30 s budget: ihc 64x 30.17 -> 30.40 dB, astronaut 64x / 256x +0.19 /
#: +0.21 dB; 3-4 slices of grey stacks the same or +0.03-0.06 dB). Not two frames: the CT
#: pair coded so at 256x filled its base and lost its loop filter, 31.30 -> 28.57 dB
SHRINK_FRAMES = (1, 3, 4)
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
        # codes 3675 B, 1 % over, CRF 34 ~13 % under); a stretched code range moves it between.
        # So do a few frames whose first holds most of the bytes (the decorrelated planes of a
        # colour image), which a fill's zones move in thirds of a QP step at best
        return HEVCFill(self.preset, param, shrink=True) if shape3[0] in SHRINK_FRAMES else None

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
    :data:`HEVC_FILL_AQ` instead. With ``shrink`` (:meth:`HEVCBase.shrinker`: one frame, or a
    colour image's planes) the CRF is the finer one whose stream was too large and the block's
    codes span ``1 / s`` of the code range, ``s = 2 ** ((1 - f) / 6)`` (:func:`_scaled`; the
    stream's stored range is ``s`` times the block's): x265's quantizer is then ``s`` times
    coarser on the block, from one QP step (``f = 0``) to none (``f = 1``, the CRF's own
    stream), so the size comes down into the bytes from above in small steps, on any image
    (img_terra_2d, a noisy 1024x1024 telomere image, at 8192 B: CRF 24 codes 8392 B, CRF 25 6938
    B / 38.89 dB; stretched 1.01 from CRF 24: 8140 B / 39.09 dB). An ordinary HEVC stream: the
    decoder maps the codes back with the stored range and does not know.
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
