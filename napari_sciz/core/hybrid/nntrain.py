"""Training the neural filter of a hybrid block (:mod:`.nnfilter`, encoder side, torch).

The network is overfitted to the block with Adam on a sample of its voxels, in as many calls
as the encoder's stages allow (:mod:`.netstage`); then, for each of a few precisions
(:data:`PRECISION_LEVELS`: a tensor's largest weight is that many steps), it trains a few
more steps through the quantizer (straight-through: the forward pass uses the rounded
weights, the gradient updates the float ones), and keeps the precision whose coded network
removes the most error net of its bytes (priced by the caller).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .nnfilter import REACH, NeuralFilter, _step, _step_code, n_inputs, neighbour_offsets

__all__ = ["NetworkTrainer", "QUANTIZED_STEPS"]

#: voxels of a block sampled for training (their features are built once)
TRAIN_SAMPLE = 1 << 20
#: voxels per training step
BATCH = 1 << 16
#: Adam's learning rate (cosine-annealed over the steps)
LEARNING_RATE = 3e-3
#: precisions tried for a network's weights (largest magnitude of a tensor, in steps)
PRECISION_LEVELS = (31, 15, 7)
#: precision of :meth:`NetworkTrainer.result` when none was chosen
DEFAULT_LEVELS = 31
#: training steps through the quantizer at each precision tried
QUANTIZED_STEPS = 40
#: learning rate of the steps through the quantizer
QUANTIZED_LR = 1e-3


class NetworkTrainer:
    """Trains a :class:`NeuralFilter` on a block, in as many calls as the encoder's stages allow.

    The features of a sample of the block's voxels are built once per base
    (:meth:`rebase` when the base changes, keeping the weights learnt so far).

    Parameters
    ----------
    base, filtered, target : numpy.ndarray
        The decoded base, the loop filter's output and the original values, ``(D, H, W)``.
    hidden, depth : int
        The network's shape.
    seed : int
        Seed of the sample, the initial weights and the batches.
    """

    def __init__(
        self,
        base: np.ndarray,
        filtered: np.ndarray,
        target: np.ndarray,
        *,
        hidden: int = 16,
        depth: int = 2,
        seed: int = 0,
    ) -> None:
        import torch

        self._torch = torch
        self.flat = base.shape[0] == 1
        self.hidden, self.depth = hidden, depth
        self.target = target
        self.lo = float(target.min())
        self.span = max(float(target.max()) - self.lo, 1e-300)
        rng = np.random.default_rng(seed)
        n = base.size
        self._pick = np.sort(rng.choice(n, size=min(n, TRAIN_SAMPLE), replace=False))
        self._gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):  # (the layers' initial weights, reproducibly)
            torch.manual_seed(seed)
            self.net = _network(torch.nn, n_inputs(self.flat), hidden, depth)
        self._opt = torch.optim.Adam(self.net.parameters(), lr=LEARNING_RATE)
        self.steps = 0
        #: the weights' precision once chosen (:meth:`quantize`); from then on training runs
        #: through the quantizer
        self.levels: int | None = None
        self.exponents: np.ndarray | None = None
        self.rebase(base, filtered)

    def rebase(self, base: np.ndarray, filtered: np.ndarray) -> None:
        """Train on a new base and filter output from now on."""
        torch = self._torch
        self.base, self.filtered = base, filtered
        x, y = _sample_features(
            base, filtered, self.target, self._pick, self.flat, self.lo, self.span
        )
        if self.exponents is None:  # inputs scaled to about unit spread, by powers of two
            spread = x.std(axis=0).astype(np.float64)
            exps = np.rint(np.log2(np.where(spread > 1e-9, spread, 1.0)))
            self.exponents = np.clip(exps, -60, 20).astype(np.int8)
        scale = np.ldexp(np.float32(1.0), -self.exponents.astype(np.int32)).astype(np.float32)
        self._x = torch.from_numpy(x * scale)
        self._y = torch.from_numpy(y)

    def train(
        self,
        steps: int,
        deadline: float | None = None,
        cancel: Callable[[], bool] | None = None,
        lr: float = LEARNING_RATE,
    ) -> int:
        """Up to ``steps`` steps (learning rate ``lr`` cosine-annealed to zero over them) or
        until ``deadline``; returns the steps taken."""
        torch = self._torch
        batch = min(BATCH, len(self._x))
        done = 0
        for k in range(steps):
            if (deadline is not None and time.perf_counter() > deadline) or (cancel and cancel()):
                break
            for group in self._opt.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * k / max(steps, 1)))
            idx = torch.randint(0, len(self._x), (batch,), generator=self._gen)
            loss = ((self._forward(self._x[idx]) - self._y[idx]) ** 2).mean()
            self._opt.zero_grad()
            loss.backward()
            self._opt.step()
            done += 1
        self.steps += done
        return done

    def _forward(self, x: Any) -> Any:
        """The network's output on rows of ``x``: through the quantizer (straight-through)
        once a precision is chosen."""
        if self.levels is None:
            return self.net(x).squeeze(1)
        functional = self._torch.nn.functional
        layers = self._linear_layers()
        for k, layer in enumerate(layers):
            w, b = (_through_quantizer(p, self.levels) for p in (layer.weight, layer.bias))
            x = functional.linear(x, w, b)
            if k < len(layers) - 1:
                x = functional.relu(x)
        return x.squeeze(1)

    def _linear_layers(self) -> list[Any]:
        return [m for m in self.net if isinstance(m, self._torch.nn.Linear)]

    def sample_gain(self) -> float:
        """Share of the filter output's squared error the network removes on the sample
        (quantized as it would be coded, once a precision is chosen)."""
        with self._torch.no_grad():
            pred = self._forward(self._x)
            before = float((self._y**2).sum())
            after = float(((pred - self._y) ** 2).sum())
        return 1.0 - after / before if before > 0 else 0.0

    def quantize(
        self,
        price: float,
        deadline: float | None = None,
        cancel: Callable[[], bool] | None = None,
        steps: int = QUANTIZED_STEPS,
    ) -> int:
        """Choose the weights' precision: from the float weights, at each of
        :data:`PRECISION_LEVELS`, the weights rounded as they are and after ``steps`` steps
        through the quantizer; the one with the largest sample gain less ``price`` per coded
        byte (``price``: share of the error one byte of the base removes) is kept. Returns the
        chosen levels."""
        snapshot = self._weights_copy()
        best: tuple[float, int, dict] | None = None
        for levels in PRECISION_LEVELS:
            if best is not None and deadline is not None and time.perf_counter() > deadline:
                break
            self.net.load_state_dict(snapshot)
            self.levels = levels
            self._opt = self._torch.optim.Adam(self.net.parameters(), lr=QUANTIZED_LR)
            for trained in (False, True):  # rounded as they are, then after the steps
                if trained and not self.train(steps, deadline, cancel, lr=QUANTIZED_LR):
                    break
                score = self.sample_gain() - price * len(self.result().to_bytes())
                if best is None or score > best[0]:
                    best = (score, levels, self._weights_copy())
        assert best is not None
        self.levels = best[1]
        self.net.load_state_dict(best[2])
        self._opt = self._torch.optim.Adam(self.net.parameters(), lr=QUANTIZED_LR)
        return self.levels

    def _weights_copy(self) -> dict:
        return {k: v.clone() for k, v in self.net.state_dict().items()}

    def result(self) -> NeuralFilter:
        """The network as it is now, quantized at the chosen precision (else
        :data:`DEFAULT_LEVELS`)."""
        levels = self.levels or DEFAULT_LEVELS
        floats: list[np.ndarray] = []
        for layer in self._linear_layers():
            floats += [layer.weight.detach().numpy().T, layer.bias.detach().numpy()]
        tensors, scales, codes = [], [], []
        for t in floats:
            code = _step_code(float(np.abs(t).max()) if t.size else 0.0, levels)
            step = _step(code)
            tensors.append(np.rint(t.astype(np.float64) / step).astype(np.int32))
            scales.append(step)
            codes.append(code)
        assert self.exponents is not None
        return NeuralFilter(
            self.flat, self.hidden, self.depth, self.lo, self.span, self.exponents.copy(),
            tensors, scales, codes,
        )  # fmt: skip


def _sample_features(
    base: np.ndarray,
    filtered: np.ndarray,
    target: np.ndarray,
    pick: np.ndarray,
    flat: bool,
    lo: float,
    span: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets (error of ``filtered`` in span units) of the voxels ``pick``."""
    pad = ((0, 0) if flat else (REACH, REACH), (REACH, REACH), (REACH, REACH))
    padded = np.pad(base.astype(np.float32), pad, mode="edge")
    zyx = np.unravel_index(pick, base.shape)
    pz = zyx[0] + (0 if flat else REACH)
    py, px = zyx[1] + REACH, zyx[2] + REACH
    centre = padded[pz, py, px]
    inv = np.float32(1.0 / span)
    offs = neighbour_offsets(flat)
    x = np.empty((len(pick), len(offs) + 2), dtype=np.float32)
    for k, (dz, dy, dx) in enumerate(offs):
        x[:, k] = (padded[pz + dz, py + dy, px + dx] - centre) * inv
    x[:, -2] = (centre - np.float32(lo)) * inv - np.float32(0.5)
    f = filtered.reshape(-1)[pick].astype(np.float32)
    x[:, -1] = (f - centre) * inv
    y = ((target.reshape(-1)[pick] - filtered.reshape(-1)[pick]) / span).astype(np.float32)
    return x, y


def _network(nn: Any, inputs: int, hidden: int, depth: int) -> Any:
    """The untrained network: ``depth`` ReLU layers, the output starting at zero."""
    mods: list = []
    width = inputs
    for _ in range(depth):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    out = nn.Linear(width, 1)
    nn.init.zeros_(out.weight)
    nn.init.zeros_(out.bias)
    return nn.Sequential(*mods, out)


def _through_quantizer(p: Any, levels: int) -> Any:
    """``p`` rounded to the step :meth:`NetworkTrainer.result` will store, with the gradient
    of the identity (straight-through)."""
    import torch

    with torch.no_grad():
        peak = float(p.abs().max()) if p.numel() else 0.0
        step = _step(_step_code(peak, levels))
        rounded = torch.round(p / step) * step
    return p + (rounded - p).detach()
