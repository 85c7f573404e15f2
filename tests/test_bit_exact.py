"""Exact files decode to the same bits on another CPU; lossy ones the same at any thread count.

"Another CPU" is simulated in a subprocess: numpy's SIMD dispatch is switched off feature by feature
(``NPY_DISABLE_CPU_FEATURES``), OpenBLAS is forced to an old core type, numba compiles for a generic
x86-64 and torch runs its default (non-AVX) kernels. Lossless and bounded decoding use integer
arithmetic, integer-count probability tables and correctly rounded constants, so the bits must not
move; the CRC32 of every block would also refuse a decode that did. Bounded blocks coded by SPERR
or SZ3 are float codecs whose integer output is rounded (their bound absorbs a last-bit
difference); the test checks that their bits do not move either. Interpolation blocks are
integer arithmetic throughout.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_sciz._sample_data import load_sample
from napari_sciz.core.lossless import interpblock

api = pytest.importorskip("napari_sciz.core.api")

_DECODE = r"""
import hashlib, json, sys
import numpy as np
import torch
import napari_sciz as nz
from numpy._core._multiarray_umath import __cpu_features__, __cpu_dispatch__

out = {"simd": sorted(f for f in __cpu_dispatch__ if __cpu_features__.get(f))}
for path in json.loads(sys.argv[1]):
    for threads in json.loads(sys.argv[2]):
        torch.set_num_threads(threads)
        with nz.SciZReader(path, threads=threads) as reader:
            full = np.ascontiguousarray(reader.decode())
            region = np.ascontiguousarray(reader[1:5, 7:61, 3:90])
        digest = hashlib.sha256(full.tobytes() + region.tobytes()).hexdigest()
        out[f"{path}@{threads}"] = digest
print(json.dumps(out))
"""


def _other_cpu_env() -> dict[str, str]:
    """Environment of a process that computes like an older, plainer CPU."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    env = dict(os.environ)
    env["NPY_DISABLE_CPU_FEATURES"] = " ".join(
        f for f in __cpu_dispatch__ if __cpu_features__.get(f)
    )
    env.update(
        OPENBLAS_CORETYPE="Prescott",  # SSE3-era kernels in numpy's DYNAMIC_ARCH OpenBLAS
        OPENBLAS_NUM_THREADS="1",
        NUMBA_CPU_NAME="generic",
        ATEN_CPU_CAPABILITY="default",
    )
    return env


