"""A block's code and its field: quantized weights, evaluation and the constant block.

A :class:`~napari_sciz.core.lossy.entropy.BlockCode` holds what a payload stores (quantized
latents, 8-bit MLP weights with per-tensor exponents, the value range); these functions turn
a code into a :class:`~napari_sciz.core.lossy.model.LatentField` and evaluate it, as the
decoder does.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .entropy import BlockCode
from .model import FieldConfig, LatentField

__all__ = [
    "MAX_LATENT",
    "constant_code",
    "dense_eval",
    "evaluate_code",
    "field_from_code",
    "mlp_exponent",
    "quantize_mlp",
]

DEBUG = False


#: largest latent magnitude after quantization (the coder accepts up to 2**23 - 1)
MAX_LATENT = 2.0**22


PREVIEW_CHUNK = 2**20


def mlp_exponent(w: np.ndarray, bits: int = 8) -> int:
    peak = float(np.abs(w).max()) if w.size else 0.0
    if peak == 0.0:
        return 0
    return int(np.clip(math.floor((bits - 1) - math.log2(peak)), -32, 60))


def quantize_mlp(field: LatentField) -> tuple[list[np.ndarray], list[int]]:
    qs, exps = [], []
    for linear in field.linears:
        for p in (linear.weight, linear.bias):
            w = p.detach().cpu().numpy().astype(np.float64)
            e = mlp_exponent(w, bits=9 if p is linear.bias else 8)
            qs.append(np.round(w * 2.0**e).astype(np.int32))
            exps.append(e)
    return qs, exps


def field_from_code(
    code: BlockCode, shape: tuple[int, int, int], device: str = "cpu"
) -> LatentField:
    """Build a :class:`LatentField` holding the dequantized parameters of ``code``."""
    config = FieldConfig(shape, code.first_level, code.n_levels, code.hidden, code.layers)
    field = LatentField(config)
    with torch.no_grad():
        for param, value in zip(field.latents, code.dequantized_latents(), strict=True):
            param.copy_(torch.from_numpy(value))
        field.steps.copy_(torch.tensor(code.level_steps()))
        field.level_gain = code.level_gain
        flat = [p for lin in field.linears for p in (lin.weight, lin.bias)]
        for param, value in zip(flat, code.dequantized_mlp(), strict=True):
            param.copy_(torch.from_numpy(value))
    return field.to(device)


@torch.no_grad()
def dense_eval(field: LatentField, latents: list[torch.Tensor]) -> torch.Tensor:
    feats_shape = field.config.shape
    n = math.prod(feats_shape)
    out = torch.empty(n, device=latents[0].device)
    # upsample once, evaluate the MLP in chunks to bound memory
    feats = field.dense_features(latents)
    for start in range(0, n, PREVIEW_CHUNK):
        out[start : start + PREVIEW_CHUNK] = field.mlp(feats[start : start + PREVIEW_CHUNK])
    return out.reshape(feats_shape)


def evaluate_code(code: BlockCode, shape: tuple[int, int, int], device: str = "cpu") -> np.ndarray:
    """Dense reconstruction (float64, original units, unclipped) of a coded block."""
    field = field_from_code(code, shape, device)
    norm = dense_eval(field, list(field.latents)).double().cpu().numpy()
    return norm * (code.vmax - code.vmin) + code.vmin


def constant_code(value: float, config: FieldConfig) -> BlockCode:
    return BlockCode(
        config.first_level,
        config.n_levels,
        config.hidden,
        config.layers,
        float(value),
        float(value),
        1.0,
        latents=[np.zeros(s, np.int32) for s in config.grid_shapes()],
        mlp=[np.zeros(s, np.int32) for s in config.mlp_shapes()],
        mlp_exponents=[0] * len(config.mlp_shapes()),
    )
