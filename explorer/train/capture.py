"""Capture the tensors a model's GEMMs actually see, for measuring formats on real data.

:func:`capture_tensors` runs one forward and backward pass over a batch and records, for every
``nn.Linear`` (quantized layers included, which see full-precision inputs): the weight, the input
activation and the gradient of the output — the three kinds of GEMM operand whose distributions
differ most (weights near-Gaussian, activations and gradients heavy-tailed).  Each tensor is
subsampled (seeded, deterministic) to at most ``max_elements`` values.  `fpx train --capture
OUT.npz` saves them after training; `fpx recommend --measure --tensors OUT.npz` measures every
candidate format on them (the ``.npz`` files: :func:`explorer.metrics.save_tensors` and
:func:`explorer.metrics.load_tensors`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data import eval_batches
from .ptq import checkpoints
from .trainer import load_checkpoint


def _sample(t: torch.Tensor, max_elements: int, rng: np.random.Generator) -> np.ndarray:
    a = t.detach().float().cpu().numpy().reshape(-1)
    if a.size > max_elements:
        a = a[np.sort(rng.choice(a.size, size=max_elements, replace=False))]
    return a.astype(np.float32)


def capture_tensors(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                    max_elements: int = 1 << 16, seed: int = 0) -> dict[str, np.ndarray]:
    """``{"<layer>.weight" | "<layer>.input" | "<layer>.grad_output": float32 array}`` for every
    Linear layer of ``model`` on one batch (``model.loss(inputs, targets)`` must exist)."""
    if max_elements < 1:
        raise ValueError(f"max_elements must be >= 1, got {max_elements}")
    rng = np.random.default_rng(seed)
    acts: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}
    hooks = []
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("model has no nn.Linear layers to capture")
    for name, m in linears:
        hooks.append(m.register_forward_hook(
            lambda mod, args, out, name=name: acts.__setitem__(name, args[0].detach())))
        hooks.append(m.register_full_backward_hook(
            lambda mod, gin, gout, name=name: grads.__setitem__(name, gout[0].detach())))
    try:
        model.zero_grad(set_to_none=True)
        model.loss(inputs, targets).backward()
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
    out: dict[str, np.ndarray] = {}
    for name, m in linears:
        out[f"{name}.weight"] = _sample(m.weight, max_elements, rng)
        if name in acts:
            out[f"{name}.input"] = _sample(acts[name], max_elements, rng)
        if name in grads:
            out[f"{name}.grad_output"] = _sample(grads[name], max_elements, rng)
    return out


def capture_from_run(ckpt_dir: str | Path, tokens: np.ndarray, batch: int, seq_len: int,
                     max_elements: int = 1 << 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Capture from the last checkpoint (``tokens_<n>.pt``, largest n) in ``ckpt_dir``, on the
    first held-out windows of ``tokens``.  The checkpoint is loaded without running code
    (:func:`~explorer.train.trainer.load_checkpoint`): a damaged or planted one is a
    ``CheckpointError`` (``ValueError``) naming the file."""
    ckpts = checkpoints(ckpt_dir)
    if not ckpts:
        raise FileNotFoundError(f"no tokens_<n>.pt checkpoint in {ckpt_dir}")
    model, _ = load_checkpoint(ckpts[-1][1])
    x, y = next(eval_batches(tokens, batch * seq_len, batch, seq_len))
    return capture_tensors(model, torch.from_numpy(x), torch.from_numpy(y), max_elements, seed)

