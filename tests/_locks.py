"""Locked files made by hand for the segmentation-lock tests: a plain hybrid file with a lock
payload appended and its header saying so."""

from __future__ import annotations

from typing import Any

from napari_sciz.core.bitstream import container


def with_lock(plain: Any, payload: bytes, version: int, **extra: Any) -> bytes:
    """``plain`` (a compress result) with the lock ``payload`` after its blocks (header
    ``segmentation_lock`` ``version``: 1 one volume, 2 a stack; model version 5)."""
    model = {**plain.header["model"], "version": 5}
    lock = {"segmentation_lock": {"version": version}, **extra}
    header = {**plain.header, "model": model, **lock}
    with container.SciZFile(plain.data) as f:
        payloads = [f.payload(i) for i in range(f.n_payloads)]
    return container.pack(header, [*payloads, payload])
