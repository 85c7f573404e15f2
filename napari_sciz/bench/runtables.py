"""The markdown of the benchmark (:mod:`.run`): one table per volume, the anchors' summary, the
lossless table, the report's header."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .classical import CODECS
from .records import _fmt_ratio, lossless_table

__all__ = ["render_markdown"]


def _fmt_s(s: float) -> str:
    return f"{s:.2f}" if s < 10 else f"{s:.1f}" if s < 100 else f"{s:.0f}"


def _fmt_db(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.2f}"


def _cell(rec: dict[str, Any] | None, bold: bool = False) -> str:
    if rec is None:
        return "n/a"
    status = rec.get("status")
    if status == "unreachable":
        return "—"
    if status == "error":
        return "error"
    db = _fmt_db(rec["psnr"])
    if bold:
        db = f"**{db}**"
    text = (
        f"{db} / {rec['ssim']:.3f} / {rec['ratio']:.1f}x / "
        f"{_fmt_s(rec['encode_seconds'])} / {_fmt_s(rec['decode_seconds'])}"
    )
    return text + (" (below target)" if status == "below_target" else "")


def _best_classical(results: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    ok = [(k, r) for k, r in results.items() if k != "ours" and r.get("status") == "ok"]
    if not ok:
        return None
    return max(ok, key=lambda kr: kr[1]["psnr"])


def _quality_bar(results: dict[str, dict[str, Any]]) -> float | None:
    """The CPU quality bar: PSNR of the better of JPEG XL and SZ3 (``None`` if neither ran)."""
    values = [
        results[c]["psnr"]
        for c in ("jpegxl", "sz3")
        if c in results and results[c].get("status") == "ok"
    ]
    return max(values) if values else None


def _volume_table(vol: dict[str, Any], codecs: Sequence[str], with_ours: bool) -> list[str]:
    labels = [CODECS[c].label if c in CODECS else c for c in codecs]
    head = ["ratio"] + (["**ours**"] if with_ours else []) + labels + ["best classical"]
    with_bar = with_ours and any(c in codecs for c in ("jpegxl", "sz3"))
    if with_ours:
        head.append("ours − best (dB)")
    if with_bar:
        head.append("ours − bar (dB)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in vol["ratios"]:
        results = vol["results"][_fmt_ratio(r)]
        best = _best_classical(results)
        row = [_fmt_ratio(r)]
        if with_ours:
            row.append(_cell(results.get("ours")))
        for c in codecs:
            row.append(_cell(results.get(c), bold=best is not None and best[0] == c))
        row.append(
            f"{CODECS[best[0]].label} {_fmt_db(best[1]['psnr'])}" if best is not None else "—"
        )
        ours = results.get("ours")
        ours_ok = ours is not None and ours.get("status") == "ok"
        if with_ours:
            row.append(f"{ours['psnr'] - best[1]['psnr']:+.2f}" if ours_ok and best else "—")
        if with_bar:
            bar = _quality_bar(results)
            row.append(f"{ours['psnr'] - bar:+.2f}" if ours_ok and bar is not None else "—")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _anchor_summary(record: dict[str, Any]) -> list[str]:
    ratios = record["meta"]["ratios"]
    head = ["volume"] + [_fmt_ratio(r) for r in ratios]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for vol in record["volumes"]:
        row = [vol["name"]]
        for r in ratios:
            results = vol["results"].get(_fmt_ratio(r), {})
            best = _best_classical(results)
            parts = []
            if best is not None:
                parts.append(f"**{_fmt_db(best[1]['psnr'])} {CODECS[best[0]].label}**")
            bar = []
            for c in ("jpegxl", "sz3"):
                rec = results.get(c)
                if rec is None:
                    continue
                ok = rec.get("status") == "ok"
                parts.append(f"{CODECS[c].label} {_fmt_db(rec['psnr']) if ok else '—'}")
                if ok:
                    bar.append(rec["psnr"])
            parts.append(f"bar {_fmt_db(max(bar))}" if bar else "bar —")
            row.append("; ".join(parts) if best is not None else "—")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _lossless_table(record: dict[str, Any]) -> list[str]:
    def cell(_vol: dict[str, Any], e: dict[str, Any], txt: str) -> str:
        return f"{txt} ({_fmt_s(e['encode_seconds'])} / {_fmt_s(e['decode_seconds'])} s)"

    return lossless_table(record["volumes"], lambda vol: vol["name"], cell)


def render_markdown(record: dict[str, Any]) -> str:
    """Render a benchmark record (the JSON written by :func:`main`) as a markdown section.

    Parameters
    ----------
    record : dict
        ``{"meta": ..., "volumes": [...]}`` as built by :func:`main`.

    Returns
    -------
    str
        Markdown without the section markers.
    """
    meta = record["meta"]
    env = meta["environment"]
    with_ours = not meta["skip_ours"]
    codecs = meta["codecs"]
    title = (
        "## Lossy: napari-sciz vs classical codecs"
        if with_ours
        else "## Classical anchors measured on this machine"
    )
    out = [title, ""]
    if with_ours:
        out.append(f"- **device (ours)**: {env['device']}")
    out.append(f"- **CPU**: {env['cpu']}")
    out.append(
        f"- **torch**: {env['torch']}; **imagecodecs**: {env['imagecodecs']}; "
        f"**ffmpeg**: {env['ffmpeg'] or 'not found'}"
    )
    if with_ours:
        out.append(f"- **time budget (ours)**: {meta['budget']} s per volume and ratio, seed 0")
    out.append(f"- **date**: {meta['date']}")
    out.append(f"- **command**: `{meta['command']}`")
    out.append(
        f"- **classical codecs**: {meta['threads']} thread(s) each on the CPU; quality parameter "
        f"bisected ({meta['iterations']} steps) to the best quality whose complete output reaches "
        "the ratio; JPEG XL (effort 7, distance) and JPEG 2000 (OpenJPEG, PSNR layer) code all "
        "slices as one mosaic image; HEVC = ffmpeg/libx265 (preset medium, tune psnr, CRF) on "
        "12-bit gray frames (range-scaled), raw `.hevc` stream; SPERR (bpp mode), SZ3 "
        "(absolute error bound, scanned around the boundary: its size is not monotone) and ZFP "
        "(fixed rate) get the 3D array as float32."
    )
    if meta.get("note"):
        out.append(f"- **note**: {meta['note']}")
    if meta.get("unavailable"):
        out.append(f"- **not available here**: {', '.join(meta['unavailable'])}")
    roi = record.get("roi_decode")
    if with_ours:
        if roi and roi.get("seconds") is not None:
            out.append(
                f"- **region decode**: one plane `{roi['roi']}` of {roi['volume']} "
                f"(compressed at {_fmt_ratio(roi['ratio'])}): {roi['seconds'] * 1e3:.1f} ms "
                f"(median of {roi['repeats']}, device {roi['device']}); full decode "
                f"{roi['full_decode_seconds']:.2f} s"
            )
        elif roi:
            out.append(f"- **region decode**: {roi.get('message', 'not measured')}")
    out += [
        "",
        "Cells: PSNR (dB) / SSIM / achieved ratio / encode s / decode s; **bold** = best classical "
        "PSNR; — = the codec cannot reach the ratio. PSNR peak = max − min of the original; SSIM = "
        "mean over 2D slices. bar = PSNR of the better of JPEG XL and SZ3 (the CPU quality bar).",
        "",
    ]
    if not with_ours:
        out += [
            "Summary (PSNR dB): best classical codec; JPEG XL; SZ3; bar = the better of JPEG XL "
            "and SZ3 (the CPU quality bar).",
            "",
            *_anchor_summary(record),
            "",
        ]
    for vol in record["volumes"]:
        shape = "x".join(str(s) for s in vol["shape"])
        out.append(
            f"### {vol['name']} — {shape} {vol['dtype']} ({vol['raw_nbytes'] / 2**20:.2f} MiB)"
        )
        out.append("")
        out += _volume_table(vol, codecs, with_ours)
        out.append("")
    lossless = _lossless_table(record)
    if lossless:
        out += [
            "### Lossless (napari-sciz lossless mode and classical codecs)",
            "",
            "Ratio (encode / decode seconds); **bold** = best exact.",
            "",
            *lossless,
            "",
        ]
    return "\n".join(out).rstrip() + "\n"
