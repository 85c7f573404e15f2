"""Synthetic nuclei stacks shared by the task-guidance tests."""

from __future__ import annotations

import numpy as np


def nuclei(
    seed: int = 0,
    shape: tuple[int, int, int] = (12, 64, 64),
    count: int = 6,
    noise: float = 60.0,
) -> np.ndarray:
    """``count`` bright ellipsoidal nuclei (possibly touching) in Gaussian noise, uint16."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    vol = np.full(shape, 200.0)
    for _ in range(count):
        c = rng.uniform((3, 8, 8), (shape[0] - 3, shape[1] - 8, shape[2] - 8))
        r2 = sum(((g - x) / s) ** 2 for g, x, s in zip(grid, c, (2.5, 6.0, 6.0), strict=True))
        vol += 1500.0 * (r2 < 1.0)
    return (vol + rng.normal(0, noise, shape)).clip(0, 65535).astype(np.uint16)
