"""x265 encodes in helper processes, so that a crash of the encoder library cannot end the caller.

The x265 bundled with PyAV reads memory it did not set on frames 64 pixels high or wide (the
same frames give run-to-run different streams; the base pads them, see
:meth:`~napari_sciz.core.hybrid.hevcbase.HEVCBase._padded`) and has corrupted its heap on
narrower ones; the test suite saw it crash in the middle of a long session, taking the whole
process (napari, a CLI run, a Dask worker) with it. HEVC encodes therefore run in helper
processes (:mod:`napari_sciz.core.helperproc`): the frames go down a pipe, the stream comes
back. It has also hung: a helper spun for minutes in the flush of 8 frames of 66x66 (the
test suite, session 61), and the caller waited with it. An encode that takes far longer
than any x265 preset needs (:func:`encode_timeout`) ends its helper. If a helper dies or is
ended, the encode is tried once more in another; a second death is an :class:`X265Crashed`
error, which the hybrid encoder's search takes as "no HEVC for this block". Where no helper
can run x265 (a frozen application without a Python interpreter, a PyAV the helper cannot
import), encodes run in this process as before.

The same PyAV (so the same x265) codes the frames in the helper: the streams are
byte-identical to in-process encodes.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ...errors import SciZError
from .. import helperproc

__all__ = ["X265Crashed", "encode_frames", "encode_frames_here", "frames_job"]


class X265Crashed(SciZError):
    """The x265 helper process died (or hung) twice in a row on one encode."""


#: seconds an encode may take before its helper is taken as hung: this much ...
_TIMEOUT_SECONDS = 30.0
#: ... plus this much per Mi voxels of frames (``placebo``, x265's slowest preset, codes 1 Mi
#: voxels in about 3 s on a 2-core CPU: a tenth of this)
_TIMEOUT_PER_MI_VOXELS = 30.0


def encode_timeout(voxels: int) -> float:
    """Seconds an encode of ``voxels`` voxels may take before its helper is ended."""
    return _TIMEOUT_SECONDS + _TIMEOUT_PER_MI_VOXELS * voxels / 2**20


def encode_frames_here(codes: np.ndarray, pix_fmt: str, options: dict[str, Any]) -> bytes:
    """Code the frames ``codes`` (``(D, H, W)`` uint16) with libx265 through PyAV, here.

    Parameters
    ----------
    codes : numpy.ndarray
        The frames, ``uint16``, even height and width.
    pix_fmt : str
        ``"gray12le"`` or ``"gray10le"``.
    options : dict
        The codec context's options (``preset``, ``tune``, ``x265-params``).

    Returns
    -------
    bytes
        The HEVC elementary stream (every packet, flushed).
    """
    from fractions import Fraction

    import av

    z, h, w = codes.shape
    ctx = av.CodecContext.create("libx265", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, pix_fmt
    ctx.time_base, ctx.framerate = Fraction(1, 25), Fraction(25, 1)
    ctx.options = dict(options)
    out = bytearray()
    for i in range(z):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(codes[i]), format=pix_fmt)
        frame.pts = i
        for packet in ctx.encode(frame):
            out += bytes(packet)
    for packet in ctx.encode(None):
        out += bytes(packet)
    return bytes(out)


def frames_job(head: dict[str, Any], body: bytes) -> bytes:
    """The helper's job (:mod:`..helperproc`): the frames of ``body`` coded as ``head`` says."""
    shape = tuple(int(n) for n in head["shape"])
    codes = np.frombuffer(body, dtype=np.uint16).reshape(shape)
    return encode_frames_here(codes, head["pix_fmt"], head["options"])


#: False once the helpers could not run x265: it then runs in this process
_helpers_work = True
#: the job the helpers run
_JOB = f"{__name__}:frames_job"


def encode_frames(codes: np.ndarray, pix_fmt: str, options: dict[str, Any]) -> bytes:
    """Code the frames ``codes`` with libx265 in a helper process (:mod:`..helperproc`).

    Parameters are those of :func:`encode_frames_here`. A helper that dies, or runs past
    :func:`encode_timeout`, is replaced and the encode tried once more; :class:`X265Crashed`
    if that one dies too. Where helpers cannot
    run x265, the frames are coded in this process.
    """
    global _helpers_work
    codes = np.ascontiguousarray(codes, dtype=np.uint16)
    head = {"shape": list(codes.shape), "pix_fmt": pix_fmt, "options": options}
    for _ in range(2):
        if not _helpers_work:
            return encode_frames_here(codes, pix_fmt, options)
        try:
            return helperproc.call(
                _JOB, head, memoryview(codes).cast("B"), timeout=encode_timeout(codes.size)
            )
        except helperproc.HelperUnavailable:
            _helpers_work = False
            warnings.warn(
                "napari-sciz: the x265 helper process could not start; HEVC is coded in this "
                "process",
                RuntimeWarning,
                stacklevel=2,
            )
        except helperproc.HelperDied:
            continue
        except helperproc.JobFailed as exc:  # x265 refused the frames
            raise RuntimeError(str(exc)) from None
    if not _helpers_work:
        return encode_frames_here(codes, pix_fmt, options)
    raise X265Crashed(
        "the HEVC encoder (x265) crashed or hung twice on this block; it is coded without HEVC"
    )
