"""Decoding ``.sciz`` files: :class:`SciZReader`, a lazy random-access view that decodes only
the blocks a selection touches, and the :func:`open_sciz` / :func:`decompress` entry points."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import FormatError, InvalidInputError
from .bitstream import container
from .blockcache import BlockCache
from .blocks import finalize
from .colour import first_last, last_first
from .header import validate_header
from .lockedview import LockedView
from .plan import DECODABLE_MODELS, FORMAT_MODE
from .sampling import sample_coordinates, sample_linear, source_box
from .validate import check_decode_memory, parse_roi

__all__ = ["SciZReader", "decompress", "open_sciz"]


class SciZReader:
    """Random-access, array-like view of a ``.sciz`` file.

    Indexing (``reader[5]``, ``reader[:, 10:20]``...) decodes only the blocks the selection
    touches, so napari can display huge files lazily.

    Parameters
    ----------
    source : path-like or bytes
        The ``.sciz`` file or its contents.
    cache_blocks : int
        Number of decoded blocks kept in memory.
    cache_bytes : int
        Most memory the decoded blocks kept may take (default 1 GiB); the least recently used
        go first, the one just decoded always stays.
    threads : int, optional
        Blocks decoded at the same time by a region decode (default: the number of CPUs).

    Raises
    ------
    FormatError
        If the file is not a valid ``.sciz`` file.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | bytes | bytearray | memoryview,
        cache_blocks: int = 32,
        threads: int | None = None,
        cache_bytes: int = 2**30,
    ) -> None:
        self.threads = max(1, int(threads if threads is not None else (os.cpu_count() or 1)))
        self._file = container.SciZFile(source)
        self.header = self._file.header
        self._lock = threading.RLock()
        self._cache = BlockCache(cache_blocks, cache_bytes, self._lock)
        try:
            self._validate()
        except FormatError:
            self._file.close()
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            self._file.close()
            raise FormatError(
                f"invalid .sciz header: a field has the wrong type or value ({type(exc).__name__})"
            ) from exc

    def _validate(self) -> None:
        info = validate_header(self.header, self._file.n_payloads, DECODABLE_MODELS)
        self.mode = info.mode
        #: the decoded array puts the coded first axis last (colour samples, :mod:`.colour`)
        self.channels_last = info.channels_last
        self._shape = info.shape  # the coded layout
        self.shape = info.shape if not info.channels_last else tuple(first_last(info.shape))
        #: a colour image coded as decorrelated planes (:mod:`.colourtransform`), or None
        self.colour = info.colour
        self._coded_dtype, self._coded_range = info.dtype, info.value_range
        self.dtype = info.dtype if info.colour is None else info.colour.dtype
        self.axes = _layout(info.axes, info.channels_last)
        self.value_range = info.value_range if info.colour is None else info.colour.value_range
        self.grid = info.grid
        self.voxel_size = _layout(info.voxel_size, info.channels_last)
        self.units = _layout(info.units, info.channels_last)
        self.name = info.name
        self.locked = info.locked
        self.value_map = info.value_map
        self._n_outliers = info.outliers
        self._outliers: Any = None
        self._locked_view = None
        if self.locked:  # (a colour image's lock is of its channels: decoded planes, inverted)
            colour = self.colour
            self._locked_view = LockedView(
                self._shape, info.lock_lead, lambda: self._file.payload(self.grid.n_blocks),
                self._blocks_region if colour is None else self._channels_region,
                self._coded_dtype if colour is None else colour.dtype,
                self._coded_range if colour is None else colour.value_range,
            )  # fmt: skip

    # array-like protocol -------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Size of the decoded array in bytes."""
        return self.size * self.dtype.itemsize

    @property
    def file_size(self) -> int:
        """Size of the ``.sciz`` file in bytes."""
        return self._file.file_size

    @property
    def ratio(self) -> float:
        """Achieved compression ratio of the file."""
        return self.nbytes / self.file_size

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.decode()
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = self.ndim - (len(key) - 1)
            key = key[:i] + (slice(None),) * fill + key[i + 1 :]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices for a {self.ndim}-D array")
        key = key + (slice(None),) * (self.ndim - len(key))
        box = []
        post: list[Any] = []
        for k, n in zip(key, self.shape, strict=True):
            if isinstance(k, (int, np.integer)):
                i = int(k) + n if k < 0 else int(k)
                if not 0 <= i < n:
                    raise IndexError(f"index {k} is out of bounds for axis of size {n}")
                box.append((i, i + 1))
                post.append(0)
            elif isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step < 0:
                    raise IndexError("negative steps are not supported")
                if stop <= start:
                    # an empty selection: numpy's shape, without decoding anything
                    empty = np.broadcast_to(np.zeros((), self.dtype), self.shape)
                    return np.array(empty[key])
                box.append((start, stop))
                post.append(slice(0, stop - start, step))
            else:
                raise IndexError(f"unsupported index {k!r}")
        out = self.decode(tuple(box))
        return out[tuple(post)]

    # decoding -------------------------------------------------------------------------
    def _block_field(self, index: int) -> Any:
        """``(field, vmin, vmax)`` of lossy block ``index``, cached."""
        return self._cache.get(index, self._decode_field)

    def _decode_field(self, index: int) -> Any:
        from .lossy.code import field_from_code
        from .lossy.entropy import decode_block, read_architecture
        from .lossy.model import FieldConfig

        payload = self._file.payload(index)
        shape3 = self.grid.block_shape3(index)
        first, n_levels, hidden, layers = read_architecture(payload)
        config = FieldConfig(shape3, first, n_levels, hidden, layers)
        try:
            code = decode_block(payload, config.grid_shapes(), config.mlp_shapes())
        except FormatError:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoding failure means a bad payload
            raise FormatError(f"block {index} cannot be decoded: {exc}") from exc
        return field_from_code(code, shape3, "cpu"), code.vmin, code.vmax

    def decode(self, roi: Any = None, scale: float = 1) -> np.ndarray:
        """Decode a region, optionally sampled more finely.

        Parameters
        ----------
        roi : str or sequence, optional
            Region in voxel indices (see :func:`napari_sciz.core.validate.parse_roi`).
        scale : float or sequence of float
            Sampling factor along the three spatial axes (ZYX; YX for 2D images and colour
            images with their samples last): ``2`` gives twice as many samples per axis.
            Sample ``j`` of an axis with region start ``s`` sits at coordinate
            ``s + (j + 0.5) / scale - 0.5``.

        Returns
        -------
        numpy.ndarray
            The decoded region in the original dtype.
        """
        box = parse_roi(roi, self.shape)
        n_spatial = self.grid.spatial_ndim
        # colour samples coded as the Z axis of one image are not a spatial axis to sample
        samples_as_z = self.channels_last and self.ndim == n_spatial
        scales = _parse_scale(scale, n_spatial - samples_as_z)
        if samples_as_z:
            scales = (1.0, *scales)
        if self.colour is not None:  # (every plane of the region, then its samples)
            out = self._decode_colour(last_first(box), scales)
            return np.ascontiguousarray(np.moveaxis(out, 0, -1))
        if self.channels_last:
            out = self._decode_box(last_first(box), scales)
            return np.ascontiguousarray(np.moveaxis(out, 0, -1))
        return self._decode_box(box, scales)

    def _decode_colour(self, box: list[tuple[int, int]], scales: tuple[float, ...]) -> np.ndarray:
        """:meth:`decode` of ``box`` (samples first) of a colour image coded as decorrelated
        planes: every plane of the region decoded, then its samples (and their locks)."""
        from . import validate  # (looked up when called: tests lower the cap)

        assert self.colour is not None
        view = self._locked_view
        if view is None or not view.fits(validate.memory_cap()):
            (c0, c1), *space = box
            planes = self._decode_box([(0, self._shape[0]), *space], scales)
            return self.colour.inverse(planes)[c0:c1]
        if all(s == 1 for s in scales):
            return view.region(box)
        dtype, vrange = self.colour.dtype, self.colour.value_range
        return self._decode_interpolated(box, scales, view.region, dtype, vrange)

    def _channels_region(self, box: Sequence[tuple[int, int]]) -> np.ndarray:
        """Samples ``box`` (samples first) of a colour image coded as decorrelated planes,
        decoded from the blocks alone: every plane of the region, inverted."""
        assert self.colour is not None
        (c0, c1), *space = box
        planes = self._planes_region([(0, self._shape[0]), *space])
        return self.colour.inverse(planes)[c0:c1]

    def _decode_box(self, box: list[tuple[int, int]], scales: tuple[float, ...]) -> np.ndarray:
        """:meth:`decode` of ``box`` in the coded layout."""
        if self.mode != FORMAT_MODE:
            if all(s == 1 for s in scales):
                return self._decode_whole_blocks(box)
            return self._decode_interpolated(box, scales)
        import torch

        lead_nd = self.ndim - self.grid.spatial_ndim
        spatial_box = box[lead_nd:]
        # sample coordinates along each spatial axis (global voxel units)
        coords = sample_coordinates(spatial_box, scales)
        out_spatial = tuple(len(c) for c in coords)
        lead_shape = tuple(b - a for a, b in box[:lead_nd])
        n_out = math.prod(lead_shape) * math.prod(out_spatial)
        check_decode_memory(n_out * self.dtype.itemsize, f"this region at scale {tuple(scales)}")
        out = np.empty(lead_shape + out_spatial, dtype=self._coded_dtype)
        integer = all(s == 1 for s in scales)
        pad = 3 - self.grid.spatial_ndim
        coords3 = [np.zeros(1)] * pad + coords
        box3 = [(0, 1)] * pad + list(spatial_box)
        out3 = out.reshape(lead_shape + (1,) * pad + out_spatial)
        for lead_index in np.ndindex(*lead_shape) if lead_shape else [()]:
            volume = (
                sum(
                    (lead_index[i] + box[i][0]) * int(np.prod(self._shape[i + 1 : lead_nd]))
                    for i in range(lead_nd)
                )
                if lead_nd
                else 0
            )
            target = out3[lead_index]

            def fill(item: tuple, _target: np.ndarray = target) -> None:
                bindex, starts, _stops = item
                fld, vmin, vmax = self._block_field(bindex)
                sel = []
                local = []
                for axis in range(3):
                    c = coords3[axis]
                    # samples owned by this block: rounded coordinate inside [start, stop)
                    owner = np.clip(np.floor(c + 0.5), box3[axis][0], box3[axis][1] - 1)
                    idx = np.nonzero((owner >= starts[axis]) & (owner < _stops[axis]))[0]
                    sel.append(idx)
                    local.append(c[idx] - starts[axis])
                if any(len(i) == 0 for i in sel):
                    return
                with torch.no_grad():
                    if integer:
                        start = [int(round(loc[0])) for loc in local]
                        size = [len(loc) for loc in local]
                        feats = fld.crop_features(list(fld.latents), start, size)
                        vals = fld.mlp(feats).reshape(size)
                    else:
                        grid_pts = np.stack(np.meshgrid(*local, indexing="ij"), axis=-1).reshape(
                            -1, 3
                        )
                        pts = torch.from_numpy(grid_pts.astype(np.float32))
                        vals = fld.sample(pts).reshape([len(loc) for loc in local])
                values = vals.double().numpy() * (vmax - vmin) + vmin
                _target[np.ix_(*sel)] = finalize(values, self._coded_dtype, self._coded_range)

            self._map_blocks(fill, list(self.grid.blocks_in_box(volume, box3)))
        return out

    def _hybrid_block(self, index: int) -> Any:
        """The decoded base (and field) of hybrid block ``index``, cached; planes on demand."""
        from .hybrid import HybridBlock

        def decode(i: int) -> Any:
            return HybridBlock(self._file.payload(i), self.grid.block_shape3(i))

        return self._cache.get(index, lambda i: _naming_block(i, decode))

    def _exact_block(self, index: int) -> np.ndarray:
        """Lossless/bounded block ``index`` in the original dtype, cached."""
        from .lossless import decode_block

        def decode(i: int) -> np.ndarray:
            payload = self._file.payload(i)
            return decode_block(payload, self._coded_dtype, self.grid.block_shape3(i))

        return self._cache.get(index, lambda i: _naming_block(i, decode))

    def _decode_interpolated(
        self,
        box: Sequence[tuple[int, int]],
        scales: Sequence[float],
        region: Callable[[Sequence[tuple[int, int]]], np.ndarray] | None = None,
        dtype: np.dtype | None = None,
        value_range: tuple[float, float] | None = None,
    ) -> np.ndarray:
        """Region of a file that decodes voxels, sampled at ``scales`` by linear interpolation
        (of ``region``'s values in ``dtype`` and ``value_range``; default: the coded
        layout's, :meth:`_decode_whole_blocks`)."""
        lead_nd = self.ndim - self.grid.spatial_ndim
        sizes = self._shape[lead_nd:]
        coords = sample_coordinates(box[lead_nd:], scales)
        src = source_box(coords, sizes)
        n_lead = math.prod(b - a for a, b in box[:lead_nd])
        n_out = n_lead * math.prod(len(c) for c in coords)
        n_src = n_lead * math.prod(b - a for a, b in src)
        check_decode_memory(8 * (n_out + 2 * n_src), f"this region at scale {tuple(scales)}")
        voxels = (region or self._decode_whole_blocks)([*box[:lead_nd], *src])
        values = sample_linear(voxels, [a for a, _b in src], coords, sizes)
        return finalize(values, dtype or self._coded_dtype, value_range or self._coded_range)

    def _decode_whole_blocks(self, box: Sequence[tuple[int, int]]) -> np.ndarray:
        """Region of a hybrid/lossless/bounded file: decode the whole blocks it touches, crop
        (and write the file's outliers back into it)."""
        from . import validate  # (looked up when called: tests lower the cap)

        # (a colour image's lock is of its samples, not of the planes coded here)
        view = None if self.colour is not None else self._locked_view
        if view is not None and view.fits(validate.memory_cap()):
            return self._patched(view.region(box), box)
        return self._planes_region(box)

    def _planes_region(self, box: Sequence[tuple[int, int]]) -> np.ndarray:
        """Region of the coded array decoded from the blocks and the file's outliers."""
        return self._patched(self._blocks_region(box), box)

    def _patched(self, out: np.ndarray, box: Sequence[tuple[int, int]]) -> np.ndarray:
        """``out``, region ``box`` of the coded array, with the file's outliers written back."""
        if self._n_outliers:
            self._outlier_list().patch(out, tuple(box), self._shape)
        return out

    def _outlier_list(self) -> Any:
        """The file's outliers (:mod:`.outliers`), read once."""
        from .outliers import decode_outliers

        with self._lock:
            if self._outliers is None:
                payload = self._file.payload(self._file.n_payloads - 1)
                found = decode_outliers(payload, self._coded_dtype, self.size)
                if len(found) != self._n_outliers:
                    raise FormatError("the outlier payload does not hold the header's count")
                self._outliers = found
            return self._outliers

    def _blocks_region(self, box: Sequence[tuple[int, int]]) -> np.ndarray:
        """Region decoded from the blocks alone."""
        lead_nd = self.ndim - self.grid.spatial_ndim
        pad = 3 - self.grid.spatial_ndim
        box3 = [(0, 1)] * pad + list(box[lead_nd:])
        lead_shape = tuple(b - a for a, b in box[:lead_nd])
        out = np.empty(tuple(b - a for a, b in box), dtype=self._coded_dtype)
        out3 = out.reshape(lead_shape + tuple(b - a for a, b in box3))
        for lead_index in np.ndindex(*lead_shape) if lead_shape else [()]:
            src = tuple(i + a for i, (a, _b) in zip(lead_index, box[:lead_nd], strict=True))
            volume = int(np.ravel_multi_index(src, self._shape[:lead_nd])) if lead_nd else 0
            target = out3[lead_index]

            def fill(item: tuple, _target: np.ndarray = target) -> None:
                bindex, starts, stops = item
                lo = [max(a, s) for (a, _b), s in zip(box3, starts, strict=True)]
                hi = [min(b, e) for (_a, b), e in zip(box3, stops, strict=True)]
                if any(h <= g for g, h in zip(lo, hi, strict=True)):
                    return
                dst = tuple(slice(g - a, h - a) for g, h, (a, _b) in zip(lo, hi, box3, strict=True))
                srcs = tuple(slice(g - s, h - s) for g, h, s in zip(lo, hi, starts, strict=True))
                if self.mode == "hybrid":  # only the planes asked for are filtered
                    planes = _naming_block(  # an HEVC base decodes as far as asked
                        bindex,
                        lambda b, z=srcs[0]: self._hybrid_block(b).planes(z.start, z.stop),
                    )
                    values = planes[:, srcs[1], srcs[2]]
                    if self.value_map is not None:  # (coded through a value map)
                        values = self.value_map.inverse(values)
                    _target[dst] = finalize(values, self._coded_dtype, self._coded_range)
                else:
                    _target[dst] = self._exact_block(bindex)[srcs]

            self._map_blocks(fill, list(self.grid.blocks_in_box(volume, box3)))
        return out

    def _map_blocks(self, fill: Callable[[tuple], None], items: list[tuple]) -> None:
        """Run ``fill`` on every block of a region, on ``threads`` threads when several."""
        n = min(self.threads, len(items))
        if n <= 1:
            for item in items:
                fill(item)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="sciz-decode") as pool:
            for _ in pool.map(fill, items):  # re-raises the first error
                pass

    def close(self) -> None:
        """Close the underlying file."""
        self._file.close()

    def __enter__(self) -> SciZReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SciZReader(shape={self.shape}, dtype={self.dtype}, ratio={self.ratio:.1f})"


