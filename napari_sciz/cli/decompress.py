"""``sciz decompress``: a ``.sciz`` file, or a region of it, to an image."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..io import check_output, write_image
from ..io.image import default_axes, write_image_planes
from ..io.ome_zarr import check_zarr_output, is_zarr_path, write_ome_zarr
from .batch import is_batch, run_batch
from .common import _check_image_output, _codec
from .text import PROG, _fmt_shape, _human_size


def _roi_extent(roi: str | None, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Extent of the region ``roi`` inside ``shape`` (the codec's own parser validates it)."""
    if not roi:
        return shape
    from ..core.validate import parse_roi

    return tuple(stop - start for start, stop in parse_roi(roi, shape))


def _region_slabs(reader: Any, box: Sequence[tuple[int, int]]) -> Any:
    """``(index into the region, decoded values)`` for consecutive slabs of ``box``.

    Slabs follow the block grid along Z (one block layer at a time, each leading index on
    its own), so only one slab of the region is in memory at once.
    """
    ndim = len(box)
    if ndim == 2:
        yield (slice(None), slice(None)), reader.decode(tuple(box))
        return
    zax = ndim - 3
    step = int(reader.grid.block_shape[0])
    lead = list(box[:zax])
    z0, z1 = box[zax]
    for li in np.ndindex(*[b - a for a, b in lead]):
        z = z0
        while z < z1:
            ze = min(z1, (z // step + 1) * step)
            sub = [(a + i, a + i + 1) for i, (a, _b) in zip(li, lead, strict=True)]
            sub += [(z, ze), *box[zax + 1 :]]
            values = reader.decode(tuple(sub))
            index = (*li, slice(z - z0, ze - z0), slice(None), slice(None))
            yield index, values.reshape(values.shape[zax:])
            z = ze


def _cmd_decompress(args: argparse.Namespace) -> int:
    if is_batch(args):  # several inputs, or -o a folder
        return run_batch(args, _decompress_one, "." + (args.format or "tif"))
    if args.format is not None:
        raise InvalidInputError("--format is for a folder -o (a file's name says its format)")
    args.input = args.input[0]
    return _decompress_one(args)


def _decompress_one(args: argparse.Namespace) -> int:
    """Decode the one file ``args.input`` to ``args.output``."""
    src = Path(args.input)
    out = Path(args.output)
    if args.skip_existing and out.exists():
        print(f"{PROG}: {out} exists, skipped (--skip-existing)", file=sys.stderr)
        return 0
    zarr_out = is_zarr_path(out)
    if not zarr_out:
        _check_image_output(out)
    if not src.exists():
        raise InvalidInputError(f"no such file: {src}")
    if zarr_out:
        check_zarr_output(out, force=args.force)
    else:
        check_output(out, force=args.force, inputs=[src])
    api = _codec()
    with api.open_sciz(src) as reader:
        if args.scale == 1:
            # streamed: one slab of blocks at a time, whatever the size of the volume
            shape, dtype = _stream_region(reader, args, src, out, zarr_out)
        else:
            shape, dtype = _write_rescaled(api, reader, args, src, out, zarr_out)
    print(f"wrote {out} ({_fmt_shape(shape)} {dtype}, {_human_size(out)})")
    return 0


def _stream_region(
    reader: Any, args: argparse.Namespace, src: Path, out: Path, zarr_out: bool
) -> tuple[tuple[int, ...], Any]:
    """Decode ``args.roi`` slab by slab into ``out``; its shape and dtype."""
    from ..core.validate import parse_roi

    shape = tuple(int(n) for n in reader.shape)
    axes = getattr(reader, "axes", None) or None
    voxel = getattr(reader, "voxel_size", None)
    units = getattr(reader, "units", None)
    box = parse_roi(args.roi, shape)
    out_shape = tuple(b - a for a, b in box)
    if axes is None or len(axes) != len(out_shape):
        axes, voxel, units = default_axes(len(out_shape)), None, None
    meta = dict(axes=axes, voxel_size=voxel, units=units, force=args.force)
    if zarr_out:
        write_ome_zarr(out, out_shape, reader.dtype, _region_slabs(reader, box), **meta)
    else:
        planes = (
            plane
            for _index, values in _region_slabs(reader, box)
            for plane in values.reshape(-1, *out_shape[-2:])
        )
        write_image_planes(out, out_shape, reader.dtype, planes, inputs=[src], **meta)
    return out_shape, reader.dtype


def _write_rescaled(
    api: Any, reader: Any, args: argparse.Namespace, src: Path, out: Path, zarr_out: bool
) -> tuple[tuple[int, ...], Any]:
    """Decode ``args.roi`` at ``args.scale`` into ``out`` (the voxel size divided by the
    samples gained per axis); its shape and dtype."""
    shape = tuple(int(n) for n in reader.shape)
    axes = getattr(reader, "axes", None) or None
    voxel = getattr(reader, "voxel_size", None)
    units = getattr(reader, "units", None)
    extent = _roi_extent(args.roi, shape)
    data = np.asarray(api.decompress(reader, roi=args.roi, scale=args.scale))
    if axes is not None and len(axes) != data.ndim:
        axes, voxel, units = None, None, None
    if voxel is not None and (len(voxel) != data.ndim or (units and len(units) != data.ndim)):
        voxel, units = None, None
    if voxel is not None:
        # per axis: original step * (samples in the region / samples decoded)
        voxel = tuple(
            float(v) * e / n if n else float(v)
            for v, e, n in zip(voxel, extent, data.shape, strict=True)
        )
    if zarr_out:
        write_ome_zarr(
            out,
            data.shape,
            data.dtype,
            [((slice(None),) * data.ndim, data)],
            axes=axes or default_axes(data.ndim),
            voxel_size=voxel,
            units=units,
            force=args.force,
        )
    else:
        write_image(
            out, data, axes=axes, voxel_size=voxel, units=units, force=args.force, inputs=[src]
        )
    return data.shape, data.dtype
