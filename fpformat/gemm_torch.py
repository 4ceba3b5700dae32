"""Torch face of the dot-product emulator: a linear layer's GEMMs through
:func:`fpformat.gemm.matmul`.

    from fpformat.gemm import Accumulator
    from fpformat.gemm_torch import emulated_linear, emulated_mm
    acc = Accumulator("e8m13", "rtz", chunk=128)
    y = emulated_linear(x, weight, bias, acc)          # autograd: backward GEMMs emulated too
    y = emulated_mm(qx, qw.t(), acc)                   # one GEMM, no autograd (for custom layers)
    y = unit_mm(qx, qw.t(), "h100", "float8_e4m3fn")  # one GEMM through a matrix unit (mma)

The slow path, for small models: every multiply-accumulate goes through the emulated accumulator
(CUDA tensors are computed on their GPU by :mod:`fpformat.cuda_gemm`, with the CPU kernels'
scalar cores: the same bits, no host copies; matrix units whose summation runs on the CPU
only go through the host).  The inputs are taken as they are
(already quantized, or float32/bfloat16 values: any two float32 values multiply exactly in
float64); the result is the accumulator's value converted to the input's dtype (exact when the
result format fits that dtype, else rounded to nearest by torch).  The bias is added afterwards
in the tensor's dtype, as a GEMM epilogue does.
"""

from __future__ import annotations

import numpy as np
import torch

from . import cuda_gemm
from .gemm import Accumulator, matmul, mma
from .presets import get_format
from .units import get_unit


def emulated_mm(a: torch.Tensor, b: torch.Tensor, acc: Accumulator, seed: int | None = None
                ) -> torch.Tensor:
    """``a @ b`` (2-D tensors) with every dot product accumulated as ``acc`` says; no autograd.

    Returns a tensor with ``a``'s dtype and device.  Float CUDA tensors (both on the GPU) are
    computed there by :mod:`fpformat.cuda_gemm` (:func:`fpformat.gemm.matmul`'s device path,
    bit for bit as on the CPU); other inputs go through the host."""
    if not isinstance(acc, Accumulator):
        raise TypeError(f"acc must be an fpformat.gemm.Accumulator, got {type(acc).__name__}")
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"a and b must be 2-D, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.is_cuda and b.is_cuda and cuda_gemm.matmul_on_device(a, b):
        y = matmul(a.detach(), b.detach().to(a.device), accumulator=acc, seed=seed)
        return y.to(dtype=a.dtype)
    A = a.detach().to("cpu", torch.float64).numpy()
    B = b.detach().to("cpu", torch.float64).numpy()
    y = matmul(A, B, accumulator=acc, seed=seed)
    return torch.from_numpy(np.ascontiguousarray(y)).to(device=a.device, dtype=a.dtype)


def unit_mm(a: torch.Tensor, b: torch.Tensor, unit="h100", in_format="float16",
            out_format="float32", *, a_scale: torch.Tensor | None = None,
            b_scale: torch.Tensor | None = None, block_k: int | None = None) -> torch.Tensor:
    """``a @ b`` (2-D tensors) computed by a matrix unit: :func:`fpformat.gemm.mma` with
    ``c = 0`` and ``quantize_inputs=True`` (``a`` and ``b`` rounded to nearest-even into
    ``in_format`` first, values beyond its range clamped to its max).  ``unit``: a
    preset name, a spec or a :class:`~fpformat.units.MatrixUnit`; no autograd.

    Returns a tensor with ``a``'s dtype and device (the unit's float32 or float16 result
    converted by torch: exact for float32 tensors).  A CUDA ``a`` is computed on its GPU
    (``b`` moved there first if it is elsewhere) by :mod:`fpformat.cuda_gemm`, bit for bit as
    on the CPU, on torch's current stream, without host copies -- except for units whose
    summation runs on the CPU only (``"exact"``, ``"pairwise"``:
    :data:`fpformat.cuda_gemm.GPU_SUMMATIONS`), which copy to the host and back.

    ``a_scale``, ``b_scale``, ``block_k``: block scales applied at each promotion, as
    :func:`fpformat.gemm.mma` takes them (``a`` and ``b`` then hold the element values); such a
    GEMM runs on the CPU (tensors elsewhere are copied to the host and the result back)."""
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"a and b must be 2-D, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a_scale is not None or b_scale is not None or block_k is not None:
        A, B, SA, SB = (None if t is None else t.detach().to("cpu", torch.float64).numpy()
                        for t in (a, b, a_scale, b_scale))
        y = mma(A, B, 0.0, unit, in_format, out_format, quantize_inputs=True, a_scale=SA,
                b_scale=SB, block_k=block_k)
        return torch.from_numpy(np.ascontiguousarray(y)).to(device=a.device, dtype=a.dtype)
    if a.is_cuda and get_unit(unit, get_format(in_format), get_format(out_format)).summation \
            in cuda_gemm.GPU_SUMMATIONS:
        y = mma(a.detach(), b.detach().to(a.device), 0.0, unit, in_format, out_format,
                quantize_inputs=True)
        return y.to(dtype=a.dtype)
    A = a.detach().to("cpu", torch.float64).numpy()
    B = b.detach().to("cpu", torch.float64).numpy()
    y = mma(A, B, 0.0, unit, in_format, out_format, quantize_inputs=True)
    return torch.from_numpy(np.ascontiguousarray(y)).to(device=a.device, dtype=a.dtype)


