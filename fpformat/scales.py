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


def emax_elem(element) -> int:
    """OCP's emax_elem: the exponent of the element format's largest binade,
    ``floor(log2(element.max))`` (E4M3FN 8, E5M2 15, E2M3 2, E3M2 4, E2M1 2, INT8 0)."""
    return int(math.floor(math.log2(element.max)))


def is_pow2_format(scale_format) -> bool:
    """Whether every value of ``scale_format`` is a power of two (unsigned, no mantissa bits:
    E8M0-like), as the OCP rule needs."""
    return scale_format.man_bits == 0 and not scale_format.signed


def nan_code(scale_format) -> int:
    """The code that marks a block holding NaN/inf; ``ValueError`` when the format has no NaN."""
    if not scale_format.has_nan:
        raise ValueError(f"scale format {scale_format} has no NaN to mark a block holding NaN/inf")
    return int(scale_format.encode(np.array([np.nan]))[0])


def tensor_scale(x: np.ndarray) -> float:
    """NVFP4's float32 per-tensor scale ``amax / (448 * 6)``: 1 for an all-zero tensor, NaN when
    the tensor holds a NaN or an infinity."""
    if not np.isfinite(x).all():
        return float("nan")
    at = float(np.max(np.abs(x))) if x.size else 0.0
    return float(np.float32(at / (448.0 * 6.0))) if at > 0 else 1.0
