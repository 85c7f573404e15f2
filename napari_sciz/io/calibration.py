"""Voxel size and units read from a TIFF: napari-sciz's JSON description, OME-XML, ImageJ
metadata, or resolution tags in physical units."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from .formats import normalize_unit

__all__ = ["ome_calibration", "tiff_calibration"]

# TIFF ResolutionUnit values with a physical meaning we trust (inch is almost always "dpi").
_RESUNIT_IN_UM = {3: 1e4, 4: 1e3, 5: 1.0}


def _positive(value: object) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _resolution_size(page: Any, tag: str) -> float | None:
    """Pixel size (in the resolution unit) from an X/YResolution tag, or None."""
    t = page.tags.get(tag)
    if t is None:
        return None
    value = t.value
    try:
        num, den = value if isinstance(value, tuple) else (value, 1)
        ppu = float(num) / float(den)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return 1.0 / ppu if ppu > 0 and math.isfinite(ppu) else None


def tiff_calibration(tif: Any, path: Path, series: int = 0) -> dict[str, tuple[float, str]]:
    """Voxel size and unit per axis letter of image series ``series``, from the best
    metadata source of the file."""
    # 1. napari-sciz's own JSON description (plain TIFF written by write_image)
    shaped = getattr(tif, "shaped_metadata", None)
    if shaped and series < len(shaped):
        meta = shaped[series]
        axes, sizes, units = meta.get("axes"), meta.get("voxel_size"), meta.get("units")
        if isinstance(axes, str) and isinstance(sizes, list) and len(sizes) == len(axes):
            if not isinstance(units, list) or len(units) != len(axes):
                units = [""] * len(axes)
            calib = {}
            for a, s, u in zip(axes.upper(), sizes, units, strict=True):
                v = _positive(s)
                calib[a] = (v if v is not None else 1.0, normalize_unit(u))
            return calib
    # 2. OME-XML
    if tif.is_ome and tif.ome_metadata:
        calib = ome_calibration(tif.ome_metadata, series)
        if calib:
            return calib
    page = _first_page(tif, series)
    # 3. ImageJ
    if tif.is_imagej:
        ij = tif.imagej_metadata or {}
        unit = normalize_unit(ij.get("unit"))
        calib = {}
        if unit:
            for axis, tag in (("X", "XResolution"), ("Y", "YResolution")):
                size = _resolution_size(page, tag)
                if size is not None:
                    calib[axis] = (size, unit)
            spacing = _positive(ij.get("spacing"))
            if spacing is not None:
                calib["Z"] = (spacing, unit)
        finterval = _positive(ij.get("finterval"))
        if finterval is not None:
            calib["T"] = (finterval, normalize_unit(ij.get("tunit", "s")) or "s")
        if calib:
            for axis in "XYZ":
                if unit:
                    calib.setdefault(axis, (1.0, unit))
            return calib
        return {}
    # 4. plain TIFF resolution tags in physical units
    resunit = page.tags.get("ResolutionUnit")
    factor = _RESUNIT_IN_UM.get(int(resunit.value)) if resunit is not None else None
    if factor is not None:
        calib = {}
        for axis, tag in (("X", "XResolution"), ("Y", "YResolution")):
            size = _resolution_size(page, tag)
            if size is not None:
                calib[axis] = (size * factor, "µm")
        return calib
    return {}


def _first_page(tif: Any, series: int) -> Any:
    """The first page of image series ``series`` (its tags describe the series)."""
    if series:
        pages = tif.series[series].pages
        if len(pages) and pages[0] is not None:
            return pages[0]
    return tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]


def ome_calibration(xml: str, image: int = 0) -> dict[str, tuple[float, str]]:
    """Voxel size and unit per axis letter of the ``image``-th OME ``Image`` (its
    ``Pixels``); none where the XML describes fewer images."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}
    found = [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"]
    if image >= len(found):
        return {}
    pixels = found[image]
    calib = {}
    for axis in "XYZ":
        size = _positive(pixels.get(f"PhysicalSize{axis}"))
        if size is not None:
            unit = normalize_unit(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
            calib[axis] = (size, unit)
    dt = _positive(pixels.get("TimeIncrement"))
    if dt is not None:
        calib["T"] = (dt, normalize_unit(pixels.get("TimeIncrementUnit", "s")))
    return calib