def _naming_block(index: int, decode: Callable[[int], Any]) -> Any:
    """``decode(index)``, with a :class:`FormatError` prefixed by the block's number."""
    try:
        return decode(index)
    except FormatError as exc:
        raise FormatError(f"block {index}: {exc}") from exc


def _layout(values: Any, channels_last: bool) -> Any:
    """Per-axis header ``values`` (or axes letters) of the coded layout in the decoded one."""
    if values is None or not channels_last or len(values) == 0:
        return values
    moved = first_last(values)
    return moved if isinstance(values, str) else tuple(moved)


def _parse_scale(scale: Any, ndim: int) -> tuple[float, ...]:
    values = [scale] * ndim if np.isscalar(scale) else list(scale)
    if len(values) != ndim:
        raise InvalidInputError(f"scale needs 1 or {ndim} values, got {len(values)}")
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"scale must be a number, got {v!r}") from exc
        if not (math.isfinite(f) and 0.01 <= f <= 64):
            raise InvalidInputError(f"scale must be between 0.01 and 64, got {v!r}")
        out.append(f)
    return tuple(out)


def open_sciz(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> SciZReader:
    """Open a ``.sciz`` file for lazy, random-access decoding.

    Parameters
    ----------
    source : path-like or bytes
        The file or its contents.

    Returns
    -------
    SciZReader
    """
    return SciZReader(source)


def decompress(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview | SciZReader,
    roi: Any = None,
    scale: float | Sequence[float] = 1,
) -> np.ndarray:
    """Decode a ``.sciz`` file (whole, or a region, optionally at finer sampling).

    Decoding runs on the CPU whatever device encoded the file.

    Parameters
    ----------
    source : path-like, bytes or SciZReader
        The file, its contents, or an open reader.
    roi : str or sequence, optional
        Region to decode, e.g. ``"10:20,0:256,0:256"``; decodes only the blocks it touches.
    scale : float or sequence of float
        Sampling factor of the spatial axes (``2`` doubles the samples per axis).

    Returns
    -------
    numpy.ndarray
        The decoded array in the original dtype.
    """
    if isinstance(source, SciZReader):
        return source.decode(roi, scale)
    with SciZReader(source) as reader:
        return reader.decode(roi, scale)
