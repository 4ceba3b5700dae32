"""Block-scale helpers shared by the block semantics and every block kernel (CPU and GPU).

These are the small facts of a scale that :mod:`fpformat.block` (the semantics and the numpy
path), :mod:`fpformat.block_kernels`, :mod:`fpformat.block_core` and :mod:`fpformat.cuda` must
agree on, and the record an encoding travels in.  Formats arrive as objects; nothing here
imports a format module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class BlockEncoding:
    """What ``BlockFormat.encode`` returns (on the GPU: with CUDA arrays of the input's kind)."""

    #: Element codes, ``x``'s shape, the element format's code dtype.
    codes: Any
    #: Per-block scale codes (the scale format's code dtype) or float32 scale values
    #: (``scale_format=None``); ``x``'s shape with the block axis (or the two tile axes) replaced
    #: by the number of blocks along it (``1`` for ``"tensor"``).
    scales: Any
    #: The float32 per-tensor scale of the ``"nvfp4"`` rule, else None.
    tensor_scale: float | None
    #: The ``BlockFormat`` that made it.
    format: Any
    #: The input's shape.
    shape: tuple[int, ...]
    #: The input's float kind (``"float32"``...), the dtype ``quantize`` answers in.
    dtype: str

    @classmethod
    def from_codes(cls, fmt, codes, scales, tensor_scale: float | None = None,
                   dtype: str = "float64") -> BlockEncoding:
        """An encoding of block format ``fmt`` built from external element codes and scales
        (what another implementation, an RTL simulation or a file holds), checked against the
        block layout, for ``fmt.decode``.

        ``codes``: integers in ``0 .. 2**bits - 1`` of the element format (two's-complement
        codes for ``int_codes`` formats), any shape with at least one dimension; ``scales``:
        shaped as ``fmt.layout(codes.shape)[0]`` (the block axis, or the two tile axes, replaced
        by the number of blocks), scale-format codes in ``0 .. 2**bits - 1``, or float32 scale
        values where ``fmt.scale_format`` is None (values must be float32 values);
        ``tensor_scale``: the float32 per-tensor scale, required for ``scale_rule="nvfp4"`` and
        refused otherwise; ``dtype``: the float kind ``quantize`` would have answered in.
        ``ValueError`` naming the parameter for anything inconsistent.  Codes are stored in the
        formats' code dtypes."""
        if not hasattr(fmt, "layout") or not hasattr(fmt, "element"):
            raise TypeError(f"fmt must be a BlockFormat, got {type(fmt).__name__}")
        c = np.asarray(codes)
        if c.dtype.kind not in "ui":
            raise ValueError(f"codes must be an integer array, got dtype {c.dtype}")
        if c.ndim == 0:
            raise ValueError("codes must have at least one dimension")
        el = fmt.element
        _check_code_range("codes", c, el.bits)
        sshape, _ = fmt.layout(c.shape)
        s = np.asarray(scales)
        if s.shape != tuple(sshape):
            raise ValueError(f"scales must have shape {tuple(sshape)} for codes of shape "
                             f"{c.shape} in {fmt}, got {s.shape}")
        sf = fmt.scale_format
        if sf is None:
            if s.dtype.kind != "f":
                raise ValueError(f"scales must be float32 values (the format has no scale "
                                 f"format), got dtype {s.dtype}")
            s32 = s.astype(np.float32)
            with np.errstate(invalid="ignore"):
                exact = (s32.astype(np.float64) == s.astype(np.float64)) | np.isnan(s)
            if not exact.all():
                raise ValueError("scales must be float32 values (the format holds its scales "
                                 "as float32)")
            s = s32
        else:
            if s.dtype.kind not in "ui":
                raise ValueError(f"scales must be integer codes of the scale format {sf}, got "
                                 f"dtype {s.dtype}")
            _check_code_range("scales", s, sf.bits)
            s = s.astype(sf.dtype)
        if fmt.scale_rule == "nvfp4":
            if tensor_scale is None or isinstance(tensor_scale, bool) \
                    or not isinstance(tensor_scale, (int, float, np.floating, np.integer)):
                raise ValueError(f"tensor_scale must be a float (the nvfp4 rule's float32 "
                                 f"per-tensor scale), got {tensor_scale!r}")
            ts = float(np.float32(tensor_scale))
            if ts != float(tensor_scale) and not np.isnan(tensor_scale):
                raise ValueError(f"tensor_scale must be a float32 value, got {tensor_scale!r}")
            if not (ts > 0 or np.isnan(ts)) or np.isinf(ts):
                raise ValueError(f"tensor_scale must be positive and finite (or NaN), got "
                                 f"{tensor_scale!r}")
            tensor_scale = ts
        elif tensor_scale is not None:
            raise ValueError(f"tensor_scale is for scale_rule 'nvfp4' only; {fmt} uses "
                             f"{fmt.scale_rule!r}")
        if dtype not in ("float16", "bfloat16", "float32", "float64"):
            raise ValueError(f"dtype must be float16, bfloat16, float32 or float64, got {dtype!r}")
        return cls(codes=c.astype(el.dtype), scales=s, tensor_scale=tensor_scale, format=fmt,
                   shape=tuple(c.shape), dtype=dtype)


def _check_code_range(name: str, c: np.ndarray, bits: int) -> None:
    if c.size and (int(c.min()) < 0 or int(c.max()) >= (1 << bits)):
        raise ValueError(f"{name} must be in 0..{(1 << bits) - 1} ({bits}-bit codes), got values "
                         f"in {int(c.min())}..{int(c.max())}")


def emax_elem(element) -> int:
    """OCP's emax_elem: the exponent of the element format's largest binade,
    ``floor(log2(element.max))`` (E4M3FN 8, E5M2 15, E2M3 2, E3M2 4, E2M1 2, INT8 0)."""
    return int(math.floor(math.log2(element.max)))


def is_pow2_format(scale_format) -> bool:
    """Whether every value of ``scale_format`` is a power of two (unsigned, no mantissa bits:
    E8M0-like), as the OCP rule needs."""
    return scale_format.man_bits == 0 and not scale_format.signed


def tensor_scale(x: np.ndarray) -> float:
    """NVFP4's float32 per-tensor scale ``amax / (448 * 6)``: 1 for an all-zero tensor, NaN when
    the tensor holds a NaN or an infinity."""
    if not np.isfinite(x).all():
        return float("nan")
    at = float(np.max(np.abs(x))) if x.size else 0.0
    return float(np.float32(at / (448.0 * 6.0))) if at > 0 else 1.0
