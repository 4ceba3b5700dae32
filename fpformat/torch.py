"""The torch face of fpformat: autograd-aware fake quantization for CPU and CUDA tensors.

    from fpformat.torch import quantize
    y = quantize(x, "float8_e4m3fn", rounding="rne")          # y.dtype == x.dtype, same device
    y.sum().backward()                                        # straight-through: dy/dx = 1

CPU tensors go to the numba kernels without a copy (float32/float64; float16 and bfloat16 are
widened exactly); CUDA tensors go to the numba.cuda kernels (:mod:`fpformat.cuda`) through
``__cuda_array_interface__``, read in place in every float dtype, on torch's current stream, with
results and scratch from torch's caching allocator and no synchronisation: a CUDA ``quantize``
can be captured in ``torch.cuda.graph`` once a warm-up call has compiled its kernels (a graph
replays the stochastic-rounding key it captured: pass ``seed`` explicitly).  fpformat imports
torch here and in :mod:`fpformat.gemm_torch`
(the other torch face); :mod:`fpformat.cuda` imports it only when a torch CUDA tensor arrives, and
the element and block API read CPU tensors through their own methods (:mod:`fpformat.arrays`).
"""

from __future__ import annotations

import numpy as np
import torch

from . import cuda, kernels
from .arrays import tensor_kind
from .presets import get_format


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A numpy view (float32/float64) or exact widened copy (float16, bfloat16) of a CPU tensor.

    bfloat16 comes back as a numpy array with ml_dtypes' bfloat16 dtype when ml_dtypes is
    installed, else widened to float32 (exact)."""
    if t.device.type != "cpu":
        raise ValueError(f"expected a CPU tensor, got device {t.device}")
    t = t.detach()
    kind = tensor_kind(t)
    if kind in ("float32", "float64", "float16"):
        return t.contiguous().numpy()
    u16 = t.contiguous().view(torch.int16).numpy().view(np.uint16)
    try:
        import ml_dtypes  # optional (a test dependency): gives bfloat16 arrays their dtype
        return u16.view(ml_dtypes.bfloat16)
    except ImportError:  # widen exactly: bfloat16 is the top half of a float32
        return (u16.astype(np.uint32) << np.uint32(16)).view(np.float32)


def from_numpy(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """A tensor with ``like``'s dtype and device holding ``a``'s values (exact when they fit)."""
    if a.dtype.itemsize == 2 and (a.dtype.name == "bfloat16" or (
            like.dtype == torch.bfloat16 and a.dtype == np.uint16)):
        t = torch.from_numpy(_contiguous(a).view(np.int16)).view(torch.bfloat16)
    else:
        t = torch.from_numpy(_contiguous(a))
    if t.dtype == like.dtype and like.device.type == "cpu":
        return t
    return t.to(device=like.device, dtype=like.dtype)


def _contiguous(a: np.ndarray) -> np.ndarray:
    """A C-contiguous array with ``a``'s shape (``np.ascontiguousarray`` makes 0-d arrays 1-d)."""
    return a if a.flags.c_contiguous else np.require(a, requirements="C")


def quantize_values(x: torch.Tensor, fmt, rounding: str = "rne", saturate: bool = True,
                    seed: int | None = None, sr_bits: int | None = None) -> torch.Tensor:
    """Fake-quantize ``x`` (no autograd): same dtype, shape and device."""
    f = get_format(fmt)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    tensor_kind(x)
    if x.device.type == "cuda":                  # non-contiguous: made contiguous by torch there
        return cuda.quantize(f, x, rounding, saturate, seed, sr_bits)
    if x.device.type != "cpu":
        raise ValueError(f"device must be cpu or cuda, got {x.device}")
    y = f.quantize(to_numpy(x), rounding=rounding, saturate=saturate, seed=seed, sr_bits=sr_bits)
    return from_numpy(y, x)


def quantize_scaled_values(x: torch.Tensor, fmt, scale: float, rounding: str = "rne",
                           saturate: bool = True,
                           seed: int | None = None) -> tuple[torch.Tensor, float]:
    """Per-tensor scaled fake-quantization of a float32 CPU tensor in one pass (no autograd):
    ``(fl32(q(fl32(x * s)) * fl32(1 / s)), amax of |x|)``
    (:func:`fpformat.kernels.quantize_scaled`); ``ValueError`` for other tensors."""
    f = get_format(fmt)
    if not isinstance(x, torch.Tensor) or x.device.type != "cpu" or x.dtype != torch.float32:
        raise ValueError(f"x must be a float32 CPU tensor, got "
                         f"{getattr(x, 'dtype', type(x).__name__)} on "
                         f"{getattr(x, 'device', 'no device')}")
    y, amax = kernels.quantize_scaled(f, x.detach().contiguous().numpy(), scale, rounding,
                                      saturate, seed)
    return torch.from_numpy(y), amax


class _Quantize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fmt, rounding, saturate, seed, sr_bits, zero_grad_saturated):
        y = quantize_values(x, fmt, rounding, saturate, seed, sr_bits)
        if zero_grad_saturated:
            limit = _max_of(fmt)
            ctx.save_for_backward(x.abs() <= limit)
        ctx.zero_grad_saturated = zero_grad_saturated
        return y

    @staticmethod
    def backward(ctx, grad):
        if ctx.zero_grad_saturated:
            (inside,) = ctx.saved_tensors
            grad = grad * inside
        return grad, None, None, None, None, None, None


def _max_of(fmt) -> float:
    f = get_format(fmt)
    element = getattr(f, "element", None)
    if element is not None:       # block formats: elements are scaled, so no fixed limit
        return float("inf")
    return f.max


def quantize(x: torch.Tensor, fmt, rounding: str = "rne", saturate: bool = True,
             seed: int | None = None, sr_bits: int | None = None,
             zero_grad_saturated: bool = False) -> torch.Tensor:
    """Fake-quantize ``x`` into ``fmt`` (a FloatFormat, BlockFormat or name) with a
    straight-through gradient.

    ``saturate`` defaults to True here (training clamps rather than producing inf/NaN).  With
    ``zero_grad_saturated=True`` the gradient is zero where ``|x|`` exceeds the format's max
    (element formats only).  ``seed`` makes stochastic rounding reproducible.
    """
    return _Quantize.apply(x, get_format(fmt), rounding, saturate, seed, sr_bits,
                           zero_grad_saturated)