def _decode_elsewhere(paths: list[Path], threads: list[int], env: dict[str, str]) -> dict:
    argv = [sys.executable, "-c", _DECODE, json.dumps([str(p) for p in paths]), json.dumps(threads)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _digest(path: Path) -> str:
    with api.open_sciz(path) as reader:
        full = np.ascontiguousarray(reader.decode())
        region = np.ascontiguousarray(reader[1:5, 7:61, 3:90])
    return hashlib.sha256(full.tobytes() + region.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return np.ascontiguousarray(load_sample("ct_phantom")[:8, 16:112, 16:112])


def _zoomed(image: np.ndarray) -> np.ndarray:
    """``image`` zoomed 2x in y and x by corner-aligned linear interpolation (resampled
    blocks)."""
    out = image.astype(np.int64)
    for axis in (1, 2):
        moved = np.moveaxis(out, axis, -1)
        up = np.empty(moved.shape[:-1] + (2 * moved.shape[-1] - 1,), np.int64)
        up[..., ::2] = moved
        up[..., 1::2] = (moved[..., :-1] + moved[..., 1:] + 1) >> 1
        out = np.moveaxis(up, -1, axis)
    return out.astype(image.dtype)


def test_exact_modes_decode_bit_exactly_on_a_cpu_without_simd(
    tmp_path: Path, volume: np.ndarray
) -> None:
    as_float = (volume.astype(np.float32) / np.float32(7.3)).astype(np.float32)
    z, y, x = np.mgrid[:8, :96, :96]  # a steep noisy ramp: in-loop quantization at a bound of 16
    ramp = 2000 + 60 * x + 10 * y + np.random.default_rng(3).normal(0, 6, z.shape)
    # touching cells (each voxel labelled by its nearest seed): label blocks
    seeds = np.random.default_rng(4).random((30, 3)) * [8, 96, 96]
    dist = (z[..., None] - seeds[:, 0]) ** 2 + (y[..., None] - seeds[:, 1]) ** 2
    cells = ((dist + (x[..., None] - seeds[:, 2]) ** 2).argmin(axis=-1) * 7 - 5).astype(np.int32)
    cases = {
        "lossless_u16": (volume, {"mode": "lossless"}),
        "lossless_u8": ((volume >> 4).astype(np.uint8), {"mode": "lossless"}),
        "lossless_f32": (as_float, {"mode": "lossless"}),
        "bounded_u16": (volume, {"mode": "bounded", "max_error": 3}),
        "bounded_f32": (as_float, {"mode": "bounded", "max_error": 0.05}),
        "bounded_interp_u16": (ramp.astype(np.uint16), {"mode": "bounded", "max_error": 16}),
        "bounded_interp_v1_u16": (ramp.astype(np.uint16), {"mode": "bounded", "max_error": 16}),
        "bounded_sz3_f32": (ramp.astype(np.float32), {"mode": "bounded", "max_error": 16.0}),
        "bounded_interp_f32": (ramp.astype(np.float32), {"mode": "bounded", "max_error": 16.0}),
        "lossless_labels_i32": (cells, {"mode": "lossless"}),
        "lossless_resampled_u16": (_zoomed(volume[:, :48, :48]), {"mode": "lossless"}),
    }
    paths = []
    for name, (data, kwargs) in cases.items():
        path = tmp_path / f"{name}.sciz"
        with pytest.MonkeyPatch.context() as mp:
            if "sz3" in name:  # (the interpolation blocks code this ramp smaller)
                mp.setattr(interpblock, "encode", lambda block, bound: None)
            if "v1" in name:  # payload version 1: no index contexts (smaller on other data)
                mp.setattr(
                    interpblock, "_code", lambda v, e: (*interpblock._body(v, e, False), False)
                )
            result = api.compress(data, **kwargs)
        version = {"sz3": 3, "interp_u16": 5, "interp_v1_u16": 4, "interp_f32": 5, "labels": 6}
        version["resampled"] = 7
        for key, number in version.items():
            assert key not in name or result.header["model"]["version"] == number
        result.save(path)
        paths.append(path)
    here = {str(p): _digest(p) for p in paths}
    env = _other_cpu_env()
    there = _decode_elsewhere(paths, [1], env)
    disabled = set(env["NPY_DISABLE_CPU_FEATURES"].split())
    assert not disabled & set(there["simd"]), "the subprocess still used the SIMD paths"
    for p in paths:
        assert there[f"{p}@1"] == here[str(p)], f"{p.name} decodes differently on the other CPU"
    # and the exact modes are exact
    for (data, kwargs), p in zip(cases.values(), paths, strict=True):
        got = api.decompress(p)
        if kwargs["mode"] == "lossless":
            assert got.dtype == data.dtype and got.tobytes() == data.tobytes()
        else:
            err = np.abs(got.astype(np.float64) - data.astype(np.float64)).max()
            assert err <= kwargs["max_error"]


def test_lossy_and_hybrid_decode_identically_at_any_thread_count(
    tmp_path: Path, volume: np.ndarray
) -> None:
    lossy = tmp_path / "lossy.sciz"
    api.compress(volume, ratio=16, mode="lossy", steps=30).save(lossy)
    hybrid = tmp_path / "hybrid.sciz"
    api.compress(volume, ratio=16, mode="hybrid", budget=4).save(hybrid)
    got = _decode_elsewhere([lossy, hybrid], [1, 2, 3], dict(os.environ))
    for p in (lossy, hybrid):
        digests = {got[f"{p}@{t}"] for t in (1, 2, 3)}
        assert digests == {_digest(p)}, f"{p.name} depends on the thread count"