class EmulatedLinearFunction(torch.autograd.Function):
    """``y = x W^T + b`` with the forward GEMM accumulated by ``acc`` and the two backward GEMMs
    (``dx = dy W``, ``dW = dy^T x``) by ``backward_acc`` (None: ordinary torch GEMMs)."""

    @staticmethod
    def forward(ctx, x2, weight, bias, acc, backward_acc, seed):
        y = emulated_mm(x2, weight.t(), acc, seed)
        if bias is not None:
            y = y + bias.to(y.dtype)
        ctx.save_for_backward(x2, weight)
        ctx.has_bias = bias is not None
        ctx.backward_acc = backward_acc
        ctx.seed = seed
        return y

    @staticmethod
    def backward(ctx, gy):
        x2, weight = ctx.saved_tensors
        bacc = ctx.backward_acc
        gy = gy.contiguous()
        gx = gw = gb = None
        s = ctx.seed
        if ctx.needs_input_grad[0]:
            gx = gy @ weight.to(gy.dtype) if bacc is None else \
                emulated_mm(gy, weight.to(gy.dtype), bacc, None if s is None else s + 1)
        if ctx.needs_input_grad[1]:
            gw = gy.t() @ x2.to(gy.dtype) if bacc is None else \
                emulated_mm(gy.t(), x2.to(gy.dtype), bacc, None if s is None else s + 2)
            gw = gw.to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = gy.sum(0)
        return gx, gw, gb, None, None, None


def emulated_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                    acc: Accumulator | None = None, backward_acc: Accumulator | None | str = "same",
                    seed: int | None = None) -> torch.Tensor:
    """``torch.nn.functional.linear(x, weight, bias)`` with emulated accumulation.

    Args:
        x: (..., in_features); weight: (out_features, in_features); bias: (out_features,) or None.
        acc: the forward GEMM's accumulator (default: ``Accumulator()``, float32 RNE sequential).
        backward_acc: the backward GEMMs' accumulator; ``"same"`` (default) uses ``acc``, None
            uses ordinary torch GEMMs.
        seed: stochastic-rounding seed (forward ``seed``, backward ``seed + 1``/``seed + 2``).
    """
    acc = Accumulator() if acc is None else acc
    if isinstance(backward_acc, str):
        if backward_acc != "same":
            raise ValueError(f"backward_acc must be an Accumulator, None or 'same', "
                             f"got {backward_acc!r}")
        backward_acc = acc
    elif backward_acc is not None and not isinstance(backward_acc, Accumulator):
        raise TypeError(f"backward_acc must be an Accumulator, None or 'same', got "
                        f"{type(backward_acc).__name__}")
    if weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x (..., {weight.shape[-1] if weight.dim() == 2 else '?'}) and weight "
                         f"(out, in) do not chain: x {tuple(x.shape)}, "
                         f"weight {tuple(weight.shape)}")
    shape = x.shape
    y = EmulatedLinearFunction.apply(x.reshape(-1, shape[-1]), weight, bias, acc, backward_acc,
                                     seed)
    return y.reshape(*shape[:-1], weight.shape[0])
