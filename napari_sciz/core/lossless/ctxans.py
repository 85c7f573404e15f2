"""Tokens coded pass by pass with one stored histogram per context (ANS).

The interpolation blocks (:mod:`.interpblock`) and the resampled blocks (:mod:`.resampled`)
code their residuals the same way: every pass's tokens are ordered by context (raster order
inside one), the histograms of all passes are stored once (zlib of ``n_ctx x n_tok`` u32
counts), and the ANS words follow. The decoder reads a pass's tokens with one decode call per
context (:class:`TokenReader`).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from ...errors import FormatError
from .entropy import _quantize_hist, trimmed_categorical
from .layout import PayloadReader
from .values import _pack_uints, _unpack_uints

__all__ = [
    "TokenReader",
    "ans_decoder",
    "code_passes",
    "order_by_context",
    "pack_histograms",
    "read_histograms",
    "read_packed_histograms",
]

_U32 = struct.Struct("<I")


def order_by_context(ctx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coding order within a pass (by context, raster order inside one), and the number of
    voxels of each context."""
    counts = np.bincount(ctx)
    if np.count_nonzero(counts) == 1:
        return np.arange(ctx.size), counts
    return np.argsort(ctx, kind="stable"), counts


def code_passes(
    tokens: list[np.ndarray],
    contexts: list[np.ndarray],
    n_ctx: int,
    skip_certain: bool = False,
    compact: bool = False,
) -> bytes:
    """The zlib histograms (``u32`` length first) and the ANS words (``u32`` count first) of
    every pass's ``tokens``, each pass already in :func:`order_by_context`'s order with its
    ``contexts`` alike. ``skip_certain``: the tokens of a context with a single symbol are
    not coded (its histogram says them); ``compact``: the histograms as
    :func:`pack_histograms` writes them."""
    import constriction

    tok_all = np.concatenate(tokens)
    ctx_all = np.concatenate(contexts)
    n_tok = int(tok_all.max()) + 1
    counts = np.zeros((n_ctx, n_tok), np.int64)
    np.add.at(counts, (ctx_all, tok_all), 1)
    stored = _quantize_hist(counts)
    models = [trimmed_categorical(row) if row.any() else None for row in stored]
    coder = constriction.stream.stack.AnsCoder()
    segments = []
    start = 0
    for ctx in contexts:
        for c in np.unique(ctx):
            n = int(np.count_nonzero(ctx == c))
            segments.append((int(c), start, start + n))
            start += n
    certain = np.count_nonzero(stored, axis=1) == 1
    for c, a, b in reversed(segments):
        if skip_certain and certain[c]:
            continue
        coder.encode_reverse(tok_all[a:b].astype(np.int32), models[c])
    words = np.asarray(coder.get_compressed(), np.uint32)
    if compact:
        hist = pack_histograms(stored)
    else:
        hist = zlib.compress(stored.astype("<u4").tobytes(), 9)
    words_le = words.astype("<u4").tobytes()
    return b"".join([_U32.pack(len(hist)), hist, _U32.pack(words.size), words_le])


def pack_histograms(stored: np.ndarray) -> bytes:
    """Histograms of many contexts, most of them empty: each row's length (to its last
    nonzero count; 0 for an empty row), then the counts of every row, both as
    :func:`.values._pack_uints` streams after a ``u32`` length."""
    nonzero = stored > 0
    lengths = np.where(nonzero.any(axis=1), stored.shape[1] - np.argmax(nonzero[:, ::-1], 1), 0)
    counts = np.concatenate([row[:n] for row, n in zip(stored, lengths, strict=True)])
    head, body = _pack_uints(lengths), _pack_uints(counts)
    return _U32.pack(len(head)) + head + body


def read_packed_histograms(
    reader: PayloadReader, n_ctx: int, n_tok: int, what: str
) -> np.ndarray:  # fmt: skip
    """The ``(n_ctx, n_tok)`` histograms of a :func:`pack_histograms` section at ``reader``;
    :class:`FormatError` (naming ``what``) when damaged."""
    section = PayloadReader(reader.section(), 0, what)
    lengths = _unpack_uints(section.section(), n_ctx)
    if lengths.max(initial=0) > n_tok:
        raise FormatError(f"{what}'s histograms are damaged")
    counts = _unpack_uints(section.payload[section.pos :], int(lengths.sum()))
    if counts.max(initial=0) > 1 << 16:
        raise FormatError(f"{what}'s histograms are damaged")
    stored = np.zeros((n_ctx, n_tok), np.int64)
    stored[np.arange(n_tok) < lengths[:, None]] = counts
    return stored


def read_histograms(reader: PayloadReader, n_ctx: int, n_tok: int, what: str) -> np.ndarray:
    """The stored ``(n_ctx, n_tok)`` histograms (int64) of the section at ``reader``;
    :class:`FormatError` (naming ``what``) when damaged or of the wrong size."""
    inflate = zlib.decompressobj()
    expected = n_ctx * n_tok * 4
    try:
        raw_hist = inflate.decompress(reader.section(), expected + 1)
    except zlib.error as exc:
        raise FormatError(f"{what}'s histograms are damaged") from exc
    if len(raw_hist) != expected:
        raise FormatError(f"{what}'s histograms have the wrong size")
    return np.frombuffer(raw_hist, "<u4").reshape(n_ctx, n_tok).astype(np.int64)


def ans_decoder(reader: PayloadReader, what: str) -> object:
    """constriction's ANS decoder of the words section at ``reader`` (``u32`` count first)."""
    import constriction

    n_words = reader.u32()
    words = np.frombuffer(reader.take(4 * n_words), "<u4").astype(np.uint32)
    try:
        return constriction.stream.stack.AnsCoder(words)
    except Exception as exc:  # noqa: BLE001 - constriction refuses the words
        raise FormatError(f"{what}'s ANS stream is damaged") from exc


class TokenReader:
    """A pass's tokens in coding order (by context, raster order within one) from the ANS
    stream, one decode call per context (``skip_certain``: as :func:`code_passes`)."""

    def __init__(
        self, coder: object, stored: np.ndarray, what: str, skip_certain: bool = False
    ) -> None:
        self.coder, self.stored, self.what, self.models = coder, stored, what, {}
        #: per context: its single symbol when the stream skips it, else -1
        single = np.argmax(stored > 0, axis=1)
        certain = np.count_nonzero(stored, axis=1) == 1
        self.single = np.where(certain & skip_certain, single, -1)

    def __call__(self, ctx: np.ndarray) -> np.ndarray:
        return self.grouped(np.bincount(ctx))

    def grouped(self, counts: np.ndarray, first: int = 0) -> np.ndarray:
        """``counts[c]`` tokens of context ``first + c``, context after context."""
        if first + counts.size > self.stored.shape[0]:
            raise FormatError(f"{self.what}: a context out of range")
        tok = np.empty(int(counts.sum()), np.int64)
        start = 0
        for c in np.flatnonzero(counts):
            n = int(counts[c])
            c = first + int(c)
            if not self.stored[c].any():
                raise FormatError(f"{self.what}: a context without histogram")
            if self.single[c] >= 0:
                tok[start : start + n] = self.single[c]
                start += n
                continue
            if c not in self.models:
                self.models[c] = trimmed_categorical(self.stored[c])
            try:
                tok[start : start + n] = self.coder.decode(self.models[c], n)
            except Exception as exc:  # noqa: BLE001 - any failure means a bad stream
                raise FormatError(f"{self.what}'s ANS stream is damaged") from exc
            start += n
        return tok
